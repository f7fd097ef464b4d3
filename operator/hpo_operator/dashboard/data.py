"""The dashboard's tables, built from Experiment and Trial objects as the API server sends them.

Pure functions over dicts, unit-tested without a cluster. The experiment list reuses the kubectl
plugin's summaries and filters (hpo_operator.client.views and .query), so that the page and
`kubectl hpo list` agree; those modules load without the kubernetes client, which the operator's
image (where the chart runs the dashboard) does not have.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hpo_operator.api.vocabulary import L_BOOKMARKED, L_EXPERIMENT, TRIAL_PHASES, UNFINISHED_PHASES
from hpo_operator.client import views
from hpo_operator.client.describe import experiment_detail
from hpo_operator.client.errors import InvalidInput
from hpo_operator.client.pareto import pareto_front_view
from hpo_operator.client.query import (
    ExperimentFilter,
    TimeRange,
    build_selector,
    parse_phases,
    sort_direction,
    sort_field,
    sort_items,
)
from hpo_operator.client.spending import spending, spending_lines
from hpo_operator.client.views import experiment_summary
from hpo_operator.core import times

# A trial's message can be a whole termination log; the table shows its start.
MESSAGE_LIMIT = 2000
# Trials still taking a slot, as the operator counts them.

__all__ = [
    "ListQuery",
    "parse_list_query",
    "experiment_rows",
    "parse_selector",
    "selector_matches",
    "experiment_view",
    "trial_row",
    "trial_rows",
    "creation_order",
    "recovery",
    "experiment_of",
    "TRIAL_PHASES",
]


# --- label selectors --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # =, !=, in, notin, exists, !exists
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values  # != and notin, as the API server


_SET = re.compile(r"^\s*(!?)\s*([^\s!=(),]+)\s*(?:(in|notin)\s*\(([^)]*)\)|(==|=|!=)\s*([^\s,()=!]*))?\s*$")


def _split_requirements(text: str) -> list[str]:
    """Commas separate requirements, except inside the parentheses of `in (a, b)`."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in (p.strip() for p in parts) if p]


def parse_selector(text: str | None) -> list[Requirement]:
    """A label selector as kubectl takes it (`a=b,c!=d,e in (f,g),!h`), for objects kept in memory:
    the dashboard filters its own copy instead of asking the API server again."""
    result = []
    for part in _split_requirements(text or ""):
        m = _SET.match(part)
        if not m:
            raise InvalidInput(f"invalid label selector {part!r}")
        negated, key, set_op, set_values, op, value = m.groups()
        if negated:
            if set_op or op:
                raise InvalidInput(f"invalid label selector {part!r}")
            result.append(Requirement(key, "!exists"))
        elif set_op:
            values = frozenset(v.strip() for v in set_values.split(",") if v.strip())
            result.append(Requirement(key, set_op, values))
        elif op:
            result.append(Requirement(key, "!=" if op == "!=" else "=", frozenset([value])))
        else:
            result.append(Requirement(key, "exists"))
    return result


def selector_matches(requirements: Sequence[Requirement], labels: Mapping[str, str] | None) -> bool:
    return all(r.matches(labels or {}) for r in requirements)


# --- the experiment list -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListQuery:
    """`kubectl hpo list`'s filters and order, as the list page sends them."""

    filter: ExperimentFilter = field(default_factory=ExperimentFilter)
    selector: tuple[Requirement, ...] = ()
    mine: bool = False
    order: tuple[tuple[str, bool], ...] = (("created", True),)


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def parse_list_query(get: Callable[[str], str | None], tags: Sequence[str] = ()) -> ListQuery:
    """The list page's query (name, creator, mine, status, since, until, selector, tag, bookmarked,
    sort, order), checked as the plugin checks its options: bad input raises InvalidInput."""
    creator, mine = get("creator") or None, _flag(get("mine"))
    if mine and creator:
        raise InvalidInput("use creator or mine, not both")
    flt = ExperimentFilter(
        name=get("name") or None,
        creator=creator,
        phases=parse_phases(get("status")),
        created=TimeRange.parse(get("since") or None, get("until") or None),
    )
    extra = [f"{L_BOOKMARKED}=true"] if _flag(get("bookmarked")) else []
    selector = parse_selector(build_selector(get("selector"), [t for t in tags if t.strip()], extra))
    key = sort_field(get("sort") or "created")
    desc = sort_direction(get("order") or None, default="desc" if key == "created" else "asc")
    order = ((key, desc),) if key == "name" else ((key, desc), ("name", False))
    return ListQuery(flt, tuple(selector), mine, order)


