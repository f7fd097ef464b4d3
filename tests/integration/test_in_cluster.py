"""The operator as users install it: its image (hack/image.sh, built without Docker) imported into
the real node, the Helm chart installed by hack/deploy.sh (what `make deploy` runs), two replicas
with leader election, and no operator process on the host. Skipped, with the reason, where no real
node runs or the cluster is not this checkout's (the image is imported into its node).

One install serves the module, in order: the pods as installed, experiments, metrics through the
API server's proxy, the liveness probe, failover, `helm upgrade`, `helm uninstall`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.support.experiments import real_experiment
from tests.support.kube import Cluster, wait_until

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.realnode

# Fast enough for a test: a frozen operator fails 2 probes 2 s apart, and gets 5 s to stop.
PROBE = [
    "health.livenessProbe.initialDelaySeconds=5",
    "health.livenessProbe.periodSeconds=2",
    "health.livenessProbe.timeoutSeconds=1",
    "health.livenessProbe.failureThreshold=2",
    "health.livenessProbe.terminationGracePeriodSeconds=5",
]


class Install:
    def __init__(self, api: client.ApiClient, kubectl, release: str, namespace: str, watched: str):
        self.api, self.kubectl = api, kubectl
        self.release, self.namespace, self.watched = release, namespace, watched
        self.core = client.CoreV1Api(api)
        self.name = f"{release}-hpo-operator"

    def deploy(self, *values: str) -> subprocess.CompletedProcess:
        sets = ["watch.scope=namespace", f"watch.namespaces={{{self.watched}}}", "replicaCount=2", *PROBE, *values]
        env = {**os.environ, "HPO_DEPLOY_NAMESPACE": self.namespace, "HPO_DEPLOY_RELEASE": self.release}
        proc = subprocess.run(
            [str(REPO / "hack" / "deploy.sh"), *[a for s in sets for a in ("--set", s)]],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, f"hack/deploy.sh failed:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def pods(self) -> list[client.V1Pod]:
        return [
            p
            for p in self.core.list_namespaced_pod(
                self.namespace, label_selector=f"app.kubernetes.io/instance={self.release}"
            ).items
            if not p.metadata.deletion_timestamp
        ]

    def running(self) -> list[client.V1Pod]:
        return [
            p
            for p in self.pods()
            if p.status.phase == "Running" and p.status.container_statuses and p.status.container_statuses[0].ready
        ]

    def holder(self) -> str | None:
        lease = client.CoordinationV1Api(self.api).read_namespaced_lease(self.name, self.namespace)
        return lease.spec.holder_identity

    def acting_leader(self) -> str:
        """The Lease's holder once it acts (its metrics say so), not a record left by a process gone."""

        def acting():
            holder = self.holder()
            try:
                return holder and total(self.metrics(holder), "hpo_leader") == 1 and holder
            except AssertionError:  # its metrics are not served yet
                return None

        return wait_until(acting, timeout=60, what="a leader that acts")

    def proxy(self, path: str) -> str:
        """GET through the API server's proxy (pods/proxy or services/proxy)."""
        return self.kubectl.run("get", "--raw", f"/api/v1/namespaces/{self.namespace}/{path}").stdout

    def metrics(self, pod: str) -> dict[str, float]:
        return parse_metrics(self.proxy(f"pods/http:{pod}:9090/proxy/metrics"))


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format: {'name{labels}': value}."""
    result = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            result[key] = float(value)
    return result


def total(metrics: dict[str, float], name: str, **labels: str) -> float:
    def matches(key: str) -> bool:
        if not (key == name or key.startswith(name + "{")):
            return False
        return all(f'{k}="{v}"' in key for k, v in labels.items())

    return sum(v for k, v in metrics.items() if matches(k))


@pytest.fixture(scope="module")
def installed(api, kubectl, kubeconfig, crds, real_node):
    ours = (Path(os.environ.get("HPO_CLUSTER_DIR", REPO / ".cluster")) / "kubeconfig").resolve()
    if Path(kubeconfig).resolve() != ours:
        pytest.skip(
            f"hack/deploy.sh imports the image into this checkout's real node; the tests run against {kubeconfig}"
        )
    core = client.CoreV1Api(api)
    suffix = uuid.uuid4().hex[:6]
    install = Install(api, kubectl, f"hpo-{suffix}", f"hpo-system-{suffix}", f"hpo-exp-{suffix}")
    for ns in (install.namespace, install.watched):
        core.create_namespace(
            client.V1Namespace(
                metadata=client.V1ObjectMeta(name=ns, labels={"app.kubernetes.io/part-of": "hpo-operator-tests"})
            )
        )
    wait_until(
        lambda: core.list_namespaced_service_account(install.watched).items,
        timeout=60,
        what="the default ServiceAccount",
    )
    try:
        install.deploy()
        yield install
    finally:
        subprocess.run(
            [
                kubectl.binary.replace("kubectl", "helm"),
                "uninstall",
                install.release,
                "--kubeconfig",
                kubeconfig,
                "-n",
                install.namespace,
                "--ignore-not-found",
                "--wait",
            ],
            capture_output=True,
            timeout=180,
        )
        for ns in (install.namespace, install.watched):
            core.delete_namespace(ns, propagation_policy="Background")


def simulated(name: str, trials: int, parallel: int, duration: str = "2s", retries: bool = False) -> dict:
    """examples/simulated.yaml, renamed and resized; without retries no trial fails."""
    body = yaml.safe_load((REPO / "examples" / "simulated.yaml").read_text())
    body["metadata"] = {"name": name}
    body["spec"].update({"maxTrialCount": trials, "parallelTrialCount": parallel})
    annotations = body["spec"]["trialTemplate"]["template"]["metadata"]["annotations"]
    annotations["sim.hpo.dev/duration"] = duration
    if not retries:
        for key in [k for k in annotations if k.startswith("sim.hpo.dev/exit-code") or k == "sim.hpo.dev/reason"]:
            del annotations[key]
    return body


def check_exact(cluster: Cluster, name: str, expected_trials: int) -> dict[str, dict]:
    """Every trial once, each with its own pod, and no pod without its trial."""
    trials = {n: t for n, t in cluster.trials().items() if t["metadata"]["labels"].get("hpo.dev/experiment") == name}
    assert sorted(trials) == [f"{name}-{i:04d}" for i in range(expected_trials)], sorted(trials)
    configurations = [json.dumps(t["spec"]["parameters"], sort_keys=True) for t in trials.values()]
    assert len(set(configurations)) == len(configurations), "a configuration ran twice"
    pods = {n: p for n, p in cluster.pods().items() if (p.metadata.labels or {}).get("hpo.dev/experiment") == name}
    assert set(pods) == set(trials), f"pods without trials: {set(pods) - set(trials)}"
    for pod in pods.values():
        (owner,) = pod.metadata.owner_references
        assert owner.kind == "Trial" and owner.uid == trials[owner.name]["metadata"]["uid"]
    return trials


# --- as installed -----------------------------------------------------------------------------


def test_pods_run_as_the_charts_service_account_non_root_on_a_read_only_root(installed, kubectl, real_node):
    pods = wait_until(
        lambda: len(installed.running()) == 2 and installed.running(), timeout=120, what="two operator pods Running"
    )
    for pod in pods:
        assert pod.spec.node_name == real_node
        assert pod.spec.service_account_name == installed.name
        assert pod.spec.security_context.run_as_non_root is True
        c = pod.spec.containers[0]
        assert c.security_context.read_only_root_filesystem is True and c.security_context.run_as_non_root is True
        assert re.fullmatch(r"hpo-operator:0\.1\.0-[0-9a-f]{12}", c.image), c.image
        # What the process really is, asked inside the container.
        probe = kubectl.run(
            "exec",
            "-n",
            installed.namespace,
            pod.metadata.name,
            "--",
            "python3",
            "-c",
            "import os\nprint(os.getuid(), os.getgid())\n"
            "try:\n    open('/written', 'w')\nexcept OSError as e:\n    print(e.strerror)\n"
            "print(open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read())",
        ).stdout
        assert probe.split("\n")[:3] == ["65532 65532", "Read-only file system", installed.namespace], probe


def test_one_replica_leads_and_the_other_stands_by(installed):
    pods = {
        p.metadata.name
        for p in wait_until(
            lambda: len(installed.running()) == 2 and installed.running(), timeout=120, what="two operator pods Running"
        )
    }
    leader = installed.acting_leader()
    assert leader in pods
    (standby,) = pods - {leader}
    assert total(installed.metrics(leader), "hpo_leader") == 1
    assert total(installed.metrics(standby), "hpo_leader") == 0
    # The standby is alive for its probe, and does nothing else.
    assert json.loads(installed.proxy(f"pods/http:{standby}:8080/proxy/healthz")) == {"leader": False, "waiting": True}
    log = installed.kubectl.run("logs", "-n", installed.namespace, standby).stdout
    assert "waits for Lease" in log and "kopf" not in log, log


# --- what it runs -----------------------------------------------------------------------------


def test_the_example_and_a_real_trial_succeed_and_the_metrics_match(installed, api, real_node):
    cluster = Cluster(api, installed.watched)
    example = yaml.safe_load((REPO / "examples" / "simulated.yaml").read_text())
    cluster.create(example)
    real = real_experiment(
        "real",
        parameters=[{"name": "x", "type": "double", "min": 1, "max": 2}],
        command=["python3", "-c", "import sys; print('loss=' + sys.argv[1].split('=')[1])"],
        args=["--x=${params.x}"],
    )
    real["spec"]["objective"] = {"type": "minimize", "metricName": "loss"}
    cluster.create(real)
    me = client.AuthenticationV1Api(api).create_self_subject_review(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    )
    for name in ("simulated", "real"):
        exp = cluster.wait_finished(name, timeout=180)
        assert exp["status"]["phase"] == "Succeeded", exp["status"]
        # Recorded by the operators' admission webhook, which the API server reached through its Service,
        # and its trials' pods made as the namespace's trial account (tenancy, the chart's default).
        assert exp["metadata"]["annotations"]["hpo.dev/creator"] == me.status.user_info.username
    trials = cluster.trials()
    real_trial = trials["real-0000"]
    assert real_trial["status"]["phase"] == "Succeeded"
    # Where it ran, not where it was asked to run (the nodeSelector the template gives it holds by construction).
    assert cluster.pods()["real-0000"].spec.node_name == real_node
    failed = [t for t in trials.values() if t["status"]["phase"] == "Failed"]
    succeeded = [t for t in trials.values() if t["status"]["phase"] == "Succeeded"]

    # Scraped from the leader through the API server's pod proxy, and through the metrics Service.
    metrics = installed.metrics(installed.acting_leader())
    assert total(metrics, "hpo_trials_created_total") == len(trials)
    assert total(metrics, "hpo_trials_created_total", reason="Retry") == len(failed) > 0
    assert total(metrics, "hpo_trials_finished_total", phase="Succeeded") == len(succeeded)
    assert total(metrics, "hpo_trials_finished_total", phase="Failed", failure_class="OOMKilled") == len(failed)
    assert total(metrics, "hpo_experiments", phase="Succeeded") == 2
    via_service = installed.proxy(f"services/http:{installed.name}-metrics:metrics/proxy/metrics")
    assert "hpo_leader " in via_service


def test_a_stuck_operator_is_restarted_by_its_liveness_probe(installed, containerd):
    if containerd is None:
        pytest.skip("this checkout's real node's containerd socket is not here")
    leader = installed.acting_leader()
    pod = installed.core.read_namespaced_pod(leader, installed.namespace)
    restarts = pod.status.container_statuses[0].restart_count
    container_id = pod.status.container_statuses[0].container_id.split("://")[1]
    tasks = dict(line.split()[:2] for line in containerd("tasks", "ls").splitlines()[1:])
    os.kill(int(tasks[container_id]), signal.SIGSTOP)  # frozen: the event loop answers nothing
    restarted = wait_until(
        lambda: (
            (p := installed.core.read_namespaced_pod(leader, installed.namespace))
            .status.container_statuses[0]
            .restart_count
            > restarts
            and p
        ),
        timeout=60,
        what="the kubelet to restart the frozen operator",
    )
    events = installed.core.list_namespaced_event(
        installed.namespace, field_selector=f"involvedObject.name={leader}"
    ).items
    assert any(e.reason == "Unhealthy" and "Liveness probe failed" in e.message for e in events)
    assert restarted.status.container_statuses[0].last_state.terminated is not None
    wait_until(lambda: len(installed.running()) == 2, timeout=90, what="both replicas Running again")
    installed.acting_leader()  # one of them (the restarted one, or the standby) acts


def test_deleting_the_leader_mid_experiment_hands_over_within_15_s_with_exact_counts(installed, api):
    cluster = Cluster(api, installed.watched)
    wait_until(lambda: len(installed.running()) == 2, timeout=90, what="two operator pods Running")
    leader = installed.acting_leader()
    cluster.create(simulated("failover", trials=40, parallel=4, duration="2s"))
    wait_until(
        lambda: sum(t.get("status", {}).get("phase") == "Succeeded" for t in cluster.trials().values()) >= 8,
        timeout=120,
        what="8 trials to succeed",
    )
    started = time.monotonic()
    installed.core.delete_namespaced_pod(leader, installed.namespace)
    try:
        new_leader = wait_until(
            lambda: (h := installed.holder()) and h != leader and h,
            timeout=30,
            what="another replica to take the Lease",
        )
    except AssertionError:
        print(installed.kubectl.run("get", "pods,lease", "-n", installed.namespace, "-o", "wide").stdout)
        print(installed.kubectl.run("get", "lease", "-n", installed.namespace, "-o", "yaml").stdout)
        for pod in installed.pods():
            print(
                pod.metadata.name,
                installed.kubectl.run(
                    "logs", "-n", installed.namespace, pod.metadata.name, "--timestamps", check=False
                ).stdout[-3000:],
            )
        raise
    took = time.monotonic() - started
    assert took < 15, f"the standby took over after {took:.1f} s"
    progress = len(cluster.trials())
    wait_until(lambda: len(cluster.trials()) > progress, timeout=30, what="the new leader to create trials")
    exp = cluster.wait_finished("failover", timeout=240)
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    check_exact(cluster, "failover", 40)
    assert exp["status"]["trialsSucceeded"] == 40
    print(f"failover: {new_leader} took over {took:.1f} s after {leader} was deleted")


# --- upgrade and uninstall ----------------------------------------------------------------------


def test_helm_upgrade_rolls_the_pods_and_the_experiment_continues(installed, api):
    cluster = Cluster(api, installed.watched)
    wait_until(lambda: len(installed.running()) == 2, timeout=90, what="two operator pods Running")
    before = {p.metadata.name for p in installed.pods()}
    cluster.create(simulated("upgrade", trials=24, parallel=4, duration="2s"))
    wait_until(lambda: len(cluster.trials()) >= 4, timeout=60, what="the first trials")
    installed.deploy("logFormat=json")  # a changed value: a new pod template
    after = wait_until(
        lambda: len(installed.running()) == 2 and {p.metadata.name for p in installed.running()},
        timeout=120,
        what="the rolled pods",
    )
    assert not after & before, "the pods were not replaced"
    assert installed.acting_leader() in after
    exp = cluster.wait_finished("upgrade", timeout=240)
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    check_exact(cluster, "upgrade", 24)

    # --log-format is kopf's, which starts once the election is won: a leader that took over just now
    # has logged its election in plain text and nothing yet in JSON.
    def json_lines() -> bool | None:
        log = installed.kubectl.run("logs", "-n", installed.namespace, installed.acting_leader()).stdout
        return any(line.startswith("{") and json.loads(line).get("message") for line in log.splitlines()) or None

    wait_until(json_lines, timeout=60, what="the acting leader to log in JSON")


def test_helm_uninstall_leaves_nothing_of_the_release_but_the_crds(installed, kubectl, kubeconfig):
    helm = kubectl.binary.replace("kubectl", "helm")
    proc = subprocess.run(
        [
            helm,
            "uninstall",
            installed.release,
            "--kubeconfig",
            kubeconfig,
            "-n",
            installed.namespace,
            "--wait",
            "--timeout",
            "120s",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    kinds = "deployments,replicasets,pods,services,serviceaccounts,roles,rolebindings,leases,configmaps,secrets"
    selector = f"app.kubernetes.io/instance={installed.release}"
    # The admission Secret stays (helm.sh/resource-policy: keep): its key signed the authors of the
    # experiments that outlive the release.
    kept = [f"secret/{installed.name}-admission"]
    wait_until(
        lambda: (
            kubectl.run("get", kinds, "-n", installed.namespace, "-l", selector, "-o", "name").stdout.split() == kept
            and not installed.pods()
        ),
        timeout=90,
        what="the release's objects but its admission Secret to go",
    )
    kubectl.run("delete", kept[0], "-n", installed.namespace)
    for ns in (installed.namespace, installed.watched):
        left = kubectl.run("get", "roles,rolebindings,leases", "-n", ns, "-o", "name").stdout.split()
        assert not [x for x in left if installed.release in x], left
    cluster_scoped = (
        "clusterroles,clusterrolebindings,mutatingwebhookconfigurations,"
        "validatingadmissionpolicies,validatingadmissionpolicybindings"
    )
    assert not kubectl.run("get", cluster_scoped, "-l", selector, "-o", "name").stdout.strip()
    # Helm never deletes CRDs; docs/deploy.md says how to remove them.
    kubectl.run("get", "crd", "experiments.hpo.dev", "trials.hpo.dev")
