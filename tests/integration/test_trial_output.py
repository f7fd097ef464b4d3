"""What a trial prints is one tenant's input to an operator many share: one experiment's output
must not hold another namespace's experiments, the operator's liveness probe, or its own rounds.

KWOK serves a pod's log from a file named by a Logs object (tests/support/kube.serve_log) and sets its
termination message from the sim.hpo.dev/message annotation (hack/kwok/stages.yaml).
"""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.support.experiments import GROUP, VERSION, condition, experiment, loss_is_x, x_space
from tests.support.kube import REPO, Cluster, OperatorProcess, free_port, serve_log, wait_until, write_log

KATIB_DEFAULT = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
EXPONENTIAL = r"(\w+)=((\d+)*)x"  # 2.4 s in Python's re on `loss=` and 28 ones
FIVE_THOUSAND_DIGITS = "1" * 5000


def create_namespace(api: client.ApiClient) -> str:
    core = client.CoreV1Api(api)
    name = f"hpo-test-{uuid.uuid4().hex[:8]}"
    labels = {"app.kubernetes.io/part-of": "hpo-operator-tests"}
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))

    def has_default_sa() -> bool:
        try:
            core.read_namespaced_service_account("default", name)
            return True
        except ApiException:
            return False

    wait_until(has_default_sa, timeout=60, what="the default ServiceAccount")
    return name


@pytest.fixture
def other_namespace(api, namespace):
    name = create_namespace(api)
    yield name
    client.CoreV1Api(api).delete_namespace(name, propagation_policy="Background")


class Prober:
    """Polls the operator's liveness endpoint (kopf's --liveness, the chart's probe) every 0.2 s
    with a 2 s timeout, as a kubelet would, and counts the answers."""

    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}/healthz"
        self.ok = 0
        self.failed: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stopping.wait(0.2):
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    response.read()
                self.ok += 1
            except OSError as e:
                self.failed.append(f"{time.monotonic():.1f}: {e}")

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()


def twenty_trials(name: str) -> dict:
    return experiment(
        name,
        x_space(10),
        annotations=loss_is_x(),
        max_trials=20,
        parallel=4,
    )


def run_twenty(cluster: Cluster, name: str) -> tuple[float, float, int]:
    """Creates the 20-trial experiment and waits for it, listing its trials every 0.1 s: its time,
    the largest gap between two of its trials' first sightings, and how many trials succeeded."""
    started = time.monotonic()
    cluster.create(twenty_trials(name))
    seen: dict[str, float] = {}
    deadline = started + 240
    while True:
        now = time.monotonic()
        for trial in cluster.trials().values():
            if trial["spec"]["experimentName"] == name:
                seen.setdefault(trial["metadata"]["name"], now)
        exp = cluster.get(name)
        if exp.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            break
        assert now < deadline, f"experiment {name} did not finish within 240 s: {len(seen)} trials made"
        time.sleep(0.1)
    took = time.monotonic() - started
    times = sorted(seen.values())
    gap = max((b - a for a, b in zip([started, *times], times, strict=False)), default=0.0)
    return took, gap, exp["status"].get("trialsSucceeded", 0)


