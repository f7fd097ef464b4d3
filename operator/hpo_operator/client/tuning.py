"""tune(): an experiment whose trials run a Python function, from a notebook (as Katib's tune()).

The function's source goes into a ConfigMap with a small runner (trial_runner.py, standard library
only); each trial's pod mounts it and runs `python3 runner.py DIR lr=${params.lr} ...`, so any
image with python3 (and what the function imports) works, and the pod's command line stays short.
The ConfigMap is owned by the Experiment: deleting the experiment removes it.

    from hpo_operator import client as hpo

    def objective(alpha, kernel):
        from sklearn.datasets import load_digits          # imports inside: it runs alone in the pod
        ...
        return {"accuracy": score}

    s = hpo.connect()
    exp = hpo.tune(s, objective, parameters={"alpha": hpo.double(1e-4, 1e-1, log=True),
                                             "kernel": hpo.categorical(["rbf", "linear"])},
                   image="python:3.12", objective_metric="accuracy", direction="maximize",
                   max_trials=12, parallel=3)
    hpo.wait(s, exp.name)
"""

from __future__ import annotations

import inspect
import json
import re
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kubernetes.client import ApiException

from hpo_operator.api.spec import EarlyStopping
from hpo_operator.api.template import TrialTemplate
from hpo_operator.api.vocabulary import API_VERSION, L_EXPERIMENT

from . import trial_runner
from .build import container, experiment_spec, pod_template
from .connection import Session
from .errors import HpoError, InvalidInput, translate, validated
from .experiments import GENERATED_PREFIX_MAX, get_experiment_object
from .notebook import create_experiment
from .space import Space, python_type
from .views import ExperimentSummary

# Where the trial's container sees the ConfigMap (read-only), and the names inside it.
MOUNT_PATH = "/opt/hpo-objective"
VOLUME = "hpo-objective"
RUNNER_FILE = "runner.py"
SOURCE_FILE = "objective.py"
CONFIG_FILE = "config.json"
CONTAINER = "objective"
LABELS = {
    "app.kubernetes.io/name": "hpo-objective",
    "app.kubernetes.io/component": "objective",
    "app.kubernetes.io/part-of": "hpo-operator",
    "app.kubernetes.io/managed-by": "hpo-operator-client",
}


# --- the function ------------------------------------------------------------------------------------


def function_source(fn: Callable[..., Any]) -> str:
    """The source of a self-contained function defined with `def`, dedented; InvalidInput saying
    why for anything else (a lambda, a builtin, a method, a closure, a function using names from
    outside its body)."""
    if not inspect.isfunction(fn):
        raise InvalidInput(
            f"tune() runs a Python function defined with def, not {type(fn).__name__} {fn!r} "
            "(builtins, methods, partials and callable objects have no source of their own to send)"
        )
    if fn.__name__ == "<lambda>":
        raise InvalidInput("tune() needs a function defined with def: a lambda's source cannot be sent to a trial")
    if inspect.iscoroutinefunction(fn) or inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise InvalidInput(f"{fn.__name__} must be a plain function (not async, not a generator)")
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        raise InvalidInput(
            f"the source of {fn.__name__} is not available: define it in a notebook cell or a file "
            "(not at an interactive prompt)"
        ) from None
    if source.lstrip().startswith("@"):
        raise InvalidInput(f"{fn.__name__} is decorated: tune() sends a plain function (its decorator would not exist)")
    used = inspect.getclosurevars(fn)
    outside = sorted(n for n in {**used.nonlocals, **used.globals} if n != fn.__name__)
    if outside:
        raise InvalidInput(
            f"{fn.__name__} uses {', '.join(outside)} from outside its body, but it runs alone in the "
            "trial's pod: import and define what it needs inside it (e.g. `import numpy as np` in its first lines)"
        )
    # Defining it again from its source alone is what the runner does: default values that name
    # something from outside fail here rather than in every trial.
    scope: dict[str, Any] = {"__name__": "__hpo_objective__"}
    try:
        exec(compile(source, f"<source of {fn.__name__}>", "exec"), scope)
    except Exception as e:
        raise InvalidInput(f"{fn.__name__} cannot be defined from its source alone: {type(e).__name__}: {e}") from None
    if not inspect.isfunction(scope.get(fn.__name__)):
        raise InvalidInput(f"the source of {fn.__name__} does not define {fn.__name__}")
    return source


