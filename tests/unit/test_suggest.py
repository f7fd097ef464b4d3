"""Suggestions from Optuna inside the operator (hpo_operator.search.suggest)."""

import itertools

import pytest
from optuna.trial import TrialState

from hpo_operator.api.parameters import Parameter
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.core.space import normalize_assignment
from hpo_operator.search.samplers import (
    MAX_GRID_POINTS_PER_PARAMETER,
    SearchSpaceError,
    grid_size,
    grid_values,
    make_sampler,
)
from hpo_operator.search.suggest import Outcome, Recorded, Suggester

RANDOM_PARAMS = [
    {"name": "lr", "type": "double", "min": 0.0001, "max": 0.1, "log": True},
    {"name": "layers", "type": "int", "min": 1, "max": 6},
    {"name": "opt", "type": "categorical", "values": ["adam", "sgd", "rmsprop"]},
    {"name": "batch", "type": "discrete", "values": ["16", "32", "64"]},
]
GRID_PARAMS = [
    {"name": "layers", "type": "int", "min": 1, "max": 3},
    {"name": "dropout", "type": "double", "min": 0.0, "max": 0.5, "step": 0.25},
    {"name": "opt", "type": "categorical", "values": ["adam", "sgd"]},
]


def spec(algorithm="random", seed=42, params=None, settings=None, objective="minimize"):
    algo = {"name": algorithm}
    if seed is not None:
        algo["seed"] = seed
    if settings is not None:
        algo["settings"] = settings
    return ExperimentSpec.model_validate(
        {
            "objective": {"type": objective, "metricName": "loss"},
            "algorithm": algo,
            "parameters": params or (GRID_PARAMS if algorithm == "grid" else RANDOM_PARAMS),
            "maxTrialCount": 100,
            "trialTemplate": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
        }
    )


def param(**kw):
    return Parameter.model_validate({"name": "p", **kw})


def sequence(suggester, n, start=0):
    return [suggester.suggest(i) for i in range(start, start + n)]


# --- random ------------------------------------------------------------------------------------


def test_seeded_random_gives_the_same_sequence_twice():
    first = sequence(Suggester(spec(seed=7)), 12)
    second = sequence(Suggester(spec(seed=7)), 12)
    assert first == second
    assert len({tuple(s.items()) for s in first}) > 1  # not one value repeated


def test_different_seeds_give_different_sequences():
    assert sequence(Suggester(spec(seed=1)), 8) != sequence(Suggester(spec(seed=2)), 8)


def test_random_suggestions_are_canonical_values_inside_the_space():
    s = spec(seed=3)
    for values in sequence(Suggester(s), 30):
        assert list(values) == ["lr", "layers", "opt", "batch"]
        assert all(isinstance(v, str) for v in values.values())
        assert normalize_assignment(s.parameters, values) == values


def test_random_is_never_exhausted():
    sug = Suggester(spec())
    sequence(sug, 20)
    assert sug.exhausted() is False
    assert sug.suggest(20) is not None


def test_suggest_of_an_earlier_index_repeats_it_without_asking():
    sug = Suggester(spec())
    values = sequence(sug, 3)
    assert sug.suggest(1) == values[1]
    assert sug.count == 3


def test_suggest_far_ahead_asks_the_ones_in_between():
    reference = sequence(Suggester(spec()), 6)
    sug = Suggester(spec())
    assert sug.suggest(5) == reference[5]
    assert sug.count == 6
    assert sequence(sug, 6) == reference


@pytest.mark.parametrize("recorded_indexes", [[], [0, 2, 4], [0, 1, 2, 3, 4]])
def test_replay_after_a_restart_continues_exactly_where_it_left_off(recorded_indexes):
    uninterrupted = Suggester(spec(seed=11))
    before = sequence(uninterrupted, 5)
    # Results the sampler had heard of before the restart.
    uninterrupted.tell(0, Outcome(value=0.3))
    uninterrupted.tell(2, Outcome(failed=True))
    after = sequence(uninterrupted, 4, start=5)

    restarted = Suggester(spec(seed=11))
    restarted.replay({i: before[i] for i in recorded_indexes}, count=5)
    assert restarted.count == 5
    assert sequence(restarted, 5) == before
    assert sequence(restarted, 4, start=5) == after


