"""What the operator keeps of each watched object: the fields it reads, with keys and short strings
interned.

The informers hold every Trial and trial pod (and Job, claim...) of the namespaces with
experiments, thousands of each at scale, for the life of the process. A parsed object carries its
managedFields, a pod its whole spec, and every object its own copy of every key: the functions here
drop what no round reads and share what repeats, before the informer stores the object.
"""

from __future__ import annotations

import sys
from typing import Any

# Strings this long or shorter are interned: label values, phases, reasons, names. Longer ones
# (messages, logs) rarely repeat.
SHORT_STRING = 24


def compact(node: Any) -> Any:
    """A JSON tree with its keys and short strings interned. Parsed JSON has its own copy of every
    key ("metadata", "hpo.dev/experiment", ...) in every object: at 10,000 Trials and their pods,
    that is a third of what they take."""
    if isinstance(node, dict):
        return {sys.intern(k): compact(v) for k, v in node.items()}
    if isinstance(node, list):
        return [compact(v) for v in node]
    if isinstance(node, str) and len(node) <= SHORT_STRING:
        return sys.intern(node)
    return node


# The pod conditions anything reads (core/podstate.py, workloads/observe.py): why it is not scheduled
# (or is gated), and whether it was disrupted. The others (Initialized, Ready, ContainersReady...)
# change several times in a pod's life and say nothing the phase and containers do not: kept, each
# change would wake a round.
POD_CONDITIONS = frozenset({"PodScheduled", "DisruptionTarget"})


def slim_pod(body: dict) -> dict:
    """The part of a pod the planner reads (podstate.observe, the planner's slot count). A pod's
    managedFields and spec are most of its size, and an experiment may keep thousands of them."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    slim_status = {k: status[k] for k in ("phase", "reason", "message", "startTime") if k in status}
    conditions = [
        {k: c[k] for k in ("type", "status", "reason", "message") if k in c}
        for c in status.get("conditions") or []
        if c.get("type") in POD_CONDITIONS
    ]
    if conditions:
        slim_status["conditions"] = conditions
    for key in ("containerStatuses", "initContainerStatuses"):  # init: a checkpoint copy step's exit
        if status.get(key):
            slim_status[key] = [{"name": c.get("name"), "state": c.get("state") or {}} for c in status[key]]
    return compact(
        {
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "labels", "creationTimestamp", "deletionTimestamp")
                if k in meta
            },
            "spec": {
                "nodeName": spec.get("nodeName"),
                "containers": [{"name": c.get("name")} for c in spec.get("containers") or []],
                # A gated pod waits for admission by its queue (podstate.gated).
                **({"schedulingGates": spec["schedulingGates"]} if spec.get("schedulingGates") else {}),
            },
            "status": slim_status,
        }
    )


def slim_workload(body: dict) -> dict:
    """The part of a Job (or another trial resource) the operator reads: its conditions, and
    whether it is suspended (held by its queue: workloads.kinds)."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    suspend = (body.get("spec") or {}).get("suspend")
    return compact(
        {
            "spec": {"suspend": suspend} if isinstance(suspend, bool) else {},
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "labels", "creationTimestamp", "deletionTimestamp")
                if k in meta
            },
            "status": {
                "conditions": [
                    {k: c[k] for k in ("type", "status", "reason", "message") if k in c}
                    for c in status.get("conditions") or []
                ]
            },
        }
    )


def slim_custom_object(body: dict) -> dict:
    """A Trial or an Experiment (this operator's own kinds) without its managedFields: the planner
    reads the rest of either, so nothing else is dropped."""
    meta = body.get("metadata") or {}
    return compact({**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}})
