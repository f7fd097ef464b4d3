"""Early stopping decides on complete data: the pruner holds every finished trial's whole curve.

A running trial's steps reach the pruner only as often as its log is read; a trial that finishes
between two reads has steps no read saw. These tests drive the planner and the Suggester round by
round, choosing which steps each read sees, and check that the pruner ends up with each finished
trial's metricHistory (its final log read), before and after an operator restart.
"""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest

from hpo_operator import planner
from hpo_operator.core.space import format_value
from hpo_operator.search import suggest as suggest_module
from tests.support.rounds import EXP, EXP_UID, NOW, NS, iso, make_spec, pod_running, pod_succeeded
from tests.support.simulate import MemoryCluster

ROUND = timedelta(seconds=2)


MEDIAN = {"algorithm": "median", "minTrialsRequired": 3, "warmupSteps": 2}


def spec(algorithm="random", early_stopping=MEDIAN):
    return make_spec(
        algorithm={"name": algorithm, "seed": 7},
        parameters=[{"name": "x", "type": "double", "min": 0, "max": 1}],
        parallelTrialCount=1,
        maxTrialCount=6,
        metricsCollector={"source": "StdoutLog", "intervalSeconds": 2},
        earlyStopping=early_stopping,
    )


class Run:
    """One experiment's rounds. Suggestion i's program prints `step=s loss=scale[i]·0.9^s` for
    steps 1..12; `read(i, k)` makes the next running read see steps 1..k; `finish(i)` ends its pod,
    whose final log read then has all twelve."""

    def __init__(self, spec, scales: list[float]):
        self.spec, self.scales = spec, scales
        self.cluster = MemoryCluster(lambda name: pod_running(name))
        self.suggester = planner.restore_suggester(spec, [], {})
        self.seen: dict[str, int] = {}
        self.now = NOW

    def curve(self, name: str) -> dict[int, float]:
        scale = self.scales[int(name.rsplit("-", 1)[1])]
        return {s: round(scale * 0.9**s, 6) for s in range(1, 13)}

    def log(self, name: str, last: int, stamped: bool) -> str:
        stamp = iso(self.now) + " " if stamped else ""
        return "\n".join(f"{stamp}step={s} loss={v}" for s, v in self.curve(name).items() if s <= last)

    def round(self) -> planner.Plan:
        logs = {}
        for name, pod in self.cluster.pods.items():
            running = pod["status"]["phase"] == "Running"
            logs[name] = self.log(name, self.seen.get(name, 0) if running else 12, stamped=running)
        exp = planner.ExperimentView(EXP, NS, EXP_UID, 1, self.spec, copy.deepcopy(self.cluster.status))
        plan = planner.plan(self.cluster.round_input(exp, self.suggester, logs, now=self.now))
        self.cluster.apply(plan)
        self.now += ROUND
        return plan

    def name(self, i: int) -> str:
        return f"{EXP}-{i:04d}"

    def read(self, i: int, last: int) -> None:
        self.seen[self.name(i)] = last
        self.round()

    def finish(self, i: int) -> None:
        self.cluster.pods[self.name(i)] = pod_succeeded(self.name(i))
        self.round()

    def phase(self, i: int) -> str:
        return self.cluster.trials[self.name(i)]["status"]["phase"]

    def restart(self) -> None:
        self.suggester = planner.restore_suggester(self.spec, self.cluster.views(), self.cluster.status)

    def histories(self) -> dict[str, dict[int, float]]:
        """Each decided trial's loss curve, as its status.metricHistory holds it."""
        return {
            name: {m["step"]: m["value"] for m in body["status"].get("metricHistory") or [] if m["name"] == "loss"}
            for name, body in self.cluster.trials.items()
            if body["status"].get("phase") in ("Succeeded", "EarlyStopped")
        }

    def pruner_data(self) -> dict[str, dict[int, float]]:
        """The intermediate values the study holds for each decided trial (matched by values)."""
        param = self.spec.parameters[0]
        by_x = {format_value(param, t.params["x"]): t for t in self.suggester.study.trials if t.state.is_finished()}
        result = {}
        for name, body in self.cluster.trials.items():
            if body["status"].get("phase") in ("Succeeded", "EarlyStopped"):
                x = body["spec"]["parameters"][0]["value"]
                result[name] = dict(by_x[x].intermediate_values)
        return result


