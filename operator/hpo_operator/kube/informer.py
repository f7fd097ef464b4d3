"""List-then-watch of the Trials and trial pods in one namespace, kept by experiment.

kopf follows the Experiments (a few events each). A Trial and its pod change a dozen times in a
few seconds, and kopf's per-event machinery (a worker per object, handler selection, invocation)
cost more than everything else the operator does per trial. These informers read the watch
stream as plain JSON lines into dicts and wake the experiment whose object changed.

Like kopf's indexes, an informer is "synced" once its first listing is in: an experiment's loop
waits for that, so it never plans on a partial view (after a restart, a running trial whose pod
was not listed yet would look like one whose pod vanished). It is unsynced again from the moment
its watch fails until its next listing: what it holds may then be stale, and a round planned on a
stale view could act on a pod that finished long ago.

A watch ends in one of two ways, as client-go's reflector has it:
- the API server closes it after the timeout it was asked for: it goes on from the last
  resourceVersion seen, with no listing;
- anything else (the connection refused, reset or cut while the API server restarts, a TLS
  failure, a 5xx or 429, 410 Gone after etcd compacted the history, a stream silent for longer
  than the server's timeout, a line that is not JSON, or a bug of ours): the informer lists again
  after a backoff, and every experiment whose objects changed or disappeared meanwhile wakes.
  A refusal (401, 403) of a patient informer (a trial kind's: the platform's RBAC decides) is
  retried after 30-60 s, growing to 5-10 min, not after the outage's half second.
- but the API server shedding load (429 Too Many Requests, as its priority and fairness answers a
  new watch when it is busy; the informer's watch is opened again every minute): as client-go's
  reflector does, the watch is opened again from its last resourceVersion after a backoff, without
  a listing and still synced, for up to THROTTLED_SECONDS in a row. Nothing is lost (the server's
  history keeps what happened meanwhile, and a 410 Gone lists again); the view is as current as
  while waiting for the next event; and a listing (and every experiment of the namespace waiting
  for it) would only add load to a server that asked for less.
Nothing but cancellation ends the loop (`run_list_watch`): the dashboard's watches use it too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .client import ApiException, KubeClient, Resource, describe, failure_reason

log = logging.getLogger(__name__)

# The API server ends each watch after this; it is resumed from its last resourceVersion. Short
# enough that the client's silence timeout (this plus a margin) finds a half-open stream soon.
WATCH_TIMEOUT_SECONDS = int(os.environ.get("HPO_WATCH_TIMEOUT_SECONDS", "60"))
# After a failed listing or watch: the first retry after BACKOFF_BASE seconds, each next one
# doubling, at most BACKOFF_MAX, each with up to a fifth of jitter (replicas and namespaces that
# failed together do not all come back at the same instant).
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
# A watch the API server refuses (401, 403) waits for someone to change the operator's RBAC, which
# a quick retry will not see: a patient informer (a trial kind's) retries after FORBIDDEN_BACKOFF
# to twice that, doubling up to ten times it (30-60 s, growing to 5-10 min).
FORBIDDEN_BACKOFF = float(os.environ.get("HPO_WATCH_FORBIDDEN_BACKOFF_SECONDS", "30"))
FORBIDDEN_BACKOFF_MAX = 10 * FORBIDDEN_BACKOFF
# Watches the API server refuses for load (429) are opened again without a listing for this long
# in a row; past it, the informer is down and lists again, as after any other failure.
THROTTLED_SECONDS = float(os.environ.get("HPO_WATCH_THROTTLED_SECONDS", "20"))

KeyOf = Callable[[dict], "str | None"]
Slim = Callable[[dict], dict]
# (key, name, the object before (None: new), the object now) -> whether it is the operator's own write
Echo = Callable[["str | None", str, "dict | None", dict], bool]

# Restarts of every watch in this process, by (resource, reason), for the operator's metrics: kept
# here, not per informer, so that a counter never goes down when a namespace's informers go.
RESTARTS: Counter[tuple[str, str]] = Counter()


def backoff_delay(failures: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the failures-th failure in a row (1, 2, ...)."""
    delay = min(BACKOFF_BASE * 2 ** max(failures - 1, 0), BACKOFF_MAX)
    return delay * (1 + 0.2 * rand())


