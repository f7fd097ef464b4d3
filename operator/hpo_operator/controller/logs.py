"""The pod logs one experiment's planner wants, read from the API server and kept between rounds.

The planner reads a log for metrics: a finished pod's once, a running pod's for early stopping.
planner.needs_log() says which pods it wants (by the round's observations of them); this module
reads them, all of a round's at once, and keeps each until the planner no longer asks for it (it
recorded what it needed), so that a finished pod's log is read once, not every round.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from hpo_operator import planner
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.core.podstate import PodObservation
from hpo_operator.kube.client import ApiException, KubeClient

# Metrics count from the end of a log ("the last value counts"): read its tail.
LOG_TAIL_LINES = 5000
LOG_LIMIT_BYTES = 4 << 20


@dataclass
class PodLogs:
    """One experiment's log reader: per (pod uid, "final" or "running"), when it was read
    (monotonic) and its text."""

    api: KubeClient
    # With tenancy on, logs are read as the namespace's trial ServiceAccount (authority.py): a
    # trial's output is its namespace's, not the operator's.
    as_user: str | None = None
    kept: dict[tuple[str, str], tuple[float, str]] = field(default_factory=dict)

    async def wanted(
        self,
        spec: ExperimentSpec,
        trials: list[planner.TrialView],
        pods: dict[str, dict],
        observations: Mapping[str, PodObservation],
    ) -> dict[str, str]:
        """Logs the planner wants, by trial: a finished pod's once, a running pod's every
        intervalSeconds. `observations` are the round's (planner.observe_pods), which the planner
        is then given: the logs are chosen by what it will decide on."""
        result: dict[str, str] = {}
        now = time.monotonic()
        used = set()
        reads = []
        for t in trials:
            need = planner.needs_log(spec, t, observations.get(t.name))
            if need is None:
                continue
            pod = pods[t.name]
            key = (pod["metadata"]["uid"], need)
            used.add(key)
            cached = self.kept.get(key)
            stale = need == "running" and (cached is None or now - cached[0] >= spec.metrics_collector.interval_seconds)
            if cached is None or stale:
                containers = pod["spec"].get("containers") or [{}]
                container = spec.trial_template.primary_container_name or containers[0].get("name")
                reads.append(
                    self.read(key, t.name, pod["metadata"]["name"], pod["metadata"]["namespace"], container, need, now)
                )
            else:
                result[t.name] = cached[1]
        for name, text in await asyncio.gather(*reads):
            result[name] = text
        for key in [k for k in self.kept if k not in used]:
            del self.kept[key]  # finished with: the planner recorded what it needed
        return result

    async def read(
        self, key: tuple[str, str], trial: str, pod: str, namespace: str, container: str | None, need: str, now: float
    ) -> tuple[str, str]:
        cached = self.kept.get(key)
        try:
            text = await self.api.pod_log(
                namespace,
                pod,
                as_user=self.as_user,
                container=container,
                tail_lines=LOG_TAIL_LINES,
                limit_bytes=LOG_LIMIT_BYTES,
                timestamps=need == "running",
            )
        except ApiException:
            text = cached[1] if cached else ""  # no log to read yet, or none at all
        self.kept[key] = (now, text)
        return trial, text
