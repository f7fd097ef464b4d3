"""Early stopping with several objectives: asynchronous successive halving on the objectives'
non-dominated rank (the rule of Schmucker et al., "Multi-objective Asynchronous Successive
Halving", 2021), computed by the operator: Optuna's pruners take a single objective.

As ASHA (Optuna's SuccessiveHalvingPruner, which the single-objective `asha` is): rungs are at
steps minResource × reductionFactor^k. When a trial first reports a step at or past a rung, its
objectives' values there are compared with those of every other configuration that reached the same
rung before it (running, finished or stopped); it goes on if it is among the best
max(n // reductionFactor, 1) of those n points (itself included), else it is stopped. "Best" is
by non-dominated rank (the Pareto front first, then the front of what is left, ...), ties within a
rank broken by crowding distance (the less crowded first, as NSGA-II keeps a diverse front).

The rule is a pure function of the trials' recorded histories (each value with its step and the
time it was printed), so a restarted operator decides as the first did: a rung is judged once, when
a trial's newly read steps first reach it, against the configurations that had reached it earlier.
minResource left out is ASHA's automatic one: the last step of the first trial to succeed divided
by 100 (at least 1), and nothing is stopped before a trial has succeeded. Constraints are not
judged at rungs (they are final metrics): an infeasible trial may go on, and is kept off the front.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from hpo_operator.core import times
from hpo_operator.core.pareto import crowding, minimised, ranks

# A curve: per step, when it was printed (seconds since the epoch; -inf when not known: counted as
# early as can be) and each objective's latest value by then (steps where some objective has no
# value yet are left out).
Curve = list[tuple[int, float, tuple[float, ...]]]
# A trial's history entry: (metric name, step, value, timestamp).
Entry = tuple[str, int | None, float, str | None]
# Rungs past this many are not judged: reductionFactor 2 from step 1 reaches 2^40.
MAX_RUNGS = 40


def curve(history: Iterable[Entry], objectives: Sequence[str]) -> Curve:
    """The objectives' values by step, each objective's latest value at or before the step."""
    by_step: dict[int, tuple[float, dict[str, float]]] = {}
    for name, step, value, stamp in history:
        if step is None or name not in objectives:
            continue
        parsed = times.parse_or_none(stamp)
        seconds = parsed.timestamp() if parsed is not None else -math.inf
        when, values = by_step.setdefault(step, (seconds, {}))
        values[name] = value
        by_step[step] = (max(when, seconds), values)
    latest: dict[str, float] = {}
    out: Curve = []
    for step in sorted(by_step):
        when, values = by_step[step]
        latest.update(values)
        if len(latest) == len(objectives):
            out.append((step, when, tuple(latest[o] for o in objectives)))
    return out


def rungs(min_resource: int, reduction_factor: int, up_to: int) -> list[int]:
    """The rungs' steps up to `up_to`."""
    out, step = [], min_resource
    while step <= up_to and len(out) < MAX_RUNGS:
        out.append(step)
        step *= reduction_factor
    return out


@dataclass(frozen=True)
class Reached:
    """Where a curve first reached a rung: the step, its time, the objectives' values."""

    step: int
    time: float
    values: tuple[float, ...]


def reached(c: Curve, rung: int) -> Reached | None:
    for step, when, values in c:
        if step >= rung:
            return Reached(step, when, values)
    return None


def auto_min_resource(last_step_of_first_success: int | None) -> int | None:
    """ASHA's automatic minResource (None: no trial has succeeded yet, nothing is judged)."""
    if last_step_of_first_success is None:
        return None
    return max(last_step_of_first_success // 100, 1)


@dataclass(frozen=True)
class Verdict:
    """A trial stopped at a rung: where, and how it ranked."""

    rung: int
    step: int
    position: int  # how many of the rung's points ranked before it
    competitors: int  # the rung's points, itself included
    kept: int  # how many go on


def promoted(
    own: Sequence[float], others: Sequence[Sequence[float]], directions: Sequence[str], reduction_factor: int
) -> tuple[bool, int, int]:
    """Whether `own` is among the best max(n // reductionFactor, 1) of itself and `others` by
    non-dominated rank, then crowding distance; with its position (points strictly better) and n."""
    points = [minimised(own, directions), *(minimised(o, directions) for o in others)]
    rank = ranks(points, ["minimize"] * len(directions))
    spread = [0.0] * len(points)
    for level in set(rank):
        members = [i for i, r in enumerate(rank) if r == level]
        for i, d in zip(members, crowding([points[i] for i in members]), strict=True):
            spread[i] = d
    position = sum(1 for i in range(1, len(points)) if (rank[i], -spread[i]) < (rank[0], -spread[0]))
    kept = max(len(points) // reduction_factor, 1)
    return position < kept, position, len(points)


def judge(
    own: Curve,
    new_steps: set[int],
    others: Mapping[str, Curve],
    directions: Sequence[str],
    min_resource: int,
    reduction_factor: int,
) -> Verdict | None:
    """Whether a running trial whose curve is `own` stops at a rung its newly read steps reach (the
    first it fails), judged against `others` (every other configuration's curve)."""
    if not own:
        return None
    for rung in rungs(min_resource, reduction_factor, own[-1][0]):
        mine = reached(own, rung)
        if mine is None or mine.step not in new_steps:
            continue  # judged when it was first reached (or not reached)
        earlier = []
        for c in others.values():
            theirs = reached(c, rung)
            if theirs is not None and theirs.time <= mine.time:
                earlier.append(theirs.values)
        ok, position, n = promoted(mine.values, earlier, directions, reduction_factor)
        if not ok:
            return Verdict(rung, mine.step, position, n, max(n // reduction_factor, 1))
    return None
