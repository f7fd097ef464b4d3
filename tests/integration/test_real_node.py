"""The operator with trial pods that really run: on the local cluster's real node (hack/real-node.sh,
a kubelet with containerd), in the locally built image hpo.local/trial:1 (python3, numpy,
scikit-learn). Skipped, with the reason, when no Ready node labelled hpo.dev/node=real exists.

Start one with `make cluster-real` (or `hack/real-node.sh up` next to a running control
plane); `.ci/run` tries to.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest
from kubernetes import client, watch

from tests.support.experiments import GROUP, VERSION, as_job, real_experiment, sklearn_space, x_values
from tests.support.kube import Cluster, wait_until
from tests.support.training import TRAINER, torch_runtime

pytestmark = pytest.mark.realnode
REPO = Path(__file__).resolve().parents[2]


class PodRecorder:
    """Keeps the last state seen of every pod of a namespace, deleted ones included."""

    def __init__(self, api: client.ApiClient, namespace: str):
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.pods: dict[str, client.V1Pod] = {}
        self.watch = watch.Watch()
        threading.Thread(target=self.run, daemon=True).start()

    def run(self) -> None:
        try:
            for event in self.watch.stream(self.core.list_namespaced_pod, self.namespace, timeout_seconds=600):
                self.pods[event["object"].metadata.name] = event["object"]
        except Exception:  # the stream ends abruptly when stop() closes it
            pass

    def last(self, name: str) -> client.V1Pod:
        """The pod's last state once its container has terminated."""
        return wait_until(
            lambda: (
                (p := self.pods.get(name))
                and p.status.container_statuses
                and p.status.container_statuses[0].state.terminated
                and p
            ),
            timeout=30,
            what=f"pod {name} to terminate",
        )

    def stop(self) -> None:
        self.watch.stop()


@pytest.fixture
def recorder(api, namespace):
    rec = PodRecorder(api, namespace)
    yield rec
    rec.stop()


def metric(trial: dict, name: str) -> float:
    return next(m["value"] for m in trial["status"]["metrics"] if m["name"] == name)


def terminated(pod: client.V1Pod) -> client.V1ContainerStateTerminated:
    return pod.status.container_statuses[0].state.terminated


def test_metrics_are_read_from_a_real_pods_log(api, namespace, operator, real_node, recorder):
    cluster = Cluster(api, namespace)
    cluster.create(
        real_experiment(
            "digits",
            parameters=sklearn_space("1000"),
        )
    )
    experiment = cluster.wait_finished("digits", timeout=240)
    assert experiment["status"]["phase"] == "Succeeded"

    trial = cluster.get("digits-0000", "trials")
    assert trial["status"]["phase"] == "Succeeded"
    pod = recorder.last("digits-0000")
    assert pod.spec.node_name == real_node
    assert pod.status.container_statuses[0].container_id.startswith("containerd://")
    assert terminated(pod).exit_code == 0

    # The metrics can only come from the program's stdout (StdoutLog), read through the API server
    # from the kubelet: one value per epoch, and a real model's accuracy.
    assert 0.8 < metric(trial, "accuracy") <= 1
    assert metric(trial, "loss") > 0
    steps = sorted(m["step"] for m in trial["status"]["metricHistory"] if m["name"] == "accuracy")
    assert steps == list(range(1, 9))
    assert experiment["status"]["currentOptimalTrial"]["trialName"] == "digits-0000"


def test_a_really_oom_killed_trial_is_retried(api, namespace, operator, real_node, recorder):
    # Attempt 1 touches 300 MiB under a 96Mi limit and the kernel kills it; the retry (attempt 2)
    # touches 8 MiB and succeeds: recovery, with nothing simulated.
    program = (
        "import sys\n"
        "attempt = int(sys.argv[1])\n"
        "size = (300 if attempt == 1 else 8) * 2**20\n"
        "block = b'x' * size\n"
        "print(f'attempt {attempt} held {len(block) >> 20} MiB')\n"
        "print('accuracy=0.5 loss=1.0')\n"
    )
    cluster = Cluster(api, namespace)
    cluster.create(
        real_experiment(
            "oom",
            parameters=x_values("1"),
            command=["python3", "-c", program],
            args=["${trial.attempt}"],
            memory="96Mi",
            retryPolicy={"maxRetries": 2, "retryOn": ["OOMKilled"], "backoffSeconds": 1},
        )
    )
    experiment = cluster.wait_finished("oom", timeout=240)

    first = cluster.get("oom-0000", "trials")
    assert first["status"]["phase"] == "Failed"
    assert first["status"]["failureClass"] == "OOMKilled"
    assert first["status"]["retriedBy"] == "oom-0000-a2"
    pod = recorder.last("oom-0000")
    assert pod.spec.node_name == real_node
    assert terminated(pod).reason == "OOMKilled"
    assert terminated(pod).exit_code == 137

    retry = cluster.get("oom-0000-a2", "trials")
    assert retry["spec"]["attempt"] == 2
    assert retry["status"]["phase"] == "Succeeded"
    assert metric(retry, "accuracy") == 0.5
    assert terminated(recorder.last("oom-0000-a2")).exit_code == 0
    assert experiment["status"]["phase"] == "Succeeded"
    assert experiment["status"]["trialsRetried"] >= 1