def check_signature(fn: Callable[..., Any], names: Sequence[str]) -> None:
    """The function takes each search parameter as a keyword argument, and needs nothing else
    (but `report`, which the runner passes when the function names it)."""
    if trial_runner.REPORT_ARGUMENT in names:
        raise InvalidInput(
            f"{trial_runner.REPORT_ARGUMENT!r} names the function's reporting argument: give the parameter another name"
        )
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    positional = [p.name for p in params.values() if p.kind == p.POSITIONAL_ONLY]
    if positional:
        raise InvalidInput(f"{fn.__name__} takes {', '.join(positional)} by position only: parameters are keywords")
    unknown = [n for n in names if n not in params and not takes_any]
    if unknown:
        raise InvalidInput(f"{fn.__name__} takes no argument {', '.join(unknown)}: add it to its signature")
    needed = [
        p.name
        for p in params.values()
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.name not in names
        and p.name != trial_runner.REPORT_ARGUMENT
    ]
    if needed:
        raise InvalidInput(
            f"{fn.__name__} needs {', '.join(needed)}, which the search space does not give: "
            "add a parameter or a default value"
        )


# --- what the trials run -----------------------------------------------------------------------------


def objective_files(
    function: str,
    source: str,
    objective_metric: str,
    parameters: Mapping[str, Space],
    packages: Sequence[str] = (),
    pip_args: Sequence[str] = (),
) -> dict[str, str]:
    """The ConfigMap's files: the runner, the function's source, and what the runner needs to know."""
    config = {
        "function": function,
        "objective": objective_metric,
        "types": {name: python_type(space.parameter(name)) for name, space in parameters.items()},
        "packages": list(packages),
        "pip_args": list(pip_args),
    }
    return {
        RUNNER_FILE: Path(trial_runner.__file__).read_text(encoding="utf-8"),
        SOURCE_FILE: source,
        CONFIG_FILE: json.dumps(config, indent=2) + "\n",
    }


def trial_command(python: str, names: Sequence[str]) -> list[str]:
    """The trial container's command: the runner, its directory, and each parameter's placeholder."""
    return [python, f"{MOUNT_PATH}/{RUNNER_FILE}", MOUNT_PATH, *(f"{n}=${{params.{n}}}" for n in names)]


def tune_template(
    configmap: str,
    image: str,
    names: Sequence[str],
    *,
    python: str = "python3",
    env: Mapping[str, str] | None = None,
    resources: Mapping[str, Any] | None = None,
    image_pull_policy: str | None = None,
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] | None = None,
    pod: Mapping[str, Any] | None = None,
) -> TrialTemplate:
    """A pod of one container running the runner over the mounted ConfigMap."""
    box = container(
        image,
        name=CONTAINER,
        command=trial_command(python, names),
        # Unbuffered: reported metrics reach the log as they are made (early stopping reads it).
        env={"PYTHONUNBUFFERED": "1", **(env or {})},
        resources=resources,
        image_pull_policy=image_pull_policy,
        extra={"volumeMounts": [{"name": VOLUME, "mountPath": MOUNT_PATH, "readOnly": True}]},
    )
    template = pod_template(
        [box],
        node_selector=node_selector,
        tolerations=tolerations,
        volumes=[{"name": VOLUME, "configMap": {"name": configmap}}],
        extra=pod,
    )
    return validated(TrialTemplate, "the trial template", template=template, primary_container_name=CONTAINER)


def name_prefix(function: str) -> str:
    """An experiment name prefix from a function's name: `train_mnist` -> `train-mnist-`."""
    text = re.sub(r"[^a-z0-9-]", "", function.lower().replace("_", "-"))
    text = text[: GENERATED_PREFIX_MAX - 1].strip("-")
    return (text or "tune") + "-"


def configmap_body(generate_name: str, files: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"generateName": generate_name, "labels": dict(LABELS)},
        "data": dict(files),
    }


def owned(experiment: Mapping[str, Any]) -> dict[str, Any]:
    """The patch that gives the ConfigMap to the experiment (the garbage collector deletes it with
    the experiment) and names it in its labels."""
    meta = experiment["metadata"]
    return {
        "metadata": {
            "labels": {"app.kubernetes.io/instance": meta["name"], L_EXPERIMENT: meta["name"]},
            "ownerReferences": [
                {"apiVersion": API_VERSION, "kind": "Experiment", "name": meta["name"], "uid": meta["uid"]}
            ],
        }
    }


# --- tune ----------------------------------------------------------------------------------------------


