"""One experiment's rounds: a turn of the runtime's work queue runs a round, or writes what waits.

A round reads the experiment's Trials and pods from its namespace's informers (namespace.py; no
listing, no deep copies: the planner changes nothing it is given) and the trials' output the planner
wants (logs.py: read, and parsed in a thread), asks planner.plan() what to do, and has the executor
carry it out. The runtime's work queue (workqueue.py) gives each experiment its turns: at once after a
watch event, after a growing delay after a failed round, and otherwise when the round asked for its
next one; a turn with nothing new runs no round, and only writes what waits whose turn has come (a
status of new counts, the routine Events: coalesce.py). A round never waits in a worker for a watch
that is down: it ends, and the watch's listing wakes the experiment again.
What a loop keeps between rounds is only the Optuna study (rebuilt from the Trials after a restart),
the parsed Trials, the samples read from trials' output, and our writes that the watch has not shown
yet, or that wait: all other state lives in the cluster.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import ValidationError

from hpo_operator import planner
from hpo_operator.api import trial_kinds
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.api.vocabulary import FINISHED_PHASES, TERMINAL_PHASES
from hpo_operator.core import times
from hpo_operator.kube.client import CLAIMS, PODS, TRANSPORT_ERRORS, ApiException, failure_reason
from hpo_operator.kube.fair import FIRST, FLOW
from hpo_operator.search.samplers import SearchSpaceError
from hpo_operator.search.suggest import Suggester
from hpo_operator.workloads.kinds import kind_of

from . import telemetry
from .cpu import timed
from .executor import Executor
from .logs import PodLogs
from .namespace import Key, WatchForbidden, WorkloadObservations
from .pending import PendingWrites

if TYPE_CHECKING:  # the registry that starts the loops; only named here, for the annotation
    from .runtime import Runtime

RECONCILE_INTERVAL = float(os.environ.get("HPO_RECONCILE_INTERVAL", "5"))
IDLE_INTERVAL = 300.0
# After failed rounds the loop waits RECONCILE_INTERVAL * 2^(failures - 1), up to this; a watch
# event still wakes it at once.
MAX_ERROR_DELAY = 60.0
# Experiments with more Trials than this are planned in a thread.
THREAD_PLAN_TRIALS = 500
# Rounds of one experiment start at least this far apart (or twice the last plan's time).
MIN_ROUND_GAP = float(os.environ.get("HPO_MIN_ROUND_GAP", "0.05"))
# The same for trials that run as a Job or another resource: they move at their controllers' pace
# (a TrainJob's pod is made by Trainer, JobSet and the job controller, seconds apart, each writing
# its status back up), so their events come one by one and each would wake a round of its own over
# every trial. Gathered for half a second, a round serves several; against the seconds a trial
# takes to start and end there, the wait is small.
MIN_WORKLOAD_ROUND_GAP = float(os.environ.get("HPO_MIN_WORKLOAD_ROUND_GAP", "0.5"))

log = logging.getLogger(__name__)


def error_delay(failures: int) -> float:
    return min(RECONCILE_INTERVAL * 2 ** max(failures - 1, 0), MAX_ERROR_DELAY)


@dataclass
class ExperimentLoop:
    """One experiment's rounds and what it keeps between them."""

    runtime: Runtime
    key: Key
    uid: str
    body: dict
    # Something changed since the last round began (a watch event, the spec), or the last one
    # failed: the next turn runs a round.
    event: bool = True
    # When the next round is due without an event (time.monotonic()).
    round_due: float = 0.0
    suggester: Suggester | None = None
    logs: PodLogs = field(init=False)
    written: PendingWrites = field(init=False)
    # Trials whose workload the API server refused (the executor's report, with its message), until
    # the planner's verdict on them shows: see settle_refusals.
    refused: dict[str, planner.Refusal] = field(default_factory=dict)
    parsed_trials: dict[str, planner.TrialView] = field(default_factory=dict)
    workload_observations: WorkloadObservations = field(default_factory=WorkloadObservations)
    plan_seconds: float = 0.0
    # The CPU this experiment's work took in threads since the runtime last took it (take_thread_seconds).
    thread_seconds: float = 0.0
    min_gap: float = MIN_ROUND_GAP  # MIN_WORKLOAD_ROUND_GAP once a round saw Job or resource trials
    task: asyncio.Task | None = None  # the turn being run, cancelled when the experiment goes
    _spec: tuple[dict, ExperimentSpec] | None = None  # the spec last parsed, and its source

    def __post_init__(self) -> None:
        authority = self.runtime.authority
        self.logs = PodLogs(self.runtime.api, authority.acting_user(self.key[0]) if authority is not None else None)
        self.written = PendingWrites(self.runtime.pacing)

    async def ready(self) -> bool:
        """Whether every informer a round reads has listed since its last failure: a round never
        plans on objects that went stale while a watch was down (it could not write meanwhile
        either). Until then the experiment waits outside the workers; the listing wakes it. A kind
        the platform did not enable is never watched (the round refuses the spec); a watch the API
        server refuses raises WatchForbidden."""
        ns = self.runtime.namespace(self.key[0])
        if not ns.synced():
            return False
        tt = (self.body.get("spec") or {}).get("trialTemplate") or {}
        if "job" in tt or "resource" in tt:  # (a pod trial's experiment skips validating its spec here)
            spec = self.spec()
            if spec is None or trial_kinds.refusal(spec.trial_template, self.runtime.allowed_kinds) is not None:
                return True  # refused by the round, which needs no watch for it
            kind = kind_of(spec)
            if not kind.is_pod and await ns.watch_kind(kind) is None:
                return False
        if tt.get("checkpoint"):
            return ns.watch_claims()
        return True

    async def turn(self) -> tuple[float | None, bool, float]:
        """One turn, run by a worker of the runtime's queue: a round if something happened since the
        last one began or it is due, else the writes that wait and whose turn has come. Returns when
        the experiment wants its next turn (seconds; None: at the next event), whether the turn
        failed (the queue retries it after a growing delay), and the gap before any next round."""
        FLOW.set(self.key)  # this experiment's share of the API server (kube/fair.py)
        # A new experiment's first pods go before the others' next writes (it has no trial yet).
        FIRST.set(not self.parsed_trials)
        started = time.monotonic()
        if not self.event and started < self.round_due:
            return await self.flush(), False, 0.0
        self.event = False
        failed = False
        delay: float | None
        try:
            try:
                if not await self.ready():
                    self.event = True  # the listing wakes it; the long delay only in case it did not
                    return IDLE_INTERVAL, False, 0.0
                with telemetry.RECONCILE_SECONDS.time():
                    delay = await self.reconcile()
                telemetry.RECONCILE_TOTAL.labels("success").inc()
            except WatchForbidden as e:
                # The platform's RBAC refuses a watch this experiment needs: no round can see its
                # trials. It says so, and waits for that watch to list (retried by its informer,
                # whose listing wakes it) or for its spec to change; other experiments go on.
                await self.report_forbidden(e)
                self.event = True
                delay = IDLE_INTERVAL
        except ApiException as e:
            # Deletion of the experiment cancels this task; anything else is retried.
            telemetry.RECONCILE_TOTAL.labels("error").inc()
            failed = True
            log.warning(
                "%s/%s: reconcile failed (%s %s), retrying in %.0fs", *self.key, e.status, e.reason, self.retry_in()
            )
        except TRANSPORT_ERRORS as e:
            # The API server restarting, or a connection cut: said once per round, without a
            # traceback; the informers' re-listing wakes the loop when it is back.
            telemetry.RECONCILE_TOTAL.labels("error").inc()
            failed = True
            log.warning(
                "%s/%s: reconcile failed (%s: %s), retrying in %.0fs",
                *self.key,
                failure_reason(e),
                type(e).__name__,
                self.retry_in(),
            )
        except Exception:
            telemetry.RECONCILE_TOTAL.labels("error").inc()
            failed = True
            log.exception("%s/%s: reconcile failed, retrying in %.0fs", *self.key, self.retry_in())
        now = time.monotonic()
        # Under a stream of events, let a few gather rather than plan for each: a round costs in
        # proportion to the experiment's trials, however few of them changed. The planner then
        # takes at most a third of the time.
        gap = max(self.min_gap, 2 * self.plan_seconds) - (now - started)
        if failed:
            self.event = True  # the retry is a round
            return None, True, gap
        self.round_due = now + delay
        return self.next_turn(delay, now), False, gap

    def take_thread_seconds(self) -> float:
        """The CPU its plans took in threads since the last call (the runtime adds it to the turn's)."""
        seconds, self.thread_seconds = self.thread_seconds, 0.0
        return seconds

    def retry_in(self) -> float:
        """The delay before the retry of a round failing now (the queue's backoff), for the log."""
        return error_delay(self.runtime.queue.failures(self.key) + 1)

    def next_turn(self, delay: float, now: float) -> float:
        """Seconds to the next turn: the next round's, or sooner, the turn of a write that waits."""
        turn = self.written.next_turn()
        return delay if turn is None else max(0.0, min(delay, turn - now))

    async def flush(self) -> float | None:
        """Writes what waits whose turn has come (no round ran first); the next turn's delay."""
        try:
            await Executor(self.runtime.api, self.body, None, [], self.written, self.runtime.post_event).flush()
        except (ApiException, *TRANSPORT_ERRORS) as e:
            # Retried at its next turn (or by the next round), like any write of a round.
            log.warning("%s/%s: a status write failed (%s), retrying", *self.key, failure_reason(e))
            self.event = True
            return error_delay(1)
        now = time.monotonic()
        return self.next_turn(self.round_due - now, now)

    async def reconcile(self) -> float:
        namespace, name = self.key
        rt = self.runtime
        now = times.now()
        raw = {**self.body}
        status = raw["status"] = self.written.status(raw.get("status") or {})
        generation = raw["metadata"].get("generation") or 0
        try:
            spec = self.parsed_spec(raw.get("spec") or {})
        except ValidationError as e:
            await self.report_invalid_spec(raw, status, str(e), now)
            return RECONCILE_INTERVAL
        refused = trial_kinds.refusal(spec.trial_template, rt.allowed_kinds)
        if refused is not None:
            # Only an edit of the spec, which wakes the loop, can change this (the allowed kinds
            # change with the operator's restart).
            await self.report_invalid_spec(raw, status, refused, now)
            return IDLE_INTERVAL
        ns = rt.namespace(namespace)
        kind = kind_of(spec)
        self.min_gap = MIN_ROUND_GAP if kind.is_pod else MIN_WORKLOAD_ROUND_GAP
        resource = None if kind.is_pod else await ns.watch_kind(kind)
        if not ns.synced() or (resource is None and not kind.is_pod):
            self.event = True  # a watch went down since ready(): the listing wakes the experiment
            return IDLE_INTERVAL
        trials = self.parse_trials(self.written.trial_bodies(ns.trials_of(name)))
        # A dict of its own (the planner reads it in a thread): per trial, its pod; for a Job or
        # resource trial, what that and its pods say (workloads), and its primary pod.
        workloads = (
            None
            if resource is None
            else ns.workload_observations(name, spec, kind, resource, self.workload_observations, now)
        )
        pods = ns.pods_of(name) if workloads is None else {n: seen.pod for n, seen in workloads.items()}
        if self.suggester is None:
            origin = spec.warm_start_from
            warm = list(ns.trials_of(origin).values()) if origin else []
            try:
                # In a thread, like a large plan: rebuilding a large study after a restart takes
                # seconds. A new experiment's is a fraction of a millisecond: less than the thread.
                if len(trials) + len(warm) > THREAD_PLAN_TRIALS:
                    self.suggester, cpu = await asyncio.to_thread(
                        timed, planner.restore_suggester, spec, trials, status, warm
                    )
                    self.thread_seconds += cpu
                else:
                    self.suggester = planner.restore_suggester(spec, trials, status, warm)
            except SearchSpaceError as e:
                await self.report_invalid_spec(raw, status, str(e), now)
                return RECONCILE_INTERVAL
        suggester = self.suggester
        # Each pod observed once, for the logs and the plan alike.
        observations = planner.observe_pods(spec, trials, pods, now, workloads)
        # What the trials' output reported, parsed in a thread (logs.py): the planner gets samples.
        outputs = await self.logs.wanted(spec, trials, pods, observations)
        # Every watch the round reads has listed: a condition that said one was refused is mended.
        view = planner.ExperimentView(
            name, namespace, self.uid, generation, spec, dict(planner.watched_again(status, generation, now))
        )
        volumes = None
        if spec.trial_template.checkpoint is not None:
            claims = ns.workload(CLAIMS)
            if claims.synced.is_set():
                volumes = {
                    n for n, c in (claims.objects.get(name) or {}).items() if not c["metadata"].get("deletionTimestamp")
                }
        settle_refusals(self.refused, trials)
        planning = time.monotonic()
        given = planner.RoundInput(
            experiment=view,
            trials=trials,
            pods=pods,
            now=now,
            suggest=suggester.suggest,
            should_stop=suggester.should_stop,
            tell=suggester.tell,
            told=suggester.told(),
            volumes=volumes,
            observations=observations,
            refused=dict(self.refused),
            outputs=outputs,
            workloads=workloads,
        )
        if len(trials) > THREAD_PLAN_TRIALS:
            # Off the event loop, which serves the informers and every other experiment
            # meanwhile; only this experiment's loop uses its suggester.
            plan, cpu = await asyncio.to_thread(timed, planner.plan, given)
            self.thread_seconds += cpu  # counted in the turn's cost (cpu.py), like its steps on the loop
        else:
            # A small plan takes a millisecond or two: less than handing it to one of the few
            # threads the event loop has, for which a hundred experiments would queue.
            plan = planner.plan(given)
        self.plan_seconds = time.monotonic() - planning
        reported = len(self.refused)
        await Executor(
            rt.api,
            raw,
            spec,
            self.parsed_trials,
            self.written,
            rt.post_event,
            resource or PODS,
            self.refused,
            rt.authority,
        ).run(plan)
        st = plan.experiment_status
        telemetry.experiment_phase(self.uid, st.phase)
        if len(self.refused) > reported:
            return 0  # the next round fails the refused trials: at once, as their status is due now
        if st.phase in FINISHED_PHASES and not (st.trials_running or st.trials_pending or st.trials_queued):
            return IDLE_INTERVAL  # nothing to watch for but events, which wake the loop anyway
        return plan.requeue_after or RECONCILE_INTERVAL

    def spec(self) -> ExperimentSpec | None:
        try:
            return self.parsed_spec(self.body.get("spec") or {})
        except (ValidationError, ValueError):
            return None  # reported by the round

    def parsed_spec(self, source: dict) -> ExperimentSpec:
        """The spec as a model, parsed again only when the Experiment's spec changed (a round
        reads it every time; it changes with the generation, a few times in an experiment's life)."""
        if self._spec is None or self._spec[0] != source:
            self._spec = (source, ExperimentSpec.model_validate(source))
        return self._spec[1]

    def parse_trials(self, bodies: list[dict]) -> list[planner.TrialView]:
        """A planner.TrialView per Trial (what the planner reads of it, worked out once), the last
        round's where the Trial's body has not changed since (planner.kept_views)."""
        self.parsed_trials = planner.kept_views(bodies, self.parsed_trials)
        return list(self.parsed_trials.values())

    async def report_forbidden(self, refusal: WatchForbidden) -> None:
        """A watch the experiment needs is refused: the planner's rule for it decides what the
        status and Events say (once per refusal), and the executor writes it."""
        raw = {**self.body}
        status = raw["status"] = self.written.status(raw.get("status") or {})
        plan = planner.plan_watch_forbidden(status, raw["metadata"].get("generation"), refusal.message, times.now())
        await Executor(self.runtime.api, raw, None, [], self.written, self.runtime.post_event).run(plan)

    async def report_invalid_spec(self, raw: dict, status: dict, message: str, now: datetime) -> None:
        """A spec the planner cannot be given (it does not parse, or the search algorithm refuses its
        search space): the planner's rule for invalid specs decides, and the executor writes it."""
        plan = planner.plan_invalid_spec(status, raw["metadata"].get("generation"), message, now)
        await Executor(self.runtime.api, raw, None, [], self.written, self.runtime.post_event).run(plan)


def settle_refusals(refused: dict[str, planner.Refusal], trials: list[planner.TrialView]) -> None:
    """Forgets the refused creates whose trial has a final phase (the planner's verdict, written and
    seen, or the trial was otherwise finished) or is gone. Until then each round's planner is told
    again, so a failed status write is retried and the trial is never started again meanwhile."""
    if not refused:
        return  # the common round: no map of every trial's phase to build
    phases = {t.name: t.phase for t in trials}
    for name in [n for n in refused if n not in phases or phases[n] in TERMINAL_PHASES]:
        del refused[name]
