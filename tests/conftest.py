"""Fixtures: a real Kubernetes API server for the integration tests.

By default the local control plane (hack/cluster.sh) is started once per session and stopped at
the end if this session started it. With HPO_KUBECONFIG set, that cluster is used instead (for
example a kind cluster); tests that need KWOK's simulated pod fates are skipped there when it has
no KWOK nodes.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.support import chart, faults, kube

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items):
    for item in items:
        # Tests in tests/integration need the API server; mark them so `-m "not integration"` works.
        if "integration" not in Path(str(item.fspath)).parts:
            continue
        item.add_marker(pytest.mark.integration)
        # A worker takes a group whole (--dist loadgroup), other tests one by one: a module's tests
        # share its module-scoped fixtures, and the real node's trials, which really run, queue on
        # that one node anyway.
        module = Path(str(item.fspath)).stem
        if item.get_closest_marker("realnode") or module == "test_dashboard":
            item.add_marker(pytest.mark.xdist_group("realnode"))
        elif module in GROUPED_MODULES:
            item.add_marker(pytest.mark.xdist_group(module))


# Modules whose tests one worker takes whole, in order: test_validation's module-scoped fixture;
# test_cluster's second control planes, which look for free ports the same way and would find the
# same ones at once. The browser's tests go with the real node's: Chromium fails a request in
# flight when the host's network changes (net::ERR_NETWORK_CHANGED), as it does whenever a real
# node's pod starts or ends.
GROUPED_MODULES = {"test_validation", "test_cluster"}


def pytest_runtest_setup(item):
    # `make test` runs the integration tests in parallel workers (hack/test.sh), each in a namespace
    # of its own, then those marked `alone` one at a time. One that stops a process every test needs
    # (etcd, KWOK, Kueue: faults.Component) must be marked so; it fails saying so otherwise.
    faults.running_beside_others = item.get_closest_marker("alone") is None


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    given = os.environ.get("HPO_KUBECONFIG")
    if given:
        yield given
        return
    script = REPO / "hack" / "cluster.sh"
    # Parallel workers (pytest -n) start it once between them: the first under the lock starts it,
    # the others find it up. None of them stops it, since each ends while the others may still run
    # (make test starts it before its workers and stops it after them).
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    state = Path(os.environ.get("HPO_CLUSTER_DIR", REPO / ".cluster"))
    state.mkdir(parents=True, exist_ok=True)
    with open(state / "up.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        was_up = subprocess.run([script, "status"], capture_output=True).returncode == 0
        out = subprocess.run([script, "up"], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.fail(f"the local control plane did not start:\n{out.stderr}")
    path = out.stdout.strip().splitlines()[-1]
    yield path
    if not was_up and not worker and not os.environ.get("HPO_KEEP_CLUSTER"):
        subprocess.run([script, "down"], capture_output=True)


@pytest.fixture(scope="session")
def api(kubeconfig) -> client.ApiClient:
    return config.new_client_from_config(config_file=kubeconfig)


@pytest.fixture(scope="session")
def kubectl(kubeconfig):
    """Runs the project's kubectl (or one on PATH) against the test cluster."""
    cached = Path(os.environ.get("HPO_CACHE", Path.home() / ".cache/hpo-operator")) / "bin/kubectl"
    binary = str(cached) if cached.exists() else shutil.which("kubectl")
    return kube.Kubectl(binary, kubeconfig)


def no_operator_installed(api: client.ApiClient) -> None:
    """An operator installed in the cluster (`make deploy`) would act on the tests' experiments
    next to the operator each test starts: refuse to run rather than fail confusingly."""
    running = [
        f"{d.metadata.namespace}/{d.metadata.name}"
        for d in client.AppsV1Api(api)
        .list_deployment_for_all_namespaces(label_selector="app.kubernetes.io/name=hpo-operator")
        .items
        if d.spec.replicas
    ]
    if running:
        pytest.fail(
            f"an hpo-operator is installed in the cluster ({', '.join(running)}); it would act on the "
            "tests' experiments too. Remove it first: make undeploy (or helm uninstall)"
        )


