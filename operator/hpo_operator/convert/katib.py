"""Katib `kubeflow.org/v1beta1` Experiments turned into ours (`kubectl hpo convert`).

Pure: parsed YAML documents in, our Experiment manifests out, each with the notes that say where
a mapping changes meaning (written as `# note:` comments above the field in the YAML form).
Anything without an equivalent here raises KatibConversionError naming the Katib field, with the
reason; nothing is dropped silently. Each result is checked against our models (ExperimentSpec),
so what it prints is what our API accepts.

Katib's behaviour is taken from its v1beta1 API types, its defaulting webhook and its suggestion
services (which setting each algorithm reads), as documented in its repository.
"""

from __future__ import annotations

import copy
import math
import re
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from hpo_operator.api.algorithms import MAX_POPULATION, MIN_POPULATION, SettingsError, parse_settings
from hpo_operator.api.parameters import METRIC_NAME_PATTERN, NAME_PATTERN
from hpo_operator.api.spec import EXPERIMENT_NAME_MAX_LENGTH, ExperimentSpec, metrics_format_problem
from hpo_operator.api.vocabulary import API_VERSION

KATIB_API_VERSION = "kubeflow.org/v1beta1"
# A converted Job keeps `job`; its conditions are fixed (Complete, Failed), as Katib's defaults are.
JOB_API_VERSION, JOB_KIND = "batch/v1", "Job"


class KatibConversionError(ValueError):
    """A Katib field with no equivalent here (or not valid in Katib either): its path and why."""

    def __init__(self, path: str, reason: str, document: str | None = None) -> None:
        self.path, self.reason, self.document = path, reason, document
        super().__init__(f"{document}: {path}: {reason}" if document else f"{path}: {reason}")


@dataclass(frozen=True)
class Note:
    """Where the conversion changes meaning: our field's path and what changed."""

    path: str
    text: str


@dataclass(frozen=True)
class Converted:
    """One converted Experiment: our manifest and the notes on it."""

    source: str  # the Katib Experiment, namespace/name or name
    manifest: dict[str, Any]
    notes: tuple[Note, ...] = ()

    @property
    def name(self) -> str:
        return self.manifest["metadata"]["name"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "manifest": copy.deepcopy(self.manifest),
            "notes": [{"path": n.path, "text": n.text} for n in self.notes],
        }

    def to_yaml(self) -> str:
        return _emit(self)


def convert(documents: Iterable[Any], *, gp: bool = True) -> list[Converted]:
    """Our Experiments from parsed Katib documents (None, an empty document, is skipped; a v1 List
    is read item by item). `gp`: Katib's bayesianoptimization becomes gp (a Gaussian process, as
    Katib's; it needs the operator's gp image flavour), else tpe, with a note either way."""
    items: list[Any] = []
    for doc in documents:
        if isinstance(doc, dict) and doc.get("kind") == "List" and doc.get("apiVersion") == "v1":
            items.extend(doc.get("items") or [])
        elif doc is not None:
            items.append(doc)
    if not items:
        raise KatibConversionError("input", "holds no Katib Experiment")
    results = []
    for index, doc in enumerate(items, start=1):
        name = ((doc.get("metadata") or {}).get("name") if isinstance(doc, dict) else None) or None
        label = f"experiment {name}" if name else f"document {index}"
        try:
            results.append(_Conversion(doc, gp=gp).run())
        except KatibConversionError as e:
            raise KatibConversionError(e.path, e.reason, label) from None
    return results


