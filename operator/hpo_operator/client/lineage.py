"""A pbt experiment's lineage: its segments as a forest, each segment under the one whose checkpoint
it started from (`kubectl hpo trials EXP --lineage`, the dashboard's schedule plot).

Pure: built from TrialSummary views. A segment is shown once, as its deciding attempt (the one that
succeeded, else the latest), with how many attempts it took; a segment's parent is the attempt its
spec.segment.parent names, so the tree shows which trained weights each segment continued.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .dictable import Dictable
from .views import TrialSummary


@dataclass
class SegmentNode(Dictable):
    """One segment of a member: its deciding Trial, and the segments that started from it."""

    trial: str
    member: int
    generation: int
    phase: str
    objective_value: float | None
    parameters: dict[str, str]
    attempts: int
    exploited: bool = False
    parent: str | None = None  # the Trial (a segment's attempt) whose checkpoint it started from
    parent_member: int | None = None
    failure: str | None = None  # the reason of its last attempt, when it did not succeed
    children: list[SegmentNode] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["children"] = [c.to_dict() for c in self.children]
        return data


def segments(trials: Iterable[TrialSummary]) -> list[SegmentNode]:
    """Every segment, ordered by generation then member (nodes without their children linked)."""
    attempts: dict[tuple[int, int], list[TrialSummary]] = {}
    for t in trials:
        if t.segment is None:
            continue
        attempts.setdefault((int(t.segment["generation"]), int(t.segment["member"])), []).append(t)
    nodes = []
    for (generation, member), runs in sorted(attempts.items()):
        runs.sort(key=lambda t: t.attempt)
        deciding = next((t for t in runs if t.phase == "Succeeded"), runs[-1])
        seg = deciding.segment or {}
        nodes.append(
            SegmentNode(
                trial=deciding.name,
                member=member,
                generation=generation,
                phase=deciding.phase,
                objective_value=deciding.objective_value,
                parameters=dict(deciding.parameters),
                attempts=len(runs),
                exploited=bool(seg.get("exploited")),
                parent=seg.get("parent"),
                parent_member=seg.get("parentMember"),
                failure=None if deciding.phase == "Succeeded" else deciding.reason,
            )
        )
    return nodes


def forest(trials: Iterable[TrialSummary]) -> list[SegmentNode]:
    """The segments as trees: the roots are generation 0's (and any segment whose parent is not
    among the trials), each segment under the segment it started from."""
    runs = list(trials)
    nodes = segments(runs)
    # A parent is named by an attempt's Trial name: any attempt of a segment leads to its node.
    by_trial: dict[str, SegmentNode] = {}
    by_key = {(n.generation, n.member): n for n in nodes}
    for t in runs:
        if t.segment is not None:
            by_trial[t.name] = by_key[(int(t.segment["generation"]), int(t.segment["member"]))]
    roots = []
    for node in nodes:
        parent = by_trial.get(node.parent or "")
        if parent is None or parent is node:
            roots.append(node)
        else:
            parent.children.append(node)
    return roots


def rows(roots: list[SegmentNode]) -> list[tuple[str, SegmentNode]]:
    """The forest depth first, each node with the tree's drawing before its name. A member that goes
    on from its own checkpoint stays in its column; a member that exploited it branches off (├─),
    with its own segments below it: the drawing widens with exploits, not with generations."""
    out: list[tuple[str, SegmentNode]] = []
    # (node, what is drawn before it, what is drawn before the lines under it): iterative, since a
    # lineage is as deep as the experiment has generations.
    stack = [(root, "", "") for root in reversed(roots)]
    while stack:
        node, first, rest = stack.pop()
        out.append((first, node))
        own = [c for c in node.children if c.member == node.member and not c.exploited]
        branches = sorted((c for c in node.children if c not in own), key=lambda c: c.member)
        stack.extend((c, rest, rest) for c in reversed(own))
        for i in reversed(range(len(branches))):
            last = i == len(branches) - 1 and not own
            stack.append((branches[i], rest + ("└─ " if last else "├─ "), rest + ("   " if last else "│  ")))
    return out
