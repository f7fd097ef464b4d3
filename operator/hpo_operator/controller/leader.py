"""Leader election over a coordination.k8s.io Lease, so that replicas of the operator can stand by.

Only the leader runs kopf at all: a standby waits for the Lease before it starts, and so never
watches, plans or writes. The rules are client-go's and controller-runtime's:
- a Lease is free when it has no holder, or when its record has not changed for its
  leaseDurationSeconds, timed by this process's own clock since it last saw the record change
  (never by comparing the holder's renewTime with our clock, which may be skewed);
- the holder renews every retry period; a renewal conflict means another replica took the Lease;
- a leader that cannot renew for the renew deadline has lost the Lease and exits, since kopf
  cannot be paused mid-flight (the kubelet restarts it, as a standby);
- a leader that stops on purpose releases the Lease (no holder), so a standby takes over within
  one retry period instead of a whole lease duration.

Writes carry the Lease's resourceVersion: of two replicas acting on the same record, one wins.
The Lease itself is the Helm release's (templates/lease.yaml): the operator never creates one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from hpo_operator.core import times
from hpo_operator.kube.client import REQUEST_TIMEOUT, ApiException, KubeClient, connect, describe, read_body

log = logging.getLogger(__name__)

LEASE_ENV = "HPO_LEADER_ELECTION_LEASE"  # "<namespace>/<name>"; unset: no election


@dataclass(frozen=True)
class Timing:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election needs 0 < retry period < renew deadline < lease duration, "
                f"got {self.retry_period}, {self.renew_deadline}, {self.lease_duration}"
            )


@dataclass(frozen=True)
class LeaseRecord:
    holder: str
    duration: float
    renew_time: str
    transitions: int
    resource_version: str

    @classmethod
    def from_body(cls, body: dict) -> LeaseRecord:
        spec = body.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or "",
            duration=float(spec.get("leaseDurationSeconds") or 0),
            renew_time=spec.get("renewTime") or "",
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=body["metadata"].get("resourceVersion", ""),
        )

    def key(self) -> tuple:
        """What changes when anyone writes the record."""
        return (self.holder, self.renew_time, self.resource_version)


class Action(Enum):
    MISSING = "missing"  # no Lease: the chart creates it, the operator never does
    ACQUIRE = "acquire"  # free or expired: take it
    RENEW = "renew"  # ours
    WAIT = "wait"  # held by another, not expired


def decide(record: LeaseRecord | None, identity: str, observed_at: float, now: float) -> Action:
    """What a replica should do with the Lease it just read. observed_at: when this replica first
    saw the record as it is now (its own monotonic clock)."""
    if record is None:
        return Action.MISSING
    if record.holder == identity:
        return Action.RENEW
    if not record.holder or now - observed_at >= record.duration:
        return Action.ACQUIRE
    return Action.WAIT


def lease_spec(identity: str, timing: Timing, previous: LeaseRecord) -> dict:
    """The spec to write over the Lease read as `previous` (the chart's Lease: it always exists
    when there is one to write)."""
    now = times.micro()
    spec = {"holderIdentity": identity, "leaseDurationSeconds": int(round(timing.lease_duration)), "renewTime": now}
    if previous.holder != identity:
        spec["acquireTime"] = now
        spec["leaseTransitions"] = previous.transitions + 1
    return spec


class LeaseClient:
    """The two calls the election makes, as JSON."""

    def __init__(self, api: KubeClient, namespace: str, name: str):
        from kubernetes_asyncio import client

        self.api = api
        self.leases = client.CoordinationV1Api(api.client)
        self.namespace, self.name = namespace, name

    async def get(self) -> tuple[LeaseRecord | None, dict | None]:
        try:
            response = await self.leases.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
            body = json.loads(await read_body(response))
        except ApiException as e:
            if e.status == 404:
                return None, None
            raise
        return LeaseRecord.from_body(body), body

    async def replace(self, body: dict, spec: dict) -> None:
        """Writes spec over the Lease read as body; 409 if anyone wrote it since."""
        new = dict(body, spec=dict(body.get("spec") or {}, **spec))
        await read_body(
            await self.leases.replace_namespaced_lease(
                self.name, self.namespace, new, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        )


class LostLeadership(Exception):
    pass


class Elector:
    def __init__(
        self, leases: LeaseClient, identity: str, timing: Timing = Timing(), clock: Callable[[], float] = time.monotonic
    ):
        self.leases, self.identity, self.timing, self.clock = leases, identity, timing, clock
        self._seen: tuple | None = None
        self._seen_at = 0.0
        self.leading = False
        self.holder = ""  # who holds the Lease, as of our last read
        self.renewed_at = 0.0  # when our last successful write (acquire or renew) was sent

    async def try_once(self) -> bool:
        """One read and, if the rules allow, one write. True while this replica holds the Lease;
        self.holder is then who holds it as far as this replica knows."""
        record, body = await self.leases.get()
        now = self.clock()
        if record is not None and record.key() != self._seen:
            self._seen, self._seen_at = record.key(), now
        self.holder = record.holder if record is not None else ""
        action = decide(record, self.identity, self._seen_at, now)
        if action is Action.MISSING:
            log.warning(
                "leader election: Lease %s/%s does not exist; the Helm chart creates it (`helm upgrade` restores it)",
                self.leases.namespace,
                self.leases.name,
            )
            return False
        if action is Action.WAIT:
            return False
        assert record is not None and body is not None  # decide() said MISSING otherwise
        try:
            await self.leases.replace(body, lease_spec(self.identity, self.timing, record))
        except ApiException as e:
            if e.status in (409, 422):  # another replica wrote first
                return False
            raise
        if action is not Action.RENEW or not self.leading:  # (the same name again: a restarted leader)
            log.info(
                "leader election: %s now holds Lease %s/%s", self.identity, self.leases.namespace, self.leases.name
            )
        self.holder = self.identity
        return True

    async def acquire(self) -> None:
        while True:
            started = self.clock()
            try:
                # Bounded: a frozen API server or a half-open connection must not hold the wait.
                if await asyncio.wait_for(self.try_once(), self.timing.renew_deadline):
                    self.leading, self.renewed_at = True, started
                    return
            except Exception as e:  # any failure is one more try: a standby never stops waiting
                log.warning("leader election: cannot read or write the Lease: %s", describe(e))
            await asyncio.sleep(self.timing.retry_period)

    async def keep(self) -> None:
        """Renews until leadership is lost, then raises LostLeadership.

        Lost means: another replica holds the Lease, or no renewal has succeeded for the renew
        deadline, counted from when the last successful renewal was sent. Another replica can take
        the Lease only once it has seen the record unchanged for the lease duration, and it saw
        that record after our write; since the renew deadline is shorter than the lease duration,
        this replica gives up first, whatever the API server does meanwhile (down, frozen, a
        connection cut). Each try is bounded by the time left to the deadline, so no hung request
        can carry a leader past it."""
        while True:
            deadline = self.renewed_at + self.timing.renew_deadline
            await asyncio.sleep(max(0.0, min(self.timing.retry_period, deadline - self.clock())))
            started = self.clock()
            if started >= deadline:
                break
            try:
                renewed = await asyncio.wait_for(self.try_once(), deadline - started)
            except Exception as e:  # the API server away, restarting, refusing: tried again until the deadline
                log.warning("leader election: renewing the Lease failed: %s", describe(e))
                renewed = False
            if renewed:
                self.renewed_at = started
                continue
            if self.holder and self.holder != self.identity:
                self.leading = False
                raise LostLeadership(f"Lease taken by {self.holder}")
        self.leading = False
        raise LostLeadership(f"Lease not renewed for {self.timing.renew_deadline:g} s")

    async def release(self) -> None:
        """Gives the Lease up, if this replica still holds it: no holder, so a standby acquires at once."""
        record, body = await self.leases.get()
        if record is None or record.holder != self.identity:
            return
        await self.leases.replace(body, {"holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": times.micro()})
        self.leading = False
        log.info("leader election: %s released Lease %s/%s", self.identity, self.leases.namespace, self.leases.name)


# --- the process around kopf ------------------------------------------------------------------


def lease_from_env() -> tuple[str, str] | None:
    value = os.environ.get(LEASE_ENV, "").strip()
    if not value:
        return None
    namespace, sep, name = value.partition("/")
    if not sep or not namespace or not name:
        raise SystemExit(f"{LEASE_ENV} must be <namespace>/<name>, got {value!r}")
    return namespace, name


def timing_from_env() -> Timing:
    def seconds(var: str, default: float) -> float:
        return float(os.environ.get(var) or default)

    try:
        return Timing(
            seconds("HPO_LEASE_DURATION_SECONDS", 15),
            seconds("HPO_LEASE_RENEW_DEADLINE_SECONDS", 10),
            seconds("HPO_LEASE_RETRY_PERIOD_SECONDS", 2),
        )
    except ValueError as e:
        raise SystemExit(str(e)) from None


def identity_from_env() -> str:
    """The pod's name (the chart passes it from the downward API); elsewhere host and process."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


