"""Several objectives' pure functions (hpo_operator.core.pareto): constraints, the Pareto front and
the hypervolume, checked against brute force on random points."""

from __future__ import annotations

import itertools
import random
import time

import pytest

from hpo_operator.api.spec import MetricConstraint
from hpo_operator.core.pareto import (
    HYPERVOLUME_MAX_FRONT,
    SummaryCache,
    dominates,
    feasible,
    front,
    hypervolume,
    hypervolume_affordable,
    minimised,
    summary,
    violations,
)


def brute_front(points, directions):
    """Every point no other point dominates, compared with all the others."""
    mins = {k: minimised(v, directions) for k, v in points.items()}
    return {k for k in points if not any(dominates(mins[o], mins[k]) for o in points if o != k)}


def brute_hypervolume(points, directions, reference):
    """Cells of the grid that every point's and the reference's coordinates make, counted when
    some point dominates the cell's lower corner."""
    ref = minimised(reference, directions)
    pts = [minimised(p, directions) for p in points]
    axes = [sorted({p[d] for p in pts if p[d] < ref[d]} | {ref[d]}) for d in range(len(ref))]
    total = 0.0
    for cell in itertools.product(*(range(len(a) - 1) for a in axes)):
        low = [axes[d][i] for d, i in enumerate(cell)]
        if any(all(p[d] <= low[d] for d in range(len(ref))) for p in pts):
            size = 1.0
            for d, i in enumerate(cell):
                size *= axes[d][i + 1] - axes[d][i]
            total += size
    return total


def random_points(rng, n, dims, discrete):
    # Discrete values make ties and duplicates, where fronts go wrong first.
    draw = (lambda: float(rng.randint(0, 5))) if discrete else rng.random
    return {f"t{i:03d}": [draw() for _ in range(dims)] for i in range(n)}


DIRECTIONS = {1: ["minimize"], 2: ["maximize", "minimize"], 3: ["minimize", "maximize", "minimize"]}
DIRECTIONS[4] = ["maximize", "minimize", "minimize", "maximize"]


@pytest.mark.parametrize("dims", [1, 2, 3, 4])
@pytest.mark.parametrize("discrete", [False, True], ids=["continuous", "ties"])
def test_the_front_is_the_points_no_other_dominates(dims, discrete):
    rng = random.Random(dims * 10 + discrete)
    for _ in range(30):
        points = random_points(rng, rng.randint(0, 40), dims, discrete)
        assert set(front(points, DIRECTIONS[dims])) == brute_front(points, DIRECTIONS[dims])


def test_the_front_is_ordered_best_first_by_the_first_objective_then_by_the_given_order():
    points = {"b": [0.9, 10.0], "a": [0.9, 10.0], "c": [0.5, 5.0], "d": [0.95, 20.0], "e": [0.4, 50.0]}
    # val_acc maximised, latency minimised: e is dominated by c; a and b are equal (both kept,
    # in the order given).
    assert front(points, ["maximize", "minimize"]) == ["d", "b", "a", "c"]


def test_equal_points_are_all_on_the_front():
    assert front({"x": [1.0, 2.0], "y": [1.0, 2.0]}, ["minimize", "minimize"]) == ["x", "y"]


@pytest.mark.parametrize("dims", [1, 2, 3, 4])
@pytest.mark.parametrize("discrete", [False, True], ids=["continuous", "ties"])
def test_the_hypervolume_is_the_dominated_volume_of_the_grids_cells(dims, discrete):
    rng = random.Random(100 + dims * 10 + discrete)
    directions = DIRECTIONS[dims]
    # A reference inside the points' range, so some points lie beyond it and must add nothing.
    reference = (
        [1.0 if d == "maximize" else 4.0 for d in directions]
        if discrete
        else [0.1 if d == "maximize" else 0.9 for d in directions]
    )
    for _ in range(20):
        points = list(random_points(rng, rng.randint(0, 12 if dims < 4 else 8), dims, discrete).values())
        assert hypervolume(points, directions, reference) == pytest.approx(
            brute_hypervolume(points, directions, reference), abs=1e-12
        )


def test_the_hypervolume_of_two_points_is_the_area_of_their_union():
    # Minimise both up to (10, 10): (2, 6) covers 8x4=32, (5, 3) covers 5x7=35, together 32+35-5x4.
    assert hypervolume([[2, 6], [5, 3]], ["minimize", "minimize"], [10, 10]) == 47
    # The first objective maximised: a reference of 10 is better than both points, so nothing counts;
    # from -10, (5, 3) beats (2, 6) in both and alone covers 15x7.
    assert hypervolume([[2, 6], [5, 3]], ["maximize", "minimize"], [10, 10]) == 0
    assert hypervolume([[2, 6], [5, 3]], ["maximize", "minimize"], [-10, 10]) == 105


def test_a_point_beyond_the_reference_adds_nothing():
    assert hypervolume([[11, 1]], ["minimize", "minimize"], [10, 10]) == 0
    assert hypervolume([[10, 1]], ["minimize", "minimize"], [10, 10]) == 0
    assert hypervolume([], ["minimize", "minimize"], [10, 10]) == 0


def sphere(rng, n, dims):
    """Points on a sphere: all non-dominated, the worst case for the front and the slicing."""
    points = []
    for _ in range(n):
        v = [abs(rng.gauss(0, 1)) for _ in range(dims)]
        norm = sum(x * x for x in v) ** 0.5
        points.append([x / norm for x in v])
    return points


