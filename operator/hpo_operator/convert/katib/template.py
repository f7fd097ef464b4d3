"""The trial template rewritten: Katib's trialSpec as our job or resource, its trialParameters as
our placeholders, its success and failure conditions and primary pod in our fields."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .fields import _Document, _known, _list
from .output import KatibConversionError
from .tables import (
    _CONDITION,
    _CONDITION_FORM,
    _DEFAULT_CONDITIONS,
    _DEFAULT_PRIMARY_LABELS,
    _TRIAL_PARAMETER,
    JOB_API_VERSION,
    JOB_KIND,
)


class _Template(_Document):
    def trial_template(self, template: Any) -> dict[str, Any]:
        path = "spec.trialTemplate"
        template = _known(
            template,
            path,
            (
                "retain",
                "trialSpec",
                "configMap",
                "trialParameters",
                "primaryPodLabels",
                "primaryContainerName",
                "successCondition",
                "failureCondition",
            ),
        )
        if template.get("configMap") is not None:
            raise KatibConversionError(
                f"{path}.configMap",
                "a trial template kept in a ConfigMap is not taken here: ours is part of the Experiment, so "
                "that the API server checks it at apply and it cannot change under a running experiment. "
                "Put the ConfigMap's template under trialSpec and convert again",
            )
        trial_spec = template.get("trialSpec")
        if not isinstance(trial_spec, dict):
            raise KatibConversionError(f"{path}.trialSpec", "missing (the trial's manifest)")
        api_version, kind = trial_spec.get("apiVersion"), trial_spec.get("kind")
        if not isinstance(api_version, str) or not isinstance(kind, str) or not api_version or not kind:
            raise KatibConversionError(f"{path}.trialSpec", "needs apiVersion and kind")
        replacements = self.trial_parameters(template.get("trialParameters"), trial_spec)
        body = _substitute(trial_spec, replacements, f"{path}.trialSpec")
        manifest = {k: v for k, v in body.items() if k not in ("apiVersion", "kind")}
        meta = manifest.pop("metadata", None) or {}
        # The trial names its object and puts it in the experiment's namespace, as Katib does.
        kept_meta = {k: meta[k] for k in ("labels", "annotations") if meta.get(k)}
        if kept_meta:
            manifest["metadata"] = kept_meta

        out: dict[str, Any] = {}
        if template.get("primaryContainerName"):
            out["primaryContainerName"] = template["primaryContainerName"]
        retain = template.get("retain", False)
        if not isinstance(retain, bool):
            raise KatibConversionError(f"{path}.retain", f"{retain!r} is not true or false")
        # Katib deletes a finished trial's object unless retain is true; ours keeps or deletes
        # them (podRetention) once the result is recorded, and with the experiment either way.
        out["podRetention"] = "Keep" if retain else "Delete"

        success, failure = self.conditions(template, kind)
        labels = template.get("primaryPodLabels") or _DEFAULT_PRIMARY_LABELS.get(kind)
        if labels:
            if not isinstance(labels, dict):
                raise KatibConversionError(f"{path}.primaryPodLabels", "must be a map of labels")
            out["primaryPod"] = {"labels": {str(k): str(v) for k, v in labels.items()}}
        is_job = api_version == JOB_API_VERSION and kind == JOB_KIND
        if is_job and (success, failure) == (("Complete", "True"), ("Failed", "True")):
            if "spec" not in manifest or "template" not in (manifest.get("spec") or {}):
                raise KatibConversionError(f"{path}.trialSpec.spec.template", "missing (the Job's pod template)")
            extra = sorted(set(manifest) - {"metadata", "spec"})
            if extra:
                raise KatibConversionError(f"{path}.trialSpec.{extra[0]}", "unknown field of a Job")
            if "backoffLimit" not in manifest["spec"]:
                self.note(
                    "spec.trialTemplate",
                    "the Job has no backoffLimit: under Katib it re-ran a failed pod up to 6 times (the Job's "
                    "default); here it defaults to 0 and the operator re-runs failed trials by failure class "
                    "(retryPolicy). Set backoffLimit to keep the Job's own retries.",
                )
            out["job"] = manifest
            return out
        out["resource"] = {
            "apiVersion": api_version,
            "kind": kind,
            "successCondition": {"type": success[0], "status": success[1]},
            "failureCondition": {"type": failure[0], "status": failure[1]},
            "manifest": manifest,
        }
        self.note(
            "spec.trialTemplate",
            f"a {kind} trial: the operator's ServiceAccount must be allowed to create, watch and delete "
            f"{kind} objects ({api_version}; the Helm chart's trialKinds).",
        )
        return out

    def conditions(self, template: dict[str, Any], kind: str) -> tuple[tuple[str, str], tuple[str, str]]:
        result = []
        for key, index in (("successCondition", 0), ("failureCondition", 1)):
            here = f"spec.trialTemplate.{key}"
            expression = template.get(key)
            if not expression:
                default = _DEFAULT_CONDITIONS.get(kind)
                if default is None:
                    raise KatibConversionError(
                        here, f"missing: Katib has no default for kind {kind}, and neither have we; give one"
                    )
                result.append((default[index], "True"))
                continue
            match = _CONDITION.match(str(expression))
            if not match:
                raise KatibConversionError(
                    here,
                    f"{expression!r} is not a condition test this converter reads ({_CONDITION_FORM}): a trial "
                    "here ends by one condition of its object having a type and a status",
                )
            result.append((match.group(1), match.group(2)))
        return result[0], result[1]

    def trial_parameters(self, items: Any, trial_spec: dict[str, Any]) -> dict[str, str]:
        """What each ${trialParameters.NAME} becomes in our template."""
        path = "spec.trialTemplate.trialParameters"
        meta = trial_spec.get("metadata") or {}
        replacements: dict[str, str] = {}
        for i, item in enumerate(_list(items, path)):
            here = f"{path}[{i}]"
            item = _known(item, here, ("name", "description", "reference"))
            name, reference = item.get("name"), item.get("reference")
            if not isinstance(name, str) or not name:
                raise KatibConversionError(f"{here}.name", "missing")
            if name in replacements:
                raise KatibConversionError(f"{here}.name", f"{name} is given twice")
            if not isinstance(reference, str) or not reference:
                raise KatibConversionError(f"{here}.reference", "missing")
            replacements[name] = self.reference(reference, f"{here}.reference", trial_spec, meta)
        return replacements

    def reference(self, reference: str, here: str, trial_spec: dict[str, Any], meta: dict[str, Any]) -> str:
        if reference in self.renamed:
            return f"${{params.{self.renamed[reference]}}}"
        if reference == "${trialSpec.Name}":
            return "${trial.name}"
        if reference == "${trialSpec.Kind}":
            return str(trial_spec.get("kind"))  # fixed by the template: its value, as Katib gives it
        if reference == "${trialSpec.APIVersion}":
            return str(trial_spec.get("apiVersion"))
        if reference == "${trialSpec.Namespace}":
            raise KatibConversionError(
                here,
                "${trialSpec.Namespace} has no placeholder here (${trial.name}, ${trial.attempt}, "
                "${experiment.name}); read the namespace in the pod from the downward API "
                "(env valueFrom.fieldRef.fieldPath: metadata.namespace)",
            )
        labelled = re.fullmatch(r"\$\{trialSpec\.(Labels|Annotations)\[(.+)\]\}", reference)
        if labelled:
            which = labelled.group(1).lower()
            values = meta.get(which) or {}
            if labelled.group(2) not in values:
                raise KatibConversionError(
                    here, f"the trialSpec's metadata.{which} has no {labelled.group(2)} (its value is taken from there)"
                )
            return str(values[labelled.group(2)])
        raise KatibConversionError(here, f"{reference!r} names no parameter of spec.parameters (nor trial metadata)")


def _substitute(node: Any, replacements: Mapping[str, str], path: str) -> Any:
    """The trial spec with every ${trialParameters.NAME} replaced, in keys and values."""
    if isinstance(node, str):

        def replace(match: re.Match[str]) -> str:
            if match.group(1) not in replacements:
                raise KatibConversionError(path, f"uses ${{trialParameters.{match.group(1)}}}, not a trialParameter")
            return replacements[match.group(1)]

        return _TRIAL_PARAMETER.sub(replace, node)
    if isinstance(node, list):
        return [_substitute(item, replacements, f"{path}[{i}]") for i, item in enumerate(node)]
    if isinstance(node, dict):
        return {
            _substitute(k, replacements, path): _substitute(v, replacements, _child(path, k)) for k, v in node.items()
        }
    return node


def _child(path: str, key: Any) -> str:
    """A field's path: .key, or ["key"] for a key such as a label's (dots, slashes)."""
    return f"{path}.{key}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", str(key)) else f'{path}["{key}"]'
