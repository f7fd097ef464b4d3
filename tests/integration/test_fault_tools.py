"""The fault-injection tools of tests/support/faults.py, each shown to cause the fault it promises, so that
a fault test that passes does so because the operator coped, not because nothing went wrong.

Relay tests run against any cluster; the others need the local control plane's processes and
skip elsewhere (the `local_cluster` fixture)."""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path

import pytest
import urllib3
from kubernetes import client, config

from tests.support import faults, kube


def core_api(kubeconfig: str | Path) -> client.CoreV1Api:
    """A client that reports the first failure instead of retrying it (urllib3 retries a failed
    GET three times by default), so each fault shows as the error it causes."""
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    configuration.retries = False
    return client.CoreV1Api(client.ApiClient(configuration))


def namespace_names(core: client.CoreV1Api, timeout: float = 10) -> set[str]:
    return {n.metadata.name for n in core.list_namespace(_request_timeout=timeout).items}


def config_map(name: str) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data={"n": "0"})


def test_local_cluster_refuses_a_kubeconfig_that_is_not_the_local_control_planes(kubeconfig, tmp_path):
    # A relay's copy of the kubeconfig reaches the same cluster, but is not the local control
    # plane's file: what HPO_KUBECONFIG naming another cluster looks like.
    relayed = faults.write_kubeconfig(kubeconfig, tmp_path / "other.kubeconfig", "https://127.0.0.1:1")
    with pytest.raises(faults.NotLocalCluster, match="not the local control plane's"):
        faults.local_cluster(relayed)


def test_relay_forwards_and_drop_resets_an_open_watch_while_new_requests_still_work(relay, kubeconfig, tmp_path):
    core = core_api(relay.write_kubeconfig(kubeconfig, tmp_path / "relay.kubeconfig"))
    assert "default" in namespace_names(core)
    assert relay.accepted >= 1

    rv = core.list_namespace(limit=1).metadata.resource_version
    # From the current resourceVersion nothing is sent until something changes: whatever ends
    # this stream early is the drop.
    watch = core.list_namespace(
        watch=True, resource_version=rv, timeout_seconds=20, _preload_content=False, _request_timeout=(5, 30)
    )
    # And a bare TCP connection, to see what the drop sends: a reset, not a FIN.
    bare = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
    kube.wait_until(lambda: relay.connections >= 2, timeout=5, interval=0.05, what="the relay to accept")
    relay.drop()
    assert relay.connections == 0
    with pytest.raises(ConnectionResetError):
        bare.recv(1)
    bare.close()
    started = time.monotonic()
    # Python's ssl module (OpenSSL 3) reports the reset under TLS as an EOF that it then
    # suppresses, so urllib3 says "Response ended prematurely" rather than "reset": the chunked
    # stream ended without its last chunk. asyncio's TLS (aiohttp) reads the socket itself and
    # sees ConnectionResetError. Either way the watch fails rather than ending cleanly.
    with pytest.raises(urllib3.exceptions.ProtocolError):
        for _ in watch.stream():
            pass
    assert time.monotonic() - started < 10
    watch.release_conn()

    accepted = relay.accepted
    assert "default" in namespace_names(core)
    assert relay.accepted > accepted, "the request after the drop should have needed a new connection"


def test_freeze_makes_requests_time_out_on_open_and_new_connections_and_thaw_lets_requests_through(
    relay, kubeconfig, tmp_path
):
    path = relay.write_kubeconfig(kubeconfig, tmp_path / "relay.kubeconfig")
    core = core_api(path)
    assert "default" in namespace_names(core)  # leaves a pooled, open connection
    relay.freeze()
    try:
        for fresh in (False, True):  # the open connection, then a new one (its TLS handshake hangs)
            api = core_api(path) if fresh else core
            started = time.monotonic()
            with pytest.raises(urllib3.exceptions.TimeoutError):
                api.list_namespace(limit=1, _request_timeout=2)
            assert 1.5 < time.monotonic() - started < 5
        assert relay.connections >= 2, "a frozen relay closes nothing"
    finally:
        relay.thaw()
    assert "default" in namespace_names(core)


def test_second_apiserver_shares_etcd_with_the_main_one_and_answers_again_after_kill_and_restart(
    apiserver, api, namespace, tmp_path
):
    core = core_api(apiserver.write_kubeconfig(tmp_path / "second.kubeconfig"))
    core.create_namespaced_config_map(namespace, config_map("via-second"))
    # Written through one API server, read through the other: one store.
    assert client.CoreV1Api(api).read_namespaced_config_map("via-second", namespace).data == {"n": "0"}

    apiserver.kill()
    assert not apiserver.running
    with pytest.raises(urllib3.exceptions.HTTPError):  # connection refused
        core.list_namespace(limit=1, _request_timeout=5)
    assert "default" in namespace_names(client.CoreV1Api(api)), "the main API server should not notice"

    apiserver.restart()
    assert core.read_namespaced_config_map("via-second", namespace).data == {"n": "0"}
    # The same server behind a relay: write_kubeconfig(server=) and the certificate's IP SAN.
    with faults.Relay("127.0.0.1", apiserver.port) as relay:
        relayed = core_api(apiserver.write_kubeconfig(tmp_path / "relayed.kubeconfig", server=relay.url))
        assert "default" in namespace_names(relayed)
        assert relay.accepted == 1


