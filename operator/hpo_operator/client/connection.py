"""Connecting to the API server as kubectl would: a kubeconfig file and context, or in-cluster."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from kubernetes import client, config

from hpo_operator.api.vocabulary import GROUP, VERSION
from hpo_operator.kube.config import configure

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
    configuration = client.Configuration()
    try:
        target, _ = configure(config, configuration, kubeconfig, context)
    except LookupError as e:
        raise HpoError(str(e)) from None
    if target.path is not None:
        # Fail fast when the server is down, instead of urllib3's three retries.
        configuration.retries = 1
    return Session(client.ApiClient(configuration), target.namespace, target.context)