def test_replay_of_a_sampler_that_learns_replays_the_results_in_order():
    # TPE uses the results: the replay must tell each result where it was told before the restart.
    s = spec(
        "tpe",
        seed=4,
        settings=[{"name": "nStartupTrials", "value": "3"}],
        params=[{"name": "x", "type": "double", "min": 0, "max": 1}, {"name": "n", "type": "int", "min": 1, "max": 9}],
    )
    uninterrupted = Suggester(s)
    recorded, results = {}, {}
    for i in range(8):
        values = uninterrupted.suggest(i)
        recorded[i] = Recorded(values, created=f"2024-05-01T10:{i:02d}:00Z")
        results[i] = Outcome(
            value=(float(values["x"]) - 0.3) ** 2 + int(values["n"]) / 100, at=f"2024-05-01T10:{i:02d}:30Z"
        )
        uninterrupted.tell(i, results[i])
    after = sequence(uninterrupted, 3, start=8)

    restarted = Suggester(s)
    restarted.replay(recorded, count=8)
    for i, outcome in results.items():  # the planner tells the known results after the restart
        restarted.tell(i, outcome)
    assert sequence(restarted, 8) == [dict(recorded[i].values) for i in range(8)]
    assert sequence(restarted, 3, start=8) == after


def test_replay_when_trials_of_one_round_were_created_out_of_order():
    # A round's Trials are created concurrently: trial 5 may carry an earlier creation time than
    # trial 4. The replay still asks in suggestion order (once crashed with a KeyError), and a value
    # that ran differently is handed to Optuna as it ran.
    s = spec(
        "tpe",
        seed=4,
        settings=[{"name": "nStartupTrials", "value": "2"}],
        params=[{"name": "x", "type": "double", "min": 0, "max": 1}],
    )
    uninterrupted = Suggester(s)
    recorded, results = {}, {}
    for i in range(8):
        values = uninterrupted.suggest(i)
        second = {4: 31, 5: 30}.get(i, i * 5)  # 5 "created" a second before 4
        recorded[i] = Recorded(values, created=f"2024-05-01T10:00:{second:02d}Z")
        results[i] = Outcome(value=float(values["x"]), at=f"2024-05-01T10:01:{i:02d}Z")
        uninterrupted.tell(i, results[i])
    recorded[6] = Recorded({"x": "0.5"}, created=recorded[6].created)  # ran with other values
    restarted = Suggester(s)
    restarted.replay(recorded, count=8)
    for i, outcome in results.items():
        restarted.tell(i, outcome)
    assert restarted.count == 8
    assert [restarted.suggest(i) for i in range(8)] == [dict(recorded[i].values) for i in range(8)]


def test_replay_count_comes_from_the_recorded_indexes_when_larger():
    reference = sequence(Suggester(spec()), 5)
    sug = Suggester(spec())
    sug.replay({3: reference[3]}, count=1)
    assert sug.count == 4
    assert sug.suggest(4) == reference[4]


def test_replay_keeps_going_when_a_recorded_value_differs():
    reference = sequence(Suggester(spec()), 3)
    sug = Suggester(spec())
    sug.replay({0: {"lr": "0.05", "layers": "1", "opt": "sgd", "batch": "16"}}, count=2)
    assert sug.suggest(2) == reference[2]


# --- grid ----------------------------------------------------------------------------------------


