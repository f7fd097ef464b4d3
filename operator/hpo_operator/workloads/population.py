"""Population-based training's checkpoints: a claim per segment, and the copy step that fills it
from the segment's parent before the trial's program starts (pure functions).

- Every segment (a Trial of algorithm pbt; its spec.segment) has a claim of its own, named after the
  segment (the configuration hash of checkpoint.py is the segment's key here: `g002-m001`), made
  by the executor before the segment's pod as for any checkpoint. A segment's checkpoint is only
  ever written by that segment's attempts; once the segment has ended, nothing writes it again.
- The copy step is an init container the operator adds to the trial's pod (or Job's pod template),
  `hpo-checkpoint-copy`: it mounts the parent segment's claim read-only (so the parent's data stays
  intact however many children copy it, at once or later) and the segment's own claim, copies the
  parent's `data/` into `.incoming/` of its own claim, writes the marker `.incoming/.hpo-origin`,
  and renames `.incoming/` to `data/`. The program sees `data/` (a subPath mount at mountPath) and
  starts only once the step has exited 0: a copy that failed half-way is never used, and every
  attempt of the segment (a retry, a Job's own pod retry) copies afresh, so a failed segment is
  retried from its own start. A segment of generation 0 starts from an empty `data/` the same way.
- A parent whose `data/.hpo-origin` is missing (its checkpoint is not one the copy step made whole)
  is refused by the step with exit code COPY_LOST; any other failure of the step (an I/O error) is
  a failed copy, retried within retryPolicy (copy_failure() says which).
- The program learns where it is: HPO_CHECKPOINT_DIR (${trial.checkpointDir}), HPO_RESUME=1 from
  generation 1 on (there is a checkpoint to load), HPO_PBT_MEMBER, HPO_PBT_GENERATION and
  HPO_PBT_END_STEP (${trial.member}, ${trial.generation}, ${trial.endStep}: the step this segment
  trains to), and HPO_PBT_PARENT (the parent segment's Trial).
"""

from __future__ import annotations

import json
from typing import Any

from hpo_operator.api.algorithms import SettingsError, pbt_settings
from hpo_operator.api.population import Segment
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.api.template import Checkpoint
from hpo_operator.core.podstate import PodObservation

from . import checkpoint

COPY_CONTAINER = "hpo-checkpoint-copy"
PARENT_VOLUME = "hpo-checkpoint-parent"
DATA = "data"  # the directory of a segment's claim that the program sees
MARKER = ".hpo-origin"  # in data/: written by the copy step, last, before the rename
OWN_MOUNT = "/hpo-segment/own"
PARENT_MOUNT = "/hpo-segment/parent"
COPY_LOST = 3  # the copy step's exit code when the parent's checkpoint is not whole

ENV_MEMBER = "HPO_PBT_MEMBER"
ENV_GENERATION = "HPO_PBT_GENERATION"
ENV_END_STEP = "HPO_PBT_END_STEP"
ENV_PARENT = "HPO_PBT_PARENT"
ENV_ORIGIN = "HPO_PBT_ORIGIN"
ENV_PARENT_CLAIM = "HPO_PBT_PARENT_CLAIM"
_OURS = (checkpoint.ENV_DIR, checkpoint.ENV_RESUME, ENV_MEMBER, ENV_GENERATION, ENV_END_STEP, ENV_PARENT)

# POSIX sh and cp, mv, rm, mkdir: a busybox or coreutils userland. Every run starts over: what an
# earlier attempt left (a half copy, a failed program's writes) is replaced as a whole.
COPY_SCRIPT = f"""set -eu
own={OWN_MOUNT}
rm -rf "$own/.incoming" "$own/.outgoing"
if [ -n "${{{ENV_PARENT_CLAIM}}}" ]; then
  if [ ! -f {PARENT_MOUNT}/{DATA}/{MARKER} ]; then
    echo "the checkpoint of parent segment ${{{ENV_PARENT}}} is not whole: {DATA}/{MARKER} is missing" \\
      > /dev/termination-log
    exit {COPY_LOST}
  fi
  cp -R {PARENT_MOUNT}/{DATA} "$own/.incoming"
else
  mkdir "$own/.incoming"
fi
printf '%s\\n' "${{{ENV_ORIGIN}}}" > "$own/.incoming/{MARKER}"
if [ -e "$own/{DATA}" ]; then mv "$own/{DATA}" "$own/.outgoing"; fi
mv "$own/.incoming" "$own/{DATA}"
rm -rf "$own/.outgoing"
"""


def key(generation: int, member: int) -> str:
    """A segment's key: its Trials' configuration label and its claim's suffix."""
    return f"g{generation:03d}-m{member:03d}"


def segment_of(trial: dict[str, Any]) -> Segment | None:
    raw = (trial.get("spec") or {}).get("segment")
    return None if raw is None else Segment.model_validate(raw)


def end_step(spec: ExperimentSpec, generation: int) -> int:
    try:
        interval = pbt_settings({s.name: s.value for s in spec.algorithm.settings or []}).perturbation_interval
    except SettingsError:
        interval = 1  # refused as InvalidSpec before any segment runs
    return (generation + 1) * interval


def placeholders(spec: ExperimentSpec, segment: Segment) -> dict[str, str]:
    """What ${trial.member}, ${trial.generation} and ${trial.endStep} stand for."""
    return {
        "trial.member": str(segment.member),
        "trial.generation": str(segment.generation),
        "trial.endStep": str(end_step(spec, segment.generation)),
    }


def parent_claim(experiment: str, segment: Segment) -> str | None:
    """The claim of the segment a segment starts from (None in generation 0)."""
    if segment.generation == 0 or segment.parent_member is None:
        return None
    return checkpoint.claim_name(experiment, key(segment.generation - 1, segment.parent_member))