def test_one_namespaces_hostile_output_does_not_hold_another_namespaces_experiment(
    api, kubeconfig, crds, namespace, other_namespace, kwok_nodes, tmp_path
):
    """One operator watching two namespaces. B's trial prints a 200,000-character line, lines that
    are exponential or quadratic for a backtracking regex, and its metric, with a pathological
    metricsFormat and Katib's. A's experiment (20 trials, 4 at a time) runs alone, then again while
    B's output is read: it finishes all its trials both times, and the liveness endpoint answers
    every probe throughout. (Before RE2 and the parsing thread: A stalled at 8 of 20 for a minute
    and 29 of 31 probes failed.) The times are printed, not asserted."""
    a, b = namespace, other_namespace
    port = free_port()
    operator = OperatorProcess(
        kubeconfig,
        a,
        tmp_path / "operator.log",
        args=["--namespace", a, "--namespace", b, "--standalone", f"--liveness=http://127.0.0.1:{port}/healthz"],
    )
    operator.start()
    prober = None
    try:
        wait_until(lambda: operator.rounds() is not None, timeout=60, what="the operator to start")
        cluster_a, cluster_b = Cluster(api, a), Cluster(api, b)
        prober = Prober(port)
        alone = run_twenty(cluster_a, "alone")

        log = tmp_path / "b.log"
        write_log(
            log,
            ["loss=" + "1" * 199_995]  # over the line cap
            + ["loss=" + "1" * 28] * 40  # exponential for EXPONENTIAL in a backtracking engine
            + ["1" * 16_000] * 60  # quadratic for KATIB_DEFAULT in a backtracking engine
            + ["loss=5x"],
        )
        serve_log(api, b, "hostile-0000", log)
        hostile = experiment(
            "hostile",
            x_space(),
            annotations={"sim.hpo.dev/duration": "1s"},
            max_trials=1,
            metricsCollector={"source": "StdoutLog", "metricsFormat": [EXPONENTIAL, KATIB_DEFAULT]},
        )
        cluster_b.create(hostile)
        wait_until(lambda: "hostile-0000" in cluster_b.trials(), timeout=30, what="B's trial")
        beside = run_twenty(cluster_a, "beside")
        trial = wait_until(
            lambda: (
                (t := cluster_b.trials()["hostile-0000"]).get("status", {}).get("phase") in ("Succeeded", "Failed")
                and t
            ),
            timeout=120,
            what="B's trial to get an outcome",
        )
    finally:
        if prober is not None:
            prober.stop()
        operator.stop()
    print(
        f"\nA alone: {alone[0]:.1f} s, largest gap between trials {alone[1]:.2f} s; "
        f"beside B's hostile trial: {beside[0]:.1f} s, largest gap {beside[1]:.2f} s; "
        f"liveness probes {prober.ok} answered, {len(prober.failed)} failed"
    )
    assert alone[2] == 20 and beside[2] == 20
    assert prober.failed == [] and prober.ok > 10
    st = trial["status"]
    assert (st["phase"], st["objectiveValue"]) == ("Succeeded", 5.0), st
    assert st["message"] == "not read: 1 line longer than 16384 bytes (the longest 200000)"
    assert "Traceback" not in operator.log()


def test_a_number_that_cannot_be_read_fails_its_trial_and_the_experiment_goes_on(api, namespace, operator, kwok_nodes):
    """A termination message {"loss": <5,000 digits>}: Python's json cannot make that an int, and
    its ValueError used to fail every round of the experiment (the trial stayed Running, no trial was
    made after it, and spec.suspend was never applied)."""
    cluster = Cluster(api, namespace)
    body = experiment(
        "digits",
        x_space(),
        annotations={"sim.hpo.dev/message": '{"loss": ' + FIVE_THOUSAND_DIGITS + "}"},
        max_trials=50,
        parallel=1,
    )
    body["spec"]["maxFailedTrialCount"] = 50
    cluster.create(body)

    def failed_trials() -> list[dict]:
        return [t for t in cluster.trials().values() if t.get("status", {}).get("phase") == "Failed"]

    failed = wait_until(lambda: len(f := failed_trials()) >= 2 and f, timeout=90, what="two trials to fail")
    st = failed[0]["status"]
    assert (st["reason"], st["failureClass"]) == ("MetricsUnavailable", "MetricsUnavailable")
    assert st["message"] == (
        "the trial succeeded but reported no loss metric (Auto); the value of loss could not be read as a "
        "number: '111111111111111111111111'… (5000 characters)"
    )
    cluster.patch("digits", {"spec": {"suspend": True}})
    exp = wait_until(
        lambda: (e := cluster.get("digits")).get("status", {}).get("phase") == "Suspended" and e,
        timeout=60,
        what="the experiment to be suspended",
    )
    assert condition(exp, "Suspended")["status"] == "True"
    assert "Traceback" not in operator.log()


def test_the_api_server_refuses_a_metrics_format_re2_cannot_take(api, kubectl, crds, namespace):
    """The CRD's rule compiles each regex with the API server's RE2 (Go's regexp): a lookaround is
    refused at apply, with RE2's reason."""
    # This checkout's CRD, applied again: on a cluster that several checkouts' tests share, another
    # session may have applied its own since this one began.
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds" / "experiments.yaml"))
    cluster = Cluster(api, namespace)

    def refusal() -> ApiException | None:
        body = experiment(
            f"lookaround-{uuid.uuid4().hex[:6]}",
            x_space(),
            annotations={},
            max_trials=1,
            metricsCollector={"metricsFormat": [r"(\w+)=(?=\d)(\d+)"]},
        )
        try:
            cluster.create(body)
        except ApiException as e:
            return e
        cluster.custom.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, "experiments", body["metadata"]["name"]
        )
        return None  # (the updated schema is not served yet)

    e = wait_until(refusal, timeout=30, interval=1, what="the CRD's RE2 rule to be served")
    assert e.status == 422
    assert "invalid or unsupported Perl syntax: `(?=`" in e.body
    assert "each metricsFormat regex must be one RE2 accepts" in e.body


