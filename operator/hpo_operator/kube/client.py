# One piece: KubeClient, the operator's one bounded write path, and the helpers its calls share.
"""The operator's writes to the API server: async, concurrent, and bounded.

A kept async client (kubernetes_asyncio) instead of the threaded one: hundreds of writes per second
need no thread each, and a round's independent writes go out together. One bound on the writes in
flight across all experiments, since an API server answered by hundreds of concurrent writers starts
timing out instead of going faster; within it each experiment gets its fair share (fair.py), so one
experiment's burst does not hold up the others'. Responses are read as plain JSON: the operator works
on dicts, and building model objects for every pod would cost more than the write.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from hpo_operator.api.vocabulary import GROUP, VERSION

from .fair import FIRST, FLOW, FairLimiter

__all__ = [
    "KubeClient",
    "ApiException",
    "connect",
    "api_reason",
    "describe",
    "failure_reason",
    "TRANSPORT_ERRORS",
    "Resource",
    "PODS",
    "CLAIMS",
    "TRIALS",
]

Resource = tuple[str, str, str]  # (group, version, plural); "" is the core group
PODS: Resource = ("", "v1", "pods")
CLAIMS: Resource = ("", "v1", "persistentvolumeclaims")
TRIALS: Resource = (GROUP, VERSION, "trials")
# Kueue's Workloads, newest version first (v1beta2 since Kueue 0.15).
KUEUE_WORKLOADS: tuple[Resource, ...] = (
    ("kueue.x-k8s.io", "v1beta2", "workloads"),
    ("kueue.x-k8s.io", "v1beta1", "workloads"),
)

# The core kinds the operator writes (the core group has no /apis path for CustomObjectsApi): the
# name CoreV1Api's calls give each (create_namespaced_<name>, ...), and the options of a delete
# (a pod in the background, like any trial's workload; a claim with the server's default).
CORE_KINDS: dict[Resource, tuple[str, dict]] = {
    PODS: ("pod", {"propagation_policy": "Background"}),
    CLAIMS: ("persistent_volume_claim", {}),
}


class _Calls(NamedTuple):
    """A resource's calls, each taking the namespace first, then its own arguments and options."""

    create: Callable[..., Awaitable[Any]]  # (namespace, body)
    delete: Callable[..., Awaitable[Any]]  # (namespace, name)
    list: Callable[..., Awaitable[Any]]  # (namespace), or watch=True


# Requests made by this process, by verb (create, patch, delete, list, read...), for the operator's
# metrics (hpo_api_requests_total): what a trial costs the API server. Kept here, per process.
REQUESTS: Counter[str] = Counter()


def _verb(fn: Any) -> str:
    """The verb of a client method: create_namespaced_pod -> create; patch_..._status -> patch status."""
    name = getattr(fn, "__name__", "") or "call"
    verb = name.split("_", 1)[0].lstrip("_")
    if verb == "patch" and name.endswith("_status"):
        return "patch status"
    return {"read": "get", "<lambda>": "call"}.get(verb, verb)


# Writes in flight at once, across every experiment (HPO_API_CONCURRENCY), and of one experiment
# (HPO_API_CONCURRENCY_PER_EXPERIMENT: the rest stay free for the others' next writes).
DEFAULT_CONCURRENCY = 32
DEFAULT_CONCURRENCY_PER_EXPERIMENT = 24

# The client's default is no timeout at all: a request on a connection that went half-open (a
# control-plane node gone, a load balancer that dropped it) or to a frozen API server would wait
# forever, and with it the experiment's round. A connection must come up within CONNECT_SECONDS, and
# a response that stops arriving for READ_SECONDS is given up (a large listing still takes as long
# as it keeps arriving).
CONNECT_SECONDS = 10.0
READ_SECONDS = float(os.environ.get("HPO_API_READ_TIMEOUT", "30"))
REQUEST_TIMEOUT = aiohttp.ClientTimeout(sock_connect=CONNECT_SECONDS, sock_read=READ_SECONDS)

# How a request can fail below HTTP: refused, reset or cut connections, TLS failures, timeouts.
# (aiohttp's payload and disconnection errors are not OSErrors.)
TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


