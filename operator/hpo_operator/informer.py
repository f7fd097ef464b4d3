"""List-then-watch of the Trials and trial pods in one namespace, kept by experiment.

kopf follows the Experiments (a few events each). A Trial and its pod change a dozen times in a
few seconds, and kopf's per-event machinery (a worker per object, handler selection, invocation)
cost more than everything else the operator does per trial. These informers read the watch
stream as plain JSON lines into dicts and wake the experiment whose object changed.

Like kopf's indexes, an informer is "synced" once its first listing is in: an experiment's loop
waits for that, so it never plans on a partial view (after a restart, a running trial whose pod
was not listed yet would look like one whose pod vanished).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Callable

from .kubeapi import Api, ApiException, Resource

log = logging.getLogger(__name__)

WATCH_TIMEOUT_SECONDS = 300  # the API server ends a watch after this; it is started again
RETRY_DELAYS = (1, 2, 5, 10, 30)

KeyOf = Callable[[dict], "str | None"]
Slim = Callable[[dict], dict]


class Informer:
    """One resource (Trials, pods, a trial kind's objects) in one namespace:
    objects[experiment][name] = body."""

    def __init__(self, api: Api, namespace: str, resource: Resource, key_of: KeyOf, slim: Slim,
                 changed: Callable[[str | None], None], label_selector: str | None = None):
        self.api, self.namespace, self.resource = api, namespace, resource
        self.kind = resource[2]
        self.key_of, self.slim, self.changed = key_of, slim, changed
        self.label_selector = label_selector
        self.objects: dict[str | None, dict[str, dict]] = {}
        self._where: dict[str, str | None] = {}  # name -> experiment, to move or drop an object
        self.synced = asyncio.Event()

    def _put(self, obj: dict) -> None:
        name = obj["metadata"]["name"]
        key = self.key_of(obj)
        old = self._where.get(name, key)
        if old != key:
            self._drop(name)
        slim = self.slim(obj)
        objects = self.objects.setdefault(key, {})
        self._where[name] = key
        if objects.get(name) == slim:
            # Nothing the operator reads changed (a Job's counters, a pod's IP): no round for it,
            # and the stored object, on which views are cached, stays the same.
            return
        objects[name] = slim
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
        seen = set()
        for obj in items:
            seen.add(obj["metadata"]["name"])
            self._put(obj)
        for name in [n for n in self._where if n not in seen]:
            self._drop(name)

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                listing = await self.api.list_raw(self.resource, self.namespace, label_selector=self.label_selector)
                self._relist(listing["items"])
                self.synced.set()
                version = listing["metadata"]["resourceVersion"]
                failures = 0
                while version:
                    version = await self._watch(version)
            except asyncio.CancelledError:
                raise
            except (ApiException, OSError, ValueError, asyncio.TimeoutError) as e:
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                log.warning("watching %s in %s failed (%s), listing again in %ss", self.kind, self.namespace,
                            getattr(e, "status", None) or type(e).__name__, delay)
                await asyncio.sleep(delay)

    async def _watch(self, version: str) -> str | None:
        """Follows the watch from `version`; returns where to go on from, or None to list again
        (the version is too old)."""
        response = await self.api.watch_raw(self.resource, self.namespace, version, WATCH_TIMEOUT_SECONDS,
                                            label_selector=self.label_selector)
        return await follow(response, version, self._put, lambda obj: self._drop(obj["metadata"]["name"]))


async def follow(response: Any, version: str, put: Callable[[dict], None], drop: Callable[[dict], None]) -> str | None:
    """Reads an open watch response, one JSON event a line, into put (added or changed) and drop
    (deleted), and releases it. Returns the resourceVersion to watch on from, or None when that is
    too old (410 Gone: list again)."""
    try:
        async for line in response.content:
            if not line.strip():
                continue
            event = json.loads(line)
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    return None
                raise ApiException(status=obj.get("code"), reason=obj.get("message"))
            version = (obj.get("metadata") or {}).get("resourceVersion") or version
            if kind == "DELETED":
                drop(obj)
            elif kind in ("ADDED", "MODIFIED"):
                put(obj)
    finally:
        response.release()
    return version
