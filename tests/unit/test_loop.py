"""The experiment loop's own part of a round, without a cluster: the logs it reads for the planner, a
spec the planner cannot be given, and the refused creates it keeps between rounds."""

from __future__ import annotations

import asyncio
import json
import time

from hpo_operator import planner
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.api.status import METRIC_HISTORY_LIMIT
from hpo_operator.controller import logs as logs_module
from hpo_operator.controller import loop as loop_module
from hpo_operator.controller.logs import PodLogs
from hpo_operator.controller.loop import RECONCILE_INTERVAL, ExperimentLoop, settle_refusals
from hpo_operator.controller.pending import Pacing
from hpo_operator.core import metrics
from hpo_operator.core.metrics import Sample
from hpo_operator.core.podstate import PodObservation
from hpo_operator.kube.client import ApiException


class FakeApi:
    def __init__(self) -> None:
        self.patches: list[tuple[str, str, dict]] = []

    async def patch_status(self, plural: str, namespace: str, name: str, status: dict) -> dict:
        self.patches.append((plural, name, json.loads(json.dumps(status))))
        return {}


class FakeRuntime:
    def __init__(self) -> None:
        self.api = FakeApi()
        self.events: list[tuple] = []
        self.authority = None  # tenancy off
        self.pacing = Pacing()

    def post_event(self, obj: dict, *rest: str) -> None:
        self.events.append((obj["metadata"]["name"], *rest))

    def namespace(self, name: str):
        raise AssertionError("a round whose spec does not parse reads nothing more")


def test_a_spec_that_does_not_parse_is_failed_by_the_planners_rule_and_written_once():
    rt = FakeRuntime()
    body = {
        "apiVersion": "hpo.dev/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": "exp", "namespace": "ns", "uid": "uid-exp", "generation": 2},
        "spec": {"maxTrialCount": "many"},
        "status": {
            "phase": "Running",
            "trials": 1,
            "conditions": [
                {"type": "Running", "status": "True", "reason": "Running", "message": "", "lastTransitionTime": "t0"}
            ],
        },
    }
    loop = ExperimentLoop(rt, ("ns", "exp"), "uid-exp", body)
    assert asyncio.run(loop.reconcile()) == RECONCILE_INTERVAL
    [(plural, name, patch)] = rt.api.patches
    assert (plural, name) == ("experiments", "exp")
    assert set(patch) == {"phase", "conditions"} and patch["phase"] == "Failed"
    failed = patch["conditions"][-1]
    assert (failed["type"], failed["status"], failed["reason"], failed["observedGeneration"]) == (
        "Failed",
        "True",
        "InvalidSpec",
        2,
    )
    assert "maxTrialCount" in failed["message"]
    assert rt.events == [("exp", "Warning", "InvalidSpec", failed["message"])]
    # The write is remembered like any plan's (PendingWrites): the next round, before the watch
    # shows it, writes and says nothing again.
    assert loop.written.experiment_status["phase"] == "Failed"
    asyncio.run(loop.reconcile())
    assert len(rt.api.patches) == 1 and len(rt.events) == 1


def test_a_turn_with_nothing_new_runs_no_round_and_writes_only_what_waits_once_its_turn_came():
    """The queue hands the experiment over for the turn of its waiting status: that turn reads no
    informer and plans nothing (FakeRuntime.namespace would fail the test), it writes the counts
    that waited, and asks for its next turn when its next round is due."""
    rt = FakeRuntime()
    body = {"metadata": {"name": "exp", "namespace": "ns", "uid": "uid-exp"}, "spec": {}, "status": {"trials": 1}}
    loop = ExperimentLoop(rt, ("ns", "exp"), "uid-exp", body)
    loop.event = False
    loop.round_due = time.monotonic() + 4
    loop.written.status(body["status"])
    loop.written.deferred = {"trials": 2}
    loop.written.status_deferral.turn = time.monotonic() + 0.3
    after, failed, _ = asyncio.run(loop.turn())
    assert rt.api.patches == [] and not failed and 0 < after <= 0.3  # not yet: again at its turn
    time.sleep(after)
    after, failed, _ = asyncio.run(loop.turn())
    assert rt.api.patches == [("experiments", "exp", {"trials": 2})]
    assert not failed and 3 < after <= 4 and loop.written.deferred is None