def test_a_real_indexed_job_trial_takes_its_metrics_from_index_0(api, namespace, operator, real_node):
    # Two real pods per trial; each prints a loss made of its own completion index, so the trial's
    # objective says which pod's log was read.
    program = (
        "import os\n"
        "index = int(os.environ['JOB_COMPLETION_INDEX'])\n"
        "print(f'accuracy={0.9 - index / 10} loss={index + 0.5}')\n"
    )
    cluster = Cluster(api, namespace)
    cluster.create(
        as_job(
            real_experiment(
                "indexed",
                parameters=x_values("1"),
                command=["python3", "-c", program],
            ),
            completionMode="Indexed",
            completions=2,
            parallelism=2,
        )
    )
    experiment = cluster.wait_finished("indexed", timeout=240)
    assert experiment["status"]["phase"] == "Succeeded", experiment["status"]
    trial = cluster.get("indexed-0000", "trials")
    assert metric(trial, "loss") == 0.5 and metric(trial, "accuracy") == 0.9  # index 1 says 1.5 and 0.8
    pods = cluster.pods()
    assert len(pods) == 2 and all(p.spec.node_name == real_node for p in pods.values())
    assert sorted(p.status.container_statuses[0].state.terminated.exit_code for p in pods.values()) == [0, 0]
    job = client.BatchV1Api(api).read_namespaced_job("indexed-0000", namespace)
    assert job.status.succeeded == 2


def test_a_real_trainjob_trial_takes_its_metrics_from_node_0(api, namespace, training_controllers, operator, real_node):
    # A TrainJob of two real nodes on a torch-style runtime whose pods run on the real node; each
    # node prints a loss made of its own index, so the trial's objective says which pod's log was
    # read. The trial template gives no conditions and no primary pod: a TrainJob's defaults.
    program = (
        "import os, sys\n"
        "index = int(os.environ['JOB_COMPLETION_INDEX'])\n"
        "print(f'accuracy={0.9 - index / 10} loss={index + 0.5}', sys.argv[1:])\n"
    )
    body = real_experiment("trainjob", parameters=x_values("1"))
    node = body["spec"]["trialTemplate"].pop("template")  # the real node, the local image, its limits
    for field in ("command", "args"):
        node["spec"]["containers"][0].pop(field, None)
    node["spec"]["restartPolicy"] = "Never"
    cluster = Cluster(api, namespace)
    with torch_runtime(api, node) as runtime:
        body["spec"]["trialTemplate"]["resource"] = {
            "apiVersion": "/".join(TRAINER),
            "kind": "TrainJob",
            "manifest": {
                "spec": {
                    "runtimeRef": {"name": runtime},
                    "trainer": {"numNodes": 2, "command": ["python3", "-c", program], "args": ["--x=${params.x}"]},
                }
            },
        }
        cluster.create(body)
        experiment = cluster.wait_finished("trainjob", timeout=300)
    assert experiment["status"]["phase"] == "Succeeded", experiment["status"]
    trial = cluster.get("trainjob-0000", "trials")
    assert metric(trial, "loss") == 0.5 and metric(trial, "accuracy") == 0.9  # node 1 says 1.5 and 0.8
    pods = cluster.pods()
    assert len(pods) == 2 and all(p.spec.node_name == real_node for p in pods.values())
    assert all(p.metadata.labels["hpo.dev/trial"] == "trainjob-0000" for p in pods.values())
    assert sorted(terminated(p).exit_code for p in pods.values()) == [0, 0]


