"""Other APIs' objects as the trial template embeds them: a pod template, a Job template, any
resource with the conditions that end it, and the volume claim a checkpoint asks for.

The pod and Job templates are written as raw OpenAPI (they keep every field of their own API, and
declare only what must be there); hpo_operator.api.crd puts them where template.py's trial template
marks them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from .base import Model, cel, schema_extra
from .vocabulary import AccessMode, ConditionStatus

# The embedded pod template keeps unknown fields (it is a whole PodTemplateSpec). Its containers
# are declared so that a template without containers is refused at apply time. Whether every
# ${params.NAME} names a declared parameter is checked by the operator (condition InvalidSpec):
# a CEL rule for it exceeds the API server's cost budget by far.
_STR_LIST = {"type": "array", "maxItems": 256, "items": {"type": "string", "maxLength": 4096}}
_CONTAINER = {
    "type": "object",
    "x-kubernetes-preserve-unknown-fields": True,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 63},
        "command": _STR_LIST,
        "args": _STR_LIST,
        "env": {
            "type": "array",
            "maxItems": 256,
            "items": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "properties": {
                    "name": {"type": "string", "maxLength": 256},
                    "value": {"type": "string", "maxLength": 4096},
                },
            },
        },
    },
}


def _object_template(description: str, spec_field: str, spec_schema: dict[str, Any]) -> dict[str, Any]:
    """Another API's object template (metadata and spec) that keeps its unknown fields, with the
    one spec field that must be there declared, so that a template without it is refused."""
    return {
        "type": "object",
        "description": description,
        "x-kubernetes-preserve-unknown-fields": True,
        "required": ["spec"],
        "properties": {
            "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "spec": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "required": [spec_field],
                "properties": {spec_field: spec_schema},
            },
        },
    }


POD_TEMPLATE_SCHEMA: dict[str, Any] = {
    **_object_template(
        "A pod template (metadata and spec, as in a Deployment). Placeholders ${params.NAME}, ${trial.name}, "
        "${trial.attempt} and ${experiment.name} are replaced in every string of it; restartPolicy is always Never.",
        "containers",
        {"type": "array", "minItems": 1, "maxItems": 16, "items": _CONTAINER},
    ),
    "x-kubernetes-embedded-resource": False,
}

JOB_TEMPLATE_SCHEMA: dict[str, Any] = _object_template(
    "A batch/v1 Job template (metadata and spec, as in a CronJob's jobTemplate). Placeholders work in every "
    "string; the Job is named after the trial and its pods get the trial's labels. backoffLimit defaults to 0: "
    "the operator retries by failure class; a Job that retries its pods itself is still one trial. "
    "restartPolicy defaults to Never.",
    "template",
    {
        **POD_TEMPLATE_SCHEMA,
        "description": ("The Job's pod template; placeholders work here too, restartPolicy defaults to Never."),
    },
)


class ConditionRule(Model):
    """A condition of the resource's status that decides the trial."""

    type: str = Field(min_length=1, max_length=316, description="The condition's type, e.g. Complete.")
    # validate_default: the default is parsed too, so the model holds the word "True" as before.
    status: ConditionStatus = Field(ConditionStatus.true, validate_default=True, description="The status it must have.")


# --- the kinds whose trials need no conditions or primary pod: their defaults, spelled once --------

# Labels the JobSet controller (and the job controller under it) puts on every pod.
L_REPLICATED_JOB = "jobset.sigs.k8s.io/replicatedjob-name"
L_JOBSET_JOB_INDEX = "jobset.sigs.k8s.io/job-index"
L_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


@dataclass(frozen=True)
class KnownKind:
    """A kind whose success and failure conditions and primary pod the operator knows."""

    group: str
    kind: str
    resource: str  # its plural resource name, as RBAC and the Helm chart's trialKinds name it
    success: str
    failure: str
    # The primary pod is pod 0 of job 0 of this replicated job; None: the manifest's first.
    replicated_job: str | None

    def describe(self) -> str:
        job = f"replicated job {self.replicated_job}" if self.replicated_job else "the first replicated job"
        return f"{self.kind} ({self.group}): {self.success}/{self.failure}, primary pod index 0 of {job}"