def mount_segment(
    pod_spec: dict[str, Any],
    spec: ExperimentSpec,
    ckpt: Checkpoint,
    experiment: str,
    trial: dict[str, Any],
    segment: Segment,
) -> None:
    """The segment's claim (and its parent's, read-only) and the copy step in the pod spec (in place)."""
    own = checkpoint.claim_name(experiment, key(segment.generation, segment.member))
    parent = parent_claim(experiment, segment)
    containers = pod_spec.get("containers") or []
    primary = spec.trial_template.primary_container_name
    target = next((c for c in containers if c.get("name") == primary), containers[0] if containers else None)
    volumes: list[dict[str, Any]] = [
        *(v for v in pod_spec.get("volumes") or [] if v.get("name") not in (checkpoint.VOLUME, PARENT_VOLUME)),
        {"name": checkpoint.VOLUME, "persistentVolumeClaim": {"claimName": own}},
    ]
    if parent is not None:
        volumes.append({"name": PARENT_VOLUME, "persistentVolumeClaim": {"claimName": parent, "readOnly": True}})
    pod_spec["volumes"] = volumes
    if target is None:
        return
    name = trial["metadata"]["name"]
    origin = json.dumps(
        {"segment": name, "member": segment.member, "generation": segment.generation, "parent": segment.parent},
        separators=(",", ":"),
    )
    mounts: list[dict[str, Any]] = [{"name": checkpoint.VOLUME, "mountPath": OWN_MOUNT}]
    if parent is not None:
        mounts.append({"name": PARENT_VOLUME, "mountPath": PARENT_MOUNT, "readOnly": True})
    copy_step: dict[str, Any] = {
        "name": COPY_CONTAINER,
        "image": ckpt.copy_image or target.get("image"),
        "command": ["sh", "-c", COPY_SCRIPT],
        "env": [
            {"name": ENV_ORIGIN, "value": origin},
            {"name": ENV_PARENT, "value": segment.parent or ""},
            {"name": ENV_PARENT_CLAIM, "value": parent or ""},
        ],
        "volumeMounts": mounts,
        "terminationMessagePolicy": "File",
    }
    # The step runs as the program does (Pod Security judges it the same) and within its resources
    # (so the pod asks no more of its node or its quota than the program alone).
    for field in ("imagePullPolicy", "securityContext", "resources"):
        if target.get(field) is not None:
            copy_step[field] = target[field]
    others = [c for c in pod_spec.get("initContainers") or [] if c.get("name") != COPY_CONTAINER]
    pod_spec["initContainers"] = [copy_step, *others]
    program_mounts = [m for m in target.get("volumeMounts") or [] if m.get("name") not in (checkpoint.VOLUME,)]
    target["volumeMounts"] = [
        *program_mounts,
        {"name": checkpoint.VOLUME, "mountPath": ckpt.mount_path, "subPath": DATA},
    ]
    env = [e for e in target.get("env") or [] if e.get("name") not in _OURS]
    env += [
        {"name": checkpoint.ENV_DIR, "value": ckpt.mount_path},
        {"name": ENV_MEMBER, "value": str(segment.member)},
        {"name": ENV_GENERATION, "value": str(segment.generation)},
        {"name": ENV_END_STEP, "value": str(end_step(spec, segment.generation))},
    ]
    if segment.parent:
        env += [
            {"name": checkpoint.ENV_RESUME, "value": "1"},
            {"name": ENV_PARENT, "value": segment.parent},
        ]
    target["env"] = env


def copy_failure(pod: dict[str, Any], obs: PodObservation) -> PodObservation:
    """A failed pod's observation, said in the copy step's terms when the step is what failed: its
    parent's checkpoint was not whole (CheckpointLost, class Startup: copying again cannot help) or
    the copy failed (CheckpointCopyFailed, class Infrastructure: retried within retryPolicy). Any
    other observation is returned as it is."""
    if obs.phase != "Failed":
        return obs
    for status in (pod.get("status") or {}).get("initContainerStatuses") or []:
        if status.get("name") != COPY_CONTAINER:
            continue
        done = (status.get("state") or {}).get("terminated") or {}
        code = done.get("exitCode")
        if code in (None, 0):
            return obs
        said = (done.get("message") or "").strip()
        if code == COPY_LOST:
            return PodObservation(
                "Failed",
                "CheckpointLost",
                said or "the parent segment's checkpoint is not whole",
                "Startup",
                exit_code=code,
                finish_time=done.get("finishedAt"),
            )
        reason = done.get("reason") or "Error"
        why = f"the checkpoint copy step exited with code {code} ({reason})" + (f": {said}" if said else "")
        if reason == "StartError":
            # The image has no shell for the copy: every attempt would end the same way.
            return PodObservation(
                "Failed",
                "CheckpointCopyFailed",
                f"{why} (the step runs sh, cp, mv and rm: give an image that has them in "
                "trialTemplate.checkpoint.copyImage)",
                "Startup",
                exit_code=code,
                finish_time=done.get("finishedAt"),
            )
        return PodObservation(
            "Failed", "CheckpointCopyFailed", why, "Infrastructure", exit_code=code, finish_time=done.get("finishedAt")
        )
    return obs


def mounted(pod: dict[str, Any] | None) -> bool:
    """Whether the pod's volumes are mounted: one of its containers (the copy step first) started."""
    if pod is None:
        return False
    status = pod.get("status") or {}
    if status.get("phase") in ("Running", "Succeeded", "Failed"):
        return True
    for c in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        state = c.get("state") or {}
        if state.get("running") or state.get("terminated"):
            return True
    return False