def test_a_metrics_format_too_large_for_the_operator_is_an_invalid_spec(api, namespace, operator):
    """A regex the API server's RE2 takes but that compiles to a program larger than the operator
    runs (api/regex.MAX_PROGRAM_SIZE): the experiment fails as InvalidSpec, naming the field and RE2's
    measure, and no trial is made."""
    cluster = Cluster(api, namespace)
    body = experiment(
        "large",
        x_space(),
        annotations={},
        max_trials=1,
        metricsCollector={"metricsFormat": [r"(\pL{20})(\pN{20})"]},
    )
    cluster.create(body)
    exp = wait_until(
        lambda: (e := cluster.get("large")).get("status", {}).get("phase") == "Failed" and e,
        timeout=60,
        what="InvalidSpec",
    )
    failed = condition(exp, "Failed")
    assert failed["reason"] == "InvalidSpec"
    assert "metricsFormat[0]" in failed["message"] and (
        "instructions, more than 2000" in failed["message"] or "pattern too large" in failed["message"]
    )
    assert cluster.trials() == {}


def test_a_running_pods_log_is_read_on_from_the_last_line_seen(
    api, kubeconfig, namespace, kwok_nodes, tmp_path, monkeypatch
):
    """The API server's sinceTime (which the client library's method lacks: KubeClient.pod_log
    makes that request itself) serves the lines from a time on, inclusive: the loop's reader reads a
    running pod's log on from its last line, each line once, keeping samples and no text."""
    import asyncio

    from hpo_operator.api.spec import ExperimentSpec
    from hpo_operator.controller import logs as logs_module
    from hpo_operator.core.podstate import PodObservation
    from hpo_operator.kube import client as kubeapi
    from hpo_operator.planner import TrialView

    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    path = tmp_path / "running.log"
    base = "2024-05-01T12:00:0{}.{}Z"

    def lines(count: int) -> str:
        # Three lines a second, the CRI runtime's format that KWOK serves.
        return "".join(
            f"{base.format(i // 3, str(i % 3 + 1) * 9)} stdout F step={i + 1} loss={1 / (i + 1):.4f}\n"
            for i in range(count)
        )

    path.write_text(lines(4))
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "follow-0000", "annotations": {"sim.hpo.dev/hang": "true"}},
        "spec": {
            "containers": [{"name": "train", "image": "trainer:1"}],
            "nodeSelector": {"type": "kwok"},
        },
    }
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, pod)
    serve_log(api, namespace, "follow-0000", path)
    wait_until(lambda: core.read_namespaced_pod("follow-0000", namespace).status.phase == "Running", what="the pod")
    spec = ExperimentSpec.model_validate(
        {
            "objective": {"type": "minimize", "metricName": "loss"},
            "algorithm": {"name": "random"},
            "maxTrialCount": 1,
            "parameters": x_space(),
            "metricsCollector": {"source": "StdoutLog", "intervalSeconds": 1},
            "earlyStopping": {"algorithm": "median"},
            "trialTemplate": {"template": {"spec": {"containers": [{"name": "train", "image": "t:1"}]}}},
        }
    )
    body = core.read_namespaced_pod("follow-0000", namespace).to_dict()
    pods = {"follow-0000": {"metadata": {**body["metadata"]}, "spec": {"containers": [{"name": "train"}]}}}
    trial = TrialView("follow-0000", "uid", {"metadata": {"name": "follow-0000"}, "status": {"phase": "Running"}})
    observed = {"follow-0000": PodObservation("Running", "Running")}
    asked: list[dict] = []

    async def scenario() -> list:
        api_client = await kubeapi.connect()
        reading = api_client.pod_log

        async def pod_log(namespace: str, name: str, **kw):
            asked.append(kw)
            return await reading(namespace, name, **kw)

        api_client.pod_log = pod_log
        reader = logs_module.PodLogs(api_client)
        outputs = []
        try:
            outputs.append((await reader.wanted(spec, [trial], pods, observed))["follow-0000"])
            path.write_text(lines(8))  # four more lines, one of them in the same second as the last seen
            await asyncio.sleep(1.1)
            outputs.append((await reader.wanted(spec, [trial], pods, observed))["follow-0000"])
            [kept] = reader.kept.values()
            assert kept.text is None and not kept.pending
        finally:
            await api_client.close()
        return outputs

    first, second = asyncio.run(scenario())
    assert [s.step for s in first.history] == [1, 2, 3, 4]
    assert [s.step for s in second.history] == [1, 2, 3, 4, 5, 6, 7, 8]  # each line once
    assert second.latest["loss"].timestamp == base.format(2, "2" * 9)
    assert "tail_lines" in asked[0] and asked[1]["since_time"] == "2024-05-01T12:00:01.111111111Z"
