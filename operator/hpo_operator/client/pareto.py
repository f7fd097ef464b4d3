"""An experiment's Pareto front as the client shows it (`kubectl hpo pareto`, the dashboard): the
status's, or computed whole from the Trials by the operator's own rule (core/pareto.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hpo_operator.api.parameters import parameters_of

from .dictable import Dictable


@dataclass
class ParetoPoint(Dictable):
    trial: str
    values: dict[str, float]  # by objective, in the spec's order
    parameters: dict[str, str]


@dataclass
class ParetoFront(Dictable):
    """An experiment's Pareto front: the feasible succeeded trials no other beats in every
    objective, best first by the first objective."""

    experiment: str
    namespace: str
    objectives: list[dict[str, Any]]  # {metricName, type, referenceValue?} as the spec gives them
    size: int  # the whole front's
    hypervolume: float | None
    trials: list[ParetoPoint]  # the status's (its first 100) or, computed from the Trials, all

    @property
    def truncated(self) -> bool:
        return len(self.trials) < self.size


def pareto_front_view(obj: dict, trials: list[dict] | None = None) -> ParetoFront:
    """The front as the Experiment's status holds it; with `trials` (the experiment's Trial
    objects), computed whole from them by the operator's own rule."""
    meta, spec, status = (obj.get("metadata") or {}), obj.get("spec") or {}, obj.get("status") or {}
    objectives = list((spec.get("objective") or {}).get("metrics") or [])
    names = [m.get("metricName", "") for m in objectives]
    if trials is None:
        entries = [
            (p.get("trialName", ""), p.get("values") or [], parameters_of(p.get("parameters")))
            for p in status.get("paretoFront") or []
        ]
        size = status.get("paretoFrontSize") or 0
    else:
        from hpo_operator.core.pareto import front

        bodies = {
            (t.get("metadata") or {}).get("name", ""): t
            for t in sorted(trials, key=lambda t: (t.get("metadata") or {}).get("name", ""))
            if (t.get("status") or {}).get("phase") == "Succeeded"
            and len((t.get("status") or {}).get("objectiveValues") or []) == len(names)
            and (t.get("status") or {}).get("feasible") is not False
        }
        points = {n: t["status"]["objectiveValues"] for n, t in bodies.items()}
        on_front = front(points, [m.get("type", "minimize") for m in objectives])
        entries = [(n, points[n], parameters_of((bodies[n].get("spec") or {}).get("parameters"))) for n in on_front]
        size = len(on_front)
    return ParetoFront(
        experiment=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        objectives=objectives,
        size=size,
        hypervolume=status.get("hypervolume"),
        trials=[
            ParetoPoint(name, dict(zip(names, values, strict=False)), {k: str(v) for k, v in params.items()})
            for name, values, params in entries
        ],
    )
