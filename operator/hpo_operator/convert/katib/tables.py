"""Katib's names, defaults and algorithms, and what each maps to here (or why it does not)."""

from __future__ import annotations

import re

from hpo_operator.api.parameters import METRIC_NAME_PATTERN, NAME_PATTERN

KATIB_API_VERSION = "kubeflow.org/v1beta1"
# A converted Job keeps `job`; its conditions are fixed (Complete, Failed), as Katib's defaults are.
JOB_API_VERSION, JOB_KIND = "batch/v1", "Job"

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
