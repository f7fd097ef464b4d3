"""What the operator's runtime does with a kind the platform did not enable and with a watch the API
server refuses, over an API that answers from memory: the liveness probe counts the operator's own
watches only, an experiment of a kind that is not enabled is refused without a watch, and one whose
kind's watch is refused says so, waits without holding up the others, and goes on once allowed. (The
same against the real API server, as the chart's ServiceAccount: tests/integration/test_allowed_trial_kinds.py.)"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import itertools

import pytest

from hpo_operator.api import trial_kinds
from hpo_operator.controller import runtime as runtime_module
from hpo_operator.controller.runtime import Runtime
from hpo_operator.kube import informer as informer_module
from hpo_operator.kube.client import ApiException

JOBS = ("batch", "v1", "jobs")
UIDS = itertools.count()


class QuietWatch:
    """A watch on which nothing happens."""

    @property
    def content(self):
        async def lines():
            await asyncio.Event().wait()
            yield b""

        return lines()

    def release(self) -> None:
        pass


class MemoryApi:
    """The calls the runtime makes, answered from memory: every listing is empty, every write
    succeeds, and a resource in `refused` is refused (403) until it is taken out."""

    def __init__(self, refused: set = frozenset()):
        self.refused = set(refused)
        self.listed: list[tuple] = []
        self.status_patches: list[tuple[str, dict]] = []
        self.created: list[tuple[str, str]] = []

    async def list_raw(self, resource, namespace, label_selector=None) -> dict:
        self.listed.append(resource)
        if resource in self.refused:
            raise ApiException(status=403, reason="Forbidden")
        return {"metadata": {"resourceVersion": "1"}, "items": []}

    async def watch_raw(self, resource, namespace, version, timeout, label_selector=None):
        return QuietWatch()

    async def patch_status(self, plural, namespace, name, status) -> dict:
        self.status_patches.append((name, copy.deepcopy(status)))
        return {}

    async def create(self, plural, namespace, body) -> dict:
        self.created.append((plural, body["metadata"]["name"]))
        return {**copy.deepcopy(body), "metadata": {**body["metadata"], "uid": f"uid-{next(UIDS)}"}}

    async def create_object(self, resource, namespace, body, as_user=None) -> dict:
        self.created.append((resource[2], body["metadata"]["name"]))
        return body

    async def close(self) -> None:
        pass


def experiment(name: str, job: bool) -> dict:
    template = {
        "metadata": {"annotations": {"sim.hpo.dev/duration": "1s"}},
        "spec": {"containers": [{"name": "train", "image": "trainer:1"}]},
    }
    return {
        "apiVersion": "hpo.dev/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": 1},
        "spec": {
            "objective": {"type": "minimize", "metricName": "loss"},
            "algorithm": {"name": "random", "seed": 1},
            "parameters": [{"name": "x", "type": "double", "min": 0, "max": 1}],
            "maxTrialCount": 1,
            "trialTemplate": {"job": {"spec": {"template": template}}} if job else {"template": template},
        },
    }


async def until(predicate, what: str, timeout: float = 5) -> None:
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def conditions(patch: dict) -> dict[str, dict]:
    return {c["type"]: c for c in patch.get("conditions") or []}


def test_liveness_counts_the_operators_own_watches_not_a_refused_trial_kinds(monkeypatch):
    monkeypatch.setattr(runtime_module, "WATCH_DOWN_LIVENESS_SECONDS", 0.0)

    async def scenario():
        api = MemoryApi(refused={JOBS})
        rt = Runtime(api, lambda *a: None)
        try:
            ns = rt.namespace("ns")
            jobs = ns.workload(JOBS)
            await until(jobs.health.forbidden.is_set, "the Jobs watch to be refused")
            await until(lambda: ns.pods.synced.is_set() and ns.trials.synced.is_set(), "the own watches")
            assert jobs.health.down_since is not None
            assert rt.unhealthy() is None  # down past the limit, and refused: not the process's fault
            ns.pods.health.failed("Disconnected", ConnectionResetError())
            problem = rt.unhealthy()
            assert problem is not None and "pods in namespace ns" in problem
        finally:
            await rt.stop_all()

    asyncio.run(scenario())


def test_liveness_still_counts_a_trial_kinds_informer_whose_loop_ended(monkeypatch):
    """A bug that ends an informer's loop leaves it down for good: only a restart lists it again."""
    monkeypatch.setattr(runtime_module, "WATCH_DOWN_LIVENESS_SECONDS", 0.0)

    async def scenario():
        rt = Runtime(MemoryApi(), lambda *a: None)
        try:
            jobs = rt.namespace("ns").workload(JOBS)
            await until(jobs.synced.is_set, "the Jobs watch")
            assert rt.unhealthy() is None
            jobs.health.stopped(KeyError("metadata"))
            assert "jobs in namespace ns" in (rt.unhealthy() or "")
        finally:
            await rt.stop_all()

    asyncio.run(scenario())