def tune(
    s: Session,
    objective: Callable[..., Any],
    *,
    parameters: Mapping[str, Space],
    image: str,
    name: str | None = None,
    namespace: str | None = None,
    objective_metric: str = "loss",
    direction: str = "minimize",
    goal: float | None = None,
    additional_metrics: Sequence[str] = (),
    max_trials: int = 10,
    parallel: int = 1,
    max_failed_trials: int | None = None,
    retries: int | None = None,
    retry_on: Sequence[str] | None = None,
    resources: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    algorithm: str = "random",
    seed: int | None = None,
    algorithm_settings: Mapping[str, object] | None = None,
    early_stopping: EarlyStopping | None = None,
    max_trial_seconds: int | None = None,
    packages_to_install: Sequence[str] = (),
    pip_args: Sequence[str] = (),
    python: str = "python3",
    image_pull_policy: str | None = None,
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] | None = None,
    pod: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
    creator: str | None = None,
) -> ExperimentSummary:
    """Creates an experiment whose trials call `objective(**parameters)` in pods of `image`.

    The function must be self-contained: defined with def, importing what it uses inside its body
    (it runs alone in the trial's pod, without the notebook's variables); lambdas, builtins,
    methods and closures are refused with the reason. It receives each parameter as a keyword
    argument of its type (double: float, integer: int, categorical: str, discrete: int or float)
    and returns a dict of metrics ({"loss": 0.1, "accuracy": 0.97}) or a number (the value of
    `objective_metric`). Metrics other than the objective are kept when named in
    additional_metrics. For intermediate values (per epoch: the metric history, and early
    stopping), give the function an argument named `report` and call `report(step=3, loss=0.4)`;
    printing `loss=0.4 step=3` lines works too. An exception fails the trial, and the end of its
    traceback is the trial's failure message.

    The image needs python3 (`python`) and what the function imports: nothing is installed unless
    packages_to_install names it (pip, at each trial's start, with pip_args such as an index URL),
    so an air-gapped cluster works with a prepared image. retries: how often a failed configuration
    runs again (default: the API's, 2 on Infrastructure and OOMKilled; an exception is class Error,
    retried only when retry_on names it). resources: {"cpu": "1", "memory": "1Gi", "gpu": 1}.
    node_selector, tolerations, pod (more pod spec fields) and env shape the trial's pod. It passes
    Pod Security's `restricted` level (user 65534, no privilege escalation, no capabilities, the
    runtime's seccomp profile) and mounts no ServiceAccount token; pod={"securityContext": {...}}
    changes fields of it.

    `name` (default: from the function's name, completed by the API server) names the experiment;
    a name ending in "-" is such a prefix. Returns the new experiment's summary (wait() waits).
    """
    source = function_source(objective)
    names = list(parameters)
    check_signature(objective, names)
    ns = s.ns(namespace)
    exp_name = name or name_prefix(objective.__name__)
    files = objective_files(objective.__name__, source, objective_metric, parameters, packages_to_install, pip_args)
    # The spec is checked before anything is created (under a stand-in for the ConfigMap's name,
    # which the API server gives it below).
    args: dict[str, Any] = dict(
        objective=objective_metric,
        direction=direction,
        goal=goal,
        additional_metrics=additional_metrics,
        max_trials=max_trials,
        parallel=parallel,
        max_failed_trials=max_failed_trials,
        retries=retries,
        retry_on=retry_on,
        max_trial_seconds=max_trial_seconds,
        algorithm=algorithm,
        seed=seed,
        algorithm_settings=algorithm_settings,
        # The runner prints reported and returned metrics as lines of the log, in that order.
        metrics_source="StdoutLog",
        early_stopping=early_stopping,
    )
    shape: dict[str, Any] = dict(
        python=python,
        env=env,
        resources=resources,
        image_pull_policy=image_pull_policy,
        node_selector=node_selector,
        tolerations=tolerations,
        pod=pod,
    )
    experiment_spec(parameters, trial_template=tune_template(VOLUME, image, names, **shape), **args)

    configmap = _create_configmap(s, ns, configmap_body(f"{exp_name.rstrip('-')}-objective-", files))
    try:
        spec = experiment_spec(parameters, trial_template=tune_template(configmap, image, names, **shape), **args)
        summary = create_experiment(s, exp_name, spec, namespace=ns, labels=labels, creator=creator)
    except BaseException:
        _delete_configmap(s, ns, configmap)  # nothing else would ever remove it
        raise
    try:
        s.core.patch_namespaced_config_map(configmap, ns, owned(get_experiment_object(s, summary.name, ns)))
    except ApiException as e:
        raise HpoError(
            f"experiment {summary.name} was created, but its ConfigMap {configmap} could not be given to it "
            f"({translate(e)}): delete the ConfigMap with the experiment"
        ) from None
    return summary


def _create_configmap(s: Session, namespace: str, body: dict[str, Any]) -> str:
    try:
        # A dict body: the client sends it as it is (its typed objects would only be converted back).
        created = s.core.create_namespaced_config_map(namespace, body)  # type: ignore[arg-type]
    except ApiException as e:
        err = translate(e)
        raise type(err)(f"cannot create the function's ConfigMap in namespace {namespace}: {err}") from None
    assert created.metadata is not None  # the API server names what it created
    return str(created.metadata.name)


def _delete_configmap(s: Session, namespace: str, name: str) -> None:
    try:
        s.core.delete_namespaced_config_map(name, namespace)
    except ApiException:
        pass  # the error being raised says more than this one
