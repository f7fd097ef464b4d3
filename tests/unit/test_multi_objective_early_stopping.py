"""Early stopping with several objectives: successive halving on the objectives' non-dominated rank
(search/rungs.py), judged by the planner at the rungs a running trial's newly read steps reach,
against the other configurations' recorded histories; the same tests as ASHA's for one objective
(a clearly dominated trial stops, a good one goes on, nothing is judged before a trial succeeded),
plus the rank and crowding arithmetic and a restart that must not judge a rung twice."""

from __future__ import annotations

from datetime import timedelta

import optuna
import pytest

from hpo_operator.core.pareto import crowding, ranks
from hpo_operator.search import rungs
from hpo_operator.search.suggest import Outcome, Suggester
from tests.support.rounds import NOW, ago, iso, make_spec, pod_running, run, succeeded, suggested, trial_statuses

DIRECTIONS = ["maximize", "minimize"]  # (acc, latency)


def spec(**stopping):
    return make_spec(
        objective={
            "type": None,
            "metricName": None,
            "metrics": [{"metricName": "acc", "type": "maximize"}, {"metricName": "latency", "type": "minimize"}],
        },
        metricsCollector={"source": "StdoutLog", "intervalSeconds": 2},
        earlyStopping={"algorithm": "asha", **stopping},
        parallelTrialCount=4,
        maxTrialCount=10,
    )


# =============================================================================================
# ranks, crowding, promotion
# =============================================================================================


def test_ranks_peel_the_fronts_off_one_after_another():
    points = [(1, 5), (2, 2), (5, 1), (3, 3), (6, 6), (4, 4)]
    assert ranks(points, ["minimize", "minimize"]) == [0, 0, 0, 1, 3, 2]


def test_crowding_keeps_the_extremes_and_prefers_the_lonely():
    points = [(0.0, 10.0), (1.0, 9.0), (1.1, 8.9), (5.0, 5.0), (10.0, 0.0)]
    d = crowding(points)
    assert d[0] == d[-1] == float("inf")
    assert d[3] > d[1] and d[3] > d[2]


def test_a_dominated_point_is_not_promoted_and_a_front_point_is():
    others = [(0.9, 10.0), (0.8, 5.0)]
    assert rungs.promoted((0.5, 20.0), others, DIRECTIONS, 3) == (False, 2, 3)
    ok, position, n = rungs.promoted((0.95, 9.0), others, DIRECTIONS, 3)
    assert ok and position == 0 and n == 3


def test_on_one_front_the_crowded_point_goes_and_the_lonely_one_stays():
    # All four are on the front: the extremes are kept first (NSGA-II's crowding distance), then the
    # less crowded; with reductionFactor 2, two of four go on.
    others = [(1.0, 10.0), (0.0, 0.0), (0.5, 5.0)]
    assert rungs.promoted((0.51, 5.1), others, DIRECTIONS, 2) == (False, 3, 4)
    assert rungs.promoted((1.1, 11.0), others, DIRECTIONS, 2)[0] is True


def test_one_in_reduction_factor_goes_on():
    # Nine points on one diagonal front-ish: rank decides first, so the three of rank 0 go on only if
    # they are among the best 9 // 3.
    front = [(1.0 - i / 10, float(i)) for i in range(3)]
    worse = [(0.1, 50.0 + i) for i in range(5)]
    assert rungs.promoted((0.05, 90.0), front + worse, DIRECTIONS, 3)[0] is False
    assert rungs.promoted((0.99, 0.5), front + worse, DIRECTIONS, 3)[0] is True


def curve(points: dict[int, tuple[float, float]], start: int = 0) -> rungs.Curve:
    entries = []
    for step, (acc, lat) in points.items():
        stamp = iso(NOW + timedelta(seconds=start + step))
        entries += [("acc", step, acc, stamp), ("latency", step, lat, stamp)]
    return rungs.curve(entries, ["acc", "latency"])


def test_a_trial_is_judged_only_against_those_that_reached_the_rung_before_it():
    late_but_good = {"a": curve({1: (0.9, 1.0)}, start=100), "b": curve({1: (0.95, 0.5)}, start=100)}
    mine = curve({1: (0.1, 9.0)}, start=0)
    # First at rung 1: no one to compare with, it goes on.
    assert rungs.judge(mine, {1}, late_but_good, DIRECTIONS, 1, 3) is None
    early = {k: curve({1: v[0][2]}, start=-10) for k, v in late_but_good.items()}
    verdict = rungs.judge(mine, {1}, early, DIRECTIONS, 1, 3)
    assert verdict is not None and (verdict.rung, verdict.position, verdict.competitors, verdict.kept) == (1, 2, 3, 1)