def finished_between_reads(run: Run, count: int, seen: int) -> None:
    """Runs suggestions 0..count-1 one after another; the last read of each sees `seen` steps."""
    run.round()  # suggestion 0's trial and pod
    for i in range(count):
        run.read(i, seen)
        run.finish(i)  # ... and the next suggestion's trial and pod


def test_a_finished_trials_last_steps_reach_the_pruner_though_no_read_saw_them():
    run = Run(spec(), [1.0, 2.0, 3.0])
    finished_between_reads(run, 2, seen=9)
    assert [run.phase(i) for i in range(2)] == ["Succeeded", "Succeeded"]
    histories = run.histories()
    assert all(sorted(h) == list(range(1, 13)) for h in histories.values())
    assert run.pruner_data() == histories


def test_the_median_at_a_late_step_is_taken_over_every_finished_trial():
    # The scenario seen on real pods: trials whose last steps no read saw were left out of the
    # median at those steps, which then came from the few (here, the best) that a read caught.
    run = Run(spec(), [6.0, 7.0, 1.0, 2.0, 3.0])
    run.round()
    for i, seen in enumerate([9, 9, 12, 12]):
        run.read(i, seen)
        run.finish(i)
    assert [run.phase(i) for i in range(4)] == ["Succeeded"] * 4
    # Suggestion 4 (loss 3·0.9^s) is better at every step than the median of the four finished
    # trials (4·0.9^s), though worse than the two whose step 11 a read saw.
    run.read(4, 11)
    assert run.phase(4) == "Running"
    assert run.pruner_data() == run.histories()


@pytest.mark.parametrize("rebuilt", [False, True], ids=["replayed", "rebuilt-from-results"])
def test_a_study_rebuilt_after_a_restart_holds_every_finished_trials_curve(monkeypatch, rebuilt):
    if rebuilt:
        monkeypatch.setattr(suggest_module, "REPLAY_LIMIT", 0)
    run = Run(spec("tpe"), [1.0, 2.0, 6.0, 30.0, 3.0])
    finished_between_reads(run, 3, seen=12)  # reads saw every step: only the restart is tested
    run.read(3, 12)  # clearly worse than the median at each step: stopped
    assert run.phase(3) == "EarlyStopped"
    before = run.pruner_data()
    assert before == run.histories()
    run.restart()
    run.round()  # the new process's first round tells the study what the Trials say
    assert run.pruner_data() == before


def test_a_repeated_configuration_is_told_the_result_without_the_curve():
    # The repeat ran nothing: counting its curve again would weigh one trial twice in the median.
    sug = suggest_module.Suggester(spec())
    sug.suggest(0)
    sug.suggest(1)
    sug._set_key(1, sug.values(0))  # as when the sampler suggests the same values again
    sug.tell(0, suggest_module.Outcome(value=0.5, steps={1: 1.0, 2: 0.5}))
    first, repeat = sug.study.trials[:2]
    assert first.intermediate_values == {1: 1.0, 2: 0.5}
    assert repeat.value == 0.5 and repeat.intermediate_values == {}


@pytest.mark.parametrize(
    "stopping",
    [{"algorithm": "asha", "minResource": 1}, {"algorithm": "hyperband", "maxResource": 12}],
    ids=lambda s: s["algorithm"],
)
def test_a_replayed_study_holds_the_rung_records_made_before_the_restart(stopping):
    # ASHA (and each Hyperband bracket) judges a trial by the values recorded at each rung it
    # passed, which it records when asked at that step: the replay asks it at each step of each
    # finished trial, as it was asked, and Hyperband puts each trial in the same bracket again.
    run = Run(spec(early_stopping=stopping), [1.0, 2.0, 6.0, 30.0, 3.0])
    finished_between_reads(run, 3, seen=5)
    run.read(3, 12)
    assert run.phase(3) == "EarlyStopped"

    def records():
        return {t.number: t.system_attrs for t in run.suggester.study.trials if t.state.is_finished()}

    before = records()
    assert all(before.values())  # every finished trial passed a rung
    run.restart()
    run.round()
    assert records() == before