def test_a_turn_after_an_event_runs_a_round_and_a_failed_one_is_retried_as_a_round():
    class Failing(FakeRuntime):
        def namespace(self, name: str):
            raise ApiException(status=500, reason="down")

        class queue:
            @staticmethod
            def failures(key) -> int:
                return 0

    rt = Failing()
    body = {"metadata": {"name": "exp", "namespace": "ns", "uid": "uid-exp"}, "spec": {}, "status": {}}
    loop = ExperimentLoop(rt, ("ns", "exp"), "uid-exp", body)
    loop.round_due = time.monotonic() + 100
    loop.event = True
    after, failed, gap = asyncio.run(loop.turn())
    assert failed and after is None and loop.event  # the queue's backoff, then a round again
    assert gap > 0


def view(name: str, phase: str | None) -> planner.TrialView:
    return planner.TrialView(name, f"uid-{name}", {"metadata": {"name": name}, "status": {"phase": phase}})


def test_a_refusal_is_kept_until_the_trial_is_final_or_gone():
    refused = {"pending": "no", "failed": "no", "killed": "no", "gone": "no"}
    settle_refusals(refused, [view("pending", "Pending"), view("failed", "Failed"), view("killed", "Killed")])
    assert refused == {"pending": "no"}


class LogApi:
    def __init__(self) -> None:
        self.read: list[str] = []

    async def pod_log(self, namespace: str, pod: str, **kw) -> str:
        self.read.append(pod)
        return "loss=0.5"


def test_logs_are_chosen_by_the_rounds_observations():
    """The loop observes each pod once (planner.observe_pods) and reads the logs the planner will
    want by those observations: here the pod's body still looks Running, but the round observed it
    succeeded without the objective in its termination message, so its log is read."""
    spec = ExperimentSpec.model_validate(
        {
            "objective": {"type": "minimize", "metricName": "loss"},
            "algorithm": {"name": "random"},
            "maxTrialCount": 1,
            "parameters": [{"name": "x", "type": "double", "min": 0, "max": 1}],
            "trialTemplate": {"template": {"spec": {"containers": [{"name": "train", "image": "t:1"}]}}},
        }
    )
    trial = view("exp-0000", "Running")
    pod = {
        "metadata": {"name": "exp-0000", "namespace": "ns", "uid": "pod-uid"},
        "spec": {"containers": [{"name": "train"}]},
        "status": {"phase": "Running"},
    }
    api = LogApi()
    observed = {"exp-0000": PodObservation("Succeeded", "Completed", termination_message='{"acc": 1}')}
    outputs = asyncio.run(PodLogs(api).wanted(spec, [trial], {"exp-0000": pod}, observed))
    output = outputs["exp-0000"]
    assert output.complete and output.latest == {"loss": Sample("loss", 0.5)} and api.read == ["exp-0000"]


# --- the output a round reads: parsed in a thread, within a budget, incrementally --------------


def es_spec(**collector) -> ExperimentSpec:
    return ExperimentSpec.model_validate(
        {
            "objective": {"type": "minimize", "metricName": "loss"},
            "algorithm": {"name": "random"},
            "maxTrialCount": 1,
            "parameters": [{"name": "x", "type": "double", "min": 0, "max": 1}],
            "metricsCollector": {"source": "StdoutLog", "intervalSeconds": 1, **collector},
            "earlyStopping": {"algorithm": "median"},
            "trialTemplate": {"template": {"spec": {"containers": [{"name": "train", "image": "t:1"}]}}},
        }
    )


POD = {
    "metadata": {"name": "exp-0000", "namespace": "ns", "uid": "pod-uid"},
    "spec": {"containers": [{"name": "train"}]},
    "status": {"phase": "Running"},
}


def stamp(second: int) -> str:
    return metrics.nanos_stamp(1_700_000_000_000_000_000 + second * 1_000_000_000)


def test_with_tenancy_a_running_pods_log_is_read_as_the_trial_account_each_time():
    """Both requests, the first (its last lines) and the next (on from sinceTime), impersonate the
    namespace's trial account: a trial's output is read with its namespace's rights."""
    api, spec = GrowingLog(), es_spec()
    api.print(0, "step=1 loss=1")
    logs = PodLogs(api, as_user="system:serviceaccount:ns:hpo-trial-runner")
    read_round(logs, spec)
    logs.kept[next(iter(logs.kept))].read_at = -10.0  # intervalSeconds later
    api.print(1, "step=2 loss=0.5")
    read_round(logs, spec)
    assert [r.get("as_user") for r in api.requests] == ["system:serviceaccount:ns:hpo-trial-runner"] * 2
    assert "since_time" in api.requests[1]