def test_deleting_an_experiment_removes_its_real_containers(api, namespace, operator, real_node, containerd, kubectl):
    cluster = Cluster(api, namespace)
    cluster.create(
        real_experiment(
            "doomed",
            parameters=[{"name": "x", "type": "int", "min": 1, "max": 100}],
            command=["python3", "-c", "import time; print('training', flush=True); time.sleep(600)"],
            parallelTrialCount=2,
            maxTrialCount=3,
            memory="64Mi",
        )
    )

    def running() -> list[client.V1Pod]:
        return [
            p
            for p in cluster.pods().values()
            if p.status.phase == "Running"
            and p.status.container_statuses
            and p.status.container_statuses[0].state.running
        ]

    pods = wait_until(lambda: len(running()) == 2 and running(), timeout=120, what="two running trial pods")
    assert {p.spec.node_name for p in pods} == {real_node}
    ids = {p.status.container_statuses[0].container_id.removeprefix("containerd://") for p in pods}
    # kubectl logs: the API server reads them from the kubelet (at the node's InternalIP).
    for pod in pods:
        wait_until(
            lambda pod=pod: "training" in kubectl.run("logs", "-n", namespace, pod.metadata.name).stdout,
            timeout=30,
            what=f"the log of {pod.metadata.name}",
        )

    def containers_of_namespace() -> set[str]:
        out = containerd("containers", "ls", "-q", f'labels."io.kubernetes.pod.namespace"=={namespace}')
        return set(out.split())

    if containerd:
        tasks = set(containerd("tasks", "ls", "-q").split())
        assert ids <= tasks, "the trial containers should be running in containerd"
        assert ids <= containers_of_namespace()

    cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "experiments", "doomed")
    wait_until(
        lambda: not cluster.trials() and not cluster.pods(), timeout=120, what="the trials and pods to be deleted"
    )
    if containerd:
        # The kubelet stops the containers at once and removes them (and their sandboxes) at its
        # next garbage collection, within about a minute.
        wait_until(
            lambda: not ids & set(containerd("tasks", "ls", "-q").split()),
            timeout=60,
            what="the trial containers to stop",
        )
        wait_until(
            lambda: not containers_of_namespace(),
            timeout=150,
            interval=2,
            what="containerd to hold no container of the namespace",
        )


def test_finished_trial_pods_are_kept(api, namespace, operator, real_node, kubectl):
    cluster = Cluster(api, namespace)
    cluster.create(
        real_experiment(
            "kept",
            parameters=[{"name": "x", "type": "int", "min": 1, "max": 1000}],
            command=["python3", "-c", "import time; time.sleep(1); print('accuracy=0.5 loss=1.0')"],
            parallelTrialCount=2,
            maxTrialCount=4,
            memory="64Mi",
        )
    )
    assert cluster.wait_finished("kept", timeout=180)["status"]["phase"] == "Succeeded"
    # A round of the finished experiment, which sees every trial recorded: one that deletes their
    # pods would have by then.
    operator.wait_for_rounds(lambda: cluster.poke("kept"))
    names = sorted(cluster.trials())
    assert len(names) == 4
    pods = cluster.pods()
    deleted = [n for n in names if n not in pods or pods[n].metadata.deletion_timestamp]
    assert not deleted, f"podRetention Keep, yet these trial pods were deleted: {deleted}"
    assert "accuracy=0.5" in kubectl.run("logs", "-n", namespace, names[0]).stdout


def real_pod(name: str, command: list[str]) -> dict:
    """A bare pod on the real node: the example trial's pod spec with another program."""
    spec = real_experiment(name, parameters=[], command=command, memory="64Mi")["spec"]["trialTemplate"]["template"]
    spec["spec"]["restartPolicy"] = "Never"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec["spec"]}


@pytest.mark.alone
def test_the_real_node_goes_down_with_no_process_left_behind(api, namespace, real_node, local_cluster, kubeconfig):
    """`make cluster-down` stops the real node (hack/real-node.sh down) with the rest: nothing of it may
    keep running, neither a running container's shim nor an exited one's. It ran alone (local_cluster):
    the node is brought back up at the end for whatever runs next."""
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, real_pod("running", ["sleep", "600"]))
    core.create_namespaced_pod(namespace, real_pod("exited", ["true"]))

    def phase(name: str) -> str:
        return core.read_namespaced_pod(name, namespace).status.phase

    wait_until(
        lambda: phase("running") == "Running" and phase("exited") == "Succeeded",
        timeout=120,
        what="one pod running and one exited on the real node",
    )
    node_dir = local_cluster.state / "real-node"
    script = str(REPO / "hack/real-node.sh")
    # Every process of the node names its folder: containerd's socket there is each shim's -address.
    before = subprocess.run(["pgrep", "-af", str(node_dir)], capture_output=True, text=True).stdout
    assert "containerd-shim" in before, before
    env = {**os.environ, "HPO_CLUSTER_DIR": str(local_cluster.state)}
    try:
        down = subprocess.run([script, "down"], env=env, capture_output=True, text=True, timeout=180)
        assert down.returncode == 0, down.stderr
        left = subprocess.run(["pgrep", "-af", str(node_dir)], capture_output=True, text=True).stdout
        assert left.strip() == "", f"still running after hack/real-node.sh down:\n{left}"
        assert "sleep 600" not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    finally:
        up = subprocess.run([script, "up"], env=env, capture_output=True, text=True, timeout=600)
        assert up.returncode == 0, f"the real node did not come back up:\n{up.stderr}"
