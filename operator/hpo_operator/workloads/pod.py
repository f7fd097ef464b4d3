"""Build a trial's pod from the experiment's trial template (a pure function)."""

from __future__ import annotations

import copy
import re
from typing import Any

from hpo_operator.api.spec import PLACEHOLDER_PATTERN, ExperimentSpec
from hpo_operator.api.vocabulary import API_VERSION, L_CONFIG, L_KUEUE_QUEUE
from hpo_operator.workloads import checkpoint, population

_PLACEHOLDER = re.compile(PLACEHOLDER_PATTERN)


def substitute(node: Any, values: dict[str, str]) -> Any:
    """Replaces ${...} placeholders in every string of a JSON-like tree (keys included)."""
    if isinstance(node, str):
        return _PLACEHOLDER.sub(lambda m: values.get(f"{m.group(1)}.{m.group(2)}", m.group(0)), node)
    if isinstance(node, list):
        return [substitute(item, values) for item in node]
    if isinstance(node, dict):
        return {substitute(k, values): substitute(v, values) for k, v in node.items()}
    return node


def trial_values(experiment: str, trial: dict[str, Any], spec: ExperimentSpec | None = None) -> dict[str, str]:
    """What the placeholders stand for, for one trial."""
    meta = trial["metadata"]
    tspec = trial["spec"]
    values = {f"params.{p['name']}": p["value"] for p in tspec.get("parameters") or []}
    values.update(
        {"trial.name": meta["name"], "trial.attempt": str(tspec.get("attempt") or 1), "experiment.name": experiment}
    )
    if spec is not None and spec.trial_template.checkpoint is not None:
        values["trial.checkpointDir"] = spec.trial_template.checkpoint.mount_path
    segment = population.segment_of(trial)
    if spec is not None and segment is not None:
        values.update(population.placeholders(spec, segment))
    return values


def mount_checkpoint(spec: ExperimentSpec, experiment: str, trial: dict[str, Any], pod_spec: dict[str, Any]) -> None:
    """The configuration's checkpoint volume in the trial's pod spec, if the experiment has one."""
    ckpt = spec.trial_template.checkpoint
    if ckpt is None:
        return
    segment = population.segment_of(trial)
    if segment is not None:  # population-based training: a claim per segment, filled by a copy step
        population.mount_segment(pod_spec, spec, ckpt, experiment, trial, segment)
        return
    config = (trial["metadata"].get("labels") or {}).get(L_CONFIG, "")
    checkpoint.mount(
        pod_spec,
        ckpt,
        checkpoint.claim_name(experiment, config),
        spec.trial_template.primary_container_name,
        resume=int(trial["spec"].get("attempt") or 1) > 1,
    )


def queue_label(spec: ExperimentSpec) -> dict[str, str]:
    """Kueue's queue label, for the object Kueue admits (a pod, or the Job or resource whose pods
    it starts), when the trials name a queue."""
    name = spec.trial_template.queue_name
    return {L_KUEUE_QUEUE: name} if name else {}


def no_token_unless_asked(pod_spec: dict[str, Any]) -> None:
    """A trial's pod gets no ServiceAccount token unless its template sets
    automountServiceAccountToken (true or false: kept as it is). A training program seldom calls
    the API server, and a token mounted into every trial is a credential any code the trial runs
    (its dependencies, its data loaders) can use."""
    pod_spec.setdefault("automountServiceAccountToken", False)


def build_pod(spec: ExperimentSpec, experiment: str, trial: dict[str, Any]) -> dict[str, Any]:
    meta = trial["metadata"]
    values = trial_values(experiment, trial, spec)
    template = substitute(copy.deepcopy(spec.trial_template.template), values)
    pod_meta = template.get("metadata") or {}
    labels = {
        **(pod_meta.get("labels") or {}),
        **(meta.get("labels") or {}),
        "app.kubernetes.io/name": "hpo-trial",
        "app.kubernetes.io/instance": experiment,
        "app.kubernetes.io/component": "trial",
        **queue_label(spec),
    }
    pod_spec = template["spec"]
    # A trial is one run: the operator, not the kubelet, decides whether to run it again.
    pod_spec["restartPolicy"] = "Never"
    no_token_unless_asked(pod_spec)
    mount_checkpoint(spec, experiment, trial, pod_spec)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": pod_meta.get("annotations") or {},
            "ownerReferences": [
                {
                    "apiVersion": trial.get("apiVersion", API_VERSION),
                    "kind": "Trial",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": pod_spec,
    }
