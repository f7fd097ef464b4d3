"""Every way a watch can end leads an informer to list again, with backoff, and to wake the
experiments whose objects changed meanwhile: the informer's own loop over a scripted API (the
same loop against a real API server that is killed, frozen or cut off is in
tests/integration/test_control_plane_faults.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from hpo_operator.controller.namespace import by_experiment
from hpo_operator.controller.slim import slim_pod
from hpo_operator.kube import informer as informer_module
from hpo_operator.kube.client import PODS, ApiException, failure_reason
from hpo_operator.kube.informer import RESTARTS, Informer, backoff_delay, forbidden_delay


def pod(name: str, phase: str, experiment: str = "exp", rv: int = 1) -> dict:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "resourceVersion": str(rv),
            "labels": {"hpo.dev/experiment": experiment},
        },
        "spec": {"containers": [{"name": "train"}]},
        "status": {"phase": phase},
    }


class Stream:
    """A watch response: its lines, then how it ends (None: the server's timeout, cleanly)."""

    def __init__(self, events: list[dict], end: BaseException | None = None, hang: bool = False):
        self.lines = [json.dumps(e).encode() + b"\n" for e in events]
        self.end, self.hang = end, hang
        self.released = False

    @property
    def content(self) -> Any:
        async def lines():
            for line in self.lines:
                yield line
            if self.hang:
                await asyncio.Event().wait()
            if self.end is not None:
                raise self.end

        return lines()

    def release(self) -> None:
        self.released = True


class ScriptedApi:
    """list_raw and watch_raw as the operator's client has them, answering from a script: each
    listing and each watch takes the next answer (an exception is raised)."""

    def __init__(self, listings: list[Any], watches: list[Any]):
        self.listings, self.watches = listings, watches
        self.calls: list[str] = []
        self.done = asyncio.Event()

    async def list_raw(self, resource, namespace, label_selector=None) -> dict:
        self.calls.append("list")
        answer = self.listings.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def watch_raw(self, resource, namespace, version, timeout, label_selector=None) -> Any:
        self.calls.append(f"watch@{version}")
        if not self.watches:
            self.done.set()
            await asyncio.Event().wait()  # the script is over: a quiet watch
        answer = self.watches.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def listing(rv: str, *items: dict) -> dict:
    return {"metadata": {"resourceVersion": rv}, "items": list(items)}


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    """The backoff's lengths are tested apart; here they would only slow the test."""
    monkeypatch.setattr(informer_module, "backoff_delay", lambda failures: 0.0)


async def run(api: ScriptedApi, on_wake: Callable[[Informer], None] | None = None) -> tuple[Informer, list]:
    """The informer run until the scripted API server has answered everything; the experiments it
    woke, in order (on_wake: also called with the informer at each)."""
    woken: list = []

    def wake(key) -> None:
        woken.append(key)
        if on_wake is not None:
            on_wake(inf)

    inf = Informer(api, "ns", PODS, by_experiment, slim_pod, wake)
    task = asyncio.create_task(inf.run())
    try:
        await asyncio.wait_for(api.done.wait(), 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return inf, woken


CUTS = {
    # the API server killed mid-stream: the chunked body ends early
    "Disconnected": aiohttp.ClientPayloadError("Response payload is not completed"),
    "Disconnected ": aiohttp.ServerDisconnectedError(),
    "Timeout": TimeoutError(),  # a half-open stream: the client's read timeout
    "ServerError": ApiException(status=503, reason="Service Unavailable"),
    "BadResponse": ValueError("Expecting value"),  # a line cut in half
}


@pytest.mark.parametrize("reason", list(CUTS))
def test_a_watch_cut_mid_stream_lists_again_and_wakes_what_changed(reason):
    before = RESTARTS[("pods", reason.strip())]
    api = ScriptedApi(
        listings=[
            listing("10", pod("exp-0000", "Running"), pod("gone-0000", "Running", "gone")),
            # while the watch was down: exp-0000 finished, gone-0000 was deleted
            listing("20", pod("exp-0000", "Succeeded", rv=15)),
        ],
        watches=[Stream([{"type": "MODIFIED", "object": pod("exp-0001", "Running", rv=11)}], end=CUTS[reason])],
    )
    inf, woken = asyncio.run(run(api))

    assert api.calls == ["list", "watch@10", "list", "watch@20"]
    assert inf.objects["exp"]["exp-0000"]["status"]["phase"] == "Succeeded"
    assert "exp-0001" not in inf.objects["exp"]  # not in the second listing: dropped
    assert "gone" not in inf.objects
    # The first listing woke both; the second the experiment that changed and the one that lost its pod.
    assert woken[:2] == ["exp", "gone"] and {"exp", "gone"} <= set(woken[3:])
    assert inf.synced.is_set() and inf.health.down_since is None
    assert RESTARTS[("pods", reason.strip())] == before + 1


def test_a_watch_refused_for_load_is_opened_again_from_the_newest_version_without_a_listing():
    """429 when the watch is opened again (its minute is up, the API server is busy), or ending
    it: the same watch again from the newest resourceVersion seen, the informer still synced, no
    listing (which would stall every experiment of the namespace, and load the server more)."""
    before = RESTARTS[("pods", "TooManyRequests")]
    throttled = ApiException(status=429, reason="Too Many Requests")
    api = ScriptedApi(
        listings=[listing("10", pod("exp-0000", "Running"))],
        watches=[
            Stream([{"type": "MODIFIED", "object": pod("exp-0000", "Succeeded", rv=12)}], end=throttled),
            throttled,
            throttled,
            Stream([{"type": "ADDED", "object": pod("exp-0001", "Pending", rv=13)}]),
        ],
    )
    synced = []
    inf, _ = asyncio.run(run(api, on_wake=lambda inf: synced.append(inf.synced.is_set())))
    assert api.calls == ["list", "watch@10", "watch@12", "watch@12", "watch@12", "watch@13"]
    # (woken by the listing first, before it is synced; then by each event, synced throughout)
    assert synced == [False, True, True] and inf.synced.is_set() and inf.health.down_since is None
    assert set(inf.objects["exp"]) == {"exp-0000", "exp-0001"}
    assert RESTARTS[("pods", "TooManyRequests")] == before + 3


def test_a_watch_refused_for_load_for_too_long_is_down_and_lists_again(monkeypatch):
    monkeypatch.setattr(informer_module, "THROTTLED_SECONDS", 0.05)
    monkeypatch.setattr(informer_module, "backoff_delay", lambda failures: 0.03)
    throttled = ApiException(status=429, reason="Too Many Requests")
    api = ScriptedApi(listings=[listing("10"), listing("20")], watches=[throttled, throttled, throttled, throttled])
    inf, _ = asyncio.run(run(api))
    assert api.calls[:2] == ["list", "watch@10"] and "list" in api.calls[2:]
    assert api.calls[-1] == "watch@20"


def test_410_gone_in_the_stream_lists_again():
    before = RESTARTS[("pods", "Gone")]
    api = ScriptedApi(
        listings=[listing("10"), listing("30", pod("exp-0000", "Running"))],
        watches=[Stream([{"type": "ERROR", "object": {"code": 410, "message": "too old"}}])],
    )
    inf, _ = asyncio.run(run(api))
    assert api.calls == ["list", "watch@10", "list", "watch@30"]
    assert "exp-0000" in inf.objects["exp"]
    assert RESTARTS[("pods", "Gone")] == before + 1


def test_the_server_ending_a_watch_goes_on_from_its_last_version_without_listing(monkeypatch):
    monkeypatch.setattr(informer_module.asyncio, "sleep", _instant)
    api = ScriptedApi(
        listings=[listing("10")],
        watches=[
            Stream(
                [
                    {"type": "ADDED", "object": pod("exp-0000", "Pending", rv=12)},
                    {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "14"}}},
                ]
            )
        ],
    )
    inf, _ = asyncio.run(run(api))
    assert api.calls == ["list", "watch@10", "watch@14"]
    assert "exp-0000" in inf.objects["exp"]


