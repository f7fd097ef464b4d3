"""The operator's writes to the API server: async, concurrent, and bounded.

A kept async client (kubernetes_asyncio) instead of the threaded one: hundreds of writes per second
need no thread each, and a round's independent writes go out together. One semaphore bounds the
writes in flight across all experiments, since an API server answered by hundreds of concurrent
writers starts timing out instead of going faster. Responses are read as plain JSON: the operator
works on dicts, and building model objects for every pod would cost more than the write.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from .models import GROUP, VERSION

__all__ = ["Api", "ApiException", "connect", "api_reason"]

# Writes in flight at once, across every experiment (HPO_API_CONCURRENCY).
DEFAULT_CONCURRENCY = 32


class Api:
    def __init__(self, api_client: client.ApiClient, concurrency: int = DEFAULT_CONCURRENCY):
        self.client = api_client
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.limit = asyncio.Semaphore(concurrency)

    async def _raw(self, fn: Any, *args: Any, limited: bool = True, **kwargs: Any) -> bytes:
        if not limited:
            return await read_body(await fn(*args, _preload_content=False, **kwargs))
        async with self.limit:
            return await read_body(await fn(*args, _preload_content=False, **kwargs))

    async def _json(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        data = await self._raw(fn, *args, **kwargs)
        return json.loads(data) if data else None

    async def create(self, plural: str, namespace: str, body: dict) -> dict:
        return await self._json(self.custom.create_namespaced_custom_object, GROUP, VERSION, namespace, plural, body)

    async def get(self, plural: str, namespace: str, name: str) -> dict:
        return await self._json(self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, plural, name)

    async def patch(self, plural: str, namespace: str, name: str, body: dict) -> dict:
        return await self._json(self.custom.patch_namespaced_custom_object, GROUP, VERSION, namespace, plural, name,
                                body, _content_type="application/merge-patch+json")

    async def patch_status(self, plural: str, namespace: str, name: str, status: dict) -> dict:
        return await self._json(self.custom.patch_namespaced_custom_object_status, GROUP, VERSION, namespace,
                                plural, name, {"status": status}, _content_type="application/merge-patch+json")

    async def create_pod(self, namespace: str, body: dict) -> dict:
        return await self._json(self.core.create_namespaced_pod, namespace, body)

    async def delete_pod(self, namespace: str, name: str) -> dict:
        return await self._json(self.core.delete_namespaced_pod, name, namespace, propagation_policy="Background")

    async def pod_log(self, namespace: str, name: str, **kwargs: Any) -> str:
        data = await self._raw(self.core.read_namespaced_pod_log, name, namespace, **kwargs)
        return data.decode("utf-8", errors="replace")

    # Reads for the informers: not bounded by the write limit (a watch holds its connection for
    # minutes), and nothing built but dicts.

    def _lister(self, kind: str) -> tuple[Any, tuple]:
        if kind == "pods":
            return self.core.list_namespaced_pod, ()
        return self.custom.list_namespaced_custom_object, (GROUP, VERSION)

    async def list_raw(self, kind: str, namespace: str, label_selector: str | None = None) -> dict:
        fn, args = self._lister(kind)
        extra = {"label_selector": label_selector} if label_selector else {}
        return json.loads(await self._raw(fn, *args, namespace, *([kind] if args else []), limited=False, **extra))

    async def watch_raw(self, kind: str, namespace: str, resource_version: str, timeout_seconds: int,
                        label_selector: str | None = None) -> Any:
        """The open watch response; its .content yields one JSON event per line. Release it."""
        fn, args = self._lister(kind)
        extra = {"label_selector": label_selector} if label_selector else {}
        response = await fn(*args, namespace, *([kind] if args else []), watch=True,
                            resource_version=resource_version, allow_watch_bookmarks=True,
                            timeout_seconds=timeout_seconds, _request_timeout=timeout_seconds + 30,
                            _preload_content=False, **extra)
        if not 200 <= response.status <= 299:
            await read_body(response)  # raises
        return response

    async def close(self) -> None:
        await self.client.close()


async def read_body(response: Any) -> bytes:
    """The response's body, released. Unpreloaded responses are not checked by the client: an
    error status is raised here, with the API server's message as the exception's body."""
    try:
        data = await response.read()
    finally:
        response.release()
    if not 200 <= response.status <= 299:
        e = ApiException(status=response.status, reason=response.reason)
        e.body = data
        e.headers = response.headers
        raise e
    return data


async def connect() -> Api:
    """In the cluster, the pod's ServiceAccount; outside, the kubeconfig (KUBECONFIG)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        # The client reads KUBECONFIG once, when it is imported: read it now.
        await config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    concurrency = int(os.environ.get("HPO_API_CONCURRENCY", DEFAULT_CONCURRENCY))
    configuration = client.Configuration.get_default_copy()
    # No limit on connections: each watch holds one, and writes are bounded by the semaphore.
    configuration.connection_pool_maxsize = 0
    api_client = client.ApiClient(configuration)
    # The client's HTTP session trusts the environment, so aiohttp looks for a .netrc file on every
    # request (a profile showed it at 5% of the operator's time). Proxies still come from the
    # kubeconfig's proxy-url, which the client passes itself.
    api_client.rest_client.pool_manager._trust_env = False
    return Api(api_client, concurrency)


def api_reason(e: ApiException) -> str:
    """The API server's own message for a refused request."""
    try:
        return json.loads(e.body).get("message") or str(e.reason)
    except (TypeError, ValueError, AttributeError):
        return f"{e.status} {e.reason}"