_GETTERS: dict[str, Callable[[Any], Any]] = {"created": lambda s: s.created, "name": lambda s: s.name}


def experiment_rows(objects: Iterable[dict], query: ListQuery = ListQuery(), me: str | None = None) -> list[dict]:
    """One row per matching experiment, in the query's order (the plugin's summaries: phase,
    creator, configurations of maxTrialCount, trial counts by status, best objective, created)."""
    flt = query.filter
    if query.mine:
        if me is None:
            raise InvalidInput("mine: the API server did not say who you are (SelfSubjectReview)")
        flt = ExperimentFilter(flt.name, me, flt.phases, flt.created)
    matches = []
    for obj in objects:
        if not selector_matches(query.selector, (obj.get("metadata") or {}).get("labels")):
            continue
        s = experiment_summary(obj)
        if flt.matches(name=s.name, creator=s.creator, phase=s.phase, created=s.created):
            matches.append(s)
    return [s.to_dict() for s in sort_items(matches, query.order, _GETTERS)]


# --- one experiment ------------------------------------------------------------------------------------


def experiment_view(obj: dict, trials: list[dict] | None = None) -> dict:
    """The experiment page's header: summary, spec in short, conditions, status history, best
    trial and what was spent, worked out from `trials` (what `kubectl hpo describe` prints), and the
    names of its parameters and metrics. With
    several objectives, each objective (name, direction, referenceValue) and the front as the
    status holds it (its first trials, its size, the hypervolume: what `kubectl hpo pareto` prints)."""
    detail = experiment_detail(obj, []).to_dict()
    detail.pop("trials", None)
    # Spending reads only each trial's status (a page of 10,000 trials needs no trial rows here).
    spent = spending(obj, trials or [])
    detail["spent"] = spent.to_dict()
    detail["spentLines"] = spending_lines(spent)
    spec = obj.get("spec") or {}
    objective = spec.get("objective") or {}
    detail["parameterNames"] = [p.get("name") for p in spec.get("parameters") or []]
    several = [m.get("metricName") for m in objective.get("metrics") or []]
    detail["metricNames"] = [
        m
        for m in [
            objective.get("metricName"),
            *several,
            *(c.get("metricName") for c in objective.get("constraints") or []),
            *(objective.get("additionalMetricNames") or []),
        ]
        if m
    ]
    detail["direction"] = objective.get("type") or ((objective.get("metrics") or [{}])[0].get("type")) or "minimize"
    detail["objectives"] = [
        {
            "name": m.get("metricName"),
            "direction": m.get("type") or "minimize",
            "referenceValue": m.get("referenceValue"),
        }
        for m in objective.get("metrics")
        or [{"metricName": objective.get("metricName"), "type": objective.get("type")}]
    ]
    detail["paretoFront"] = pareto_front_view(obj).to_dict() if several else None
    # Population-based training: the page adds its schedule plot.
    detail["pbt"] = (spec.get("algorithm") or {}).get("name") == "pbt"
    detail["resourceVersion"] = (obj.get("metadata") or {}).get("resourceVersion")
    return detail


def experiment_of(trial: dict) -> str | None:
    """The experiment a Trial belongs to: spec.experimentName (a user's Trial not yet adopted has
    no labels), else its label."""
    return (trial.get("spec") or {}).get("experimentName") or ((trial.get("metadata") or {}).get("labels") or {}).get(
        L_EXPERIMENT
    )