def convert_yaml(text: str, *, gp: bool = True) -> list[Converted]:
    """convert() over the documents of a YAML (or JSON) text."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        raise KatibConversionError("input", f"not valid YAML: {e}") from None
    return convert(documents, gp=gp)


def to_yaml(converted: Iterable[Converted]) -> str:
    """The converted Experiments as one YAML stream, ready for `kubectl apply -f -`."""
    return "---\n".join(c.to_yaml() for c in converted)


# --- the conversion of one document ---------------------------------------------------------------

_PARAMETER_TYPES = ("double", "int", "discrete", "categorical")
_NAME_RE = re.compile(NAME_PATTERN)
_METRIC_RE = re.compile(METRIC_NAME_PATTERN)
_TRIAL_PARAMETER = re.compile(r"\$\{trialParameters\.([^}]*)\}")
# Katib's success and failure conditions are gjson paths; the ones its defaults and examples use
# test one condition's type and status, which our typed conditions say too.
_CONDITION = re.compile(
    r'^\s*status\.conditions\.#\(\s*type\s*==\s*"([^"]+)"\s*\)#\s*\|\s*'
    r'#\(\s*status\s*==\s*"(True|False|Unknown)"\s*\)#?\s*$'
)
_CONDITION_FORM = 'status.conditions.#(type=="TYPE")#|#(status=="True")#'
# Katib's defaults by kind (its defaulting webhook): conditions and the primary pod's labels.
_KUBEFLOW_JOB_KINDS = ("TFJob", "PyTorchJob", "XGBoostJob", "MPIJob")
_DEFAULT_CONDITIONS = {
    **{kind: ("Succeeded", "Failed") for kind in _KUBEFLOW_JOB_KINDS},
    "TrainJob": ("Complete", "Failed"),
    JOB_KIND: ("Complete", "Failed"),
}
_DEFAULT_PRIMARY_LABELS = {
    **{kind: {"training.kubeflow.org/job-role": "master"} for kind in _KUBEFLOW_JOB_KINDS},
    "TrainJob": {"jobset.sigs.k8s.io/replicatedjob-name": "node", "batch.kubernetes.io/job-completion-index": "0"},
}

# Katib's algorithm name -> ours, with the Katib settings that map to ours (random_state is the
# seed for every algorithm). Katib's services read these (hyperopt for random and tpe, Optuna for
# grid and multivariate-tpe, goptuna for cmaes and sobol, scikit-optimize for bayesianoptimization).
_ALGORITHMS: dict[str, tuple[str, dict[str, str]]] = {
    "random": ("random", {}),
    "grid": ("grid", {}),
    "tpe": (
        "tpe",
        {
            "n_startup_trials": "nStartupTrials",
            "n_ei_candidates": "nEICandidates",
            "n_EI_candidates": "nEICandidates",
            "prior_weight": "priorWeight",
        },
    ),
    "multivariate-tpe": ("tpe", {"n_startup_trials": "nStartupTrials", "n_ei_candidates": "nEICandidates"}),
    "cmaes": ("cmaes", {"sigma": "sigma0"}),
    "sobol": ("qmc", {}),
    "bayesianoptimization": ("gp", {"n_initial_points": "nStartupTrials"}),
}
# Without the gp flavour (convert --no-gp): the nearest model-based algorithm every operator has.
_BAYESIAN_WITHOUT_GP = ("tpe", {"n_initial_points": "nStartupTrials"})
# Settings Katib takes that have no counterpart here: converted with a note saying what is lost.
_NOT_CARRIED = {
    "tpe": {"gamma": "our TPE splits good from bad trials at Optuna's own default quantile"},
    "cmaes": {"restart_strategy": "our CMA-ES does not restart with a larger population (IPOP/BIPOP)"},
    "bayesianoptimization": {
        "base_estimator": "gp always models the objective with a Gaussian process (Matern 5/2, one length scale "
        "per parameter), not a forest",
        "acq_func": "gp chooses by log expected improvement (with several trials running, its batch form)",
        "acq_optimizer": "gp optimises its acquisition function by quasi-random candidates, then L-BFGS-B and "
        "line searches",
    },
}
_NOT_CARRIED_WITHOUT_GP = {
    "base_estimator": "TPE models the objective with Parzen estimators, not a Gaussian process or forest",
    "acq_func": "TPE chooses by its expected-improvement ratio, not an acquisition function",
    "acq_optimizer": "TPE samples its candidates, it does not optimise an acquisition function",
}
# Katib's defaults and our gp's agree on these: nothing is lost.
_SAME_AS_GP = {"base_estimator": "gp"}
_REFUSED_ALGORITHMS = {
    "hyperband": (
        "Katib's hyperband sets the parameter named by resource_name to each bracket's budget; our "
        "algorithms never set a parameter for the trial. The nearest here is algorithm random with "
        "earlyStopping asha (successive halving, which hyperband runs in brackets): fix the resource "
        "parameter at its maximum, have the trial print step=N as it trains, and write that by hand"
    ),
    "enas": "neural architecture search (nasConfig) is not offered here",
    "darts": "neural architecture search (nasConfig) is not offered here",
}
_REFUSED_COLLECTORS = {
    "File": (
        "the operator reads a trial's stdout and termination message through the API server and runs "
        "no sidecar to read files in the pod (only a File collector on /dev/termination-log maps). "
        "Print the metrics (name=value) or write them as a JSON object to /dev/termination-log"
    ),
    "TensorFlowEvent": (
        "the operator runs no sidecar to read TensorFlow event files; print the scalars as name=value "
        "lines, or write them as a JSON object to /dev/termination-log"
    ),
    "PrometheusMetric": (
        "the operator does not scrape trial pods; print the metrics as name=value lines, or write "
        "them as a JSON object to /dev/termination-log"
    ),
    "Push": (
        "there is no metrics service to push to; a trial reports by printing its metrics (name=value "
        "or JSON lines) or by writing them as a JSON object to /dev/termination-log"
    ),
    "Custom": "the operator runs no sidecar of yours; print the metrics or write them to /dev/termination-log",
}
_SEED_MAX = 2**31 - 1


def _number_text(value: Any, path: str) -> float:
    """A Katib number (written as a string, or a YAML number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise KatibConversionError(path, f"{value!r} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise KatibConversionError(path, f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise KatibConversionError(path, f"{value!r} is not a finite number")
    return number


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _plain(number: float) -> int | float:
    """A whole number as an int, so that the YAML says 3, not 3.0."""
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


def _known(obj: Any, path: str, keys: Iterable[str]) -> dict[str, Any]:
    """obj as a mapping whose keys are all known (an unknown one would be dropped silently)."""
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise KatibConversionError(path, f"must be an object, not {type(obj).__name__}")
    allowed = set(keys)
    for key in obj:
        if key not in allowed:
            raise KatibConversionError(f"{path}.{key}" if path else str(key), "unknown field (not Katib v1beta1)")
    return obj


def _list(obj: Any, path: str) -> list[Any]:
    if obj is None:
        return []
    if not isinstance(obj, list):
        raise KatibConversionError(path, f"must be a list, not {type(obj).__name__}")
    return obj


def _settings(items: Any, path: str) -> list[tuple[str, str, str]]:
    """Katib's name/value settings as (name, value, path of the setting)."""
    result = []
    seen: set[str] = set()
    for i, item in enumerate(_list(items, path)):
        here = f"{path}[{i}]"
        item = _known(item, here, ("name", "value"))
        name, value = item.get("name"), item.get("value")
        if not isinstance(name, str) or not name:
            raise KatibConversionError(f"{here}.name", "missing")
        if name in seen:
            raise KatibConversionError(f"{here}.name", f"{name} is given twice")
        seen.add(name)
        if value is None or isinstance(value, (dict, list)):
            raise KatibConversionError(f"{here}.value", "must be a string")
        result.append((name, str(value), here))
    return result


@dataclass
class _Conversion:
    doc: Any
    gp: bool = True  # bayesianoptimization becomes gp (else tpe)
    notes: list[Note] = field(default_factory=list)
    # Katib parameter name -> ours (ours are identifiers: they are ${params.NAME} placeholders).
    renamed: dict[str, str] = field(default_factory=dict)
    # Katib's pbt settings, until the budgets and the trial template are known (population()).
    pbt: dict[str, Any] | None = None

    def note(self, path: str, text: str) -> None:
        self.notes.append(Note(path, text))

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

    def objective(self, objective: Any) -> dict[str, Any]:
        objective = _known(
            objective,
            "spec.objective",
            ("type", "goal", "objectiveMetricName", "additionalMetricNames", "metricStrategies"),
        )
        kind = objective.get("type")
        if kind not in ("minimize", "maximize"):
            raise KatibConversionError("spec.objective.type", f"{kind!r} is not minimize or maximize")
        metric = objective.get("objectiveMetricName")
        if not isinstance(metric, str) or not metric:
            raise KatibConversionError("spec.objective.objectiveMetricName", "missing")
        if not _METRIC_RE.match(metric):
            raise KatibConversionError(
                "spec.objective.objectiveMetricName",
                f"{metric} is not a metric name we read: a letter or _ first, then letters, digits and _ . / -; "
                "rename the metric the trial reports",
            )
        out: dict[str, Any] = {"type": kind, "metricName": metric}
        if objective.get("goal") is not None:
            out["goal"] = _plain(_number_text(objective["goal"], "spec.objective.goal"))
        additional = [
            str(m) for m in _list(objective.get("additionalMetricNames"), "spec.objective.additionalMetricNames")
        ]
        if metric in additional:
            raise KatibConversionError("spec.objective.additionalMetricNames", f"repeats the objective metric {metric}")
        if len(set(additional)) != len(additional):
            raise KatibConversionError("spec.objective.additionalMetricNames", "repeats a metric")
        if additional:
            out["additionalMetricNames"] = additional
        self.metric_strategies(objective.get("metricStrategies"), kind, [metric, *additional])
        return out

    def metric_strategies(self, items: Any, kind: str, metrics: list[str]) -> None:
        """Katib extracts each metric's value by a strategy (min, max, latest); ours always keeps the
        last value reported. What differs is said in one note."""
        # Katib's defaulting webhook: min when minimising, max when maximising, for every metric.
        default = "min" if kind == "minimize" else "max"
        strategies = {m: (default, True) for m in metrics}
        for i, item in enumerate(_list(items, "spec.objective.metricStrategies")):
            here = f"spec.objective.metricStrategies[{i}]"
            item = _known(item, here, ("name", "value"))
            if item.get("name") not in strategies:
                raise KatibConversionError(
                    f"{here}.name", f"{item.get('name')!r} is neither the objective nor an additional metric"
                )
            if item.get("value") not in ("min", "max", "latest"):
                raise KatibConversionError(f"{here}.value", f"{item.get('value')!r} is not min, max or latest")
            strategies[item["name"]] = (item["value"], False)
        changed = [
            f"the {value} of {name}" + (" (its default)" if implicit else "")
            for name, (value, implicit) in strategies.items()
            if value != "latest"
        ]
        if changed:
            self.note(
                "spec.objective",
                f"metricStrategies: of the values a trial reported, Katib kept {_and(changed)}; its default "
                "is the min when minimising and the max when maximising. Here a trial keeps the last value it "
                "reports of each metric (the last log line naming it, or its termination message), and that "
                "is its objective: report the best value last to keep Katib's result.",
            )

    def algorithm(self, algorithm: Any) -> dict[str, Any]:
        algorithm = _known(algorithm, "spec.algorithm", ("algorithmName", "algorithmSettings"))
        katib = algorithm.get("algorithmName")
        path = "spec.algorithm.algorithmName"
        if katib == "pbt":
            return self.pbt_algorithm(algorithm)
        if katib in _REFUSED_ALGORITHMS:
            raise KatibConversionError(path, f"{katib} has no equivalent here: {_REFUSED_ALGORITHMS[katib]}")
        if katib not in _ALGORITHMS:
            known = ", ".join([*_ALGORITHMS, "pbt", *_REFUSED_ALGORITHMS])
            raise KatibConversionError(path, f"{katib!r} is not a Katib algorithm ({known})")
        ours, mapping = _ALGORITHMS[katib]
        not_carried = _NOT_CARRIED.get(katib, {})
        if katib == "bayesianoptimization" and not self.gp:
            (ours, mapping), not_carried = _BAYESIAN_WITHOUT_GP, _NOT_CARRIED_WITHOUT_GP
        out: dict[str, Any] = {"name": ours}
        settings: dict[str, str] = {}
        if katib == "multivariate-tpe":
            settings["multivariate"] = "true"
        if katib == "sobol":
            settings["qmcType"] = "sobol"
        lost = []
        for name, value, here in _settings(algorithm.get("algorithmSettings"), "spec.algorithm.algorithmSettings"):
            if name == "random_state":
                seed = _number_text(value, f"{here}.value")
                if not seed.is_integer() or not 0 <= seed <= _SEED_MAX:
                    raise KatibConversionError(f"{here}.value", f"a seed is a whole number from 0 to {_SEED_MAX}")
                out["seed"] = int(seed)
            elif name in mapping:
                target = mapping[name]
                if target in settings:
                    raise KatibConversionError(f"{here}.name", f"{name} sets {target} a second time")
                try:
                    parse_settings(ours, {target: value})
                except SettingsError as e:
                    raise KatibConversionError(f"{here}.value", f"{value!r}: {e}") from None
                settings[target] = value
            elif name == "restart_strategy" and katib == "cmaes" and value.lower() == "none":
                pass  # Katib's own default: nothing to carry
            elif ours == "gp" and _SAME_AS_GP.get(name) == value.lower():
                pass  # what our gp does too
            elif name in not_carried:
                lost.append(f"{name}={value} has no counterpart ({not_carried[name]})")
            else:
                takes = ", ".join(["random_state", *mapping, *not_carried])
                raise KatibConversionError(f"{here}.name", f"Katib's {katib} takes no setting {name} ({takes})")
        if settings:
            out["settings"] = [{"name": k, "value": v} for k, v in settings.items()]
        if katib == "bayesianoptimization" and ours == "gp":
            self.note(
                "spec.algorithm",
                "Katib's bayesianoptimization (scikit-optimize's Gaussian process) becomes gp, Optuna's "
                "Gaussian-process sampler. It needs the operator's gp image flavour (the chart's "
                "image.flavour: gp), which has PyTorch; an operator without it refuses the experiment "
                "(InvalidSpec, saying so): convert with --no-gp for tpe instead. n_initial_points maps to "
                "nStartupTrials (random trials before the model is used).",
            )
        elif katib == "bayesianoptimization":
            self.note(
                "spec.algorithm",
                "Katib's bayesianoptimization (scikit-optimize's Gaussian process) becomes tpe, Optuna's "
                "Tree-structured Parzen Estimator: also model-based Bayesian optimisation (converted with "
                "--no-gp; gp, a Gaussian process, needs the operator's gp image flavour). "
                "n_initial_points maps to nStartupTrials (random trials before the model is used).",
            )
        if lost:
            self.note("spec.algorithm", f"Katib's {katib} settings not carried over: " + "; ".join(lost) + ".")
        return out

    def pbt_algorithm(self, algorithm: dict[str, Any]) -> dict[str, Any]:
        """Katib's pbt settings (its suggestion service requires the first three); the population,
        the checkpoint and maxTrialCount are fitted together in population(), once the budgets and
        the trial template are known."""
        found: dict[str, tuple[str, str]] = {}
        takes = ("suggestion_trial_dir", "n_population", "truncation_threshold", "resample_probability")
        for name, value, here in _settings(algorithm.get("algorithmSettings"), "spec.algorithm.algorithmSettings"):
            if name not in takes:
                raise KatibConversionError(f"{here}.name", f"Katib's pbt takes no setting {name} ({', '.join(takes)})")
            found[name] = (value, f"{here}.value")
        for name in takes[:3]:
            if name not in found:
                raise KatibConversionError("spec.algorithm.algorithmSettings", f"Katib's pbt needs the setting {name}")
        size_text, where = found["n_population"]
        size = _number_text(size_text, where)
        if not size.is_integer() or not MIN_POPULATION <= size <= MAX_POPULATION:
            raise KatibConversionError(
                where, f"a population is a whole number from {MIN_POPULATION} to {MAX_POPULATION} here, not {size_text}"
            )
        quantile_text, where = found["truncation_threshold"]
        quantile = _number_text(quantile_text, where)
        if not 0 < quantile <= 0.5:
            raise KatibConversionError(
                where,
                f"{quantile_text} has no equivalent here: the worst truncationQuantile of the population copy "
                "the best truncationQuantile, so it is above 0 and at most 0.5 (no member is both)",
            )
        resample = "0"
        if "resample_probability" in found:
            resample, where = found["resample_probability"]
            if not 0 <= _number_text(resample, where) <= 1:
                raise KatibConversionError(where, f"{resample} is not a probability (0 to 1)")
        directory, where = found["suggestion_trial_dir"]
        if not directory.startswith("/"):
            raise KatibConversionError(where, f"{directory!r} is not an absolute path")
        self.pbt = {"population": int(size), "quantile": quantile_text, "resample": resample, "mount": directory}
        self.note(
            "spec.algorithm",
            "Katib's pbt becomes pbt: a segment of each member is a Trial; once a generation has ended, "
            f"the worst {quantile_text} of the members copy the checkpoint and hyperparameters of one of the "
            "best and perturb them. "
            + (
                f"resample_probability {resample}: Katib kept a value it did not resample, here it is perturbed "
                "(times 0.8 or 1.2, perturbationFactors)."
                if "resample_probability" in found
                else "Without resample_probability Katib perturbed every value by 0.8 or 1.2: resampleProbability 0 "
                "does the same here."
            ),
        )
        return {"name": "pbt"}

    def population(self, out: dict[str, Any]) -> None:
        """Fits a converted pbt experiment together: its population within maxTrialCount (which
        counts segments here, populationSize x generations), and a checkpoint claim per segment
        mounted where Katib mounted its trial directory."""
        if self.pbt is None:
            return
        template = out["trialTemplate"]
        if "job" not in template:
            raise KatibConversionError(
                "spec.trialTemplate.trialSpec",
                "pbt runs Job (or pod) trials here: each segment's checkpoint claim is mounted in the trial's own "
                "pod, and a training operator's pods (TFJob, PyTorchJob, TrainJob) are its own",
            )
        if "earlyStopping" in out:
            raise KatibConversionError(
                "spec.earlyStopping", "pbt itself decides at every generation which members go on: no earlyStopping"
            )
        katib_max, size = out["maxTrialCount"], self.pbt["population"]
        if katib_max < MIN_POPULATION:
            raise KatibConversionError(
                "spec.maxTrialCount", f"{katib_max} trials cannot hold a population of at least {MIN_POPULATION}"
            )
        population = min(size, katib_max)
        generations = katib_max // population
        out["maxTrialCount"] = population * generations
        out["parallelTrialCount"] = min(out["parallelTrialCount"], out["maxTrialCount"])
        if population < size:
            self.note(
                "spec.maxTrialCount",
                f"Katib's population of {size} never ran whole within maxTrialCount {katib_max}: here the "
                f"population is {population} members trained for one generation (maxTrialCount counts segments, "
                "populationSize x generations).",
            )
        elif katib_max % population:
            self.note(
                "spec.maxTrialCount",
                f"maxTrialCount counts segments here, populationSize x generations: {katib_max} becomes "
                f"{out['maxTrialCount']} ({generations} generations of {population}); Katib ran "
                f"{katib_max % population} segments of a generation it never finished.",
            )
        out["algorithm"]["settings"] = [
            {"name": "populationSize", "value": str(population)},
            {"name": "truncationQuantile", "value": self.pbt["quantile"]},
            {"name": "resampleProbability", "value": self.pbt["resample"]},
        ]
        mount = self.pbt["mount"].rstrip("/") or "/"
        out["trialTemplate"] = {
            **template,
            "checkpoint": {"volumeClaimTemplate": {"size": "1Gi"}, "mountPath": mount},
        }
        self.note(
            "spec.trialTemplate",
            f"suggestion_trial_dir {self.pbt['mount']}: each segment finds its starting checkpoint at {mount} (a "
            "claim of its own, 1Gi of the cluster's default storage class: set checkpoint.volumeClaimTemplate), "
            "copied from its parent segment's before the program starts; Katib kept them on its suggestion's "
            "volume. A segment of generation 1 or later has HPO_RESUME=1.",
        )

    def early_stopping(self, stopping: Any) -> dict[str, Any] | None:
        if stopping is None:
            return None
        stopping = _known(stopping, "spec.earlyStopping", ("algorithmName", "algorithmSettings"))
        name = stopping.get("algorithmName")
        if name != "medianstop":
            raise KatibConversionError(
                "spec.earlyStopping.algorithmName", f"{name!r} is not Katib's early stopping algorithm (medianstop)"
            )
        # Katib's medianstop defaults: min_trials_required 3, start_step 4.
        values = {"min_trials_required": 3, "start_step": 4}
        for key, value, here in _settings(stopping.get("algorithmSettings"), "spec.earlyStopping.algorithmSettings"):
            if key not in values:
                raise KatibConversionError(
                    f"{here}.name", f"medianstop takes no setting {key} (min_trials_required, start_step)"
                )
            number = _number_text(value, f"{here}.value")
            low = 1
            if not number.is_integer() or number < low:
                raise KatibConversionError(f"{here}.value", f"{key} is a whole number of at least {low}")
            values[key] = int(number)
        self.note(
            "spec.earlyStopping",
            f"Katib's medianstop stopped a trial whose value after start_step ({values['start_step']}) reports "
            "was worse than the median of the succeeded trials' averages over their first start_step reports. "
            "Here Optuna's MedianPruner compares a running trial's best value so far at each step, from step "
            "warmupSteps on, with the median of the other trials' values at that step, once minTrialsRequired "
            "trials finished. Steps are the ones the trial prints (step=N with its metrics, counting from 1): "
            "a trial that prints none is never stopped.",
        )
        return {
            "algorithm": "median",
            "minTrialsRequired": values["min_trials_required"],
            "warmupSteps": values["start_step"],
        }

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

    def metrics_collector(self, collector_spec: Any) -> dict[str, Any]:
        collector_spec = _known(collector_spec, "spec.metricsCollectorSpec", ("source", "collector"))
        collector = _known(
            collector_spec.get("collector"), "spec.metricsCollectorSpec.collector", ("kind", "customCollector")
        )
        kind = collector.get("kind") or "StdOut"
        source = _known(
            collector_spec.get("source"),
            "spec.metricsCollectorSpec.source",
            ("filter", "fileSystemPath", "httpGet"),
        )
        formats = self.metrics_format(source.get("filter"))
        out: dict[str, Any] = {}
        if kind == "StdOut":
            for key in ("fileSystemPath", "httpGet"):
                if source.get(key) is not None:
                    raise KatibConversionError(
                        f"spec.metricsCollectorSpec.source.{key}", "a StdOut collector takes none"
                    )
            # Our default source (Auto) reads stdout unless the termination message holds the
            # objective, which a Katib trial never writes: stdout, as Katib reads it.
        elif kind == "File" and self.termination_log(source.get("fileSystemPath")):
            out["source"] = "TerminationMessage"
        elif kind in _REFUSED_COLLECTORS:
            raise KatibConversionError(
                "spec.metricsCollectorSpec.collector.kind",
                f"{kind} has no equivalent here: {_REFUSED_COLLECTORS[kind]}",
            )
        else:
            raise KatibConversionError(
                "spec.metricsCollectorSpec.collector.kind",
                f"{kind!r} is not a Katib collector (StdOut, File, TensorFlowEvent, PrometheusMetric, Custom, Push)",
            )
        if collector.get("customCollector") is not None and kind != "Custom":
            raise KatibConversionError("spec.metricsCollectorSpec.collector.customCollector", "only for kind Custom")
        if formats:
            out["metricsFormat"] = formats
        return out

    @staticmethod
    def termination_log(path_spec: Any) -> bool:
        path_spec = _known(path_spec, "spec.metricsCollectorSpec.source.fileSystemPath", ("path", "kind", "format"))
        return path_spec.get("path") == "/dev/termination-log" and (path_spec.get("format") or "TEXT") == "TEXT"

    @staticmethod
    def metrics_format(filter_spec: Any) -> list[str]:
        path = "spec.metricsCollectorSpec.source.filter"
        filter_spec = _known(filter_spec, path, ("metricsFormat",))
        formats = []
        for i, pattern in enumerate(_list(filter_spec.get("metricsFormat"), f"{path}.metricsFormat")):
            if not isinstance(pattern, str) or not pattern:
                raise KatibConversionError(f"{path}.metricsFormat[{i}]", "must be a regular expression")
            problem = metrics_format_problem(pattern)
            if problem:
                raise KatibConversionError(f"{path}.metricsFormat[{i}]", f"{pattern!r} {problem}")
            formats.append(pattern)
        return formats

    # --- the trial template -------------------------------------------------------------------------

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


_SPEC_FIELDS = (
    "parameters",
    "objective",
    "algorithm",
    "earlyStopping",
    "trialTemplate",
    "parallelTrialCount",
    "maxTrialCount",
    "maxFailedTrialCount",
    "metricsCollectorSpec",
    "nasConfig",
    "resumePolicy",
)


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


# --- the YAML form, with the notes as comments ---------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Block style, no anchors (a shared value is written out again)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(data: Any, indent: int) -> str:
    text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=110, allow_unicode=True)
    return textwrap.indent(text, " " * indent)


def _comments(notes: list[Note], indent: int) -> str:
    lines = []
    for n in notes:
        wrapped = textwrap.wrap(f"note: {n.text}", width=100 - indent - 2)
        lines += [f"# {wrapped[0]}", *(f"#   {line}" for line in wrapped[1:])]
    return "".join(" " * indent + line + "\n" for line in lines)


def _emit(converted: Converted) -> str:
    m = converted.manifest
    notes = list(converted.notes)

    def under(prefix: str) -> list[Note]:
        return [n for n in notes if n.path == prefix or n.path.startswith(prefix + ".")]

    spec_keys = {f"spec.{key}" for key in m["spec"]}
    placed = {id(n) for key in spec_keys for n in under(key)}
    top_spec = [n for n in under("spec") if id(n) not in placed]
    parts = [
        f"# Converted from the Katib Experiment {converted.source}.\n",
        _dump({"apiVersion": m["apiVersion"], "kind": m["kind"]}, 0),
        _comments(under("metadata"), 0),
        _dump({"metadata": m["metadata"]}, 0),
        _comments(top_spec, 0),
        "spec:\n",
    ]
    for key, value in m["spec"].items():
        parts.append(_comments(under(f"spec.{key}"), 2))
        parts.append(_dump({key: value}, 2))
    return "".join(parts)
