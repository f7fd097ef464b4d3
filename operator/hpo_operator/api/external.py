"""Other APIs' objects as the trial template embeds them: a pod template, a Job template, any
resource with the conditions that end it, and the volume claim a checkpoint asks for.

The pod and Job templates are written as raw OpenAPI (they keep every field of their own API, and
declare only what must be there); hpo_operator.api.crd puts them where template.py's trial template
marks them.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from .base import Model
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


class TrialResource(Model):
    """Any resource as a trial (a JobSet, a PyTorchJob, ...), with the conditions that say how it
    ended. The operator's ServiceAccount must be allowed to create, watch and delete it (the Helm
    chart's trialKinds)."""

    api_version: str = Field(
        max_length=253,
        pattern=r"^([a-z0-9.-]+/)?v[0-9]+((alpha|beta)[0-9]+)?$",
        description="e.g. jobset.x-k8s.io/v1alpha2.",
    )
    kind: str = Field(max_length=63, pattern=r"^[A-Z][A-Za-z0-9]*$")
    manifest: dict[str, Any] = Field(
        description=(
            "The object without apiVersion and kind (spec, and metadata labels or annotations). "
            "Placeholders work in every string; it is named after the trial; every pod template in it "
            "(an object whose spec has containers) gets the trial's labels."
        )
    )
    success_condition: ConditionRule = Field(description="The trial succeeded once this holds.")
    failure_condition: ConditionRule = Field(
        description=(
            "The trial failed once this holds; its failure class comes from its pods (OOMKilled, "
            "evicted: Infrastructure), else Error."
        )
    )


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
