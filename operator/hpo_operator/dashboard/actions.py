"""The dashboard's write actions (`--allow-write`): stop, resume, restart trials.

They are the kubectl plugin's own calls (hpo_operator.client: the same checks, the same refusals,
the same wait for the operator's answer), with the same kubeconfig and context, so the user's
RBAC decides as it does for `kubectl hpo`. That client is threaded and installed with the plugin
only (not in the operator's image): it is imported on the first action, and every call runs in a
worker thread.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

RESTART_WAIT = 5.0  # seconds to wait for the operator's answer, as kubectl hpo restart-trials


class Actions:
    def __init__(self, kubeconfig: str | None, context: str | None):
        self.kubeconfig, self.context = kubeconfig, context
        self._session: Any = None
        self._lock = threading.Lock()

    def _hpo(self) -> tuple[Any, Any]:
        from hpo_operator import client as hpo

        with self._lock:
            if self._session is None:
                self._session = hpo.connect(self.kubeconfig, self.context)
        return hpo, self._session

    def set_suspend(self, namespace: str, experiment: str, suspend: bool) -> dict:
        hpo, s = self._hpo()
        summary = hpo.set_suspend(s, experiment, suspend, namespace)
        verb = "stopped (spec.suspend=true)" if suspend else "resumed (spec.suspend=false)"
        return {"message": f"experiment {experiment} {verb}", "experiment": summary.to_dict()}

    def restart_trials(self, namespace: str, experiment: str, trials: Sequence[str]) -> dict:
        hpo, s = self._hpo()
        names = hpo.parse_names(list(trials))
        if not names:
            raise hpo.InvalidInput("no trials selected")
        results = hpo.restart_trials(s, experiment, namespace, trials=names, wait=RESTART_WAIT)
        return {"results": [r.to_dict() for r in results.values()]}

    @staticmethod
    def error_types() -> tuple[type[Exception], ...]:
        """What an action raises for the user to read (refusals, missing objects, RBAC)."""
        from hpo_operator.client.errors import HpoError

        return (HpoError,)
