"""The test cluster is a real Kubernetes: these tests check what only a real one does."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from kubernetes import client

from tests.support.kube import wait_until

REPO = Path(__file__).resolve().parents[2]


def pinned(name: str) -> str:
    for line in (REPO / "hack/versions.env").read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1]
    raise KeyError(name)


@pytest.mark.skipif(bool(os.environ.get("HPO_KUBECONFIG")), reason="checks the local control plane's version")
def test_server_reports_the_pinned_version(api):
    assert client.VersionApi(api).get_code().git_version == pinned("K8S_VERSION")


def test_garbage_collector_deletes_pods_whose_owner_is_gone(api, namespace, kwok_nodes):
    core = client.CoreV1Api(api)
    owner = core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner")))
    core.create_namespaced_pod(
        namespace,
        pod(
            "owned",
            owner_refs=[
                client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)
            ],
        ),
    )
    core.delete_namespaced_config_map("owner", namespace)

    def gone():
        try:
            core.read_namespaced_pod("owned", namespace)
            return False
        except client.ApiException as e:
            return e.status == 404

    wait_until(gone, timeout=60, what="the garbage collector to delete the owned pod")


def pod(
    name: str, annotations: dict | None = None, labels: dict | None = None, owner_refs: list | None = None
) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, annotations=annotations, labels=labels, owner_references=owner_refs),
        spec=client.V1PodSpec(
            restart_policy="Never", containers=[client.V1Container(name="main", image="trial:latest")]
        ),
    )


def final_pod(core, name, namespace, phases=("Succeeded", "Failed")):
    return wait_until(
        lambda: (p := core.read_namespaced_pod(name, namespace)).status.phase in phases and p,
        timeout=60,
        what=f"pod {name} to reach {phases}",
    )


def terminated(p) -> client.V1ContainerStateTerminated:
    return p.status.container_statuses[0].state.terminated


def test_pod_without_fate_succeeds(api, namespace, kwok_nodes):
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, pod("ok", {"sim.hpo.dev/message": '{"loss": 0.25}'}))
    p = final_pod(core, "ok", namespace)
    assert p.status.phase == "Succeeded"
    assert terminated(p).exit_code == 0
    assert terminated(p).reason == "Completed"
    assert terminated(p).message == '{"loss": 0.25}'
    assert p.spec.node_name in kwok_nodes


@pytest.mark.parametrize(
    "code, reason, want_reason",
    [
        ("3", None, "Error"),
        ("137", "OOMKilled", "OOMKilled"),
    ],
)
def test_pod_fails_with_the_chosen_exit_code(api, namespace, kwok_nodes, code, reason, want_reason):
    core = client.CoreV1Api(api)
    annotations = {"sim.hpo.dev/exit-code": code, "sim.hpo.dev/duration": "200ms"}
    if reason:
        annotations["sim.hpo.dev/reason"] = reason
    core.create_namespaced_pod(namespace, pod("bad", annotations))
    p = final_pod(core, "bad", namespace)
    assert p.status.phase == "Failed"
    assert terminated(p).exit_code == int(code)
    assert terminated(p).reason == want_reason


def test_exit_code_can_depend_on_the_attempt(api, namespace, kwok_nodes):
    core = client.CoreV1Api(api)
    fate = {"sim.hpo.dev/exit-code-attempt-1": "137", "sim.hpo.dev/reason": "OOMKilled"}
    core.create_namespaced_pod(namespace, pod("first", fate, {"hpo.dev/attempt": "1"}))
    core.create_namespaced_pod(namespace, pod("second", fate, {"hpo.dev/attempt": "2"}))
    assert final_pod(core, "first", namespace).status.phase == "Failed"
    assert final_pod(core, "second", namespace).status.phase == "Succeeded"


def test_pod_can_be_evicted(api, namespace, kwok_nodes):
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, pod("evicted", {"sim.hpo.dev/pod-failure": "Evicted"}))
    p = final_pod(core, "evicted", namespace)
    assert p.status.phase == "Failed"
    assert p.status.reason == "Evicted"


def test_pod_can_be_stuck_waiting(api, namespace, kwok_nodes):
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, pod("stuck", {"sim.hpo.dev/waiting-reason": "ImagePullBackOff"}))

    def waiting():
        p = core.read_namespaced_pod("stuck", namespace)
        statuses = p.status.container_statuses or []
        return statuses and statuses[0].state.waiting and p

    p = wait_until(waiting, timeout=60, what="the container to be waiting")
    assert p.status.phase == "Pending"
    assert p.status.container_statuses[0].state.waiting.reason == "ImagePullBackOff"


def free_port_pairs(count: int) -> list[int]:
    """First ports of `count` pairs (port, port+1) that are free now and below the kernel's range of
    ephemeral ports, so that no client connection can take one of them before the cluster binds it."""
    lowest_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])

    def free(port: int) -> bool:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    found: list[int] = []
    # In random order: the tests that start a second control plane one after the other would
    # otherwise all take the first pairs, and meet whatever the last one left in the kernel.
    candidates = list(range(min(26000, lowest_ephemeral - 2), 20000, -2))
    random.shuffle(candidates)
    for port in candidates:
        if free(port) and free(port + 1):
            found.append(port)
            if len(found) == count:
                return found
    raise RuntimeError("no free loopback ports below the ephemeral range")


def test_free_port_pairs_avoid_the_ephemeral_range():
    lowest_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    pairs = free_port_pairs(2)
    assert len(set(pairs)) == 2
    assert all(port + 1 < lowest_ephemeral for port in pairs)


@pytest.mark.skipif(bool(os.environ.get("HPO_KUBECONFIG")), reason="starts a second local control plane")
def test_cluster_up_names_a_port_in_use(tmp_path):
    api_port, etcd_port = free_port_pairs(2)
    env = {
        **os.environ,
        "HPO_CLUSTER_DIR": str(tmp_path / "cluster"),
        "HPO_APISERVER_PORT": str(api_port),
        "HPO_ETCD_PORT": str(etcd_port),
        "HPO_KWOK_NODES": "1",
    }
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", api_port + 1))
        taken.listen()
        up = subprocess.run([str(REPO / "hack/cluster.sh"), "up"], env=env, capture_output=True, text=True, timeout=120)
    assert up.returncode != 0
    assert f"{api_port + 1}" in up.stderr and "already in use" in up.stderr
    assert not (tmp_path / "cluster/run").exists() or not os.listdir(tmp_path / "cluster/run")


@pytest.mark.skipif(bool(os.environ.get("HPO_KUBECONFIG")), reason="starts a second local control plane")
def test_cluster_down_leaves_no_process_behind(tmp_path):
    api_port, etcd_port = free_port_pairs(2)
    env = {
        **os.environ,
        "HPO_CLUSTER_DIR": str(tmp_path / "cluster"),
        "HPO_APISERVER_PORT": str(api_port),
        "HPO_ETCD_PORT": str(etcd_port),
        "HPO_KWOK_NODES": "1",
    }
    script = str(REPO / "hack/cluster.sh")
    up = subprocess.run([script, "up"], env=env, capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip().endswith("cluster/kubeconfig")
    pids = [int((tmp_path / "cluster/run" / f).read_text()) for f in os.listdir(tmp_path / "cluster/run")]
    assert len(pids) == 5  # etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok
    subprocess.run([script, "down"], env=env, capture_output=True, timeout=120, check=True)
    alive = [
        pid
        for pid in pids
        if os.path.exists(f"/proc/{pid}") and "zombie" not in open(f"/proc/{pid}/status").read().lower()
    ]
    assert not alive, f"still running: {alive}"
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path / "cluster")], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""


@pytest.mark.skipif(bool(os.environ.get("HPO_KUBECONFIG")), reason="starts a second local control plane")
def test_an_interrupted_up_leaves_no_process_behind(tmp_path):
    api_port, etcd_port = free_port_pairs(2)
    state = tmp_path / "cluster"
    env = {
        **os.environ,
        "HPO_CLUSTER_DIR": str(state),
        "HPO_APISERVER_PORT": str(api_port),
        "HPO_ETCD_PORT": str(etcd_port),
        "HPO_KWOK_NODES": "1",
        # `up` says when the API server answers, and waits there to be interrupted: a warm `up`
        # would otherwise finish before a signal sent on seeing its pid file arrives.
        "HPO_CLUSTER_HOLD_AFTER": "kube-apiserver",
    }
    env.pop("KUBELET", None)
    script = str(REPO / "hack/cluster.sh")
    up = subprocess.Popen([script, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Interrupted once etcd and the API server run (in sessions of their own, which a Ctrl-C
        # at the terminal does not reach).
        said = []
        assert up.stderr is not None
        for line in up.stderr:
            said.append(line)
            if "holding after kube-apiserver" in line:
                break
        else:
            raise AssertionError("up ended without reaching the API server:\n" + "".join(said))
        up.send_signal(signal.SIGINT)
        _, err = up.communicate(timeout=60)
        err = "".join(said) + err
        assert up.returncode == 130, err
        assert "stopping what it started" in err
        leftover = subprocess.run(["pgrep", "-f", str(state)], capture_output=True, text=True)
        assert leftover.stdout.strip() == ""
    finally:
        up.kill()
        subprocess.run([script, "down"], env=env, capture_output=True, timeout=120)