def test_grid_covers_every_combination_exactly_once_then_is_exhausted():
    sug = Suggester(spec("grid"))
    assert sug.grid_size == 3 * 3 * 2
    seen = []
    for i in range(18):
        assert not sug.exhausted()
        seen.append(tuple(sug.suggest(i).items()))
    expected = {
        (("layers", str(a)), ("dropout", str(b)), ("opt", c))
        for a, b, c in itertools.product([1, 2, 3], [0.0, 0.25, 0.5], ["adam", "sgd"])
    }
    assert len(seen) == 18
    assert set(seen) == expected
    assert sug.exhausted() is True
    assert sug.suggest(18) is None
    assert sug.suggest(30) is None
    assert sug.count == 18


def test_grid_results_can_all_be_told():
    # Optuna's GridSampler asks the study to stop once every point has a result.
    sug = Suggester(spec("grid"))
    for i in range(18):
        sug.suggest(i)
    for i in range(18):
        sug.tell(i, Outcome(value=float(i)) if i % 3 else Outcome(failed=True))
    assert [t.state for t in sug.study.get_trials(deepcopy=False)].count(TrialState.COMPLETE) == 12
    assert sug.suggest(18) is None


def test_grid_order_is_seeded():
    assert sequence(Suggester(spec("grid", seed=5)), 18) == sequence(Suggester(spec("grid", seed=5)), 18)
    assert sequence(Suggester(spec("grid", seed=5)), 18) != sequence(Suggester(spec("grid", seed=6)), 18)


def test_grid_replay_continues_with_the_same_suggestions():
    uninterrupted = Suggester(spec("grid", seed=9))
    before = sequence(uninterrupted, 7)
    uninterrupted.tell(1, Outcome(value=1.0))
    after = sequence(uninterrupted, 11, start=7)
    restarted = Suggester(spec("grid", seed=9))
    restarted.replay({i: v for i, v in enumerate(before)}, count=7)
    assert sequence(restarted, 11, start=7) == after
    assert restarted.suggest(18) is None


def test_grid_of_categorical_and_discrete_only():
    s = spec(
        "grid",
        params=[
            {"name": "opt", "type": "categorical", "values": ["a", "b"]},
            {"name": "bs", "type": "discrete", "values": ["8", "16", "32"]},
        ],
    )
    assert grid_size(s) == 6
    sug = Suggester(s)
    got = {tuple(sug.suggest(i).values()) for i in range(6)}
    assert got == set(itertools.product(["a", "b"], ["8", "16", "32"]))
    assert sug.suggest(6) is None


def test_grid_size_is_none_for_random():
    assert grid_size(spec()) is None
    assert Suggester(spec()).grid_size is None


@pytest.mark.parametrize(
    "kw, expected",
    [
        (dict(type="int", min=1, max=10, step=3), [1, 4, 7, 10]),
        (dict(type="int", min=1, max=11, step=3), [1, 4, 7, 10]),
        (dict(type="int", min=-2, max=2), [-2, -1, 0, 1, 2]),
        (dict(type="double", min=0, max=1, step=0.25), [0.0, 0.25, 0.5, 0.75, 1.0]),
        (dict(type="double", min=0, max=0.3, step=0.1), [0.0, 0.1, 0.2, 0.3]),
        (dict(type="double", min=0, max=1, step=0.3), [0.0, 0.3, 0.6, 0.9]),
        (dict(type="double", min=0.1, max=0.7, step=0.2), [0.1, 0.3, 0.5, 0.7]),
        (dict(type="categorical", values=["x", "y"]), ["x", "y"]),
        (dict(type="discrete", values=["1", "2.5"]), ["1", "2.5"]),
    ],
)
def test_grid_values(kw, expected):
    values = grid_values(param(**kw))
    assert values == expected
    if kw["type"] == "int":
        assert all(isinstance(v, int) for v in values)


def test_grid_with_too_many_points_is_refused():
    with pytest.raises(SearchSpaceError, match="larger step"):
        grid_values(param(type="double", min=0, max=1, step=1 / (MAX_GRID_POINTS_PER_PARAMETER * 2)))
    assert (
        len(grid_values(param(type="int", min=1, max=MAX_GRID_POINTS_PER_PARAMETER))) == MAX_GRID_POINTS_PER_PARAMETER
    )


