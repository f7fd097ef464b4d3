"""What one run of a trial requests of the cluster, in all: the compute a budget counts
(spec.budget.maxResourceSeconds; core/spend.py multiplies it by the run's time).

Read from the trial's workload as it is built for that trial (placeholders replaced, so a request
that names a parameter counts that parameter's value):
- each pod template's effective request, as the scheduler counts it: per resource, the larger of
  the containers' sum and the largest init container; a container's request is its
  `resources.requests`, else its `resources.limits` (Kubernetes defaults one to the other: a GPU is
  usually given as a limit alone); plus the pod's `overhead`;
- times the pods the template stands for: a Job's `parallelism` (at most its `completions`), a
  replicated job's or replica spec's `replicas` (JobSet, Kubeflow's training jobs), multiplied down
  the tree;
- a TrainJob, whose pods are its runtime's: `trainer.resourcesPerNode` times `trainer.numNodes`.
A resource with none of these counts nothing (what its controller makes of it is not known here).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.core.quantity import QuantityError, parse

from .pod import substitute, trial_values

# A manifest is the user's: the walk below is bounded in depth and in the pod templates it counts.
MAX_DEPTH = 32
MAX_TEMPLATES = 64
MAX_PODS_PER_TEMPLATE = 100_000


def requested(spec: ExperimentSpec, experiment: str, trial: Mapping[str, Any]) -> dict[str, float]:
    """What one run of the trial requests, per resource, in its base unit (cpu in cores, memory in
    bytes, nvidia.com/gpu in devices). Unreadable quantities count nothing."""
    source = spec.trial_template.source()
    if source is None:
        return {}
    rendered = substitute(copy.deepcopy(source), trial_values(experiment, dict(trial), spec))
    if spec.trial_template.template is not None:
        return _rounded(_pod(rendered.get("spec") or {}))
    total: dict[str, float] = {}
    _walk(rendered, 1, total, [0], 0)
    return _rounded(total)


def _rounded(found: dict[str, float]) -> dict[str, float]:
    # A millionth of a unit (a microcore, a byte) keeps 0.1 + 0.2 from writing 0.30000000000000004.
    return {k: round(v, 6) for k, v in sorted(found.items()) if v > 0}


def _count(value: Any, default: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return max(0, min(value, MAX_PODS_PER_TEMPLATE))


def _walk(node: Any, factor: int, total: dict[str, float], templates: list[int], depth: int) -> None:
    if depth > MAX_DEPTH or templates[0] >= MAX_TEMPLATES:
        return
    if isinstance(node, list):
        for item in node:
            _walk(item, factor, total, templates, depth + 1)
        return
    if not isinstance(node, dict):
        return
    spec = node.get("spec")
    if isinstance(spec, dict) and isinstance(spec.get("containers"), list):
        templates[0] += 1
        _add(total, _pod(spec), factor)
        return
    if "replicas" in node:
        factor *= _count(node.get("replicas"))
    if "parallelism" in node or "completions" in node:
        pods = _count(node.get("parallelism"))
        if "completions" in node:
            pods = min(pods, _count(node.get("completions")))
        factor *= pods
    per_node = node.get("resourcesPerNode")
    if isinstance(per_node, dict):
        _add(total, _container(per_node), factor * _count(node.get("numNodes")))
    for key, value in node.items():
        if key not in ("replicas", "parallelism", "completions", "resourcesPerNode"):
            _walk(value, factor, total, templates, depth + 1)


def _add(total: dict[str, float], found: Mapping[str, float], factor: int) -> None:
    for resource, amount in found.items():
        total[resource] = total.get(resource, 0.0) + amount * factor


def _container(resources: Any) -> dict[str, float]:
    """A container's request per resource: requests, else limits."""
    if not isinstance(resources, dict):
        return {}
    found_requests, found_limits = resources.get("requests"), resources.get("limits")
    requests: dict[str, Any] = found_requests if isinstance(found_requests, dict) else {}
    limits: dict[str, Any] = found_limits if isinstance(found_limits, dict) else {}
    out: dict[str, float] = {}
    for name in [*requests, *(k for k in limits if k not in requests)]:
        value = requests.get(name, limits.get(name))
        try:
            out[str(name)] = parse(value)
        except QuantityError:
            continue
    return out


def _pod(pod_spec: dict[str, Any]) -> dict[str, float]:
    """A pod's effective request: the containers' sum, or the largest init container if larger, plus
    the pod's overhead."""
    total: dict[str, float] = {}
    for c in pod_spec.get("containers") or []:
        if isinstance(c, dict):
            _add(total, _container(c.get("resources")), 1)
    for c in pod_spec.get("initContainers") or []:
        if isinstance(c, dict):
            for resource, amount in _container(c.get("resources")).items():
                total[resource] = max(total.get(resource, 0.0), amount)
    overhead = pod_spec.get("overhead")
    if isinstance(overhead, dict):
        _add(total, _container({"requests": overhead}), 1)
    return total
