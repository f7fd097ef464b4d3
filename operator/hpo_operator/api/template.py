"""What each trial runs: the trial template of an Experiment's spec, as pydantic models.

Part of the Experiment's spec (spec.py) and a CRD source like it. The pod and Job templates it
embeds are schemas of other APIs (external.py).
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from .base import Model, cel, schema_extra
from .external import TrialResource, VolumeClaimTemplate
from .vocabulary import CheckpointRetention, PodRetention


class Checkpoint(Model):
    """A volume per configuration that every attempt of it mounts: a retry resumes from what the
    failed attempt saved."""

    volume_claim_template: VolumeClaimTemplate
    mount_path: str = Field(
        max_length=4096,
        pattern=r"^/",
        description=(
            "Where the primary container sees the volume (absolute); also $HPO_CHECKPOINT_DIR and "
            "${trial.checkpointDir}. HPO_RESUME=1 is set from a configuration's second attempt on."
        ),
    )
    retention: CheckpointRetention = Field(
        CheckpointRetention.delete_on_success,
        description=(
            "When a configuration's claim is removed: DeleteOnSuccess once it succeeded (failed ones "
            "stay for inspection), Delete once it is done either way, Keep with the experiment. "
            "Deleting the experiment removes them all. With algorithm pbt a claim per segment: a "
            "generation's claims go once the next generation has ended (the last generation's stay "
            "under DeleteOnSuccess)."
        ),
    )
    copy_image: str | None = Field(
        None,
        max_length=1024,
        description=(
            "Algorithm pbt: the image of the step that copies a segment's starting checkpoint into its "
            "claim before the program starts (it runs sh, cp, mv and rm). Default: the primary "
            "container's image."
        ),
    )


class PrimaryPod(Model):
    labels: dict[str, str] = Field(
        min_length=1, description=("The primary pod has these labels (e.g. a replica type and index).")
    )


class TrialTemplate(Model):
    """What each trial runs: exactly one of template (a pod), job (a batch/v1 Job) or resource."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            validations=[
                cel(
                    "[has(self.template), has(self.job), has(self.resource)].filter(x, x).size() == 1",
                    "give exactly one of template (a pod), job (a batch/v1 Job) or resource",
                ),
                cel(
                    "!has(self.primaryPod) || !has(self.template)",
                    "primaryPod chooses among a Job's or resource's pods; a pod trial has one",
                ),
                cel(
                    "!has(self.checkpoint) || !has(self.resource)",
                    "checkpoint is for pod and Job trials (a resource's pods are its controller's)",
                ),
            ]
        )
    )

    primary_container_name: str | None = Field(
        None,
        max_length=63,
        description=(
            "The container whose exit decides the trial and whose metrics are read (default: the first container)."
        ),
    )
    pod_retention: PodRetention = Field(
        PodRetention.keep,
        description=(
            "Keep: finished trial pods (Jobs, resources) stay until the experiment is deleted (logs "
            "stay readable). Delete: deleted once the trial's result is recorded."
        ),
    )
    queue_name: str | None = Field(
        None,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description=(
            "A Kueue LocalQueue in the experiment's namespace: every trial's pod, Job or resource gets "
            "the label kueue.x-k8s.io/queue-name, and waits for admission by its queue. A waiting trial "
            "is Queued: it takes a parallelTrialCount slot (the experiment offers its queue at most that "
            "many workloads; the queue's quota decides how many run), and neither "
            "startupTimeoutSeconds nor maxTrialDurationSeconds counts its wait. A trial whose queue "
            "preempts it after it started fails as Infrastructure and is retried."
        ),
    )
    template: dict[str, Any] | None = Field(None, json_schema_extra={"x-hpo-pod-template": True})
    job: dict[str, Any] | None = Field(None, json_schema_extra={"x-hpo-job-template": True})
    resource: TrialResource | None = None
    checkpoint: Checkpoint | None = None

    def source(self) -> Any:
        """What placeholders are replaced in: the pod template, the Job, or the manifest."""
        return (
            self.template
            if self.template is not None
            else self.job
            if self.job is not None
            else self.resource.manifest
            if self.resource is not None
            else None
        )

    def containers(self) -> list[dict[str, Any]] | None:
        """The trial pod's containers (of a pod or Job template); None for a resource, whose pods
        may be of several templates."""
        if self.template is not None:
            return (self.template.get("spec") or {}).get("containers") or []
        if self.job is not None:
            return (((self.job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
        return None

    primary_pod: PrimaryPod | None = Field(
        None,
        description=(
            "Which of a Job's or resource's pods speaks for the trial (its log and exit: metrics, "
            "early stopping). Default: for a TrainJob or JobSet, pod 0 of job 0 of its replicated job (see "
            "resource.successCondition); for a Job, completion index 0 of an Indexed Job; else the newest pod. "
            "Among the pods these labels match, completion index 0 is preferred, then the newest."
        ),
    )