def test_a_kind_the_platform_did_not_enable_is_refused_and_never_watched():
    events: list[tuple] = []

    async def scenario():
        api = MemoryApi()
        rt = Runtime(api, lambda obj, *rest: events.append(rest), trial_kinds.parse_allowed("[]"))
        try:
            rt.on_experiment(False, "ns", "jobs", "uid-jobs", experiment("jobs", job=True))
            await until(lambda: api.status_patches, "the experiment's status")
            [(name, patch)] = api.status_patches
            failed = conditions(patch)["Failed"]
            assert (name, patch["phase"], failed["reason"]) == ("jobs", "Failed", "InvalidSpec")
            assert failed["message"] == trial_kinds.not_enabled(("batch", "Job"))
            assert events == [("Warning", "InvalidSpec", failed["message"])]
            await asyncio.sleep(0.2)
            assert JOBS not in api.listed and not rt.namespaces["ns"].workloads
            assert api.created == []
        finally:
            await rt.stop_all()

    asyncio.run(scenario())


@pytest.fixture
def short_refusal_backoff(monkeypatch):
    monkeypatch.setattr(informer_module, "forbidden_delay", lambda failures: 0.2)


def test_a_refused_watch_marks_its_experiment_holds_up_no_other_and_is_mended_once_allowed(short_refusal_backoff):
    events: list[tuple] = []

    async def scenario():
        api = MemoryApi(refused={JOBS})
        rt = Runtime(api, lambda obj, *rest: events.append((obj["metadata"]["name"], *rest)))
        try:
            rt.on_experiment(False, "ns", "jobs", "uid-jobs", experiment("jobs", job=True))
            rt.on_experiment(False, "ns", "pods", "uid-pods", experiment("pods", job=False))
            await until(lambda: ("trials", "pods-0000") in api.created, "the pod experiment's trial")
            await until(lambda: any(n == "jobs" for n, _ in api.status_patches), "the Job experiment's status")
            name, patch = next(p for p in api.status_patches if p[0] == "jobs")
            watched = conditions(patch)["WorkloadsWatched"]
            assert (patch["phase"], watched["status"], watched["reason"]) == ("Created", "False", "WatchForbidden")
            assert "jobs.batch in namespace ns (403)" in watched["message"]
            assert [e for e in events if e[0] == "jobs"] == [("jobs", "Warning", "WatchForbidden", watched["message"])]
            assert not any(n.startswith("jobs-") for _, n in api.created)
            # Retried (here every 0.2 s): still refused, said only once.
            refusals = api.listed.count(JOBS)
            await until(lambda: api.listed.count(JOBS) >= refusals + 2, "the Jobs watch to be retried")
            assert len([e for e in events if e[0] == "jobs"]) == 1

            api.refused.clear()  # the RBAC is granted
            await until(lambda: ("jobs", "jobs-0000") in api.created, "the Job experiment's first Job")

            def mended():
                watched = [conditions(p).get("WorkloadsWatched") for n, p in api.status_patches if n == "jobs"]
                return [(w["status"], w["reason"]) for w in watched if w][-1] == ("True", "Watched")

            await until(mended, "the condition to be mended")
        finally:
            await rt.stop_all()

    asyncio.run(scenario())


KOPF_QUEUE: contextvars.ContextVar[list] = contextvars.ContextVar("kopf_queue")


def test_events_are_posted_from_the_context_kopf_hands_its_handlers():
    """kopf.event finds its poster in context variables of kopf's handlers: the workers that run
    the rounds post from a copy of that context, not from the one the runtime was made in."""

    def post_event(obj: dict, *rest: str) -> None:
        KOPF_QUEUE.get().append((obj["metadata"]["name"], *rest))  # LookupError outside kopf's context

    async def scenario():
        api = MemoryApi()
        rt = Runtime(api, post_event, trial_kinds.parse_allowed("[]"))
        posted: list = []

        def handler() -> None:  # as kopf calls it, in its own context
            KOPF_QUEUE.set(posted)
            rt.on_experiment(False, "ns", "jobs", "uid-jobs", experiment("jobs", job=True))

        try:
            contextvars.copy_context().run(handler)
            await until(lambda: posted, "the experiment's Event")
            assert posted[0][:3] == ("jobs", "Warning", "InvalidSpec")
        finally:
            await rt.stop_all()

    asyncio.run(scenario())