class GrowingLog:
    """A log the API server serves as a kubelet does: lines with their times, from sinceTime on
    (inclusive), or its last tailLines."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.requests: list[dict] = []

    def print(self, second: int, text: str) -> None:
        self.lines.append((stamp(second), text))

    async def pod_log(self, namespace: str, pod: str, **kw) -> str:
        self.requests.append(kw)
        lines = self.lines
        if "since_time" in kw:
            since = metrics.stamp_nanos(kw["since_time"])
            lines = [(t, s) for t, s in lines if metrics.stamp_nanos(t) >= since]
        else:
            lines = lines[-kw["tail_lines"] :]
        return "".join(f"{t} {s}\n" for t, s in lines)


def read_round(logs: PodLogs, spec: ExperimentSpec, phase: str = "Running") -> metrics.Output:
    observed = {"exp-0000": PodObservation(phase, phase)}
    outputs = asyncio.run(logs.wanted(spec, [view("exp-0000", "Running")], {"exp-0000": POD}, observed))
    return outputs["exp-0000"]


def test_a_running_pods_log_is_read_on_from_its_last_line_and_kept_as_samples(monkeypatch):
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    clock = [0.0]
    api, spec = GrowingLog(), es_spec()
    logs = PodLogs(api)
    # Three lines of the same time (as a program that prints fast, or KWOK's files, has them).
    for step in (1, 2, 3):
        api.print(0, f"step={step} loss={1 / step}")
    first = read_round(logs, spec)
    assert [(s.step, s.timestamp) for s in first.history] == [(1, stamp(0)), (2, stamp(0)), (3, stamp(0))]
    api.print(0, "step=4 loss=0.2")
    api.print(1, "step=5 loss=0.1")
    clock[0] = 0.5
    assert read_round(logs, spec).history == first.history  # not read again before intervalSeconds
    clock[0] = 1.0
    second = read_round(logs, spec)
    assert [s.step for s in second.history] == [1, 2, 3, 4, 5]  # each line once
    assert second.latest["loss"] == metrics.Sample("loss", 0.1, 5, stamp(1))
    assert "since_time" not in api.requests[0] and api.requests[1]["since_time"] == stamp(0)
    # Kept between rounds: samples, no text.
    [reading] = logs.kept.values()
    assert reading.text is None and not reading.pending


def test_a_running_pods_samples_are_bounded_by_the_status_history(monkeypatch):
    monkeypatch.setattr(time, "monotonic", lambda: 0.0)
    api, spec = GrowingLog(), es_spec()
    for step in range(1, 1001):
        api.print(step, f"step={step} loss=1")
    output = read_round(PodLogs(api), spec)
    assert len(output.history) == METRIC_HISTORY_LIMIT and output.history[-1].step == 1000


def test_a_finished_log_is_parsed_over_rounds_within_the_budget_and_read_once(monkeypatch):
    """One line per round (a budget that is spent at once): the planner is told the output is not
    complete until the last line is parsed, and the log is read from the API server once."""
    monkeypatch.setattr(logs_module, "ROUND_SECONDS", 0.0)
    api = LogApi()
    api_lines = [f"step={s} loss={s}" for s in range(1, 6)]

    async def pod_log(namespace, pod, **kw):
        api.read.append(pod)
        return "\n".join(api_lines) + "\n"

    api.pod_log = pod_log
    spec = ExperimentSpec.model_validate(
        {**es_spec().model_dump(by_alias=True, exclude_none=True), "earlyStopping": None}
    )
    logs = PodLogs(api)
    seen = [read_round(logs, spec, "Succeeded") for _ in range(7)]
    # Round 1 reads the termination message (a line's worth), then the log, one line a round.
    assert [o.complete for o in seen] == [False, False, False, False, False, True, True]
    assert [len(o.history) for o in seen] == [0, 1, 2, 3, 4, 5, 5]
    assert api.read == ["exp-0000"]


def test_a_round_parses_until_its_threads_cpu_passes_the_budget(monkeypatch):
    """With the thread's own CPU clock: 20,000 lines take longer than a 10 ms budget, so the first
    round parses part of them and the next rounds the rest."""
    monkeypatch.setattr(logs_module, "ROUND_SECONDS", 0.01)
    api = LogApi()

    async def pod_log(namespace, pod, **kw):
        return "".join(f"step={s} loss={s}\n" for s in range(1, 20_001))

    api.pod_log = pod_log
    spec = ExperimentSpec.model_validate(
        {**es_spec().model_dump(by_alias=True, exclude_none=True), "earlyStopping": None}
    )
    logs = PodLogs(api)
    read_round(logs, spec, "Succeeded")  # the message, then the log read (and parsed as far as it goes)
    first = read_round(logs, spec, "Succeeded")
    assert not first.complete
    rounds = 2
    while not (output := read_round(logs, spec, "Succeeded")).complete:
        rounds += 1
    assert rounds > 2 and output.latest["loss"] == Sample("loss", 20000.0, 20000)


def test_termination_messages_count_against_the_rounds_budget(monkeypatch):
    """A round whose budget is spent at once reads one termination message: 100 trials that
    succeed together cannot make one round parse 100 hostile messages."""
    monkeypatch.setattr(logs_module, "ROUND_SECONDS", 0.0)
    spec = ExperimentSpec.model_validate(
        {
            **es_spec(source="TerminationMessage").model_dump(by_alias=True, exclude_none=True),
            "earlyStopping": None,
        }
    )
    names = ["exp-0000", "exp-0001"]
    pods = {n: {**POD, "metadata": {**POD["metadata"], "name": n, "uid": f"uid-{n}"}} for n in names}
    observed = {n: PodObservation("Succeeded", "Completed", termination_message='{"loss": 0.5}') for n in names}
    logs = PodLogs(LogApi())
    views = [view(n, "Running") for n in names]
    first = asyncio.run(logs.wanted(spec, views, pods, observed))
    assert [first[n].complete for n in names] == [True, False]
    second = asyncio.run(logs.wanted(spec, views, pods, observed))
    assert [second[n].complete for n in names] == [True, True] and second["exp-0001"].latest["loss"].value == 0.5


def test_an_experiment_event_after_the_operator_stopped_starts_no_loop_and_no_informer():
    """kopf can hand over an Experiment event after its cleanup stopped every loop and closed the
    API client: nothing may be started on that closed client (its informers would fail, and log a
    traceback, until the process ends)."""
    from hpo_operator.controller.runtime import Runtime

    class ClosableApi:
        closed = False

        async def close(self) -> None:
            self.closed = True

    async def scenario() -> Runtime:
        runtime = Runtime(ClosableApi(), lambda *a: None)  # type: ignore[arg-type]
        await runtime.stop_all()
        runtime.on_experiment(False, "ns", "late", "uid-1", {"metadata": {"name": "late"}, "spec": {}})
        return runtime

    runtime = asyncio.run(scenario())
    assert runtime.api.closed
    assert runtime.loops == {} and runtime.namespaces == {}


def test_rounds_of_job_or_resource_trials_gather_events_for_longer_than_pod_trials():
    """A Job's trial moves at its controllers' pace, so its rounds start MIN_WORKLOAD_ROUND_GAP apart
    (several events to a round); a pod trial's keep the short gap (its replacements wait on it)."""
    from tests.support.experiments import as_job, experiment

    class Namespace:
        def synced(self) -> bool:
            return False  # the round stops here, after reading its kind

        async def watch_kind(self, kind):
            return None

    class Runtime(FakeRuntime):
        allowed_kinds = None

        def namespace(self, name: str):
            return Namespace()

    pods = experiment("exp", [{"name": "x", "type": "double", "min": 0, "max": 1}], annotations={}, max_trials=4)
    for body, gap in ((pods, loop_module.MIN_ROUND_GAP), (as_job(pods), loop_module.MIN_WORKLOAD_ROUND_GAP)):
        body["metadata"].update(namespace="ns", uid="uid-exp")
        loop = ExperimentLoop(Runtime(), ("ns", "exp"), "uid-exp", body)
        asyncio.run(loop.reconcile())
        assert loop.min_gap == gap
        loop.event = True
        loop.ready = lambda: asyncio.sleep(0, True)  # type: ignore[method-assign]
        _, failed, after = asyncio.run(loop.turn())
        assert not failed and gap - 0.05 < after <= gap
    assert loop_module.MIN_WORKLOAD_ROUND_GAP > loop_module.MIN_ROUND_GAP
