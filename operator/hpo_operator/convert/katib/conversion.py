"""One Katib document converted: its metadata, search space and budgets here; the objective, the
search and the trial template in the mixins the conversion is made of."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from hpo_operator.api.spec import EXPERIMENT_NAME_MAX_LENGTH, ExperimentSpec
from hpo_operator.api.vocabulary import API_VERSION

from .fields import _known, _list, _number_text, _plain
from .objective import _Objective
from .output import Converted, KatibConversionError
from .search import _Search
from .tables import _NAME_RE, _PARAMETER_TYPES, _REFUSED_ALGORITHMS, _SPEC_FIELDS, KATIB_API_VERSION
from .template import _Template


class _Conversion(_Objective, _Search, _Template):
    """One document's conversion: run() gives the Converted Experiment or raises the first field it
    cannot carry over."""

    def run(self) -> Converted:
        doc = self.doc
        if not isinstance(doc, dict):
            raise KatibConversionError("(document)", f"must be an object, not {type(doc).__name__}")
        if doc.get("apiVersion") != KATIB_API_VERSION or doc.get("kind") != "Experiment":
            raise KatibConversionError(
                "apiVersion/kind",
                f"{doc.get('apiVersion')}/{doc.get('kind')} is not a Katib Experiment ({KATIB_API_VERSION})",
            )
        _known(doc, "", ("apiVersion", "kind", "metadata", "spec", "status"))
        metadata = self.metadata(doc.get("metadata"))
        spec = self.spec(_known(doc.get("spec"), "spec", _SPEC_FIELDS))
        manifest = {"apiVersion": API_VERSION, "kind": "Experiment", "metadata": metadata, "spec": spec}
        try:
            ExperimentSpec.model_validate(spec)
        except ValidationError as e:  # a value out of our bounds (e.g. maxTrialCount), said in our terms
            first = e.errors()[0]
            where = "spec." + ".".join(str(part) for part in first["loc"])
            raise KatibConversionError(where, f"our API refuses the converted value: {first['msg']}") from None
        source = f"{metadata['namespace']}/{metadata['name']}" if metadata.get("namespace") else metadata["name"]
        return Converted(source, manifest, tuple(self.notes))

    # --- metadata ---------------------------------------------------------------------------------

    def metadata(self, meta: Any) -> dict[str, Any]:
        # What the API server sets on a stored object is left behind; so is the last-applied
        # annotation (kubectl writes its own again).
        meta = _known(
            meta,
            "metadata",
            (
                "name",
                "namespace",
                "labels",
                "annotations",
                "uid",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "managedFields",
                "selfLink",
                "finalizers",
            ),
        )
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            raise KatibConversionError("metadata.name", "missing (a converted Experiment needs a name)")
        if len(name) > EXPERIMENT_NAME_MAX_LENGTH:
            raise KatibConversionError(
                "metadata.name",
                f"{name} has {len(name)} characters; ours have at most {EXPERIMENT_NAME_MAX_LENGTH} (trial and "
                "pod names add suffixes to it, and names are label values): choose a shorter name",
            )
        result: dict[str, Any] = {"name": name}
        if meta.get("namespace"):
            result["namespace"] = meta["namespace"]
        if meta.get("labels"):
            result["labels"] = dict(meta["labels"])
        annotations = {
            k: v
            for k, v in (meta.get("annotations") or {}).items()
            if k != "kubectl.kubernetes.io/last-applied-configuration"
        }
        if annotations:
            result["annotations"] = annotations
        return result

    # --- spec -------------------------------------------------------------------------------------

    def spec(self, spec: dict[str, Any]) -> dict[str, Any]:
        if spec.get("nasConfig") is not None:
            raise KatibConversionError("spec.nasConfig", "neural architecture search is not offered here")
        # An algorithm with no equivalent is the real reason, whatever else the search space holds
        # (Katib's hyperband example fixes its resource parameter with min == max, which we would
        # refuse first otherwise).
        katib = (spec.get("algorithm") or {}).get("algorithmName") if isinstance(spec.get("algorithm"), dict) else None
        if katib in _REFUSED_ALGORITHMS:
            raise KatibConversionError(
                "spec.algorithm.algorithmName", f"{katib} has no equivalent here: {_REFUSED_ALGORITHMS[katib]}"
            )
        parameters = self.parameters(spec.get("parameters"))
        objective = self.objective(spec.get("objective"))
        algorithm = self.algorithm(spec.get("algorithm"))
        if algorithm["name"] == "grid":
            for i, p in enumerate(parameters):
                if p["type"] == "double" and "step" not in p:
                    raise KatibConversionError(
                        f"spec.parameters[{i}].feasibleSpace.step", "grid search needs a step for double parameters"
                    )
        out: dict[str, Any] = {"objective": objective, "algorithm": algorithm, "parameters": parameters}
        out.update(self.budgets(spec))
        collector = self.metrics_collector(spec.get("metricsCollectorSpec"))
        if collector:
            out["metricsCollector"] = collector
        stopping = self.early_stopping(spec.get("earlyStopping"))
        if stopping:
            out["earlyStopping"] = stopping
        out["trialTemplate"] = self.trial_template(spec.get("trialTemplate"))
        self.population(out)
        return out

    def parameters(self, items: Any) -> list[dict[str, Any]]:
        items = _list(items, "spec.parameters")
        if not items:
            raise KatibConversionError("spec.parameters", "missing (the search space)")
        result = []
        for i, item in enumerate(items):
            here = f"spec.parameters[{i}]"
            item = _known(item, here, ("name", "parameterType", "feasibleSpace"))
            name = item.get("name")
            if not isinstance(name, str) or not name:
                raise KatibConversionError(f"{here}.name", "missing")
            ours = name if _NAME_RE.match(name) else re.sub(r"[^A-Za-z0-9_]", "_", name)
            if not _NAME_RE.match(ours):
                ours = "_" + ours
            if name in self.renamed or ours in self.renamed.values():
                raise KatibConversionError(f"{here}.name", f"{name} is given twice (or twice once renamed to {ours})")
            self.renamed[name] = ours
            if ours != name:
                self.note(
                    "spec.parameters",
                    f"Katib's parameter {name} is named {ours} here: our parameter names are identifiers "
                    f"(they are ${{params.NAME}} placeholders).",
                )
            result.append(self.parameter(item, ours, here))
        return result

    def parameter(self, item: dict[str, Any], name: str, here: str) -> dict[str, Any]:
        kind = item.get("parameterType")
        if kind not in _PARAMETER_TYPES:
            raise KatibConversionError(f"{here}.parameterType", f"{kind!r} is not one of {', '.join(_PARAMETER_TYPES)}")
        space = _known(
            item.get("feasibleSpace"), f"{here}.feasibleSpace", ("min", "max", "step", "list", "distribution")
        )
        out: dict[str, Any] = {"name": name, "type": kind}
        distribution = space.get("distribution") or "uniform"
        where = f"{here}.feasibleSpace"
        if distribution not in ("uniform", "logUniform", "normal", "logNormal"):
            raise KatibConversionError(
                f"{where}.distribution", f"{distribution!r} is not one of uniform, logUniform, normal, logNormal"
            )
        if kind in ("discrete", "categorical"):
            for key in ("min", "max", "step"):
                if space.get(key) not in (None, ""):
                    raise KatibConversionError(f"{where}.{key}", f"a {kind} parameter takes a list, not {key}")
            if distribution != "uniform":
                raise KatibConversionError(
                    f"{where}.distribution", f"{distribution} applies to int and double parameters, not {kind}"
                )
            values = _list(space.get("list"), f"{where}.list")
            if not values:
                raise KatibConversionError(f"{where}.list", f"a {kind} parameter needs a list of values")
            for j, value in enumerate(values):
                if value is None or isinstance(value, (dict, list, bool)):
                    raise KatibConversionError(f"{where}.list[{j}]", f"{value!r} is not a value")
                if kind == "discrete":
                    _number_text(value, f"{where}.list[{j}]")
            texts = [str(v) for v in values]
            if len(set(texts)) != len(texts):
                raise KatibConversionError(f"{where}.list", "repeats a value")
            out["values"] = texts
            return out
        if space.get("list"):
            raise KatibConversionError(f"{where}.list", f"an {kind} parameter takes min and max, not a list")
        bounds = {}
        for key in ("min", "max"):
            if space.get(key) in (None, ""):
                raise KatibConversionError(f"{where}.{key}", f"missing (an {kind} parameter needs min and max)")
            bounds[key] = _number_text(space[key], f"{where}.{key}")
        step = None if space.get("step") in (None, "") else _number_text(space["step"], f"{where}.step")
        if kind == "int":
            for key, value in [*bounds.items(), ("step", step)]:
                if value is not None and not value.is_integer():
                    raise KatibConversionError(f"{where}.{key}", f"an int parameter needs whole numbers, not {value}")
        if bounds["min"] >= bounds["max"]:
            raise KatibConversionError(f"{where}.max", "must be greater than min")
        out["min"], out["max"] = _plain(bounds["min"]), _plain(bounds["max"])
        if step is not None:
            if step <= 0:
                raise KatibConversionError(f"{where}.step", "must be greater than 0")
            out["step"] = _plain(step)
        if distribution in ("logUniform", "logNormal"):
            if bounds["min"] <= 0:
                raise KatibConversionError(f"{where}.min", f"a {distribution} parameter needs min > 0")
            if step is not None:
                raise KatibConversionError(
                    f"{where}.step",
                    "a log-scale parameter takes no step here (Optuna samples log-scale values without one)",
                )
            out["log"] = True
        if distribution in ("normal", "logNormal"):
            scale = " on a log scale" if distribution == "logNormal" else ""
            self.note(
                "spec.parameters",
                f"Katib drew {name} from a {distribution} distribution: a bell centred between min and max"
                f"{scale}, with a sixth of the range as its standard deviation, and values beyond min and max "
                f"now and then. Here it is drawn uniformly{scale} between min and max ("
                + ("log: true" if scale else "no prior")
                + "), as bayesianoptimization becomes tpe: every part of the range is tried as often, "
                "nothing outside it. Our samplers take no normal prior.",
            )
        return out

    def budgets(self, spec: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        counts = {}
        for key in ("parallelTrialCount", "maxTrialCount", "maxFailedTrialCount"):
            if spec.get(key) is not None:
                value = spec[key]
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise KatibConversionError(f"spec.{key}", f"{value!r} is not a whole number of at least 0")
                counts[key] = value
        if not counts.get("maxTrialCount"):
            raise KatibConversionError(
                "spec.maxTrialCount", "missing (or 0): our experiments need a budget of trials; give one"
            )
        # Katib's default parallelism is 3; Katib never runs more trials than maxTrialCount at once.
        parallel = counts.get("parallelTrialCount", 3)
        if parallel < 1:
            raise KatibConversionError("spec.parallelTrialCount", "must be at least 1")
        out["parallelTrialCount"] = min(parallel, counts["maxTrialCount"])
        out["maxTrialCount"] = counts["maxTrialCount"]
        if "maxFailedTrialCount" in counts:
            katib = counts["maxFailedTrialCount"]
            # Katib fails the experiment once N trials failed (N >= 1; at the first failure for 0),
            # ours once more than N configurations finally failed: N - 1 says the same.
            out["maxFailedTrialCount"] = max(katib - 1, 0)
            self.note(
                "spec.maxFailedTrialCount",
                f"Katib failed the experiment once {max(katib, 1)} {'trial' if katib <= 1 else 'trials'} had failed; "
                "here it fails once more "
                f"than maxFailedTrialCount configurations finally failed, so {out['maxFailedTrialCount']} "
                "means the same.",
            )
        policy = spec.get("resumePolicy") or "Never"
        if policy not in ("Never", "LongRunning", "FromVolume"):
            raise KatibConversionError("spec.resumePolicy", f"{policy!r} is not Never, LongRunning or FromVolume")
        if policy != "Never":
            volume = (
                "pbt's checkpoints are the segments' claims here (trialTemplate.checkpoint)."
                if self.pbt is not None
                else "No volume is needed: the operator rebuilds each study from the Trials."
            )
            self.note(
                "spec",
                f"resumePolicy {policy}: here any experiment that ended at maxTrialCount (or a budget) goes on "
                "with the same search when the limit is raised (`kubectl hpo extend EXPERIMENT --trials N`). "
                f"{volume}",
            )
        return out