def test_a_paused_apiserver_does_not_answer_until_resumed(apiserver, tmp_path):
    core = core_api(apiserver.write_kubeconfig(tmp_path / "second.kubeconfig"))
    assert "default" in namespace_names(core)
    apiserver.pause()
    try:
        started = time.monotonic()
        with pytest.raises(urllib3.exceptions.TimeoutError):
            core.list_namespace(limit=1, _request_timeout=2)
        assert time.monotonic() - started < 5
        assert not apiserver.ready(timeout=1)
    finally:
        apiserver.resume()
    assert "default" in namespace_names(core)


@pytest.mark.alone
def test_a_watch_from_before_a_compaction_gets_410_gone_as_an_error_event(local_cluster, api, namespace, tmp_path):
    # Without the watch cache, a watch goes to etcd from the resourceVersion asked for; with it,
    # the cache would serve it from its own history, which outlives a compaction.
    server = faults.ApiServer(local_cluster, tmp_path / "apiserver.log", ["--watch-cache=false"])
    secure_ports = [a for a in server.argv if a.startswith("--secure-port")]
    assert secure_ports == [f"--secure-port={server.port}"]
    assert [a for a in server.argv if a.startswith("--watch-cache")] == ["--watch-cache=false"]
    core = client.CoreV1Api(api)
    old_rv = core.create_namespaced_config_map(namespace, config_map("compacted")).metadata.resource_version
    for n in (1, 2):
        core.patch_namespaced_config_map("compacted", namespace, {"data": {"n": str(n)}})
    etcd = faults.Etcd(local_cluster)
    # A watch from revision R reads etcd from R + 1, so 410 needs history compacted past R + 1 (the
    # two patches above). Compacted to exactly R + 1, etcd still streams from there, but the event's
    # previous value is gone, and the API server sends an ERROR event with 500 InternalError instead.
    assert etcd.compact() >= int(old_rv) + 2

    with server:
        second = core_api(server.write_kubeconfig(tmp_path / "second.kubeconfig"))
        watch = second.list_namespaced_config_map(
            namespace,
            watch=True,
            resource_version=old_rv,
            timeout_seconds=10,
            _preload_content=False,
            _request_timeout=(5, 20),
        )
        try:
            # The watch is accepted (HTTP 200, headers sent) before etcd refuses the revision, so
            # 410 arrives inside the stream, as its first and only event: type ERROR, a Status.
            assert watch.status == 200
            events = [json.loads(line) for line in watch.read().decode().splitlines() if line.strip()]
        finally:
            watch.release_conn()
    assert len(events) == 1, events
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410
    assert events[0]["object"]["reason"] == "Expired"


@pytest.mark.alone
def test_etcd_kill_and_restart_the_api_server_writes_again(local_cluster, api, namespace):
    etcd = faults.Etcd(local_cluster)
    before, old_pid = etcd.revision(), etcd.pid
    etcd.kill()
    assert not etcd.healthy()
    etcd.restart()
    # The pid file follows, so hack/cluster.sh down stops the new process.
    assert etcd.pid != old_pid and etcd.running
    assert etcd.revision() >= before
    core = client.CoreV1Api(api)
    # A write needs etcd (a read may come from the watch cache); the API server reconnects by itself.
    name = f"after-restart-{uuid.uuid4().hex[:6]}"

    def written() -> bool:
        try:
            core.create_namespaced_config_map(namespace, config_map(name), _request_timeout=5)
            return True
        except client.ApiException as e:
            return e.status == 409  # an earlier attempt got through after all
        except urllib3.exceptions.HTTPError:
            return False

    kube.wait_until(written, timeout=30, interval=0.5, what="a write through the main API server after etcd's restart")


@pytest.mark.alone
def test_kwok_restarted_plays_the_pods_it_missed(local_cluster, api, namespace):
    kwok = faults.Kwok(local_cluster)
    old_pid = kwok.pid
    kwok.kill()
    assert not kwok.healthy()
    core = client.CoreV1Api(api)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "missed", "annotations": {"sim.hpo.dev/duration": "100ms"}},
        "spec": {
            "nodeSelector": {"type": "kwok"},
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "sim"}],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    # Scheduled, but nobody plays the fake node's kubelet.
    kube.wait_until(
        lambda: core.read_namespaced_pod("missed", namespace).spec.node_name, timeout=60, what="the pod scheduled"
    )
    assert core.read_namespaced_pod("missed", namespace).status.phase == "Pending"
    kwok.restart()
    # The pid file follows, so hack/cluster.sh down stops the new process.
    assert kwok.pid != old_pid and kwok.running
    # (A restarted KWOK lists every node and pod of the cluster before it plays them: a while on a
    # loaded machine with other tests' pods about.)
    kube.wait_until(
        lambda: core.read_namespaced_pod("missed", namespace).status.phase == "Succeeded",
        timeout=90,
        what="the pod KWOK missed to run and succeed",
    )