@pytest.fixture(scope="session")
def helm(tmp_path_factory) -> chart.Helm:
    """The project's helm (or one on PATH), its config and caches in a scratch directory."""
    cached = Path(os.environ.get("HPO_CACHE", Path.home() / ".cache/hpo-operator")) / "bin/helm"
    binary = str(cached) if cached.exists() else shutil.which("helm")
    if not binary:
        pytest.skip(f"helm is missing: neither {cached} (built by hack/build-tools.sh) nor helm on PATH")
    return chart.Helm(binary, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def crds(kubectl, api):
    no_operator_installed(api)
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", "crd/experiments.hpo.dev", "crd/trials.hpo.dev")
    # Discovery of a new CRD can lag behind Established; wait until the kinds are served.
    kube.wait_until(
        lambda: kubectl.run("get", "experiments,trials", "-A", check=False).returncode == 0,
        timeout=30,
        what="the hpo.dev kinds to be served",
    )


@pytest.fixture
def current_crds(kubectl, crds):
    """This checkout's CRDs, applied again and served: on a cluster shared with other checkouts, one
    of them may have applied older CRDs since this session began, and the API server would then
    drop the fields they lack (a pbt Trial's spec.segment, for one)."""
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    kube.wait_until(
        lambda: kubectl.run("explain", "trials.spec.segment", check=False).returncode == 0,
        timeout=30,
        what="this checkout's Trial CRD to be served",
    )


@pytest.fixture(scope="session")
def local_cluster(kubeconfig) -> faults.LocalCluster:
    """The local control plane's processes, for tests that kill or pause them (tests/support/faults.py);
    such tests are skipped on any other cluster (HPO_KUBECONFIG), with the reason."""
    try:
        return faults.local_cluster(kubeconfig)
    except faults.NotLocalCluster as e:
        pytest.skip(str(e))


@pytest.fixture
def apiserver(local_cluster, tmp_path):
    """A started second kube-apiserver on the local etcd (faults.ApiServer), stopped at teardown."""
    server = faults.ApiServer(local_cluster, tmp_path / "apiserver.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def relay(kubeconfig):
    """A TCP relay to the test cluster's API server (faults.Relay), on any cluster; closed at
    teardown. `relay.write_kubeconfig(kubeconfig, path)` gives clients a way through it."""
    with faults.Relay.for_kubeconfig(kubeconfig) as r:
        yield r


# The real node (hack/real-node.sh): several test files run trials on it, so its fixtures live here.
@pytest.fixture(scope="session")
def real_node(api, kubeconfig) -> str:
    nodes = client.CoreV1Api(api).list_node(label_selector="hpo.dev/node=real").items
    ready = [
        n.metadata.name
        for n in nodes
        if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
    ]
    if not ready:
        reason_file = Path(kubeconfig).parent / "real-node-unavailable"
        why = (
            reason_file.read_text().strip()
            if reason_file.exists()
            else ("none was started: run `make cluster-real` or `hack/real-node.sh up`")
        )
        pytest.skip(f"no Ready node labelled hpo.dev/node=real: {why}")
    return ready[0]


@pytest.fixture(scope="session")
def containerd(kubeconfig, real_node):
    """`ctr` against the real node's containerd (namespace k8s.io), or None when the node is not
    this checkout's (HPO_KUBECONFIG elsewhere) or ctr is missing."""
    sock = Path(kubeconfig).parent / "real-node" / "containerd.sock"
    binary = shutil.which("ctr")
    if not binary or not sock.exists():
        return None

    def ctr(*args: str) -> str:
        return subprocess.run(
            [binary, "--address", str(sock), "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout

    return ctr


@pytest.fixture(scope="session")
def kwok_nodes(api):
    nodes = client.CoreV1Api(api).list_node(label_selector="type=kwok").items
    if not nodes:
        pytest.skip("the cluster has no KWOK nodes (type=kwok), so pod fates cannot be simulated")
    return [n.metadata.name for n in nodes]


@pytest.fixture
def namespace(api):
    core = client.CoreV1Api(api)
    name = f"hpo-test-{uuid.uuid4().hex[:8]}"
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={"app.kubernetes.io/part-of": "hpo-operator-tests"})
        )
    )
    # Pods are refused until the namespace's default ServiceAccount exists.
    kube.wait_until(lambda: _has_default_sa(core, name), timeout=60, what="the default ServiceAccount")
    yield name
    core.delete_namespace(name, propagation_policy="Background")


# Pod Security Admission's labels: a namespace with them refuses (enforce) any pod that does not
# meet the level, at its creation, whoever creates it (the operator, the job controller, JobSet).
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


@pytest.fixture
def restricted(api, namespace) -> str:
    """The test's namespace, enforcing Pod Security's `restricted` level; its name."""
    client.CoreV1Api(api).patch_namespace(namespace, {"metadata": {"labels": RESTRICTED}})
    return namespace


def _has_default_sa(core: client.CoreV1Api, namespace: str) -> bool:
    try:
        core.read_namespaced_service_account("default", namespace)
        return True
    except client.ApiException:
        return False


@pytest.fixture
def operator(kubeconfig, crds, namespace, tmp_path):
    """Starts the operator as a subprocess watching the test's namespace; yields a handle that can
    kill and restart it."""
    proc = kube.OperatorProcess(kubeconfig, namespace, tmp_path / "operator.log")
    proc.start()
    yield proc
    proc.stop()
    if proc.failed_output():
        sys.stderr.write(proc.failed_output())


@pytest.fixture
def session(kubeconfig):
    """The Python client's Session (hpo_operator.client.connect) on the test cluster."""
    from hpo_operator import client as hpo

    return hpo.connect(kubeconfig=kubeconfig)


# JobSet, Kueue and Kubeflow Trainer (hack/training.sh, `make cluster-training`): the webhook
# configurations it installs carry this label, one validating configuration per controller.
TRAINING_LABEL = "hpo.dev/training-controller"
TRAINING_CONTROLLERS = ("jobset", "kueue", "trainer")


@pytest.fixture(scope="session")
def training_controllers(api, kubeconfig) -> None:
    """Skips, with the reason, unless the three training controllers serve their webhooks on the
    test cluster: their configurations are installed, and server-side dry runs that go through each
    controller's validating webhook are answered."""
    admission = client.AdmissionregistrationV1Api(api)
    installed = {
        w.metadata.name for w in admission.list_validating_webhook_configuration(label_selector=TRAINING_LABEL).items
    }
    missing = [c for c in TRAINING_CONTROLLERS if f"{c}-validating" not in installed]
    if missing:
        reason_file = Path(kubeconfig).parent / "training-unavailable"
        why = (
            f"hack/training.sh up failed: {reason_file.read_text().strip()}"
            if reason_file.exists()
            else "start them with `make cluster-training` (hack/training.sh up)"
        )
        pytest.skip(f"the training controllers are not running ({', '.join(missing)} missing): {why}")
    custom = client.CustomObjectsApi(api)
    probes = {
        "JobSet": ("jobset.x-k8s.io", "v1alpha2", "jobsets", {"spec": {"replicatedJobs": []}}),
        "ResourceFlavor": ("kueue.x-k8s.io", "v1beta2", "resourceflavors", {"spec": {}}),
        "ClusterTrainingRuntime": (
            "trainer.kubeflow.org",
            "v1alpha1",
            "clustertrainingruntimes",
            {"spec": {"template": {"spec": {"replicatedJobs": []}}}},
        ),
    }
    for kind, (group, version, plural, body) in probes.items():
        obj = {"apiVersion": f"{group}/{version}", "kind": kind, "metadata": {"name": "probe"}, **body}
        try:
            if kind == "JobSet":
                custom.create_namespaced_custom_object(group, version, "default", plural, obj, dry_run="All")
            else:
                custom.create_cluster_custom_object(group, version, plural, obj, dry_run="All")
        except client.ApiException as e:
            if "failed calling webhook" in (e.body or "") or e.status == 404:
                pytest.skip(f"the training controllers do not answer (a {kind} dry run): {e.body}")
            # Refused by the webhook for its content: the webhook answered.


# Checkpoint claims bind to these (several test files run trials with checkpoints).
@pytest.fixture
def volumes(api):
    made: list[kube.Volumes] = []

    def make(count: int, storage_class: str | None = None) -> kube.Volumes:
        v = kube.Volumes(api, storage_class or f"hpo-test-{uuid.uuid4().hex[:6]}", count)
        made.append(v)
        return v

    yield make
    for v in made:
        v.delete()
