"""Prometheus metrics of the operator (prometheus_client), served on $HPO_METRICS_PORT.

Labels have bounded values only (phases, launch reasons, failure classes): never trial or
experiment names, which grow without bound.
"""

from __future__ import annotations

import os

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from .api import EXPERIMENT_PHASES

EXPERIMENTS = Gauge("hpo_experiments", "Experiments known to this operator, by phase", ["phase"])
TRIALS_CREATED = Counter("hpo_trials_created_total", "Trials created, by launch reason "
                         "(Suggestion, Retry, Restart, Resume)", ["reason"])
TRIALS_FINISHED = Counter("hpo_trials_finished_total", "Trials that reached a final phase, by phase "
                          "and failure class", ["phase", "failure_class"])
RECONCILE_SECONDS = Histogram("hpo_reconcile_duration_seconds", "Time to reconcile one experiment",
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
LEADER = Gauge("hpo_leader", "1 while this replica leads (or runs without leader election), "
               "0 while it stands by")
RECONCILE_TOTAL = Counter("hpo_reconcile_total", "Experiment reconciles, by result", ["result"])

PHASES = EXPERIMENT_PHASES
_phases: dict[str, str] = {}


_serving: int | None = None


def start_server() -> int | None:
    """Serves the metrics on $HPO_METRICS_PORT, once per process (a replica that waited for
    leadership already serves them when kopf starts)."""
    global _serving
    port = int(os.environ.get("HPO_METRICS_PORT") or 0)
    if port and _serving is None:
        start_http_server(port)
        _serving = port
    return _serving


def experiment_phase(uid: str, phase: str | None) -> None:
    if phase is None:
        _phases.pop(uid, None)
    else:
        _phases[uid] = phase
    for name in PHASES:
        EXPERIMENTS.labels(name).set(sum(1 for p in _phases.values() if p == name))