async def _instant(_: float) -> None:
    return None


def test_failed_listings_are_retried_and_unsync_the_informer_until_one_succeeds():
    api = ScriptedApi(
        listings=[
            listing("10"),
            ConnectionRefusedError(111, "Connection refused"),
            ApiException(status=500),
            listing("12"),
        ],
        watches=[aiohttp.ServerDisconnectedError()],
    )
    seen_unsynced = []
    woken: list = []

    async def scenario():
        inf = Informer(api, "ns", PODS, by_experiment, slim_pod, woken.append)
        task = asyncio.create_task(inf.run())

        async def watch_the_health():
            while not api.done.is_set():
                await asyncio.sleep(0)
                if inf.health.down_since is not None:
                    seen_unsynced.append(not inf.synced.is_set())

        try:
            await asyncio.wait_for(watch_the_health(), 5)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return inf

    inf = asyncio.run(scenario())
    assert api.calls == ["list", "watch@10", "list", "list", "list", "watch@12"]
    assert seen_unsynced and all(seen_unsynced)
    assert inf.synced.is_set() and inf.health.failures == 0


def test_a_bug_while_applying_an_event_is_logged_and_the_informer_lists_again(caplog):
    api = ScriptedApi(
        listings=[listing("10"), listing("20", pod("exp-0000", "Running"))],
        # an object without metadata.name: the informer's own code raises
        watches=[Stream([{"type": "ADDED", "object": {"metadata": {"labels": {}}}}])],
    )
    inf, _ = asyncio.run(run(api))
    assert api.calls == ["list", "watch@10", "list", "watch@20"]
    assert "exp-0000" in inf.objects["exp"]
    assert any("failed unexpectedly" in r.message for r in caplog.records)


