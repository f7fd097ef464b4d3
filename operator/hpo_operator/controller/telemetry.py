"""Prometheus metrics of the operator (prometheus_client), served on $HPO_METRICS_PORT.

Labels have bounded values only (phases, launch reasons, failure classes): never trial or
experiment names, which grow without bound.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from hpo_operator.api.vocabulary import EXPERIMENT_PHASES
from hpo_operator.kube import client, informer

EXPERIMENTS = Gauge("hpo_experiments", "Experiments known to this operator, by phase", ["phase"])
TRIALS_CREATED = Counter(
    "hpo_trials_created_total", "Trials created, by launch reason (Suggestion, Retry, Restart, Resume)", ["reason"]
)
TRIALS_FINISHED = Counter(
    "hpo_trials_finished_total",
    "Trials that reached a final phase, by phase and failure class",
    ["phase", "failure_class"],
)
RECONCILE_SECONDS = Histogram(
    "hpo_reconcile_duration_seconds",
    "Time to reconcile one experiment",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LEADER = Gauge("hpo_leader", "1 while this replica leads (or runs without leader election), 0 while it stands by")
RECONCILE_TOTAL = Counter("hpo_reconcile_total", "Experiment reconciles, by result", ["result"])
ROUNDS_WAITING = Gauge(
    "hpo_rounds_waiting", "Experiments due for a turn (a round, or writes that wait), waiting for a worker"
)
STATUS_WRITES = Counter(
    "hpo_experiment_status_writes_total",
    "Experiment status writes: at once (a phase, a condition...) or at their turn (new counts alone)",
    ["when"],
)


def queue_source(depth: Callable[[], int]) -> None:
    """Where hpo_rounds_waiting comes from: the runtime's work queue."""
    ROUNDS_WAITING.set_function(depth)


class WatchCollector(Collector):
    """The watches' health, read when scraped: restarts by resource and reason (every watch of the
    process, counted in informer.RESTARTS), and per informer the age of its newest event (an event,
    a bookmark or a listing: a watch that is up hears a bookmark about every minute) and how long
    it has been down."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[tuple[str, informer.WatchHealth]]] = lambda: ()

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        restarts = CounterMetricFamily(
            "hpo_watch_restarts",
            "Watches that ended otherwise than by the server's timeout and were listed again, by resource and reason",
            labels=["resource", "reason"],
        )
        for (resource, reason), n in sorted(informer.RESTARTS.items()):
            restarts.add_metric([resource, reason], n)
        yield restarts
        now = time.monotonic()
        age = GaugeMetricFamily(
            "hpo_watch_last_event_age_seconds",
            "Seconds since the informer's newest event, bookmark or listing",
            labels=["resource", "namespace"],
        )
        down = GaugeMetricFamily(
            "hpo_watch_down_seconds",
            "Seconds the informer's watch has been down (0 while it is up)",
            labels=["resource", "namespace"],
        )
        for namespace, health in self.source():
            if health.last_event is not None:
                age.add_metric([health.resource, namespace], now - health.last_event)
            down.add_metric([health.resource, namespace], health.down_for(now))
        yield age
        yield down


WATCHES = WatchCollector()
REGISTRY.register(WATCHES)


class RequestCollector(Collector):
    """The API requests this process made, by verb (kube.client.REQUESTS), with the Events it
    handed kopf to post: what the operator costs the API server."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        requests = CounterMetricFamily(
            "hpo_api_requests", "Requests to the API server, by verb (Events: the ones handed to kopf)", labels=["verb"]
        )
        for verb, n in sorted(client.REQUESTS.items()):
            requests.add_metric([verb], n)
        yield requests


REGISTRY.register(RequestCollector())


def watch_source(source: Callable[[], Iterable[tuple[str, informer.WatchHealth]]]) -> None:
    """Where the watch metrics come from: the runtime's informers, (namespace, health) each."""
    WATCHES.source = source


PHASES = EXPERIMENT_PHASES
_phases: dict[str, str] = {}
_counts: dict[str, int] = {}


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
    """Counts the experiment in its phase (None: gone). Called every round: a change costs two
    gauge updates, whatever the number of experiments."""
    old = _phases.get(uid)
    if old == phase:
        return
    if not _counts:
        for name in PHASES:
            EXPERIMENTS.labels(name).set(0)
    for name, step in ((old, -1), (phase, 1)):
        if name is not None:
            _counts[name] = _counts.get(name, 0) + step
            if name in PHASES:
                EXPERIMENTS.labels(name).set(_counts[name])
    if phase is None:
        _phases.pop(uid, None)
    else:
        _phases[uid] = phase
