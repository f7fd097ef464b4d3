"""Choosing a kubeconfig context as kubectl does, for the plugin (sync client) and the dashboard
(async client) alike. Neither client library is imported here: the caller passes its own `config`
module, whose calls have the same names and arguments in both."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def incluster_namespace() -> str:
    namespace = SA_NAMESPACE_FILE.read_text().strip() if SA_NAMESPACE_FILE.exists() else ""
    return namespace or "default"


@dataclass(frozen=True)
class Target:
    """Where a connection's configuration came from: a kubeconfig file and the context chosen in
    it, or (path None) the pod's ServiceAccount."""

    path: str | None
    namespace: str
    context: str | None


def load_failure(path: str | None, error: Exception) -> str:
    """The message for the client library's error in reading a kubeconfig (path None: the in-cluster
    configuration)."""
    return f"{f'kubeconfig {path}' if path else 'in-cluster configuration'}: {error}"


def configure(config: Any, configuration: Any, kubeconfig: str | None, context: str | None) -> tuple[Target, Any]:
    """Loads into `configuration` what kubectl would use: the kubeconfig and context, or inside a
    pod (no kubeconfig, no context asked for) its ServiceAccount. LookupError says why neither.

    Returns the target and what the library's loader returned: the async library reads a
    kubeconfig file in a coroutine, which the caller awaits (and words a ConfigException it raises
    with load_failure)."""
    path = kubeconfig_path(kubeconfig)
    if path is None and not context and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException as e:
            raise LookupError(load_failure(None, e)) from None
        return Target(None, incluster_namespace(), None), None
    if path is None:
        raise LookupError("no kubeconfig: pass --kubeconfig, set KUBECONFIG, or create ~/.kube/config")
    try:
        contexts, active = config.list_kube_config_contexts(config_file=path)
        chosen = pick_context(contexts, active, context)
        loading = config.load_kube_config(config_file=path, context=context, client_configuration=configuration)
    except config.ConfigException as e:
        raise LookupError(load_failure(path, e)) from None
    return Target(path, context_namespace(chosen), (chosen or {}).get("name")), loading