# --- settings --------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["random", "grid"])
def test_settings_are_refused(algorithm):
    s = spec(algorithm, settings=[{"name": "nStartupTrials", "value": "5"}])
    with pytest.raises(SearchSpaceError, match=f"{algorithm}.*nStartupTrials"):
        make_sampler(s)
    with pytest.raises(SearchSpaceError):
        Suggester(s)


def test_empty_settings_are_fine():
    assert Suggester(spec(settings=[])).suggest(0) is not None


# --- tell ----------------------------------------------------------------------------------------


def states(sug):
    return [(t.number, t.state, t.value) for t in sug.study.get_trials(deepcopy=False)]


def test_tell_is_idempotent():
    sug = Suggester(spec())
    sequence(sug, 3)
    sug.tell(0, Outcome(value=0.5))
    sug.tell(0, Outcome(value=0.5))
    sug.tell(0, Outcome(value=0.1))  # a later, different result is ignored too
    sug.tell(1, Outcome(failed=True))
    sug.tell(1, Outcome(failed=True))
    assert states(sug) == [(0, TrialState.COMPLETE, 0.5), (1, TrialState.FAIL, None), (2, TrialState.RUNNING, None)]


def test_tell_without_a_result_waits_for_one():
    sug = Suggester(spec())
    sequence(sug, 1)
    sug.tell(0, Outcome())
    assert states(sug) == [(0, TrialState.RUNNING, None)]
    sug.tell(0, Outcome(value=2.0))
    assert states(sug) == [(0, TrialState.COMPLETE, 2.0)]


def test_tell_of_an_unknown_index_is_ignored():
    sug = Suggester(spec())
    sug.tell(5, Outcome(value=1.0))
    assert states(sug) == []
    sequence(sug, 1)
    assert states(sug) == [(0, TrialState.RUNNING, None)]


def test_study_direction_follows_the_objective():
    assert Suggester(spec(objective="minimize")).study.direction.name == "MINIMIZE"
    assert Suggester(spec(objective="maximize")).study.direction.name == "MAXIMIZE"


# --- suggestions that repeat a running configuration ---------------------------------------------

TINY = [{"name": "opt", "type": "categorical", "values": ["adam", "sgd"]}]


def first_repeat(sug):
    """Asks until a suggestion repeats an earlier one; returns (original index, repeat index)."""
    seen: dict[tuple, int] = {}
    for i in range(20):
        key = tuple(sug.suggest(i).items())
        if key in seen:
            return seen[key], i
        seen[key] = i
    raise AssertionError("no repeat in 20 suggestions of a two-value space")


def test_a_repeat_of_a_running_configuration_learns_its_result_when_it_finishes():
    sug = Suggester(spec(params=TINY, seed=5))
    original, repeat = first_repeat(sug)
    assert sug._asked[repeat].number != sug._asked[original].number
    sug.tell(original, Outcome(value=0.25))
    frozen = {t.number: t for t in sug.study.trials}
    for index in (original, repeat):
        trial = frozen[sug._asked[index].number]
        assert (trial.state, trial.value) == (TrialState.COMPLETE, 0.25)
    others = [i for i in range(sug.count) if i not in (original, repeat) and sug.values(i) != sug.values(original)]
    assert all(frozen[sug._asked[i].number].state == TrialState.RUNNING for i in others)