TRAINJOB = KnownKind("trainer.kubeflow.org", "TrainJob", "trainjobs", "Complete", "Failed", "node")
JOBSET = KnownKind("jobset.x-k8s.io", "JobSet", "jobsets", "Completed", "Failed", None)
KNOWN_KINDS = (TRAINJOB, JOBSET)

_KNOWN_RULE = " || ".join(f"(self.apiVersion.startsWith('{k.group}/') && self.kind == '{k.kind}')" for k in KNOWN_KINDS)


def known_kind(api_version: str, kind: str) -> KnownKind | None:
    group = api_version.rpartition("/")[0]
    return next((k for k in KNOWN_KINDS if (k.group, k.kind) == (group, kind)), None)


class TrialResource(Model):
    """Any resource as a trial (a TrainJob, a JobSet, a PyTorchJob, ...), with the conditions that
    say how it ended: defaults for the known kinds. The operator's ServiceAccount must be allowed to
    create, watch and delete it (the Helm chart's trialKinds)."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            validations=[
                cel(
                    f"(has(self.successCondition) && has(self.failureCondition)) || {_KNOWN_RULE}",
                    "successCondition and failureCondition are required for a kind other than "
                    + ", ".join(k.kind for k in KNOWN_KINDS),
                )
            ]
        )
    )

    api_version: str = Field(
        max_length=253,
        pattern=r"^([a-z0-9.-]+/)?v[0-9]+((alpha|beta)[0-9]+)?$",
        description="e.g. trainer.kubeflow.org/v1alpha1, jobset.x-k8s.io/v1alpha2.",
    )
    kind: str = Field(max_length=63, pattern=r"^[A-Z][A-Za-z0-9]*$")
    manifest: dict[str, Any] = Field(
        description=(
            "The object without apiVersion and kind (spec, and metadata labels or annotations). "
            "Placeholders work in every string (a TrainJob's trainer args, command and env too); it is "
            "named after the trial; every pod template in it (an object whose spec has containers) gets "
            "the trial's labels; a TrainJob's pods get them through a runtimePatches entry of its "
            "runtime's every replicated job."
        )
    )
    success_condition: ConditionRule | None = Field(
        None,
        description=(
            "The trial succeeded once this holds. Required but for the known kinds, whose defaults are "
            + "; ".join(k.describe() for k in KNOWN_KINDS)
            + "."
        ),
    )
    failure_condition: ConditionRule | None = Field(
        None,
        description=(
            "The trial failed once this holds; its failure class comes from its pods (OOMKilled, "
            "evicted: Infrastructure), else Error. Required but for the known kinds (see successCondition)."
        ),
    )

    @model_validator(mode="after")
    def _conditions_known(self) -> TrialResource:
        if (self.success_condition is None or self.failure_condition is None) and self.known() is None:
            raise ValueError(f"successCondition and failureCondition are required for {self.kind} (not a known kind)")
        return self

    def known(self) -> KnownKind | None:
        return known_kind(self.api_version, self.kind)

    def success(self) -> ConditionRule:
        known = self.known()
        return self.success_condition or ConditionRule(type=known.success if known else "")

    def failure(self) -> ConditionRule:
        known = self.known()
        return self.failure_condition or ConditionRule(type=known.failure if known else "")


# The PersistentVolumeClaim made for each configuration's checkpoint (template.Checkpoint). No
# docstring: it would become a description in the CRD.
class VolumeClaimTemplate(Model):
    storage_class_name: str | None = Field(
        None, max_length=253, description=("The StorageClass of the claims (default: the cluster's default class).")
    )
    size: str = Field(
        max_length=32,
        pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$",
        description="The storage each configuration gets, a quantity such as 1Gi.",
    )
    # validate_default: the default is parsed too, so the claim gets the word, as before.
    access_mode: AccessMode = Field(
        AccessMode.read_write_once, validate_default=True, description="How the volume is mounted."
    )