def test_a_rung_reached_in_steps_read_before_is_not_judged_again():
    others = {"a": curve({1: (0.9, 1.0), 3: (0.95, 0.9)}, start=-10), "b": curve({1: (0.95, 0.5)}, start=-10)}
    mine = curve({1: (0.1, 9.0), 2: (0.2, 8.0)})
    assert rungs.judge(mine, {2}, others, DIRECTIONS, 1, 3) is None  # rung 1 was step 1's, read before
    assert rungs.judge(mine, {1, 2}, others, DIRECTIONS, 1, 3) is not None


def test_the_automatic_min_resource_is_asha_s():
    assert rungs.auto_min_resource(None) is None
    assert rungs.auto_min_resource(12) == 1
    assert rungs.auto_min_resource(450) == 4


# =============================================================================================
# the planner
# =============================================================================================


def history(points: dict[int, tuple[float, float]], at: float) -> list[dict]:
    out = []
    for step, (acc, lat) in points.items():
        stamp = ago(at - step)
        out += [{"name": "acc", "value": acc, "step": step, "timestamp": stamp}]
        out += [{"name": "latency", "value": lat, "step": step, "timestamp": stamp}]
    return out


GOOD = {1: (0.80, 2.0), 2: (0.85, 2.0), 3: (0.90, 2.0)}


def finished(i: int, points=GOOD, at: float = 600):
    t = succeeded(i, 0.0, metricHistory=history(points, at))
    t.body["status"].update(objectiveValues=list(points[max(points)]), completionTime=ago(at - 10))
    del t.body["status"]["objectiveValue"]
    return t


def running_log(points: dict[int, tuple[float, float]]) -> str:
    return "\n".join(
        f"{iso(NOW - timedelta(seconds=10 - s))} step={s} acc={a} latency={lat}" for s, (a, lat) in points.items()
    )


def test_a_dominated_running_trial_stops_at_its_first_rung_with_its_values():
    trials = [finished(0), finished(1), finished(2), suggested(3, "Running", startTime=ago(20))]
    bad = {1: (0.10, 9.0)}
    plan = run(spec(minResource=1), trials, {"exp-0003": pod_running("exp-0003")}, logs={"exp-0003": running_log(bad)})
    st = trial_statuses(plan)["exp-0003"]
    assert st["phase"] == "EarlyStopped" and st["objectiveValues"] == [0.10, 9.0]
    assert "rung 1" in st["message"] and "3 of the 4 configurations" in st["message"]
    assert "exp-0003" in plan.delete_workloads


def test_a_non_dominated_running_trial_goes_on():
    trials = [finished(0), finished(1), finished(2), suggested(3, "Running", startTime=ago(20))]
    fast = {1: (0.5, 0.5)}  # worse accuracy, but faster than any: on the front
    plan = run(spec(minResource=1), trials, {"exp-0003": pod_running("exp-0003")}, logs={"exp-0003": running_log(fast)})
    assert trial_statuses(plan)["exp-0003"]["phase"] == "Running"


def test_nothing_is_stopped_before_a_trial_succeeded_with_the_automatic_min_resource():
    others = [suggested(i, "Running", startTime=ago(60), metricHistory=history(GOOD, 30)) for i in range(3)]
    trials = [*others, suggested(3, "Running", startTime=ago(20))]
    pods = {t.name: pod_running(t.name) for t in trials}
    bad = {1: (0.10, 9.0)}
    plan = run(spec(), trials, pods, logs={"exp-0003": running_log(bad)})
    assert trial_statuses(plan)["exp-0003"]["phase"] == "Running"


def test_the_study_of_several_objectives_hears_a_stopped_trial_as_pruned():
    s = spec(minResource=1)
    sug = Suggester(s)
    assert isinstance(sug.study.pruner, optuna.pruners.NopPruner)
    sug.suggest(0)
    assert not sug.should_stop(0, {1: 0.5})
    sug.tell(0, Outcome(pruned=True, steps=None))
    assert sug.study.trials[0].state == optuna.trial.TrialState.PRUNED


@pytest.mark.parametrize("algorithm", ["median", "hyperband"])
def test_other_rules_stay_single_objective_in_the_schema(algorithm):
    from hpo_operator.api import crd

    rules = [
        v["rule"]
        for v in crd.experiment_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
            "x-kubernetes-validations"
        ]
    ]
    rule = next(r for r in rules if "earlyStopping.algorithm" in r)
    assert "'asha'" in rule and algorithm not in rule