def describe(e: BaseException) -> str:
    """An exception in one line, for logs (aiohttp's connection errors can fail to say themselves)."""
    if isinstance(e, ApiException):
        return f"{e.status} {e.reason}"
    try:
        text = str(e)
    except Exception:  # an exception that cannot say itself must not end the loop that caught it
        text = ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def failure_reason(e: BaseException) -> str:
    """A bounded name for why a request or a watch failed (a metrics label, a log word)."""
    if isinstance(e, ApiException):
        status = e.status or 0
        if status == 410:
            return "Gone"
        if status == 429:
            return "TooManyRequests"
        if status >= 500:
            return "ServerError"
        if status in (401, 403):
            return "Forbidden"  # our rights (or credentials): the platform's RBAC decides
        return "Refused"  # 404, 400...: the request itself
    if isinstance(e, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return "Timeout"
    if isinstance(e, aiohttp.ClientSSLError):
        return "TLS"
    if isinstance(e, (aiohttp.ClientConnectorError, ConnectionRefusedError)):
        return "Unreachable"
    if isinstance(e, (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, ConnectionError)):
        # (ClientConnectionError: "Connection closed" on a pooled connection the server dropped)
        return "Disconnected"
    if isinstance(e, ValueError):
        return "BadResponse"  # not JSON: a proxy's error page, a cut line
    return "Unexpected"


class KubeClient:
    def __init__(
        self, api_client: client.ApiClient, concurrency: int = DEFAULT_CONCURRENCY, per_flow: int | None = None
    ):
        self.client = api_client
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.authorization = client.AuthorizationV1Api(api_client)
        # per_flow None: one flow may use every slot (a client that serves one experiment).
        self.limit = FairLimiter(concurrency, per_flow)
        self._plurals: dict[tuple[str, str], str] = {}

    async def _raw(self, fn: Any, *args: Any, limited: bool = True, **kwargs: Any) -> bytes:
        REQUESTS[_verb(fn)] += 1
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        if not limited:
            return await read_body(await fn(*args, _preload_content=False, **kwargs))
        async with self.limit.slot(FLOW.get(), FIRST.get()):
            return await read_body(await fn(*args, _preload_content=False, **kwargs))

    async def _json(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        data = await self._raw(fn, *args, **kwargs)
        return json.loads(data) if data else None

    async def create(self, plural: str, namespace: str, body: dict) -> dict:
        return await self._json(self.custom.create_namespaced_custom_object, GROUP, VERSION, namespace, plural, body)

    async def get(self, plural: str, namespace: str, name: str) -> dict:
        return await self._json(self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, plural, name)

    async def patch(self, plural: str, namespace: str, name: str, body: dict) -> dict:
        return await self._json(
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            body,
            _content_type="application/merge-patch+json",
        )

    async def patch_status(self, plural: str, namespace: str, name: str, status: dict) -> dict:
        return await self._json(
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            {"status": status},
            _content_type="application/merge-patch+json",
        )

    async def create_pod(self, namespace: str, body: dict) -> dict:
        return await self.create_object(PODS, namespace, body)

    async def delete_pod(self, namespace: str, name: str) -> dict:
        return await self.delete_object(PODS, namespace, name)

    async def pod_log(
        self, namespace: str, name: str, *, since_time: str | None = None, as_user: str | None = None, **kwargs: Any
    ) -> str:
        """A pod's log (kwargs: the client's read_namespaced_pod_log options), read as `as_user`
        when given (impersonating). since_time (RFC 3339, to the nanosecond) starts it at that time, as
        `kubectl logs --since-time` does: the client's method has no sinceTime, so that request is
        made here, to the same path."""
        kwargs.update(impersonating(as_user))
        if since_time is None:
            data = await self._raw(self.core.read_namespaced_pod_log, name, namespace, **kwargs)
        else:
            data = await self._raw(self._pod_log_since, namespace, name, since_time, **kwargs)
        return data.decode("utf-8", errors="replace")

    def _pod_log_since(
        self,
        namespace: str,
        name: str,
        since_time: str,
        *,
        container: str | None = None,
        limit_bytes: int | None = None,
        timestamps: bool = False,
        _preload_content: bool = False,
        _request_timeout: Any = None,
        _headers: dict[str, str] | None = None,
    ) -> Any:
        query = [("sinceTime", since_time), ("timestamps", timestamps)]
        if container:
            query.append(("container", container))
        if limit_bytes:
            query.append(("limitBytes", limit_bytes))
        return self.client.call_api(
            "/api/v1/namespaces/{namespace}/pods/{name}/log",
            "GET",
            {"namespace": namespace, "name": name},
            query,
            # (Accept: what the client's own method asks for; the text comes back.)
            {"Accept": "application/json", **(_headers or {})},
            response_types_map={200: "str"},
            auth_settings=["BearerToken"],
            _preload_content=_preload_content,
            _request_timeout=_request_timeout,
        )

    # Any namespaced kind a trial runs as (workload.Kind): pods, Jobs, or a resource found by
    # discovery. CustomObjectsApi serves any group's /apis path, built-in ones included.

    def _calls(self, resource: Resource) -> _Calls:
        # (Functions named by their verb, which REQUESTS counts them by.)
        if resource in CORE_KINDS:
            kind, deleting = CORE_KINDS[resource]
            core = self.core

            def create_core(ns: str, body: dict, **kw: Any) -> Any:
                return getattr(core, f"create_namespaced_{kind}")(ns, body, **kw)

            def delete_core(ns: str, name: str, **kw: Any) -> Any:
                return getattr(core, f"delete_namespaced_{kind}")(name, ns, **deleting, **kw)

            def list_core(ns: str, **kw: Any) -> Any:
                return getattr(core, f"list_namespaced_{kind}")(ns, **kw)

            return _Calls(create_core, delete_core, list_core)
        group, version, plural = resource
        custom = self.custom

        def create_custom(ns: str, body: dict, **kw: Any) -> Any:
            return custom.create_namespaced_custom_object(group, version, ns, plural, body, **kw)

        def delete_custom(ns: str, name: str, **kw: Any) -> Any:
            # Background: the garbage collector removes a Job's (or resource's) pods after it.
            return custom.delete_namespaced_custom_object(
                group, version, ns, plural, name, propagation_policy="Background", **kw
            )

        def list_custom(ns: str, **kw: Any) -> Any:
            return custom.list_namespaced_custom_object(group, version, ns, plural, **kw)

        return _Calls(create_custom, delete_custom, list_custom)

    async def create_object(self, resource: Resource, namespace: str, body: dict, as_user: str | None = None) -> dict:
        """Creates the object; with `as_user`, impersonating that user (the API server then checks
        that user's rights and admission sees it as the requester)."""
        return await self._json(self._calls(resource).create, namespace, body, **impersonating(as_user))

    async def delete_object(self, resource: Resource, namespace: str, name: str, as_user: str | None = None) -> dict:
        return await self._json(self._calls(resource).delete, namespace, name, **impersonating(as_user))

    async def self_review(self) -> dict:
        """A SelfSubjectReview: who the API server takes this client for."""
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        return await self._json(client.AuthenticationV1Api(self.client).create_self_subject_review, body)

    async def local_access_review(self, namespace: str, spec: dict) -> dict:
        """A LocalSubjectAccessReview's answer (its status): may a user do something in
        `namespace`? Namespaced, so a Role in that namespace can grant asking."""
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "LocalSubjectAccessReview",
            "metadata": {"namespace": namespace},
            "spec": {**spec, "resourceAttributes": {**spec.get("resourceAttributes", {}), "namespace": namespace}},
        }
        answer = await self._json(self.authorization.create_namespaced_local_subject_access_review, namespace, body)
        return (answer or {}).get("status") or {}

    async def get_custom(self, resource: Resource, namespace: str | None, name: str) -> dict:
        """A custom object, namespaced or (namespace None) cluster-scoped."""
        group, version, plural = resource
        if namespace is None:
            return await self._json(self.custom.get_cluster_custom_object, group, version, plural, name)
        return await self._json(self.custom.get_namespaced_custom_object, group, version, namespace, plural, name)

    async def patch_object(self, resource: Resource, namespace: str, name: str, body: dict) -> dict:
        """A JSON merge patch of a custom resource (not of a core kind)."""
        group, version, plural = resource
        return await self._json(
            self.custom.patch_namespaced_custom_object,
            group,
            version,
            namespace,
            plural,
            name,
            body,
            _content_type="application/merge-patch+json",
        )

    async def plural_of(self, api_version: str, kind: str) -> str:
        """The resource name of a kind, by discovery (cached: it does not change while we run)."""
        key = (api_version, kind)
        if key not in self._plurals:
            path = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
            response = await self.client.call_api(
                path,
                "GET",
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=REQUEST_TIMEOUT,
            )
            listing = json.loads(await read_body(response))
            for r in listing.get("resources") or []:
                if r.get("kind") == kind and "/" not in r.get("name", ""):
                    self._plurals[key] = r["name"]
                    break
            else:
                raise LookupError(f"the API server serves no kind {kind} in {api_version}")
        return self._plurals[key]

    # Reads for the informers: not bounded by the write limit (a watch holds its connection for
    # minutes), and nothing built but dicts.

    async def list_raw(self, resource: Resource, namespace: str, label_selector: str | None = None) -> dict:
        extra = {"label_selector": label_selector} if label_selector else {}
        return json.loads(await self._raw(self._calls(resource).list, namespace, limited=False, **extra))

    async def watch_raw(
        self,
        resource: Resource,
        namespace: str,
        resource_version: str,
        timeout_seconds: int,
        label_selector: str | None = None,
    ) -> Any:
        """The open watch response; its .content yields one JSON event per line. Release it."""
        extra = {"label_selector": label_selector} if label_selector else {}
        response = await self._calls(resource).list(
            namespace,
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout_seconds,
            _request_timeout=watch_timeout(timeout_seconds),
            _preload_content=False,
            **extra,
        )
        if not 200 <= response.status <= 299:
            await read_body(response)  # raises
        return response

    async def close(self) -> None:
        await self.client.close()


def impersonating(user: str | None) -> dict[str, Any]:
    """A request's options to impersonate `user` (none for None). A ServiceAccount's user name is
    enough: the API server adds that account's groups itself."""
    return {"_headers": {"Impersonate-User": user}} if user else {}


def watch_timeout(timeout_seconds: float) -> aiohttp.ClientTimeout:
    """The client's side of a watch the server ends after timeout_seconds: no total limit, but a
    stream silent for longer than the server's timeout, plus a margin, is dead (half-open) and
    given up. (A watch is quiet between events; the API server also sends a bookmark about every
    minute.)"""
    return aiohttp.ClientTimeout(
        sock_connect=CONNECT_SECONDS, sock_read=timeout_seconds + max(5.0, timeout_seconds / 2)
    )


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


async def connect() -> KubeClient:
    """In the cluster, the pod's ServiceAccount; outside, the kubeconfig (KUBECONFIG)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        # The client reads KUBECONFIG once, when it is imported: read it now.
        await config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    concurrency = int(os.environ.get("HPO_API_CONCURRENCY", DEFAULT_CONCURRENCY))
    per_experiment = int(os.environ.get("HPO_API_CONCURRENCY_PER_EXPERIMENT", DEFAULT_CONCURRENCY_PER_EXPERIMENT))
    configuration = client.Configuration.get_default_copy()
    # No limit on connections: each watch holds one, and writes are bounded by the semaphore.
    configuration.connection_pool_maxsize = 0
    api_client = client.ApiClient(configuration)
    # The client's HTTP session trusts the environment, so aiohttp looks for a .netrc file on every
    # request (a profile showed it at 5% of the operator's time). Proxies still come from the
    # kubeconfig's proxy-url, which the client passes itself.
    api_client.rest_client.pool_manager._trust_env = False
    return KubeClient(api_client, concurrency, per_experiment)


def api_reason(e: ApiException) -> str:
    """The API server's own message for a refused request."""
    try:
        return json.loads(e.body).get("message") or str(e.reason)
    except (TypeError, ValueError, AttributeError):
        return f"{e.status} {e.reason}"
