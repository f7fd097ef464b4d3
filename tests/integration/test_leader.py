"""Leader election (leader.py) against the real API server's Lease: two electors, short timings.
The same election between two operator pods, with a pod deleted mid-experiment, is in
tests/integration/test_in_cluster.py."""

from __future__ import annotations

import asyncio
import signal
import ssl
import time
import urllib.request

import pytest
from kubernetes import client

from hpo_operator.controller.leader import Elector, LeaseClient, LostLeadership, Timing
from hpo_operator.kube.client import connect
from tests.support.chart import Webhook
from tests.support.kube import OperatorProcess, wait_until

TIMING = Timing(lease_duration=3, renew_deadline=2, retry_period=0.3)


@pytest.fixture
def lease(api, namespace, kubeconfig, monkeypatch):
    """An empty Lease, as the chart creates it; KUBECONFIG for the electors' clients."""
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    client.CoordinationV1Api(api).create_namespaced_lease(
        namespace, client.V1Lease(metadata=client.V1ObjectMeta(name="hpo-operator"), spec=client.V1LeaseSpec())
    )
    return namespace


def holder(api, namespace: str) -> str | None:
    return client.CoordinationV1Api(api).read_namespaced_lease("hpo-operator", namespace).spec.holder_identity


async def electors(namespace: str, *names: str) -> list[Elector]:
    result = []
    for name in names:
        result.append(Elector(LeaseClient(await connect(), namespace, "hpo-operator"), name, TIMING))
    return result


async def close(*es: Elector) -> None:
    for e in es:
        await e.leases.api.close()


def test_one_leads_and_a_release_hands_over_within_a_retry_period(api, lease):
    async def scenario():
        a, b = await electors(lease, "a", "b")
        try:
            await asyncio.wait_for(a.acquire(), 5)
            assert holder(api, lease) == "a"
            keeping = asyncio.create_task(a.keep())
            # b keeps trying for longer than a lease duration: a renews, so b never gets it.
            deadline = time.monotonic() + TIMING.lease_duration * 1.5
            while time.monotonic() < deadline:
                assert not await b.try_once()
                await asyncio.sleep(TIMING.retry_period)
            assert holder(api, lease) == "a"
            keeping.cancel()
            await a.release()
            assert holder(api, lease) is None
            started = time.monotonic()
            await asyncio.wait_for(b.acquire(), 5)
            assert time.monotonic() - started <= TIMING.retry_period + 0.5
            assert holder(api, lease) == "b"
        finally:
            await close(a, b)

    asyncio.run(scenario())


def test_a_silent_leader_is_replaced_after_the_lease_duration_and_then_knows_it_lost(api, lease):
    async def scenario():
        a, b = await electors(lease, "a", "b")
        try:
            await asyncio.wait_for(a.acquire(), 5)
            started = time.monotonic()
            await asyncio.wait_for(b.acquire(), 10)  # a never renews: it has stopped
            waited = time.monotonic() - started
            assert TIMING.lease_duration <= waited <= TIMING.lease_duration + 1.5, waited
            assert holder(api, lease) == "b"
            with pytest.raises(LostLeadership, match="taken by b|not renewed"):
                await asyncio.wait_for(a.keep(), 5)
            assert not a.leading
        finally:
            await close(a, b)

    asyncio.run(scenario())


def test_of_replicas_racing_for_a_free_lease_exactly_one_wins(api, lease):
    async def scenario():
        es = await electors(lease, "a", "b", "c", "d")
        try:
            won = await asyncio.gather(*(e.try_once() for e in es))
            assert sum(won) == 1, won
            assert holder(api, lease) == ["a", "b", "c", "d"][won.index(True)]
        finally:
            await close(*es)

    asyncio.run(scenario())


def test_a_missing_lease_is_waited_for_not_created(api, namespace, kubeconfig, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", kubeconfig)

    async def scenario():
        (a,) = await electors(namespace, "a")
        try:
            assert not await a.try_once()
        finally:
            await close(a)

    asyncio.run(scenario())
    with pytest.raises(client.ApiException) as e:
        client.CoordinationV1Api(api).read_namespaced_lease("hpo-operator", namespace)
    assert e.value.status == 404


def test_a_stopping_operator_answers_admission_calls_a_while_after_sigterm(kubeconfig, namespace, crds, tmp_path):
    """A deleted operator pod stays in its webhook Service's endpoints for a moment: it keeps
    answering admission calls a while after SIGTERM (HPO_ADMISSION_DRAIN_SECONDS), else a user's
    write routed there meanwhile is refused (the webhook fails closed)."""
    hook = Webhook.make(tmp_path / "webhook")
    op = OperatorProcess(
        kubeconfig, namespace, tmp_path / "operator.log", env={**hook.env(), "HPO_ADMISSION_DRAIN_SECONDS": "5"}
    )
    tls = ssl.create_default_context(cafile=str(hook.cert))

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{hook.port}/healthz", timeout=1, context=tls) as r:
                return r.status == 200
        except OSError:
            return False

    op.start()
    try:
        wait_until(answers, timeout=60, what="the operator's admission webhook")
        assert op.proc is not None
        op.proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        last = stopped
        while op.proc.poll() is None and time.monotonic() - stopped < 30:
            if answers():
                last = time.monotonic()
            time.sleep(0.2)
        assert op.proc.poll() is not None, "the operator did not exit within 30 s of SIGTERM"
        assert last - stopped >= 4, f"admission answered only {last - stopped:.1f} s after SIGTERM"
    finally:
        op.stop()
