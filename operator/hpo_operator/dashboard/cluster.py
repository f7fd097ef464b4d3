"""The dashboard's copy of the cluster: Experiments and Trials listed, then watched, into memory.

The dashboard reads with the viewer's own credentials: their kubeconfig and context (kubectl's
rules, as `kubectl hpo` reads them), or inside a pod its ServiceAccount. It uses the async client
the operator uses (kubernetes_asyncio, in the operator's image) rather than the plugin's threaded
one (left out of the image), so that the chart can run the same server.

A page is built from memory, never from a request to the API server: a 10,000-trial experiment
is listed once (in chunks), then each change arrives on the watch. Every change to an experiment
or one of its trials bumps that experiment's version (the server's caches are keyed by it) and is
announced to the pages listening (server-sent events), at most every NOTIFY_DELAY seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from hpo_operator.api.vocabulary import GROUP, VERSION
from hpo_operator.kube.client import REQUEST_TIMEOUT, api_reason, failure_reason, read_body, watch_timeout
from hpo_operator.kube.config import configure, load_failure
from hpo_operator.kube.informer import WATCH_TIMEOUT_SECONDS, WatchHealth, run_list_watch

from .data import experiment_of

log = logging.getLogger(__name__)

LIST_CHUNK = 500
NOTIFY_DELAY = 0.2
# Annotations that can be large and that no page shows.
DROPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)

Key = tuple[str, str]  # (namespace, experiment)


class ConnectError(Exception):
    """No usable kubeconfig or in-cluster configuration; the message says why."""


@dataclass
class Connection:
    api: client.ApiClient
    namespace: str  # the context's namespace (or the pod's), the default scope
    context: str | None

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    async def whoami(self) -> str | None:
        """The user the API server authenticates (SelfSubjectReview), as `kubectl hpo list --mine`."""
        body = client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview")
        try:
            review = await client.AuthenticationV1Api(self.api).create_self_subject_review(body)
        except (ApiException, OSError):
            return None
        user = review.status.user_info if review.status else None
        return user.username if user else None

    async def close(self) -> None:
        await self.api.close()


async def connect(kubeconfig: str | None = None, context: str | None = None) -> Connection:
    """A connection as `kubectl hpo` makes one: the kubeconfig and context, or in-cluster."""
    configuration = client.Configuration()
    try:
        target, loading = configure(config, configuration, kubeconfig, context)
        if loading is not None:
            await loading
    except LookupError as e:
        raise ConnectError(str(e)) from None
    except config.ConfigException as e:
        raise ConnectError(load_failure(target.path, e)) from None
    return Connection(client.ApiClient(configuration), target.namespace, target.context)


def _slim(obj: dict) -> dict:
    meta = obj.get("metadata") or {}
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if annotations:
        for name in DROPPED_ANNOTATIONS:
            annotations.pop(name, None)
    return obj


@dataclass
class _Feed:
    """One list-then-watch: a kind in one namespace (None: every namespace)."""

    kind: str
    namespace: str | None
    synced: bool = False
    error: str | None = None
    health: WatchHealth = field(init=False)

    def __post_init__(self) -> None:
        self.health = WatchHealth(self.kind, self.where)

    @property
    def where(self) -> str:
        return f"{self.kind} in " + (f"namespace {self.namespace}" if self.namespace else "all namespaces")


@dataclass
class Store:
    """Experiments and Trials of the watched namespaces (`namespaces` None: all of them)."""

    connection: Connection
    namespaces: list[str] | None
    experiments: dict[Key, dict] = field(default_factory=dict)
    trials: dict[Key, dict[str, dict]] = field(default_factory=dict)
    versions: dict[Key, int] = field(default_factory=dict)
    revision: int = 0

    def __post_init__(self) -> None:
        scopes: list[str | None] = list(self.namespaces) if self.namespaces is not None else [None]
        self.feeds = [_Feed(kind, ns) for ns in scopes for kind in ("experiments", "trials")]
        self._owner: dict[tuple[str, str], Key] = {}  # (namespace, trial) -> its experiment
        self._dirty: set[Key] = set()
        self._wake = asyncio.Event()
        self._listeners: set[asyncio.Queue] = set()
        self._tasks: list[asyncio.Task] = []
        self.synced = asyncio.Event()

    # --- reading --------------------------------------------------------------------------------------

    def version(self, key: Key) -> int:
        return self.versions.get(key, 0)

    def trials_of(self, key: Key) -> list[dict]:
        """A snapshot (the objects are replaced on change, never modified, so a list is enough)."""
        return list(self.trials.get(key, {}).values())

    def errors(self) -> list[str]:
        return [text for _, text in self.feed_errors()]

    def feed_errors(self) -> list[tuple[str | None, str]]:
        """Each feed that is down: its namespace (None: every namespace) and why."""
        return [(f.namespace, f"cannot read {f.where}: {f.error}") for f in self.feeds if f.error]

    def watches(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces

    # --- changes ------------------------------------------------------------------------------------------

    def _changed(self, key: Key) -> None:
        self.versions[key] = self.versions.get(key, 0) + 1
        self._dirty.add(key)
        self._wake.set()

    def _put(self, kind: str, obj: dict) -> None:
        meta = obj.get("metadata") or {}
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        if kind == "experiments":
            self.experiments[(ns, name)] = _slim(obj)
            self._changed((ns, name))
            return
        key = (ns, experiment_of(obj) or "")
        old = self._owner.get((ns, name))
        if old is not None and old != key:
            self._drop(kind, ns, name)
        self.trials.setdefault(key, {})[name] = _slim(obj)
        self._owner[(ns, name)] = key
        self._changed(key)

    def _drop(self, kind: str, ns: str, name: str) -> None:
        if kind == "experiments":
            if self.experiments.pop((ns, name), None) is not None:
                self._changed((ns, name))
            return
        key = self._owner.pop((ns, name), None)
        if key is None:
            return
        trials = self.trials.get(key, {})
        trials.pop(name, None)
        if not trials:
            self.trials.pop(key, None)
        self._changed(key)

    def _relist(self, feed: _Feed, items: list[dict]) -> None:
        """A fresh listing replaces what the feed had: objects gone meanwhile are dropped."""
        in_scope = (lambda ns: True) if feed.namespace is None else (lambda ns: ns == feed.namespace)
        seen = {
            ((o.get("metadata") or {}).get("namespace", ""), (o.get("metadata") or {}).get("name", "")) for o in items
        }
        if feed.kind == "experiments":
            gone = [k for k in self.experiments if in_scope(k[0]) and k not in seen]
        else:
            gone = [k for k in self._owner if in_scope(k[0]) and k not in seen]
        for ns, name in gone:
            self._drop(feed.kind, ns, name)
        for obj in items:
            self._put(feed.kind, obj)

    # --- listeners (the pages' event streams) -----------------------------------------------------

    def listen(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(maxsize=16)
        self._listeners.add(queue)
        return queue

    def unlisten(self, queue: asyncio.Queue) -> None:
        self._listeners.discard(queue)

    def close_listeners(self) -> None:
        """Ends every event stream (None is their last message): the server is stopping."""
        for queue in self._listeners:
            while queue.full():
                queue.get_nowait()
            queue.put_nowait(None)

    async def _notify(self) -> None:
        errors: list[str] = []
        while True:
            await self._wake.wait()
            await asyncio.sleep(NOTIFY_DELAY)  # a burst of changes is one message
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            if not dirty and self.errors() == errors:
                continue
            errors = self.errors()
            self.revision += 1
            message = {"revision": self.revision, "experiments": sorted([list(k) for k in dirty]), "errors": errors}
            for queue in list(self._listeners):
                if queue.full():  # a page that fell behind is told that everything changed
                    while not queue.empty():
                        queue.get_nowait()
                    queue.put_nowait({**message, "experiments": None})
                else:
                    queue.put_nowait(message)

    # --- list and watch ------------------------------------------------------------------------------------

    async def start(self, watch: bool = True) -> None:
        """Lists and watches (unless `watch` is false: a store filled by hand, in tests), and
        announces changes to the listeners."""
        self._tasks = [asyncio.create_task(self._run(feed)) for feed in self.feeds] if watch else []
        self._tasks.append(asyncio.create_task(self._notify()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _call(self, feed: _Feed, **kwargs: Any) -> Any:
        custom = self.connection.custom
        if feed.namespace is None:
            return custom.list_cluster_custom_object(GROUP, VERSION, feed.kind, _preload_content=False, **kwargs)
        return custom.list_namespaced_custom_object(
            GROUP, VERSION, feed.namespace, feed.kind, _preload_content=False, **kwargs
        )

    async def _list(self, feed: _Feed) -> tuple[list[dict], str]:
        items: list[dict] = []
        token = None
        while True:
            kwargs: dict[str, Any] = {"limit": LIST_CHUNK, "_request_timeout": REQUEST_TIMEOUT}
            if token:
                kwargs["_continue"] = token
            page = json.loads(await read_body(await self._call(feed, **kwargs)))
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items, page["metadata"]["resourceVersion"]

    async def _open_watch(self, feed: _Feed, version: str) -> Any:
        response = await self._call(
            feed,
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_TIMEOUT_SECONDS,
            _request_timeout=watch_timeout(WATCH_TIMEOUT_SECONDS),
        )
        if not 200 <= response.status <= 299:
            await read_body(response)  # raises with the API server's message
        return response

    async def _run(self, feed: _Feed) -> None:
        """The feed's list-then-watch (informer.run_list_watch: every way a watch can end leads to a
        listing again, with backoff); its errors are shown on the pages while it is down."""

        def drop(obj: dict) -> None:
            meta = obj.get("metadata") or {}
            self._drop(feed.kind, meta.get("namespace", ""), meta.get("name", ""))

        def health_changed() -> None:
            h = feed.health
            feed.synced = h.synced.is_set() or feed.synced  # synced once: the pages have data
            feed.error = None if h.exception is None else _describe(h.exception)
            if h.synced.is_set() and all(f.synced for f in self.feeds):
                self.synced.set()
            self._wake.set()  # the pages show why, or that it is back

        await run_list_watch(
            feed.health,
            lambda: self._list(feed),
            lambda v: self._open_watch(feed, v),
            lambda items: self._relist(feed, items),
            lambda obj: self._put(feed.kind, obj),
            drop,
            on_change=health_changed,
        )


def _describe(e: BaseException) -> str:
    if isinstance(e, ApiException):
        if e.status == 403:
            return f"permission denied: {api_reason(e)}"
        if e.status == 404:
            return f"the API server does not serve {GROUP}/{VERSION}: are the hpo-operator CRDs installed?"
        return f"{e.status} {api_reason(e)}"
    words = {
        "Disconnected": "the connection to the API server was cut",
        "Unreachable": "the API server cannot be reached",
        "Timeout": "the API server did not answer in time",
        "TLS": "the TLS handshake with the API server failed",
        "BadResponse": "the API server's answer could not be read",
    }.get(failure_reason(e))
    if words:
        return f"{words} ({type(e).__name__}); trying again"
    return f"{type(e).__name__}: {e}"
