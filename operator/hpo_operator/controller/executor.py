# One piece: every kind of a plan's writes as API calls, all through attempt() and its refusal rules.
"""Carries a planner.Plan out on the API server: planner/apply.py's carry_out() walks the plan's
writes in their order (the status models dumped into the JSON written) and hands each to this
class's method for its kind (an apply.Target), which makes it an API call.

One failed write does not stop the others: a pod the API server refuses (a quota, a policy, an
invalid manifest) must not keep the experiment's status from being written or other pods from being
stopped. The first failure is raised at the end, so the round counts as failed and is retried.

The Experiment's status and the routine Events are written as coalesce.py says: a change of counts
alone, and the routine Events, wait (in PendingWrites) for their turn, which flush() takes when no
round does first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from hpo_operator import planner
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.api.vocabulary import (
    FINISHED_PHASES,
    L_CONFIG,
    L_KUEUE_JOB_UID,
    L_LAUNCH,
    L_TRIAL,
    TERMINAL_PHASES,
)
from hpo_operator.controller import telemetry
from hpo_operator.kube.client import (
    CLAIMS,
    KUEUE_WORKLOADS,
    PODS,
    TRANSPORT_ERRORS,
    ApiException,
    KubeClient,
    Resource,
    api_reason,
    failure_reason,
)
from hpo_operator.planner import apply
from hpo_operator.workloads import checkpoint
from hpo_operator.workloads.kinds import build_workload, runtime_replicated_jobs, trainjob_runtime

from .authority import Authority
from .coalesce import (
    EARLY,
    ROUTINE,
    trial_may_wait,
    urgent,
)
from .pending import PendingWrites, pruned, status_patch

log = logging.getLogger(__name__)


class TrialBodies(Mapping[str, dict]):
    """Trial bodies by name: the round's views' (read when asked for), and the Trials made since."""

    def __init__(self, views: Mapping[str, planner.TrialView]):
        self.views = views
        self.made: dict[str, dict] = {}

    def __getitem__(self, name: str) -> dict:
        made = self.made.get(name)
        return made if made is not None else self.views[name].body

    def __setitem__(self, name: str, body: dict) -> None:
        self.made[name] = body

    def __iter__(self) -> Iterator[str]:
        yield from self.views
        yield from (n for n in self.made if n not in self.views)

    def __len__(self) -> int:
        return len(self.views) + sum(1 for n in self.made if n not in self.views)

    def specs(self) -> Iterator[dict]:
        """Every Trial's spec (a view's, parsed once)."""
        for name, view in self.views.items():
            made = self.made.get(name)
            yield view.spec if made is None else made.get("spec") or {}
        yield from ((b.get("spec") or {}) for n, b in self.made.items() if n not in self.views)


# Posts a Kubernetes Event: (object, type, reason, message).
PostEvent = Callable[[dict, str, str, str], None]


class Executor:
    def __init__(
        self,
        api: KubeClient,
        experiment: dict,
        spec: ExperimentSpec | None,  # None for a spec that does not parse: its plans start nothing
        trials: Mapping[str, planner.TrialView] | list[planner.TrialView],
        written: PendingWrites,
        post_event: PostEvent,
        resource: Resource = PODS,
        refused: dict[str, planner.Refusal] | None = None,
        authority: Authority | None = None,
    ):
        self.api = api
        self.resource = resource  # what trials run as: pods, Jobs, or another kind
        self.written = written
        self.experiment = experiment
        self.spec = spec
        # The Trials' bodies by name, read through the round's views (none copied: a round starts or
        # writes a few of thousands), with the Trials this round made.
        self.trials = TrialBodies(trials if isinstance(trials, Mapping) else {t.name: t for t in trials})
        self.namespace = experiment["metadata"]["namespace"]
        self.uid = experiment["metadata"]["uid"]
        self.post_event = post_event
        self.failures: list[Exception] = []
        self.unmade: list[str] = []  # Trials of the plan whose create failed
        self.events: list[tuple[dict, str, str, str]] = []
        self.finished = False  # the status this round writes has a final phase
        # Trials whose workload was refused for good (invalid, forbidden, or no verified author):
        # reported to the next round's planner, which fails them (the loop keeps this dict between
        # rounds).
        self.refused = {} if refused is None else refused
        # With tenancy on: the author check before a create, and the user workloads are written as.
        self.authority = authority
        self.acting = authority.acting_user(self.namespace) if authority is not None else None

    async def attempt(self, what: str, call: Callable[[], Awaitable[Any]], ok: tuple[int, ...] = ()) -> Any:
        """The call's result; None for a status in `ok`; the exception (recorded) for any other,
        the API server's refusals and lost connections alike: every chain of the round runs to its
        end, and the round then fails as a whole (a write that raised out of the round would leave
        the others running past it, into the next round)."""
        try:
            return await call()
        except ApiException as e:
            if e.status in ok:
                return None
            self.failures.append(e)
            log.warning("%s failed: %s %s", what, e.status, e.reason)
            return e
        except TRANSPORT_ERRORS as e:
            self.failures.append(e)
            log.warning("%s failed: %s (%s)", what, failure_reason(e), type(e).__name__)
            return e

    async def run(self, plan: planner.Plan) -> None:
        await apply.carry_out(plan, self)  # this class is an apply.Target: a method per kind of write
        if self.failures:
            raise self.failures[0]  # counted as a failed round, retried with backoff

    async def delete_workload(self, name: str) -> None:
        await self.attempt(
            f"deleting {self.resource[2]} {name}",
            lambda: self.api.delete_object(self.resource, self.namespace, name, as_user=self.acting),
            ok=(404,),
        )

    async def set_queue_active(self, name: str, active: bool) -> None:
        """Sets spec.active of the Kueue Workloads of the trial's workload (found by the job-uid
        label Kueue puts on them). Without any (no Kueue, or it has not made one yet), a
        deactivation deletes the workload, as a suspension without a queue does: the trial is
        started again on resume."""
        found = await self.attempt(
            f"reading {self.resource[2]} {name}",
            lambda: self.api.list_raw(self.resource, self.namespace, label_selector=f"{L_TRIAL}={name}"),
        )
        if isinstance(found, Exception) or found is None:
            return
        uids = [o["metadata"]["uid"] for o in found.get("items") or [] if o["metadata"].get("name") == name]
        if not uids:
            return  # gone already
        workloads: list[tuple[Resource, str]] = []
        for resource in KUEUE_WORKLOADS:
            listed = await self.attempt(
                f"listing Kueue workloads of {name}",
                lambda resource=resource: self.api.list_raw(
                    resource, self.namespace, label_selector=f"{L_KUEUE_JOB_UID}={uids[0]}"
                ),
                ok=(404,),  # this version is not served (or Kueue is not installed)
            )
            if isinstance(listed, Exception):
                return
            if listed is not None:
                workloads = [(resource, w["metadata"]["name"]) for w in listed.get("items") or []]
                break
        if not workloads:
            if not active:
                log.info("no Kueue workload holds %s %s: deleted instead", self.resource[2], name)
                await self.delete_workload(name)
            return
        for resource, workload in workloads:
            await self.attempt(
                f"{'reactivating' if active else 'deactivating'} Kueue workload {workload}",
                lambda resource=resource, workload=workload: self.api.patch_object(
                    resource, self.namespace, workload, {"spec": {"active": active}}
                ),
                ok=(404,),
            )

    async def delete_claim(self, name: str) -> None:
        await self.attempt(
            f"deleting checkpoint claim {name}",
            lambda: self.api.delete_object(CLAIMS, self.namespace, name, as_user=self.acting),
            ok=(404,),
        )

    async def write_experiment_status(self, status: dict) -> None:
        # Not attempt(): without its status written the round did not happen, and is retried.
        self.finished = status.get("phase") in FINISHED_PHASES
        if self.unmade:
            # The status counts Trials that were not made (their suggestions among them): written,
            # it would be ahead of the Trials, and the next round would skip those suggestions for
            # good. The round fails instead (self.failures has why), and the next one plans them
            # again from the Trials that exist.
            return
        # What the API server holds: the status this round started from, unless that one waits.
        stored = self.written.stored() if self.written.deferred is not None else self.experiment.get("status") or {}
        if not status_patch(stored, status):
            self.written.deferred = None  # (counts that went back to what is written)
            return
        now = time.monotonic()
        if urgent(stored, status, self.suggestions_made):
            await self.patch_experiment_status(stored, pruned(status), now, "changed")
        elif self.written.status_deferral.may_write(now, self.written.pacing.status):
            await self.patch_experiment_status(stored, pruned(status), now, "turn")
        else:
            self.written.deferred = pruned(status)

    async def patch_experiment_status(self, stored: dict, status: dict, now: float, when: str) -> None:
        patch = status_patch(stored, status)
        if patch:
            await self.api.patch_status("experiments", self.namespace, self.experiment["metadata"]["name"], patch)
            telemetry.STATUS_WRITES.labels(when).inc()
        self.written.wrote_status(status, now)

    def suggestions_made(self) -> int:
        """The suggestions the Trials account for: the highest suggestionIndex + 1."""
        indexes = (spec.get("suggestionIndex") for spec in self.trials.specs())
        return max((int(i) + 1 for i in indexes if i is not None), default=0)

    async def flush(self) -> None:
        """Writes what waits whose turn has come (the round's flush when no round runs first): trial
        statuses, a status of new counts, the routine Events."""
        now = time.monotonic()
        written = self.written
        due = [name for name, (_, _, turn) in written.trial_waiting.items() if turn <= now + EARLY]
        if due:
            await asyncio.gather(*(self.write_waiting_trial(name) for name in due))
            if self.failures:
                raise self.failures[0]
        if written.deferred is not None and written.status_deferral.may_write(now, written.pacing.status):
            await self.patch_experiment_status(written.stored(), written.deferred, now, "turn")
        if written.events.due(now, written.pacing.events):
            self.post_routine(now)

    def post_routine(self, now: float) -> None:
        for reason, text in self.written.events.take(now):
            self.post_event(self.experiment, "Normal", reason, text)

    def event(self, target: dict, type_: str, reason: str, message: str) -> None:
        self.events.append((target, type_, reason, message))

    def post_events(self, events: list[planner.Event]) -> None:
        """Posts the round's Events. Each Event is a write, as costly as the trial's own: the
        routine ones (coalesce.ROUTINE) are gathered across rounds on the Experiment, and posted
        one per reason, naming the trials, when their turn comes, or at once before another Event
        of the Experiment and when it finishes."""
        for event in events:
            target = self.experiment if event.target is None else self.trials.get(event.target)
            if target is not None and target.get("metadata", {}).get("uid"):
                self.event(target, event.type, event.reason, event.message)
        gathered = self.written.events
        others = []
        for target, type_, reason, message in self.events:
            if type_ == "Normal" and reason in ROUTINE:
                name = target["metadata"]["name"]
                gathered.add(reason, message if target is self.experiment else f"trial {name}: {message}")
            else:
                others.append((target, type_, reason, message))
        now = time.monotonic()
        if gathered and (
            self.finished
            or any(target is self.experiment for target, *_ in others)
            or gathered.due(now, self.written.pacing.events)
        ):
            self.post_routine(now)
        for target, type_, reason, message in others:
            self.post_event(target, type_, reason, message)

    async def update_trial(self, name: str, status: dict | None, metadata: dict | None) -> None:
        if status is not None:
            old = (self.trials.get(name) or {}).get("status") or {}
            if status.get("phase") in TERMINAL_PHASES and old.get("phase") not in TERMINAL_PHASES:
                telemetry.TRIALS_FINISHED.labels(status["phase"], status.get("failureClass") or "").inc()
            # (A metadata change goes after its status: that one is written now.)
            await self.write_trial_status(name, status, may_wait=metadata is None)
        if metadata is not None:
            await self.attempt(
                f"metadata of trial {name}",
                lambda: self.api.patch("trials", self.namespace, name, {"metadata": metadata}),
                ok=(404,),
            )

    async def write_trial_status(self, name: str, status: dict, may_wait: bool = True) -> None:
        """Writes the trial's status, or has it wait (coalesce.trial_may_wait) with what waits."""
        waiting = self.written.trial_waiting.get(name)
        # What the API server holds: what waits was not written.
        stored = waiting[0] if waiting else (self.trials.get(name) or {}).get("status") or {}
        if not status_patch(stored, status):
            self.written.trial_waiting.pop(name, None)
        elif may_wait and trial_may_wait(stored, status):
            self.written.wait_trial(name, stored, pruned(status), time.monotonic())
        else:
            await self.patch_trial_status(name, stored, pruned(status))

    async def write_waiting_trial(self, name: str) -> None:
        stored, status, _ = self.written.trial_waiting[name]
        await self.patch_trial_status(name, stored, status)

    async def patch_trial_status(self, name: str, stored: dict, status: dict) -> None:
        patch = status_patch(stored, status)
        result = await self.attempt(
            f"status of trial {name}",
            lambda: self.api.patch_status("trials", self.namespace, name, patch),
            ok=(404,),
        )
        if not isinstance(result, Exception):
            self.written.wrote_trial_status(name, status)

    async def start(self, name: str) -> None:
        trial = self.trials.get(name)
        if trial is None or not trial["metadata"].get("uid"):
            return  # not ours, or not visible yet; the next round starts it
        assert self.spec is not None, "only a plan of a parsed spec starts workloads"
        ckpt = self.spec.trial_template.checkpoint
        if self.authority is not None:
            needed = [self.resource, CLAIMS] if ckpt is not None else [self.resource]
            refusal = await self.attempt(
                f"checking the author's rights for trial {name}",
                lambda: self.authority.refusal(self.namespace, self.experiment, trial, needed),  # type: ignore[union-attr]
            )
            if isinstance(refusal, Exception):
                return  # asked again next round
            if refusal is not None:
                self.refused[name] = refusal
                return
        if ckpt is not None:
            # The configuration's claim first: its name is fixed, so a claim made before a crash,
            # or by an earlier attempt, is found again (409) rather than made twice.
            config = (trial["metadata"].get("labels") or {}).get(L_CONFIG, "")
            claim = checkpoint.build_claim(ckpt, self.experiment, config)
            made = await self.attempt(
                f"creating checkpoint claim {claim['metadata']['name']}",
                lambda: self.api.create_object(CLAIMS, self.namespace, claim, as_user=self.acting),
                ok=(409,),
            )
            if isinstance(made, ApiException) and self.refused_for_good(name, made, "PersistentVolumeClaim"):
                return
            if isinstance(made, Exception):
                return  # tried again next round; the pod would only wait for it
        replicated_jobs = None
        runtime = trainjob_runtime(self.spec, self.namespace)
        if runtime is not None:
            # A TrainJob's pods get the trial's labels through a patch of each of its runtime's
            # replicated jobs: read their names. A runtime that is not there is not an error here:
            # Trainer refuses the TrainJob, and the trial fails with its message.
            rkind, rnamespace, rname = runtime
            found = await self.attempt(
                f"reading {rkind.kind} {rname}",
                lambda: self.api.get_custom((rkind.group, rkind.version, rkind.plural or ""), rnamespace, rname),
                ok=(404,),
            )
            if isinstance(found, Exception):
                return  # tried again next round
            replicated_jobs = runtime_replicated_jobs(found or {})
        kind, body = build_workload(self.spec, self.experiment["metadata"]["name"], trial, replicated_jobs)
        result = await self.attempt(
            f"creating {kind.kind} {name}",
            lambda: self.api.create_object(self.resource, self.namespace, body, as_user=self.acting),
            ok=(409,),
        )
        if not isinstance(result, ApiException):
            return  # made, made before (409), or not reached: the next round looks again
        if not self.refused_for_good(name, result, kind.kind):
            self.post_event(trial, "Warning", "PodCreateFailed", api_reason(result))

    def refused_for_good(self, name: str, e: ApiException, what: str) -> bool:
        """Whether the API server's refusal of a trial's create would come again, unchanged: the
        manifest is invalid (400, 422; e.g. a label made invalid by a placeholder), or forbidden
        (403: the rights of the user it is created as, Pod Security, a policy) but for a quota,
        which frees up. Such a refusal is not a failed round: it is reported, and the next round's
        planner fails the trial (planner/lifecycle.py, refused_create)."""
        reason = api_reason(e)
        if e.status in (400, 422):
            refusal = planner.Refusal("InvalidPod", reason)
        elif e.status == 403 and "exceeded quota" not in reason:
            as_whom = f" (created as {self.acting})" if self.acting else ""
            refusal = planner.Refusal("Forbidden", f"the API server refused the trial's {what}{as_whom}: {reason}")
        else:
            return False
        self.failures.remove(e)
        self.refused[name] = refusal
        return True

    async def create_trial(self, body: dict, start: bool) -> None:
        name = body["metadata"]["name"]
        status = body.pop("status", None)
        created = await self.attempt(
            f"creating trial {name}", lambda: self.api.create("trials", self.namespace, body), ok=(409,)
        )
        if isinstance(created, Exception):
            self.unmade.append(name)
            return
        if created is None:
            # Made in an earlier round that was cut short: use it if it is ours.
            created = await self.attempt(f"reading trial {name}", lambda: self.api.get("trials", self.namespace, name))
            if isinstance(created, Exception):
                return
            if not planner.TrialView(name, "", created).owned_by(self.uid):
                self.post_event(
                    self.experiment,
                    "Warning",
                    "NameConflict",
                    f"trial {name} exists but does not belong to this experiment",
                )
                return
        else:
            telemetry.TRIALS_CREATED.labels(body["metadata"]["labels"].get(L_LAUNCH, "")).inc()
            self.event(
                self.experiment, "Normal", "TrialCreated", f"trial {name}: {(status or {}).get('parameterSummary', '')}"
            )
        self.trials[name] = created
        self.written.trials[name] = created
        # The pod and the first status go out together (the status, of a trial waiting to start,
        # usually waits: see coalesce.trial_may_wait).
        first = asyncio.ensure_future(
            self.write_trial_status(name, status) if status and not created.get("status") else asyncio.sleep(0)
        )
        if start:
            await self.start(name)
        await first
