"""Several objectives: constraints' feasibility, the Pareto front and its hypervolume, as pure
functions of the trials' values. The planner writes their results into the Experiment's status;
the client, the kubectl plugin and the dashboard can compute the same from Trials.

Values come in the spec's order with each objective's direction (minimize or maximize); inside,
every objective is turned into one to minimise (a maximised value negated), so one comparison
serves all. Optuna's hypervolume is not part of its public API, so it is computed here.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from typing import NamedTuple, TypeVar

from hpo_operator.api.spec import MetricConstraint

K = TypeVar("K", bound=Hashable)
Point = tuple[float, ...]


def violations(constraints: Sequence[MetricConstraint], metrics: Mapping[str, float]) -> list[float]:
    """How far each constraint is broken (0 or less: met), in the order given; a bound with both
    min and max gives the larger of its two gaps. This is what Optuna's constraints_func returns.
    Raises KeyError for a constraint's metric that is missing."""
    out = []
    for c in constraints:
        value = metrics[c.metric_name]
        gaps = []
        if c.max is not None:
            gaps.append(value - c.max)
        if c.min is not None:
            gaps.append(c.min - value)
        out.append(max(gaps))
    return out


def feasible(constraints: Sequence[MetricConstraint], metrics: Mapping[str, float]) -> bool:
    return all(v <= 0 for v in violations(constraints, metrics))


def minimised(values: Sequence[float], directions: Sequence[str]) -> Point:
    """The values as objectives to minimise: a maximised one negated."""
    return tuple(-v if d == "maximize" else v for v, d in zip(values, directions, strict=True))


def dominates(a: Point, b: Point) -> bool:
    """a is at least as good as b in every (minimised) objective and better in one."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def front(points: Mapping[K, Sequence[float]], directions: Sequence[str]) -> list[K]:
    """The keys of the non-dominated points, best first by the first objective (then by the
    next ones, then by key order as given). Equal points are all on the front: neither beats the
    other.

    Sorted lexicographically, a point can only be dominated by one before it, and if it is, then
    also by a point of the front before it; so each point is compared with the front so far only,
    not with every other point (fast while fronts are small, as they are in practice)."""
    mins = {k: minimised(v, directions) for k, v in points.items()}
    order = {k: i for i, k in enumerate(points)}
    ranked = sorted(points, key=lambda k: (mins[k], order[k]))
    if len(directions) == 2:
        # Two objectives: a point is on the front if its second value beats every earlier point's,
        # or equals the last kept point (one sort, then one pass, however large the front).
        front2: list[K] = []
        for k in ranked:
            if not front2 or mins[k][1] < mins[front2[-1]][1] or mins[k] == mins[front2[-1]]:
                front2.append(k)
        return front2
    kept: list[tuple[K, Point]] = []
    for k in ranked:
        p = mins[k]
        if not any(dominates(q, p) for _, q in kept):
            kept.append((k, p))
    return [k for k, _ in kept]


def ranks(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Each point's non-dominated rank (0: on the front; 1: on the front once rank 0 is removed; ...),
    by peeling fronts off. Quadratic per front: for the few dozen points of a rung."""
    mins = [minimised(p, directions) for p in points]
    rank = [-1] * len(points)
    left = list(range(len(points)))
    level = 0
    while left:
        layer = [i for i in left if not any(dominates(mins[j], mins[i]) for j in left if j != i)]
        for i in layer:
            rank[i] = level
        left = [i for i in left if rank[i] < 0]
        level += 1
    return rank


def crowding(points: Sequence[Sequence[float]]) -> list[float]:
    """NSGA-II's crowding distance of each point among `points` (one front): per objective, the gap
    between its two neighbours over the objective's range, summed; the extremes of each objective are
    infinitely far (they are kept first). Larger: less crowded."""
    n = len(points)
    distance = [0.0] * n
    if n <= 2:
        return [math.inf] * n
    for m in range(len(points[0])):
        order = sorted(range(n), key=lambda i: points[i][m])
        low, high = points[order[0]][m], points[order[-1]][m]
        distance[order[0]] = distance[order[-1]] = math.inf
        if high == low:
            continue
        for before, i, after in zip(order, order[1:], order[2:], strict=False):
            distance[i] += (points[after][m] - points[before][m]) / (high - low)
    return distance


# The exact hypervolume's cost grows steeply with the number of objectives (slicing one objective
# at a time): the largest fronts it is computed for, per number of objectives, each about half a
# second at worst (points spread over a sphere, all on the front). Two objectives take one sort
# at any size. Larger fronts get no hypervolume rather than a round that stalls.
HYPERVOLUME_MAX_FRONT = {3: 1000, 4: 100, 5: 40, 6: 20, 7: 15, 8: 10}


def hypervolume_affordable(size: int, objectives: int) -> bool:
    return size <= HYPERVOLUME_MAX_FRONT.get(objectives, size)


def hypervolume(points: Sequence[Sequence[float]], directions: Sequence[str], reference: Sequence[float]) -> float:
    """The volume of objective space the points dominate, bounded by the reference point (given in
    the objectives' own directions). Points not strictly better than the reference in every
    objective add nothing."""
    ref = minimised(reference, directions)
    inside = [p for p in (minimised(x, directions) for x in points) if all(v < r for v, r in zip(p, ref, strict=True))]
    return _volume(inside, ref)


