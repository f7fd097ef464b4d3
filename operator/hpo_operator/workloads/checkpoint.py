"""Checkpoints: one PersistentVolumeClaim per configuration, mounted into each of its attempts, so
that a retry continues where the failed attempt stopped (pure functions).

- The claim is named after the experiment and the configuration's hash (label hpo.dev/config):
  created before an attempt's pod, it is found again by a retry, a restart, a resumed run or an
  operator that was SIGKILLed between the claim and the pod (creating it again is a harmless 409).
- It is owned by the Experiment (deleting the experiment removes them all) and removed earlier by
  checkpoint.retention: DeleteOnSuccess once its configuration succeeded, Delete once its
  configuration is done either way, Keep never.
- The primary container gets it at mountPath, with HPO_CHECKPOINT_DIR (also ${trial.checkpointDir})
  and, from the second attempt on, HPO_RESUME=1.
- A resumed attempt's metric history continues the earlier attempts': their steps before the ones
  it reports itself, then its own.
"""

from __future__ import annotations

import hashlib
from typing import Any

from hpo_operator.api.status import Metric
from hpo_operator.api.template import Checkpoint
from hpo_operator.api.vocabulary import API_VERSION, L_CONFIG, L_EXPERIMENT

VOLUME = "hpo-checkpoint"
ENV_DIR = "HPO_CHECKPOINT_DIR"
ENV_RESUME = "HPO_RESUME"
RESUMED_STEP = "resumed_step"  # the metric a resuming program reports: the step it resumed from
NAME_LIMIT = 253


def claim_name(experiment: str, config: str) -> str:
    name = f"{experiment}-ckpt-{config}"
    if len(name) > NAME_LIMIT:  # a long experiment name: keep it unique and valid
        digest = hashlib.sha256(name.encode()).hexdigest()[:10]
        name = f"{experiment[: NAME_LIMIT - len(config) - 18]}-{digest}-ckpt-{config}"
    return name


def build_claim(checkpoint: Checkpoint, experiment: dict[str, Any], config: str) -> dict[str, Any]:
    meta = experiment["metadata"]
    template = checkpoint.volume_claim_template
    spec: dict[str, Any] = {
        "accessModes": [template.access_mode],
        "resources": {"requests": {"storage": template.size}},
    }
    if template.storage_class_name is not None:
        spec["storageClassName"] = template.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": claim_name(meta["name"], config),
            "namespace": meta["namespace"],
            "labels": {
                L_EXPERIMENT: meta["name"],
                L_CONFIG: config,
                "app.kubernetes.io/name": "hpo-trial",
                "app.kubernetes.io/instance": meta["name"],
                "app.kubernetes.io/component": "checkpoint",
            },
            "ownerReferences": [
                {
                    "apiVersion": experiment.get("apiVersion", API_VERSION),
                    "kind": "Experiment",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


def mount(pod_spec: dict[str, Any], checkpoint: Checkpoint, claim: str, primary: str | None, resume: bool) -> None:
    """Mounts the claim into the pod spec's primary container (in place), with the environment
    that tells the program where to write and whether it resumes."""
    volumes = [v for v in pod_spec.get("volumes") or [] if v.get("name") != VOLUME]
    pod_spec["volumes"] = [*volumes, {"name": VOLUME, "persistentVolumeClaim": {"claimName": claim}}]
    containers = pod_spec.get("containers") or []
    target = next((c for c in containers if c.get("name") == primary), containers[0] if containers else None)
    if target is None:
        return
    mounts = [m for m in target.get("volumeMounts") or [] if m.get("name") != VOLUME]
    target["volumeMounts"] = [*mounts, {"name": VOLUME, "mountPath": checkpoint.mount_path}]
    env = [e for e in target.get("env") or [] if e.get("name") not in (ENV_DIR, ENV_RESUME)]
    env.append({"name": ENV_DIR, "value": checkpoint.mount_path})
    if resume:
        env.append({"name": ENV_RESUME, "value": "1"})
    target["env"] = env


def merged_history(earlier: list[Metric], own: list[Metric]) -> list[Metric]:
    """The configuration's metric history: the earlier attempts' entries up to where this attempt's
    own begin (per metric), then its own."""
    first_own: dict[str, int] = {}
    for m in own:
        if m.step is not None:
            first_own[m.name] = min(first_own.get(m.name, m.step), m.step)
    kept = [m for m in earlier if m.step is not None and (m.name not in first_own or m.step < first_own[m.name])]
    return kept + own


def volumes_to_delete(
    retention: str, configs: dict[str, tuple[bool, bool, bool]], existing: set[str], experiment: str
) -> list[str]:
    """The claims retention removes now. configs: per configuration hash, (settled: no attempt of
    it runs or waits, succeeded, finally failed: no retry of it will come)."""
    if retention == "Keep":
        return []
    doomed = []
    for config, (settled, succeeded, finally_failed) in configs.items():
        name = claim_name(experiment, config)
        if name in existing and settled and (succeeded or (retention == "Delete" and finally_failed)):
            doomed.append(name)
    return sorted(doomed)
