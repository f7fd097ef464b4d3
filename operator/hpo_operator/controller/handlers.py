"""kopf glue: the operator's settings, and Experiment events into the Runtime (runtime.py).

Nothing here decides anything. kopf follows the Experiments (namespaces, peering, probes, Events);
the Trials and trial pods, a dozen events per trial, are followed by the Runtime's informers, one
set per namespace (namespace.py), which select pods by label on the API server: the operator never
receives, let alone keeps, a pod that is not a trial's. Each experiment's rounds run in loop.py.

A task per experiment rather than a kopf daemon: kopf guards daemons with a finalizer, which would
leave experiments (and their namespaces) stuck in deletion whenever the operator is not running.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

from hpo_operator.api import trial_kinds
from hpo_operator.api.vocabulary import FINALIZER, GROUP, VERSION
from hpo_operator.controller import telemetry
from hpo_operator.kube.client import REQUESTS, connect

from .authority import Tenancy
from .runtime import Runtime

MAX_EVENT_MESSAGE = 1024


def post_event(obj: dict, type_: str, reason: str, message: str) -> None:
    REQUESTS["event"] += 1
    kopf.event(obj, type=type_, reason=reason, message=message[:MAX_EVENT_MESSAGE])


class NoDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf works out an object's "essence" (a deep copy of it) on every watch event, to tell
    what changed for on.create/on.update handlers. This operator has none, so nothing is copied;
    were such handlers added, this would have to go."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase(prefix=GROUP, key="last-handled-configuration")
    settings.persistence.finalizer = FINALIZER
    settings.posting.level = logging.WARNING
    # kopf logs each handled watch event at INFO ("Handler ... succeeded"): thousands a minute at
    # scale, and nothing a user needs. Failures are still logged.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # The Experiments' watch: ended by the server every minute and resumed; a stream silent for
    # longer than kopf's inactivity timeout (70 s, past the minute's bookmark) is reconnected.
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90
    settings.watching.connect_timeout = 10
    # kopf's own requests (patches, Events): a frozen API server or a half-open connection must
    # not hold them for kopf's default of five minutes.
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    # The chart's namespace mode grants nothing cluster-scoped: kopf must not list namespaces or
    # CRDs (it would retry each 403 for about a minute before falling back to the named namespaces).
    if os.environ.get("HPO_CLUSTER_SCANNING", "").lower() == "false":
        settings.scanning.disabled = True
    # The trial kinds the platform enabled (the chart's trialKinds): a bad value stops the
    # operator here (a permanent error: kopf would retry any other), rather than run on a guess.
    try:
        allowed = trial_kinds.parse_allowed(os.environ.get(trial_kinds.ENV))
    except ValueError as e:
        raise kopf.PermanentError(str(e)) from None
    memo.runtime = Runtime(await connect(), post_event, allowed, Tenancy.from_env())
    if allowed is not None:
        logging.getLogger(__name__).info(
            "trials may run as: %s", ", ".join(sorted(f"{k} ({g or 'core'})" for g, k in allowed))
        )
    port = telemetry.start_server()
    telemetry.LEADER.set(1)  # kopf runs only in the leader (or the only replica); see __main__.py
    if port:
        logging.getLogger(__name__).info("serving Prometheus metrics on port %d", port)


@kopf.on.cleanup()
async def stop_loops(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime | None = memo.get("runtime")
    if runtime is not None:
        await runtime.stop_all()


@kopf.on.probe(id="watches", errors=kopf.ErrorsMode.PERMANENT)
def probe_watches(memo: kopf.Memo, **_: Any) -> str:
    """Fails kopf's liveness endpoint (--liveness) while one of the operator's own informers (its
    Trials', its trial pods') has been down for HPO_WATCH_DOWN_LIVENESS_SECONDS: the kubelet then
    restarts the operator. A trial kind's watch the platform's RBAC refuses never counts."""
    runtime: Runtime | None = memo.get("runtime")
    problem = runtime.unhealthy() if runtime else None
    if problem:
        raise kopf.PermanentError(problem)
    return "ok"


@kopf.on.probe(id="experiments")
def probe_experiments(memo: kopf.Memo, **_: Any) -> int:
    runtime: Runtime | None = memo.get("runtime")
    return runtime.size() if runtime else 0


def _deleted(event: dict) -> bool:
    return event.get("type") == "DELETED"


# async: kopf runs a plain function in a thread, which costs more than the handler itself.
@kopf.on.event(GROUP, VERSION, "experiments")
async def experiment_event(
    event: dict, name: str, namespace: str, uid: str, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    memo.runtime.on_experiment(_deleted(event), namespace, name, uid, dict(body))
