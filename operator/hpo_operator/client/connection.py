"""Connecting to the API server as kubectl would: a kubeconfig file and context, or in-cluster."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

from kubernetes import client, config
from kubernetes.config import ConfigException

from ..kubeconfig import SA_NAMESPACE_FILE, context_namespace, kubeconfig_path, pick_context
from ..models import GROUP, VERSION
from .errors import HpoError



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


def connect(kubeconfig: str | None = None, context: str | None = None) -> Session:
    """A Session from a kubeconfig (kubectl's rules) or, inside a pod, its service account."""
    try:
        path = kubeconfig_path(kubeconfig)
    except LookupError as e:
        raise HpoError(str(e)) from None
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
        try:
            chosen = pick_context(contexts, active, context)
        except LookupError as e:
            raise HpoError(str(e)) from None
        configuration = client.Configuration()
        config.load_kube_config(config_file=path, context=context, client_configuration=configuration)
    except ConfigException as e:
        raise HpoError(f"kubeconfig {path}: {e}") from None
    # Fail fast when the server is down, instead of urllib3's three retries.
    configuration.retries = 1
    namespace = context_namespace(chosen)
    return Session(client.ApiClient(configuration), namespace, (chosen or {}).get("name"))
