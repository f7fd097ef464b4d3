"""Connecting to the API server as kubectl would: a kubeconfig file and context, or in-cluster."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from kubernetes import client, config
from kubernetes.config import ConfigException

from ..models import GROUP, VERSION
from .errors import HpoError

SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass
class Session:
    """An API client and the namespace commands use when none is given."""

    api: client.ApiClient
    namespace: str = "default"
    context: str | None = None

    @cached_property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @cached_property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @cached_property
    def authn(self) -> client.AuthenticationV1Api:
        return client.AuthenticationV1Api(self.api)

    def ns(self, namespace: str | None) -> str:
        return namespace or self.namespace

    # CustomObjectsApi calls for the hpo.dev kinds.

    def get(self, plural: str, namespace: str, name: str) -> dict:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)

    def patch(self, plural: str, namespace: str, name: str, body: dict) -> dict:
        return self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, plural, name, body)

    def create(self, plural: str, namespace: str, body: dict) -> dict:
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)

    def list(self, plural: str, namespace: str | None, **kwargs) -> dict:
        if namespace is None:
            return self.custom.list_cluster_custom_object(GROUP, VERSION, plural, **kwargs)
        return self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural, **kwargs)


def _kubeconfig_files(kubeconfig: str | None) -> str | None:
    """The kubeconfig to load: the option, else $KUBECONFIG, else ~/.kube/config if present."""
    if kubeconfig:
        if not Path(kubeconfig).expanduser().exists():
            raise HpoError(f"kubeconfig {kubeconfig} does not exist")
        return str(Path(kubeconfig).expanduser())
    env = os.environ.get("KUBECONFIG")
    if env:
        return env
    default = Path("~/.kube/config").expanduser()
    return str(default) if default.exists() else None


def connect(kubeconfig: str | None = None, context: str | None = None) -> Session:
    """A Session from a kubeconfig (kubectl's rules) or, inside a pod, its service account."""
    path = _kubeconfig_files(kubeconfig)
    if path is None and not context and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            config.load_incluster_config()
        except ConfigException as e:
            raise HpoError(f"in-cluster configuration: {e}") from None
        ns = SA_NAMESPACE_FILE.read_text().strip() if SA_NAMESPACE_FILE.exists() else "default"
        return Session(client.ApiClient(), ns or "default")
    if path is None:
        raise HpoError("no kubeconfig: pass --kubeconfig, set KUBECONFIG, or create ~/.kube/config")
    try:
        contexts, active = config.list_kube_config_contexts(config_file=path)
        chosen = active
        if context:
            chosen = next((c for c in contexts if c.get("name") == context), None)
            if chosen is None:
                names = ", ".join(c.get("name", "") for c in contexts) or "none"
                raise HpoError(f"context {context} not found in the kubeconfig (contexts: {names})")
        configuration = client.Configuration()
        config.load_kube_config(config_file=path, context=context, client_configuration=configuration)
    except ConfigException as e:
        raise HpoError(f"kubeconfig {path}: {e}") from None
    # Fail fast when the server is down, instead of urllib3's three retries.
    configuration.retries = 1
    namespace = ((chosen or {}).get("context") or {}).get("namespace") or "default"
    return Session(client.ApiClient(configuration), namespace, (chosen or {}).get("name"))
