"""kopf glue: watch events into the Runtime (runtime.py), and the operator's settings.

Nothing here decides anything. Trials and pods are kept in kopf indexes, experiments followed by an
event handler; each event wakes the experiment's loop (runtime.py). Pods are
selected by label on the API server (settings.watching.label_selectors), so the operator never
receives, let alone keeps, a pod that is not a trial's.

A task per experiment rather than a kopf daemon: kopf guards daemons with a finalizer, which would
leave experiments (and their namespaces) stuck in deletion whenever the operator is not running.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

from . import telemetry
from .kubeapi import connect
from .models import GROUP, VERSION
from .planner import L_EXPERIMENT
from .runtime import Runtime, slim_pod, slim_trial

MAX_EVENT_MESSAGE = 1024


def post_event(obj: dict, type_: str, reason: str, message: str) -> None:
    kopf.event(obj, type=type_, reason=reason, message=message[:MAX_EVENT_MESSAGE])


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = logging.WARNING
    # kopf logs each handled watch event at INFO ("Handler ... succeeded"): thousands a minute at
    # scale, and nothing a user needs. Failures are still logged.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings.watching.server_timeout = 300
    # Only trial pods reach the operator: the API server filters them.
    settings.watching.label_selectors["", "v1", "pods"] = L_EXPERIMENT
    # The chart's namespace mode grants nothing cluster-scoped: kopf must not list namespaces or
    # CRDs (it would retry each 403 for about a minute before falling back to the named namespaces).
    if os.environ.get("HPO_CLUSTER_SCANNING", "").lower() == "false":
        settings.scanning.disabled = True
    memo.runtime = Runtime(await connect(), post_event)
    port = telemetry.start_server()
    if port:
        logging.getLogger(__name__).info("serving Prometheus metrics on port %d", port)


@kopf.on.cleanup()
async def stop_loops(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime | None = memo.get("runtime")
    if runtime is not None:
        await runtime.stop_all()


@kopf.on.probe(id="experiments")
def probe_experiments(memo: kopf.Memo, **_: Any) -> int:
    runtime: Runtime | None = memo.get("runtime")
    return runtime.size() if runtime else 0


def _deleted(event: dict) -> bool:
    return event.get("type") == "DELETED"


# Indexes: what each experiment's loop reads instead of listing, as slim copies of the bodies.
# Indexing also wakes the experiment's loop: kopf stores the value before the woken loop runs.
# async: kopf runs a plain function in a thread, which costs more than the handler itself.

@kopf.index(GROUP, VERSION, "trials")
async def trials_by_experiment(namespace: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict:
    key = (namespace, (body.get("spec") or {}).get("experimentName"))
    memo.runtime.wake(key)
    return {key: slim_trial(dict(body))}


@kopf.index("", "v1", "pods", labels={L_EXPERIMENT: kopf.PRESENT})
async def pods_by_experiment(namespace: str, labels: kopf.Labels, body: kopf.Body, memo: kopf.Memo,
                             **_: Any) -> dict:
    key = (namespace, labels[L_EXPERIMENT])
    memo.runtime.wake(key)
    return {key: slim_pod(dict(body))}


# kopf drops a deleted object from its index without calling the index's handler: these wake the
# loop for it (a running trial's pod that disappears is a failure to act on at once).
def _is_deletion(event: dict, **_: Any) -> bool:
    return _deleted(event)


@kopf.on.event(GROUP, VERSION, "trials", when=_is_deletion)
async def trial_deleted(namespace: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.runtime.wake((namespace, (body.get("spec") or {}).get("experimentName")))


@kopf.on.event("", "v1", "pods", labels={L_EXPERIMENT: kopf.PRESENT}, when=_is_deletion)
async def pod_deleted(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    memo.runtime.wake((namespace, labels[L_EXPERIMENT]))


@kopf.on.event(GROUP, VERSION, "experiments")
async def experiment_event(event: dict, name: str, namespace: str, uid: str, body: kopf.Body, memo: kopf.Memo,
                           trials_by_experiment: kopf.Index, pods_by_experiment: kopf.Index, **_: Any) -> None:
    memo.runtime.use_indexes(trials_by_experiment, pods_by_experiment)
    memo.runtime.on_experiment(_deleted(event), namespace, name, uid, dict(body))