@pytest.mark.parametrize("dims", sorted(HYPERVOLUME_MAX_FRONT))
def test_the_hypervolume_of_the_largest_front_computed_is_quick(dims):
    points = sphere(random.Random(dims), HYPERVOLUME_MAX_FRONT[dims], dims)
    assert hypervolume_affordable(len(points), dims) and not hypervolume_affordable(len(points) + 1, dims)
    started = time.perf_counter()
    volume = hypervolume(points, ["minimize"] * dims, [1.1] * dims)
    assert time.perf_counter() - started < 3  # about half a second alone; the machine is shared
    assert 0 < volume < 1.1**dims


def test_two_objectives_of_ten_thousand_trials_all_on_the_front_are_quick():
    points = dict(enumerate(sphere(random.Random(2), 10_000, 2)))
    started = time.perf_counter()
    assert len(front(points, ["minimize", "minimize"])) == 10_000
    hypervolume(list(points.values()), ["minimize", "minimize"], [1.1, 1.1])
    assert hypervolume_affordable(10_000, 2)
    assert time.perf_counter() - started < 3


# --- the planner's cache of fronts ------------------------------------------------------------------


@pytest.mark.parametrize("dims", [2, 3])
def test_the_cache_answers_what_summary_computes_as_points_come_change_and_go(dims):
    rng = random.Random(dims)
    directions, reference = DIRECTIONS[dims], [5.0 if d == "minimize" else 0.0 for d in DIRECTIONS[dims]]
    cache = SummaryCache()
    points: dict[str, list[float]] = {}
    for step in range(300):
        move = rng.random()
        if move < 0.6 or not points:  # a trial succeeds (ties and duplicates: small integers)
            # Named so that new ones sort among the others by name, not after them.
            points[f"{rng.choice('abcdef')}{step:03d}"] = [float(rng.randint(0, 5)) for _ in range(dims)]
        elif move < 0.7:  # one's values change (its status rewritten)
            points[rng.choice(sorted(points))] = [float(rng.randint(0, 5)) for _ in range(dims)]
        elif move < 0.75:  # one goes (deleted, or found infeasible)
            del points[rng.choice(sorted(points))]
        # else: a round that changed no result
        given = dict(rng.sample(sorted(points.items()), len(points)))  # in any order: ties fall by key
        assert cache.summary("exp", given, directions, reference) == summary(
            dict(sorted(given.items())), directions, reference
        )
    # Every path was taken: the same points, new ones added, and others.
    assert cache.hits > 0 and cache.extended > 0 and cache.misses > 1


def test_an_unchanged_set_of_points_is_answered_without_computing_again():
    points = {f"t{i}": [float(i), float(10 - i)] for i in range(10)}
    cache = SummaryCache()
    first = cache.summary("exp", points, ["minimize", "minimize"], [20.0, 20.0])
    again = cache.summary("exp", dict(points), ["minimize", "minimize"], [20.0, 20.0])
    assert (cache.hits, cache.misses) == (1, 1) and again is first
    assert first == summary(points, ["minimize", "minimize"], [20.0, 20.0]) and len(first.front) == 10
    # Another experiment, another reference point or changed values: not the same question.
    cache.summary("other", points, ["minimize", "minimize"], [20.0, 20.0])
    cache.summary("exp", points, ["minimize", "minimize"], [30.0, 30.0])
    cache.summary("exp", {**points, "t0": [0.0, 11.0]}, ["minimize", "minimize"], [30.0, 30.0])
    assert (cache.hits, cache.misses) == (1, 4)


def test_the_cache_keeps_the_experiments_used_last():
    cache = SummaryCache(size=2)
    points = {"a": [1.0, 2.0]}
    for key in ["x", "y", "z", "y", "x"]:
        cache.summary(key, points, ["minimize", "minimize"], None)
    assert cache.misses == 4 and cache.hits == 1  # x was dropped for z; y kept


def test_experiments_rounds_in_threads_of_their_own_get_their_own_answers():
    from concurrent.futures import ThreadPoolExecutor

    cache = SummaryCache(size=3)  # fewer entries than experiments: they evict each other too
    directions = ["minimize", "maximize"]

    def rounds(experiment: int) -> bool:
        rng = random.Random(experiment)
        points: dict[str, list[float]] = {}
        for step in range(150):
            points[f"t{step:03d}"] = [float(rng.randint(0, 9)), float(rng.randint(0, 9))]
            answer = cache.summary(experiment, points, directions, [10.0, 0.0])
            if answer != summary(dict(sorted(points.items())), directions, [10.0, 0.0]):
                return False
        return True

    with ThreadPoolExecutor(max_workers=6) as pool:
        assert all(pool.map(rounds, range(6)))


def test_violations_say_how_far_each_bound_is_broken():
    constraints = [
        MetricConstraint(metric_name="memory_gb", max=16),
        MetricConstraint(metric_name="latency_ms", min=1, max=50),
        MetricConstraint(metric_name="throughput", min=100),
    ]
    metrics = {"memory_gb": 12.0, "latency_ms": 70.0, "throughput": 100.0, "other": 1.0}
    assert violations(constraints, metrics) == [-4.0, 20.0, 0.0]
    assert not feasible(constraints, metrics)
    assert feasible(constraints, {**metrics, "latency_ms": 50.0})
    assert feasible([], {})
    with pytest.raises(KeyError):
        violations(constraints, {"memory_gb": 1.0})
