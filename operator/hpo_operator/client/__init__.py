"""A Python client for hpo-operator's Experiments and Trials: the seed APIs (PAI's
ListHpoExperiments, ListRuns and RestartHpoTrials; Polyaxon's experiment actions) as plain
functions over the kubernetes client. Functions return dataclasses (`to_dict()` for JSON) and raise
HpoError subclasses with a message meant for a person; nothing here prints.

    from hpo_operator import client as hpo
    s = hpo.connect(kubeconfig="~/.kube/config")
    page = hpo.list_experiments(s, "default", filter=hpo.ExperimentFilter(phases=frozenset({"Running"})))
    results = hpo.restart_trials(s, "mnist", trials=["mnist-0003"])

For notebooks, the same module has typed experiments (double(), integer(), categorical(),
discrete(), experiment_spec(), create_experiment()), wait() with a progress bar, best_trial(),
trials_frame() (pandas) and tune(), which runs a Python function in trial pods (tuning.py).

The names below are imported when first used: the pure modules (views, query, errors) then load
without the kubernetes client, which the operator's image leaves out but its dashboard
(hpo_operator.dashboard) needs them in.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The API's words the client's users filter and label by, from their one home (which imports
# nothing else, so they need no lazy loading).
from hpo_operator.api.vocabulary import A_CREATOR, A_ORIGINAL, EXPERIMENT_PHASES, L_BOOKMARKED, TRIAL_PHASES

_WORDS = ["A_CREATOR", "A_ORIGINAL", "EXPERIMENT_PHASES", "L_BOOKMARKED", "TRIAL_PHASES"]
_EXPORTS = {
    "connection": ["Session", "connect"],
    "convert": ["Converted", "convert_katib", "katib_yaml"],
    # The notebook SDK: typed experiments, waiting, results, and tune() over a Python function.
    "build": ["container", "experiment_manifest", "experiment_spec", "pod_template"],
    "space": ["Space", "categorical", "discrete", "double", "integer"],
    "notebook": ["best_trial", "create_experiment", "trials_frame", "wait"],
    "tuning": ["tune"],
    "errors": ["Conflict", "HpoError", "InvalidInput", "NotFound", "PermissionDenied", "Timeout"],
    "describe": ["ExperimentDetail"],
    "extend": ["Extension", "extend_experiment", "extension"],
    "experiments": [
        "clone_experiment",
        "create_experiments",
        "delete_experiment",
        "describe_experiment",
        "follow_experiment",
        "get_experiment",
        "get_experiment_object",
        "list_experiments",
        "list_experiments_chunk",
        "load_manifests",
        "pareto_front",
        "set_bookmark",
        "set_suspend",
        "whoami",
    ],
    "query": [
        "ExperimentFilter",
        "Page",
        "TimeRange",
        "build_selector",
        "paginate",
        "parse_names",
        "parse_order_by",
        "parse_params_json",
        "parse_phases",
        "parse_time",
        "sort_direction",
        "sort_field",
        "token_page",
    ],
    "lineage": ["SegmentNode"],
    "trials": [
        "configuration_refusal",
        "get_trial_object",
        "lineage",
        "list_trials",
        "restart_refusal",
        "restart_trials",
        "trial_logs",
        "trial_metrics",
    ],
    "pareto": ["ParetoFront", "ParetoPoint"],
    "views": [
        "ExperimentSummary",
        "MetricPoint",
        "RestartResult",
        "TrialSummary",
    ],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [*_WORDS, *(name for names in _EXPORTS.values() for name in names)]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # what type checkers and editors see
    from .build import container, experiment_manifest, experiment_spec, pod_template
    from .connection import Session, connect
    from .convert import Converted, convert_katib, katib_yaml
    from .describe import ExperimentDetail
    from .errors import Conflict, HpoError, InvalidInput, NotFound, PermissionDenied, Timeout
    from .experiments import (
        clone_experiment,
        create_experiments,
        delete_experiment,
        describe_experiment,
        follow_experiment,
        get_experiment,
        get_experiment_object,
        list_experiments,
        list_experiments_chunk,
        load_manifests,
        pareto_front,
        set_bookmark,
        set_suspend,
        whoami,
    )
    from .extend import Extension, extend_experiment, extension
    from .lineage import SegmentNode
    from .notebook import best_trial, create_experiment, trials_frame, wait
    from .pareto import ParetoFront, ParetoPoint
    from .query import (
        ExperimentFilter,
        Page,
        TimeRange,
        build_selector,
        paginate,
        parse_names,
        parse_order_by,
        parse_params_json,
        parse_phases,
        parse_time,
        sort_direction,
        sort_field,
        token_page,
    )
    from .space import Space, categorical, discrete, double, integer
    from .trials import (
        configuration_refusal,
        get_trial_object,
        lineage,
        list_trials,
        restart_refusal,
        restart_trials,
        trial_logs,
        trial_metrics,
    )
    from .tuning import tune
    from .views import (
        ExperimentSummary,
        MetricPoint,
        RestartResult,
        TrialSummary,
    )