def test_backoff_doubles_from_half_a_second_to_thirty_with_a_little_jitter():
    assert [backoff_delay(n, rand=lambda: 0) for n in (1, 2, 3, 4, 7, 20)] == [0.5, 1, 2, 4, 30, 30]
    assert backoff_delay(3, rand=lambda: 1) == pytest.approx(2.4)


def test_a_refused_watch_waits_from_half_a_minute_growing_to_ten_minutes_with_jitter():
    assert [forbidden_delay(n, rand=lambda: 0) for n in (1, 2, 3, 4, 5, 6, 20)] == [30, 60, 120, 240, 300, 300, 300]
    assert [forbidden_delay(n, rand=lambda: 1) for n in (1, 5, 20)] == [60, 600, 600]


@pytest.mark.parametrize("patient", [True, False])
def test_a_patient_informer_refused_says_so_and_waits_long_another_retries_at_once(monkeypatch, patient):
    """A trial kind's informer (patient) that the API server refuses (403, 401) sets its health's
    `forbidden` and waits forbidden_delay(); the listing that is allowed at last clears it. The
    operator's own informers keep the outage's short backoff."""
    waits: list[tuple[str, int]] = []
    monkeypatch.setattr(informer_module, "backoff_delay", lambda n: waits.append(("backoff", n)) or 0.0)
    monkeypatch.setattr(informer_module, "forbidden_delay", lambda n: waits.append(("forbidden", n)) or 0.0)
    api = ScriptedApi(
        listings=[
            ApiException(status=403, reason="Forbidden"),
            ApiException(status=401, reason="Unauthorized"),
            listing("10"),
        ],
        watches=[],
    )
    seen_forbidden = []

    async def scenario():
        inf = Informer(api, "ns", PODS, by_experiment, slim_pod, lambda _: None, patient=patient)
        task = asyncio.create_task(inf.run())

        async def watch_the_health():
            while not api.done.is_set():
                await asyncio.sleep(0)
                seen_forbidden.append(inf.health.forbidden.is_set())

        try:
            await asyncio.wait_for(watch_the_health(), 5)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return inf

    inf = asyncio.run(scenario())
    assert waits == [("forbidden" if patient else "backoff", 1), ("forbidden" if patient else "backoff", 2)]
    assert True in seen_forbidden  # while refused
    assert inf.synced.is_set() and not inf.health.forbidden.is_set()  # allowed at last


@pytest.mark.parametrize(
    "error, reason",
    [
        (aiohttp.ClientConnectionError("Connection closed"), "Disconnected"),
        (aiohttp.ServerDisconnectedError(), "Disconnected"),
        (aiohttp.ClientPayloadError("cut"), "Disconnected"),
        (ConnectionResetError(104, "reset"), "Disconnected"),
        (ConnectionRefusedError(111, "refused"), "Unreachable"),
        (TimeoutError(), "Timeout"),
        (aiohttp.SocketTimeoutError(), "Timeout"),
        (ApiException(status=410), "Gone"),
        (ApiException(status=503), "ServerError"),
        (ApiException(status=429), "TooManyRequests"),
        (ApiException(status=403), "Forbidden"),
        (ApiException(status=401), "Forbidden"),
        (ApiException(status=404), "Refused"),
        (ValueError("not JSON"), "BadResponse"),
        (KeyError("name"), "Unexpected"),
    ],
)
def test_each_way_a_request_fails_has_a_bounded_reason(error, reason):
    assert failure_reason(error) == reason
