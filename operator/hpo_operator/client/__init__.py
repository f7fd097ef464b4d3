"""A Python client for hpo-operator's Experiments and Trials: the seed APIs (PAI's
ListHpoExperiments, ListRuns and RestartHpoTrials; Polyaxon's experiment actions) as plain
functions over the kubernetes client. Functions return dataclasses (`to_dict()` for JSON) and raise
HpoError subclasses with a message meant for a person; nothing here prints.

    from hpo_operator import client as hpo
    s = hpo.connect(kubeconfig="~/.kube/config")
    page = hpo.list_experiments(s, "default", filter=hpo.ExperimentFilter(phases=frozenset({"Running"})))
    results = hpo.restart_trials(s, "mnist", trials=["mnist-0003"])
"""

from .connection import Session, connect
from .errors import Conflict, HpoError, InvalidInput, NotFound, PermissionDenied, Timeout
from .experiments import (clone_experiment, create_experiments, delete_experiment, describe_experiment,
                          follow_experiment, get_experiment, get_experiment_object, list_experiments,
                          list_experiments_chunk, load_manifests, set_bookmark, set_suspend, whoami)
from .query import (EXPERIMENT_PHASES, TRIAL_PHASES, ExperimentFilter, Page, TimeRange, build_selector,
                    paginate, parse_names, parse_order_by, parse_params_json, parse_phases, parse_time,
                    sort_direction, sort_field, token_page)
from .trials import (configuration_refusal, get_trial_object, list_trials, restart_refusal, restart_trials,
                     trial_logs, trial_metrics)
from .views import (A_CREATOR, A_ORIGINAL, L_BOOKMARKED, ExperimentDetail, ExperimentSummary, MetricPoint,
                    RestartResult, TrialSummary)

__all__ = [
    "Session", "connect",
    "Conflict", "HpoError", "InvalidInput", "NotFound", "PermissionDenied", "Timeout",
    "clone_experiment", "create_experiments", "delete_experiment", "describe_experiment", "follow_experiment",
    "get_experiment", "get_experiment_object", "list_experiments", "list_experiments_chunk", "load_manifests",
    "set_bookmark", "set_suspend", "whoami",
    "EXPERIMENT_PHASES", "TRIAL_PHASES", "ExperimentFilter", "Page", "TimeRange", "build_selector", "paginate",
    "parse_names", "parse_order_by", "parse_params_json", "parse_phases", "parse_time", "sort_direction",
    "sort_field", "token_page",
    "configuration_refusal", "get_trial_object", "list_trials", "restart_refusal", "restart_trials",
    "trial_logs", "trial_metrics",
    "A_CREATOR", "A_ORIGINAL", "L_BOOKMARKED", "ExperimentDetail", "ExperimentSummary", "MetricPoint",
    "RestartResult", "TrialSummary",
]