def forbidden_delay(failures: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds a patient informer waits after its failures-th failure in a row, refused (401/403)."""
    return min(FORBIDDEN_BACKOFF * 2 ** max(failures - 1, 0), FORBIDDEN_BACKOFF_MAX) * (1 + rand())


class Gone(Exception):
    """410 Gone: the resourceVersion to go on from is older than the history the API server keeps."""

    status = 410


@dataclass
class WatchHealth:
    """How one list-then-watch is doing, for the loops that read it, metrics, probes and logs."""

    resource: str  # what it watches ("pods", "trials", "experiments"): a metrics label
    where: str  # for log lines: "pods in namespace ns"
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    last_event: float | None = None  # monotonic: the newest listing, event or bookmark
    down_since: float | None = None  # monotonic: the first failure since the last listing
    error: str | None = None  # the last failure, while down
    exception: BaseException | None = None  # the same, for a caller that words it its own way
    failures: int = 0  # failures in a row
    # Set while the last failure was the API server's refusal (401, 403): the operator's rights,
    # not an outage. Whoever waits for `synced` can wait for this as well, and say so.
    forbidden: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False  # its loop ended (stopped()): nothing will list it again
    version: str | None = None  # the newest resourceVersion seen (a listing's, or an event's)

    def listed(self) -> None:
        self.last_event = time.monotonic()
        self.down_since, self.error, self.exception, self.failures = None, None, None, 0
        self.forbidden.clear()
        self.synced.set()

    def failed(self, reason: str, e: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
        self.error, self.exception = f"{reason}: {describe(e)}", e
        self.failures += 1
        self.synced.clear()
        if reason == "Forbidden":
            self.forbidden.set()
        else:
            self.forbidden.clear()
        RESTARTS[(self.resource, reason)] += 1

    def stopped(self, e: BaseException | None) -> None:
        """Its loop ended (a bug, not an outage): down for good, which the liveness probe reports."""
        if self.down_since is None:
            self.down_since = time.monotonic()
        self.error, self.exception = f"its task ended: {e!r}", e
        self.ended = True
        self.synced.clear()

    def down_for(self, now: float | None = None) -> float:
        return 0.0 if self.down_since is None else (now or time.monotonic()) - self.down_since


async def run_list_watch(
    health: WatchHealth,
    list_: Callable[[], Awaitable[tuple[list[dict], str]]],
    open_watch: Callable[[str], Awaitable[Any]],
    relist: Callable[[list[dict]], None],
    put: Callable[[dict], None],
    drop: Callable[[dict], None],
    on_change: Callable[[], None] | None = None,
    patient: bool = False,
) -> None:
    """Lists, then watches from the listing's resourceVersion, for as long as it is not cancelled.

    list_() gives the items and the resourceVersion; open_watch(version) the open watch response;
    relist, put and drop keep the caller's copy. on_change is called when the health changes
    (down or synced again), for a caller that shows it. A patient watch, once refused (401, 403),
    retries after forbidden_delay() rather than backoff_delay()."""
    while True:
        try:
            items, version = await list_()
            relist(items)
            recovered = health.down_since is not None
            health.listed()
            if recovered:
                log.info("%s: listed again, watching from resourceVersion %s", health.where, version)
            if on_change is not None:
                on_change()
            health.version = version
            throttled: float | None = None  # when the 429s in a row began
            throttles = 0
            while True:
                started = time.monotonic()
                try:
                    response = await open_watch(version)
                    going_on = await follow(response, version, put, drop, seen=health)
                except ApiException as e:
                    if e.status != 429 or (throttled is not None and started - throttled > THROTTLED_SECONDS):
                        raise
                    # Shedding load: the same watch again, later, from the newest version seen.
                    throttled = started if throttled is None else throttled
                    throttles += 1
                    RESTARTS[(health.resource, "TooManyRequests")] += 1
                    version = health.version or version
                    delay = backoff_delay(throttles)
                    log.info("%s: the API server sheds load (429); watching again in %.1fs", health.where, delay)
                    await asyncio.sleep(delay)
                    continue
                throttled, throttles = None, 0
                if going_on is None:
                    raise Gone()
                if time.monotonic() - started < 1:
                    # Ended by the server long before its timeout (an API server shutting down
                    # closes its watches): no loop of watches that end at once.
                    await asyncio.sleep(1)
                version = going_on
        except asyncio.CancelledError:
            raise
        except Exception as e:  # every failure, ours included, ends in a listing: never a dead watch
            reason = "Gone" if isinstance(e, Gone) else failure_reason(e)
            health.failed(reason, e)
            if on_change is not None:
                on_change()
            if patient and reason == "Forbidden":
                delay = forbidden_delay(health.failures)
            else:
                delay = backoff_delay(health.failures)
            if reason == "Unexpected":
                log.exception("%s: the watch failed unexpectedly; listing again in %.1fs", health.where, delay)
            else:
                log.warning("%s: the watch ended (%s); listing again in %.1fs", health.where, health.error, delay)
            await asyncio.sleep(delay)


class Informer:
    """One resource (Trials, pods, a trial kind's objects) in one namespace:
    objects[experiment][name] = body."""

    def __init__(
        self,
        api: KubeClient,
        namespace: str,
        resource: Resource,
        key_of: KeyOf,
        slim: Slim,
        changed: Callable[[str | None], None],
        label_selector: str | None = None,
        patient: bool = False,
        health_changed: Callable[[], None] | None = None,
        echo: Echo | None = None,
    ):
        self.api, self.namespace, self.resource = api, namespace, resource
        self.kind = resource[2]
        self.key_of, self.slim, self.changed = key_of, slim, changed
        # Called when the watch goes down, and when it has listed again (synced or refused).
        self.health_changed = health_changed
        # Whether a change only shows what the operator itself wrote: stored, but no one woken.
        self.echo = echo
        self.label_selector = label_selector
        self.patient = patient  # a refusal (401, 403) is retried slowly: forbidden_delay()
        self.objects: dict[str | None, dict[str, dict]] = {}
        self._where: dict[str, str | None] = {}  # name -> experiment, to move or drop an object
        self.health = WatchHealth(self.kind, f"{self.kind} in namespace {namespace}")

    @property
    def synced(self) -> asyncio.Event:
        return self.health.synced

    def _put(self, obj: dict) -> None:
        name = obj["metadata"]["name"]
        key = self.key_of(obj)
        old = self._where.get(name, key)
        if old != key:
            self._drop(name)
        slim = self.slim(obj)
        objects = self.objects.setdefault(key, {})
        self._where[name] = key
        before = objects.get(name)
        if before == slim:
            # Nothing the operator reads changed (a Job's counters, a pod's IP): no round for it,
            # and the stored object, on which views are cached, stays the same.
            return
        objects[name] = slim
        if self.echo is None or not self.echo(key, name, before, slim):
            self.changed(key)

    def _drop(self, name: str) -> None:
        key = self._where.pop(name, None)
        objects = self.objects.get(key)
        if objects is not None:
            objects.pop(name, None)
            if not objects:
                del self.objects[key]
        self.changed(key)

    def _relist(self, items: list[dict]) -> None:
        """A listing replaces what was held: changed objects wake their experiment (_put), and so do
        objects deleted while the watch was down."""
        seen = set()
        for obj in items:
            seen.add(obj["metadata"]["name"])
            self._put(obj)
        for name in [n for n in self._where if n not in seen]:
            self._drop(name)

    async def _list(self) -> tuple[list[dict], str]:
        listing = await self.api.list_raw(self.resource, self.namespace, label_selector=self.label_selector)
        return listing["items"], listing["metadata"]["resourceVersion"]

    def _open_watch(self, version: str) -> Awaitable[Any]:
        return self.api.watch_raw(
            self.resource, self.namespace, version, WATCH_TIMEOUT_SECONDS, label_selector=self.label_selector
        )

    async def run(self) -> None:
        await run_list_watch(
            self.health,
            self._list,
            self._open_watch,
            self._relist,
            self._put,
            lambda obj: self._drop(obj["metadata"]["name"]),
            on_change=self.health_changed,
            patient=self.patient,
        )


async def follow(
    response: Any,
    version: str,
    put: Callable[[dict], None],
    drop: Callable[[dict], None],
    seen: WatchHealth | None = None,
) -> str | None:
    """Reads an open watch response, one JSON event a line, into put (added or changed) and drop
    (deleted), and releases it. Returns the resourceVersion to watch on from once the server ends
    the watch, or None when that is too old (410 Gone: list again). A failed or cut stream raises."""
    try:
        async for line in response.content:
            if not line.strip():
                continue
            event = json.loads(line)
            kind, obj = event.get("type"), event.get("object") or {}
            if seen is not None:
                seen.last_event = time.monotonic()
            if kind == "ERROR":
                if obj.get("code") == 410:
                    return None
                raise ApiException(status=obj.get("code"), reason=obj.get("message"))
            version = (obj.get("metadata") or {}).get("resourceVersion") or version
            if seen is not None:
                seen.version = version
            if kind == "DELETED":
                drop(obj)
            elif kind in ("ADDED", "MODIFIED"):
                put(obj)
    finally:
        response.release()
    return version