def test_a_rebuilt_suggester_tells_the_repeat_too():
    live = Suggester(spec(params=TINY, seed=5))
    original, repeat = first_repeat(live)
    live.suggest(repeat + 1)  # a later suggestion made a Trial before the original finished
    count = live.count
    rebuilt = Suggester(spec(params=TINY, seed=5))
    # Only suggestions that made a Trial are recorded; the repeat made none.
    recorded = {i: Recorded(live.values(i), created=f"2024-05-01T10:00:{i:02d}Z") for i in range(count) if i != repeat}
    rebuilt.replay(recorded, count=count)
    rebuilt.tell(original, Outcome(value=0.5, at="2024-05-01T10:01:00Z"))
    assert rebuilt.suggest(repeat) == live.values(repeat)
    frozen = {t.number: t for t in rebuilt.study.trials}
    assert frozen[rebuilt._asked[repeat].number].state == TrialState.COMPLETE
    assert frozen[rebuilt._asked[repeat].number].value == 0.5


# --- rebuilding a large study from its results (past REPLAY_LIMIT) ----------------------------


def _ran(algorithm, n, seed=5):
    s = spec(
        algorithm,
        seed=seed,
        params=[{"name": "x", "type": "double", "min": 0, "max": 1}, {"name": "n", "type": "int", "min": 1, "max": 9}],
    )
    first = Suggester(s)
    recorded, results = {}, {}
    for i in range(n):
        values = first.suggest(i)
        recorded[i] = Recorded(values)
        if i < n - 2:  # the last two are still running at the restart
            results[i] = Outcome(value=float(values["x"]) + int(values["n"]) / 100)
            first.tell(i, results[i])
    return s, recorded, results


def _rebuilt(s, recorded, results, monkeypatch):
    import hpo_operator.search.suggest as suggest_module

    monkeypatch.setattr(suggest_module, "REPLAY_LIMIT", 5)
    restarted = Suggester(s)
    restarted.replay(recorded, count=len(recorded))
    for i, outcome in results.items():
        restarted.tell(i, outcome)
    return restarted


@pytest.mark.parametrize("algorithm", ["tpe", "cmaes"])
def test_past_the_replay_limit_the_study_is_rebuilt_from_the_results(algorithm, monkeypatch):
    s, recorded, results = _ran(algorithm, 12)
    restarted = _rebuilt(s, recorded, results, monkeypatch)
    assert restarted.count == 12
    states = [t.state for t in restarted.study.get_trials(deepcopy=False)]
    assert states.count(TrialState.COMPLETE) == 10 and states.count(TrialState.RUNNING) == 2
    assert [restarted.suggest(i) for i in range(12)] == [dict(recorded[i].values) for i in range(12)]
    # New suggestions are new configurations: the sampler does not start its sequence over.
    new = sequence(restarted, 5, start=12)
    assert not {tuple(v.items()) for v in new} & {tuple(r.values.items()) for r in recorded.values()}
    # ... and reproducible: the same restart suggests the same.
    assert sequence(_rebuilt(s, recorded, results, monkeypatch), 5, start=12) == new


def test_a_rebuilt_trial_still_running_hears_its_result(monkeypatch):
    s, recorded, results = _ran("tpe", 12)
    restarted = _rebuilt(s, recorded, results, monkeypatch)
    restarted.suggest(12)
    restarted.tell(11, Outcome(value=0.5))
    trial = restarted.study.get_trials(deepcopy=False)[11]
    assert (trial.state, trial.value) == (TrialState.COMPLETE, 0.5)
    assert trial.params["x"] == float(recorded[11].values["x"])


@pytest.mark.parametrize("algorithm", ["grid", "random", "qmc"])
def test_samplers_whose_asks_do_not_grow_are_always_replayed_exactly(algorithm, monkeypatch):
    import hpo_operator.search.suggest as suggest_module

    monkeypatch.setattr(suggest_module, "REPLAY_LIMIT", 2)
    uninterrupted = Suggester(spec(algorithm, seed=9))
    before = sequence(uninterrupted, 7)
    after = sequence(uninterrupted, 3, start=7)
    restarted = Suggester(spec(algorithm, seed=9))
    restarted.replay({i: v for i, v in enumerate(before)}, count=7)
    assert sequence(restarted, 10) == before + after