def _volume(points: list[Point], ref: Point) -> float:
    """Hypervolume of minimised points below `ref` (dominated ones add nothing), by slicing along the last
    objective: between two consecutive values of it, the points at or below the slice dominate
    a (d-1)-dimensional volume, computed the same way; two objectives are one sweep."""
    if not points:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in points)
    if len(ref) == 2:
        area, best_y = 0.0, ref[1]
        for x, y in sorted(points):
            if y < best_y:
                area += (ref[0] - x) * (best_y - y)
                best_y = y
        return area
    ordered = sorted(points, key=lambda p: p[-1])
    total = 0.0
    below: list[Point] = []  # the (d-1)-dimensional front of the points up to this slice
    area = 0.0
    for i, p in enumerate(ordered):
        q = p[:-1]
        if not any(all(x <= y for x, y in zip(b, q, strict=True)) for b in below):
            # q adds to the front below: it replaces the points it dominates (or equals).
            below = [b for b in below if not all(x <= y for x, y in zip(q, b, strict=True))] + [q]
            area = _volume(below, ref[:-1])
        top = ordered[i + 1][-1] if i + 1 < len(ordered) else ref[-1]
        total += (top - p[-1]) * area
    return total


class Summary(NamedTuple):
    """An experiment's front (keys in front order) and its hypervolume (None without a reference
    point, or for a front too large to compute it exactly)."""

    front: tuple[str, ...]
    hypervolume: float | None


def summary(
    points: Mapping[str, Sequence[float]], directions: Sequence[str], reference: Sequence[float] | None
) -> Summary:
    """The front of the points (keys in the order given, for ties) and its hypervolume."""
    return _summary(tuple(front(points, directions)), points, directions, reference)


def _summary(
    names: tuple[str, ...],
    points: Mapping[str, Sequence[float]],
    directions: Sequence[str],
    reference: Sequence[float] | None,
) -> Summary:
    volume = None
    if reference is not None and hypervolume_affordable(len(names), len(directions)):
        volume = hypervolume([points[n] for n in names], directions, reference)
    return Summary(names, volume)


# What a summary depends on besides the points: directions, reference point, hypervolume bound.
Terms = tuple[tuple[str, ...], Point | None, int | None]


def _extend(
    known: Sequence[str], added: Sequence[str], points: Mapping[str, Point], directions: Sequence[str]
) -> tuple[str, ...]:
    """The front of a set of points, given the front of all but the `added` ones: a point off that
    front is dominated by one on it, which is still there, so only the known front and the added
    points can be on the new one; comparing each with the added points and the known front costs
    (front + added) x added comparisons, not the front's square. Ordered as front() orders the
    points given by key."""
    mins = {k: minimised(points[k], directions) for k in [*known, *added]}
    new = [mins[k] for k in added]
    on = [k for k in known if not any(dominates(q, mins[k]) for q in new)]
    on += [
        k
        for k in added
        if not any(dominates(q, mins[k]) for q in new) and not any(dominates(mins[f], mins[k]) for f in known)
    ]
    return tuple(sorted(on, key=lambda k: (mins[k], k)))


class SummaryCache:
    """summary() of points ordered by key, remembered per experiment (by a key such as its uid),
    for the planner, which asks for every multi-objective experiment's front on every round: with
    10,000 trials a front takes tens of milliseconds (more with three objectives and a large
    front), and most rounds change no result. The answer is always summary()'s for the points
    given; the key only says which earlier answer may be reused:
    - the same points (keys and values) as last time: the last answer;
    - the same points and some new ones (trials that succeeded since): a point dominated before
      is still dominated, so the new front is the front of the old front and the new points, and
      the hypervolume is recomputed only if the front changed;
    - anything else (a point gone or changed, other directions or reference point): computed
      afresh.
    Bounded: the `size` experiments used last are kept. Experiments' rounds run in threads of
    their own: the entries are read and written under a lock, the fronts computed outside it."""

    def __init__(self, size: int = 16):
        self.size = size
        # key -> (points, terms, answer)
        self._entries: OrderedDict[Hashable, tuple[dict[str, Point], Terms, Summary]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.extended = self.misses = 0

    def summary(
        self,
        key: Hashable,
        points: Mapping[str, Sequence[float]],
        directions: Sequence[str],
        reference: Sequence[float] | None,
    ) -> Summary:
        """summary() of the points ordered by key (for ties), reusing what was computed for `key`
        before. Comparing the points with the last ones costs far less than a front: no sort."""
        pts = {k: tuple(v) for k, v in points.items()}
        dirs = tuple(directions)
        ref = None if reference is None else tuple(reference)
        # The bound too: the answers differ with it (tests change it).
        terms = (dirs, ref, HYPERVOLUME_MAX_FRONT.get(len(dirs)))
        with self._lock:
            entry = self._entries.get(key)
        result = None
        if entry is not None and entry[1] == terms:
            old, _, last = entry
            if old == pts:
                with self._lock:
                    self.hits += 1
                    if key in self._entries:
                        self._entries.move_to_end(key)
                return last
            if len(pts) > len(old) and all(pts.get(k) == v for k, v in old.items()):
                names = _extend(last.front, [k for k in pts if k not in old], pts, dirs)
                result = last if names == last.front else _summary(names, pts, dirs, ref)
                with self._lock:
                    self.extended += 1
        if result is None:
            result = summary(dict(sorted(pts.items())), dirs, ref)
            with self._lock:
                self.misses += 1
        with self._lock:
            self._entries[key] = (pts, terms, result)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return result