def trial_row(obj: dict) -> dict:
    """A row of the trials table: the client's row of the Trial (client.views.trial_row, on which
    the plugin's TrialSummary is built too), its message cut short."""
    row = views.trial_row(obj)
    message = row["message"]
    if message and len(message) > MESSAGE_LIMIT:
        row["message"] = message[:MESSAGE_LIMIT] + "…"
    return row


def creation_order(trials: Iterable[dict]) -> list[dict]:
    """Trials in the order they were created (the name breaks ties within a second)."""
    return sorted(
        trials,
        key=lambda t: (
            (t.get("metadata") or {}).get("creationTimestamp") or "",
            (t.get("metadata") or {}).get("name") or "",
        ),
    )


def trial_rows(trials: Iterable[dict]) -> list[dict]:
    return [trial_row(t) for t in creation_order(trials)]


# --- recovery ----------------------------------------------------------------------------------------------


def _seconds(start: str | None, end: str | None) -> float | None:
    a, b = times.parse_or_none(start), times.parse_or_none(end)
    return (b - a).total_seconds() if a and b else None


def _outcome(attempts: list[dict]) -> str:
    phases = [a["phase"] for a in attempts]
    if "Succeeded" in phases:
        return "Succeeded"
    unfinished = [p for p in phases if p in UNFINISHED_PHASES]
    if unfinished:
        return unfinished[-1]
    return phases[-1]


def recovery(rows: Iterable[dict], *, only_troubled: bool = True) -> dict:
    """Per configuration (label hpo.dev/config), its attempts in order with their failure classes;
    and per failure class, what it cost: attempts, configurations hit, trial time spent in the
    failed attempts, and how many of those configurations were recovered (later succeeded).

    `rows` are trial_row()s. With `only_troubled`, configurations that ran once and did not fail
    are counted, not listed. Trials without the label (a user's Trial not adopted yet, or refused)
    are left out: they never ran.
    """
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("config") and r["phase"] != "Refused":
            groups.setdefault(r["config"], []).append(r)
    listed, clean = [], 0
    classes: dict[str, dict[str, Any]] = {}
    for key, members in groups.items():
        members.sort(key=lambda r: (r["attempt"], r.get("created") or ""))
        attempts = [
            {
                "name": r["name"],
                "attempt": r["attempt"],
                "phase": r["phase"],
                "reason": r.get("reason"),
                "failureClass": r.get("failureClass"),
                "launchReason": r.get("launchReason"),
                "seconds": _seconds(r.get("started"), r.get("completed")),
            }
            for r in members
        ]
        outcome = _outcome(attempts)
        failed = [a for a in attempts if a["phase"] in ("Failed", "Killed")]
        for a in failed:
            cls = a["failureClass"] or a["reason"] or a["phase"]
            c = classes.setdefault(
                cls, {"failureClass": cls, "attempts": 0, "configurations": set(), "seconds": 0.0, "recovered": set()}
            )
            c["attempts"] += 1
            c["configurations"].add(key)
            c["seconds"] += a["seconds"] or 0.0
            if outcome == "Succeeded":
                c["recovered"].add(key)
        if only_troubled and len(attempts) == 1 and not failed:
            clean += 1
            continue
        listed.append(
            {
                "config": key,
                "params": members[0].get("params") or {},
                "attempts": attempts,
                "outcome": outcome,
                "failedAttempts": len(failed),
                "failedSeconds": sum(a["seconds"] or 0.0 for a in failed),
            }
        )
    listed.sort(key=lambda r: (-r["failedAttempts"], -len(r["attempts"]), r["attempts"][0]["name"]))
    summary = sorted(
        ({**c, "configurations": len(c["configurations"]), "recovered": len(c["recovered"])} for c in classes.values()),
        key=lambda c: (-c["attempts"], c["failureClass"]),
    )
    return {"configurations": len(groups), "clean": clean, "rows": listed, "byFailureClass": summary}
