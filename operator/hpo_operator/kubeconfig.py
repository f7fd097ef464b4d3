"""Choosing a kubeconfig context as kubectl does, for the plugin (sync client) and the dashboard
(async client) alike: pure, so that neither client library is needed here."""

from __future__ import annotations

import os
from pathlib import Path

SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def kubeconfig_path(explicit: str | None) -> str | None:
    """--kubeconfig (LookupError if it does not exist), else $KUBECONFIG, else ~/.kube/config if it
    exists."""
    if explicit:
        if not Path(explicit).expanduser().exists():
            raise LookupError(f"kubeconfig {explicit} does not exist")
        return str(Path(explicit).expanduser())
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"]
    default = Path("~/.kube/config").expanduser()
    return str(default) if default.exists() else None


def pick_context(contexts: list[dict], active: dict | None, wanted: str | None) -> dict | None:
    """The context named `wanted` (LookupError, naming the ones there are, if none is), else the
    active one."""
    if not wanted:
        return active
    chosen = next((c for c in contexts if c.get("name") == wanted), None)
    if chosen is None:
        names = ", ".join(c.get("name", "") for c in contexts) or "none"
        raise LookupError(f"context {wanted} not found in the kubeconfig (contexts: {names})")
    return chosen


def context_namespace(chosen: dict | None) -> str:
    return ((chosen or {}).get("context") or {}).get("namespace") or "default"