class Election:
    """Leader election for the process: wait() before kopf starts, renewal in a thread of its own
    while kopf runs (kopf owns the main event loop), release() once kopf has stopped."""

    def __init__(self, namespace: str, name: str, identity: str, timing: Timing, on_lost: Callable[[str], None]):
        self.namespace, self.name, self.identity, self.timing = namespace, name, identity, timing
        self.on_lost = on_lost
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._elector: Elector | None = None
        self._waiting: Any = None
        self._keeping: Any = None

    async def _elector_here(self) -> Elector:
        api = await connect()
        return Elector(LeaseClient(api, self.namespace, self.name), self.identity, self.timing)

    def wait(self, health_port: int | None) -> None:
        """Blocks until this process leads; meanwhile /healthz answers on health_port (a standby is
        alive, and the liveness probe must not restart it for waiting)."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="leader-election", daemon=True)
        self._thread.start()
        self._waiting = asyncio.run_coroutine_threadsafe(self._wait(health_port), self._loop)
        self._waiting.result()  # a signal's SystemExit interrupts this; release() then stops the wait
        self._keeping = asyncio.run_coroutine_threadsafe(self._keep(), self._loop)

    async def _wait(self, health_port: int | None) -> None:
        self._elector = await self._elector_here()
        log.info("leader election: %s waits for Lease %s/%s", self.identity, self.namespace, self.name)
        runner = await _serve_health(health_port) if health_port else None
        try:
            await self._elector.acquire()
        finally:
            if runner is not None:
                await runner.cleanup()  # kopf serves /healthz from now on, on the same port

    async def _keep(self) -> None:
        assert self._elector is not None
        try:
            await self._elector.keep()
        except LostLeadership as e:
            self.on_lost(str(e))
        except asyncio.CancelledError:
            raise  # release(): kopf has stopped
        except BaseException as e:  # a leader that no longer renews must not go on acting
            self.on_lost(f"the renewal stopped: {e!r}")

    def release(self) -> None:
        if self._loop is None:
            return
        for future in (self._waiting, self._keeping):
            if future is not None:
                future.cancel()
        if self._elector is None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            return

        async def release() -> None:
            try:
                await self._elector.release()
            except (TimeoutError, ApiException, OSError) as e:
                log.warning(
                    "leader election: could not release the Lease (a standby takes over once it expires): %s", e
                )
            await self._elector.leases.api.close()

        try:
            asyncio.run_coroutine_threadsafe(release(), self._loop).result(timeout=10)
        except Exception as e:  # shutting down: say it, never hang
            log.warning("leader election: release failed: %s", e)
        self._loop.call_soon_threadsafe(self._loop.stop)


async def _serve_health(port: int) -> Any:
    from aiohttp import web

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"leader": False, "waiting": True})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port, reuse_address=True).start()
    return runner


def exit_on_lost(reason: str) -> None:
    """kopf cannot be stopped from another thread in a way that guarantees no further write, so a
    leader that lost its Lease ends the process at once, as controller-runtime does."""
    log.error("leader election lost (%s): exiting so that only the new leader acts", reason)
    logging.shutdown()
    os._exit(1)
