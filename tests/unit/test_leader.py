"""Leader election's rules (leader.py), as pure functions; the election against a real API server
is in tests/integration/test_leader.py."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from hpo_operator.__main__ import liveness_port
from hpo_operator.controller.leader import Action, Elector, LeaseRecord, LostLeadership, Timing, decide, lease_spec


def record(holder: str = "a", duration: float = 15, rv: str = "1", transitions: int = 0) -> LeaseRecord:
    return LeaseRecord(
        holder=holder,
        duration=duration,
        renew_time="2026-01-01T00:00:00.000000Z",
        transitions=transitions,
        resource_version=rv,
    )


def test_a_missing_lease_is_never_created_by_the_operator():
    assert decide(None, "me", observed_at=0, now=100) is Action.MISSING


def test_the_holder_renews_and_others_wait_until_the_record_is_stale():
    assert decide(record("me"), "me", observed_at=0, now=1000) is Action.RENEW
    assert decide(record("other"), "me", observed_at=100, now=100) is Action.WAIT
    assert decide(record("other"), "me", observed_at=100, now=114.9) is Action.WAIT
    assert decide(record("other"), "me", observed_at=100, now=115) is Action.ACQUIRE


def test_a_released_lease_is_taken_at_once():
    assert decide(record(""), "me", observed_at=100, now=100) is Action.ACQUIRE


def test_staleness_is_timed_by_our_clock_since_the_record_last_changed_not_by_its_renew_time():
    # renewTime says 2026-01-01 (far in the past by any clock); only observed_at counts.
    assert decide(record("other", duration=15), "me", observed_at=50, now=60) is Action.WAIT


def test_lease_spec_counts_transitions_and_keeps_acquire_time_while_renewing():
    timing = Timing()
    taken = lease_spec("me", timing, record("other", transitions=3))
    assert taken["holderIdentity"] == "me" and taken["leaseTransitions"] == 4 and "acquireTime" in taken
    assert taken["leaseDurationSeconds"] == 15
    renewed = lease_spec("me", timing, record("me", transitions=4))
    assert "acquireTime" not in renewed and "leaseTransitions" not in renewed
    assert renewed["renewTime"].endswith("Z")
    # The chart's Lease before anyone held it, or one released: taking it is a transition too.
    first = lease_spec("me", timing, record("", transitions=0))
    assert first["holderIdentity"] == "me" and first["leaseTransitions"] == 1 and "acquireTime" in first


@pytest.mark.parametrize("args", [(15, 10, 10), (15, 15, 2), (10, 15, 2), (15, 10, 0)])
def test_timing_must_be_ordered(args):
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        Timing(*args)


@pytest.mark.parametrize(
    "args",
    [
        ["--liveness=http://0.0.0.0:{port}/healthz"],
        ["--standalone", "--liveness", "http://0.0.0.0:{port}/healthz"],
    ],
)
def test_the_standby_answers_the_liveness_probe_on_kopfs_port(args):
    """What a standby serves while it waits for the Lease (Election.wait): /healthz on the port of
    kopf's --liveness URL, where the chart's probe asks, so that waiting is not taken for a hang."""
    # Only this test needs these; _serve_health is what Election.wait starts on that port.
    import json
    import socket

    from hpo_operator.controller.leader import _serve_health

    with socket.socket() as free:  # a port nothing listens on, rather than a fixed one
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    args = [arg.format(port=port) for arg in args]
    assert liveness_port(args) == port
    assert liveness_port(["--standalone"]) is None  # no probe: nothing to serve

    async def probe() -> tuple[int, str]:
        runner = await _serve_health(liveness_port(args))
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                    return response.status, await response.text()
        finally:
            await runner.cleanup()

    status, body = asyncio.run(probe())
    assert status == 200, body
    assert json.loads(body) == {"leader": False, "waiting": True}


# --- renewing under an outage: the Elector's loop against Lease clients that fail as a dead,
# frozen or cut-off API server does -------------------------------------------------------------


class OutageLeases:
    """A Lease client whose calls fail with `failure` (or hang, if None) once `down` is set."""

    namespace, name = "ns", "lease"

    def __init__(self, failure: BaseException | None):
        self.failure = failure
        self.down = False
        self.body = {"metadata": {"resourceVersion": "1"}, "spec": {"holderIdentity": "me"}}

    async def get(self):
        if self.down:
            if self.failure is None:
                await asyncio.Event().wait()  # frozen: never answers
            raise self.failure
        return LeaseRecord.from_body(self.body), self.body

    async def replace(self, body, spec):
        await self.get()
        self.body = {
            "metadata": {"resourceVersion": str(int(body["metadata"]["resourceVersion"]) + 1)},
            "spec": {**body["spec"], **spec},
        }


SHORT = Timing(lease_duration=1.5, renew_deadline=1.0, retry_period=0.2)


@pytest.mark.parametrize(
    "failure",
    [
        None,
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("cut"),
        ConnectionRefusedError(111, "refused"),
        RuntimeError("a bug of ours"),
    ],
    ids=["frozen", "disconnected", "cut", "refused", "unexpected"],
)
def test_a_leader_that_cannot_renew_gives_up_within_the_renew_deadline(failure):
    """Before another replica can take the Lease (the lease duration after our last write), the
    leader has stopped: whatever the API server does, no hung or failed request carries it past."""

    async def scenario():
        leases = OutageLeases(failure)
        elector = Elector(leases, "me", SHORT)
        await elector.acquire()
        renewed = elector.renewed_at
        leases.down = True
        with pytest.raises(LostLeadership, match="not renewed"):
            await asyncio.wait_for(elector.keep(), SHORT.lease_duration * 2)
        gave_up = time.monotonic()
        assert not elector.leading
        assert gave_up - renewed < SHORT.lease_duration, gave_up - renewed

    asyncio.run(scenario())


def test_a_leader_renews_through_short_failures():
    async def scenario():
        leases = OutageLeases(aiohttp.ServerDisconnectedError())
        elector = Elector(leases, "me", SHORT)
        await elector.acquire()
        keeping = asyncio.create_task(elector.keep())
        for _ in range(3):  # down for less than the renew deadline, three times
            leases.down = True
            await asyncio.sleep(SHORT.renew_deadline / 2)
            leases.down = False
            await asyncio.sleep(SHORT.retry_period * 2)
        assert not keeping.done() and elector.leading
        keeping.cancel()

    asyncio.run(scenario())
