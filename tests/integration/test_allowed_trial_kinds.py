"""Trial kinds are the platform team's choice (the chart's trialKinds), not a tenant's: an Experiment
naming another kind is refused at `kubectl apply` by the chart's ValidatingAdmissionPolicy, with
the operator's own message; without the policy the operator refuses it at once (InvalidSpec) and
never watches that kind; and a kind's watch that the operator's RBAC forbids marks the experiments
that need it, spares the others and the liveness probe, and recovers once granted.

The operator runs on the host as the chart's ServiceAccount (namespace mode, the chart's RBAC), with
its Deployment's arguments and environment (tests/support/chart.py ChartOperator). The policy is bound to
the test's namespace only, and removed at teardown: other tests share the cluster."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from hpo_operator.api import trial_kinds
from hpo_operator.api.template import TrialTemplate
from tests.support.chart import CHART, ChartOperator
from tests.support.experiments import GROUP, VERSION, as_job, experiment, loss_is_x, x_space
from tests.support.kube import Cluster, wait_until

REPO = Path(__file__).resolve().parents[2]
JOB_EXAMPLE = REPO / "examples" / "job-trials.yaml"
X = x_space(10)
JOB_ALLOWED = json.dumps([{"apiGroup": "batch", "resource": "jobs", "kind": "Job"}])
# The liveness limit in these tests: a watch down this long fails the probe, if it counts.
LIVENESS_LIMIT = 3
# How long the probe is watched past the limit: kopf keeps its probes' answers for 10 s.
PAST_THE_LIMIT = LIVENESS_LIMIT + 10 + 3


class Release:
    """The chart installed in the test's namespace, in namespace mode, without operator pods (the
    operator runs on the host); uninstalled at teardown, its cluster-scoped objects with it."""

    def __init__(self, helm, kubectl, kubeconfig: str, namespace: str):
        self.helm, self.kubectl, self.kubeconfig, self.namespace = helm, kubectl, kubeconfig, namespace
        self.name = f"hpo-kinds-{uuid.uuid4().hex[:6]}"
        self.policy = f"{self.name}-hpo-operator-trial-kinds.{namespace}"

    def install(self, *values: str, verb: str = "install") -> None:
        base = ["watch.scope=namespace", "replicaCount=0"]
        self.helm.run(
            *(verb, self.name, str(CHART), "--kubeconfig", self.kubeconfig, "--namespace", self.namespace),
            *[a for v in (*base, *values) for a in ("--set", v)],
        )

    def remove(self) -> None:
        self.helm.remove(self.name, self.kubeconfig, self.namespace, self.kubectl)


@pytest.fixture
def release(helm, kubectl, kubeconfig, namespace, crds):
    r = Release(helm, kubectl, kubeconfig, namespace)
    yield r
    r.remove()


class LivenessProbe:
    """Polls the operator's liveness endpoint twice a second, as a kubelet would, and keeps every
    answer (0: no answer)."""

    def __init__(self, operator: ChartOperator):
        self.operator = operator
        self.answers: list[tuple[float, int]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            self.answers.append((time.monotonic(), self.operator.liveness()))

    def stop(self) -> list[int]:
        self.stopping.set()
        self.thread.join(timeout=10)
        return [status for _, status in self.answers]


def with_template(body: dict, template: dict) -> dict:
    body = json.loads(json.dumps(body))
    body["spec"]["trialTemplate"] = template
    return body


def resource_template(api_version: str, kind: str, conditions: bool = True) -> dict:
    return {
        "resource": {
            "apiVersion": api_version,
            "kind": kind,
            "manifest": {"spec": {}},
            **({"successCondition": {"type": "Done"}, "failureCondition": {"type": "Failed"}} if conditions else {}),
        }
    }


def refusal_of(template: dict) -> str:
    message = trial_kinds.refusal(TrialTemplate.model_validate(template), trial_kinds.parse_allowed("[]"))
    assert message is not None
    return message


def test_the_charts_policy_refuses_a_kind_not_enabled_at_apply_with_the_operators_message(
    release, kubectl, api, namespace
):
    cluster = Cluster(api, namespace)
    example = yaml.safe_load(JOB_EXAMPLE.read_text())
    # Made before the platform turned the policy on: it must stay editable and deletable.
    # (No operator runs in this test, so no admission webhook either: tenancy off.)
    release.install("trialKindsPolicy.enabled=false", "tenancy.enabled=false")
    before = {**example, "metadata": {"name": "made-before"}}
    cluster.create(before)
    release.install("trialKindsPolicy.enabled=true", "tenancy.enabled=false", verb="upgrade")
    binding = json.loads(kubectl.run("get", "validatingadmissionpolicybinding", release.policy, "-o", "json").stdout)
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]["values"] == [namespace]

    job_message = refusal_of(example["spec"]["trialTemplate"])
    assert job_message == (
        "trial kind Job (batch) is not enabled by the platform: "
        "add {apiGroup: batch, resource: jobs} to the hpo-operator chart's trialKinds"
    )
    # The API server takes a moment to load a new policy and its binding (dry runs until then: an
    # experiment made meanwhile would be updated, not created, by the next apply).
    dry_run = ("apply", "--dry-run=server", "-n", namespace, "-f", str(JOB_EXAMPLE))
    wait_until(
        lambda: kubectl.run(*dry_run, check=False).returncode,
        timeout=30,
        what="kubectl apply of the Job example to be refused",
    )
    applied = kubectl.run("apply", "-n", namespace, "-f", str(JOB_EXAMPLE), check=False)
    assert applied.returncode != 0 and job_message in applied.stderr, applied.stderr
    assert "forbidden" in applied.stderr.lower()
    with pytest.raises(client.ApiException):
        cluster.get("job-trials")

    # The expressions type-check against the Experiment's schema (the API server says so in the status).
    def type_checked():
        policy = json.loads(kubectl.run("get", "validatingadmissionpolicy", release.policy, "-o", "json").stdout)
        return (policy.get("status") or {}).get("typeChecking")

    checked = wait_until(lambda: type_checked() is not None and [type_checked()], timeout=30, what="type checking")
    assert not checked[0].get("expressionWarnings"), checked

    # Every kind the chart knows, one it does not, and a core one: the API server's refusal and the
    # operator's are the same text (the message is spelled in api/trial_kinds.py, mirrored in CEL).
    for template in (
        resource_template("jobset.x-k8s.io/v1alpha2", "JobSet", conditions=False),
        resource_template("trainer.kubeflow.org/v1alpha1", "TrainJob", conditions=False),
        resource_template("example.org/v1", "TrainRun"),
        resource_template("v1", "ConfigMap"),
    ):
        body = with_template({**example, "metadata": {"name": "other-kind"}}, template)
        with pytest.raises(client.ApiException) as refused:
            cluster.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "experiments", body, dry_run="All"
            )
        assert refused.value.status == 403
        assert json.loads(refused.value.body)["message"].endswith(": " + refusal_of(template)), refused.value.body

    # Pods are always allowed, however written.
    pod_template = example["spec"]["trialTemplate"]["job"]["spec"]["template"]
    pods = with_template({**example, "metadata": {"name": "pods"}}, {"template": pod_template})
    cluster.create(pods)
    as_resource = with_template({**example, "metadata": {"name": "pods-2"}}, resource_template("v1", "Pod"))
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "experiments", as_resource, dry_run="All")
    # An update that turns a pod experiment into a Job one is refused too...
    to_job = {"spec": {"trialTemplate": {"template": None, "job": example["spec"]["trialTemplate"]["job"]}}}
    with pytest.raises(client.ApiException) as refused:
        cluster.patch("pods", to_job)
    assert job_message in json.loads(refused.value.body)["message"]
    # ... but one that keeps the kind of an experiment made before passes: it can be suspended,
    # labelled, fixed and deleted.
    cluster.patch("made-before", {"spec": {"suspend": True}, "metadata": {"labels": {"team": "a"}}})
    fixed = cluster.patch("made-before", {"spec": {"trialTemplate": {"job": None, "template": pod_template}}})
    assert "template" in fixed["spec"]["trialTemplate"] and "job" not in fixed["spec"]["trialTemplate"]
    cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "experiments", "made-before")

    # Uninstalled, the release leaves no policy behind, and the Job example applies again.
    release.remove()
    left = kubectl.run(
        "get",
        "validatingadmissionpolicy,validatingadmissionpolicybinding",
        "-l",
        f"app.kubernetes.io/instance={release.name}",
        "-o",
        "name",
    ).stdout
    assert not left.strip(), left
    wait_until(
        lambda: kubectl.run(*dry_run, check=False).returncode == 0,
        timeout=30,
        what="the Job example to be accepted without the policy",
    )


def test_without_the_policy_the_operator_refuses_the_kind_at_once_never_watches_it_and_stays_live(
    release, kubectl, kubeconfig, api, namespace, kwok_nodes, tmp_path
):
    release.install("trialKindsPolicy.enabled=false")
    operator = ChartOperator(
        kubectl,
        kubeconfig,
        namespace,
        release.name,
        tmp_path / "operator.log",
        env={"HPO_WATCH_DOWN_LIVENESS_SECONDS": str(LIVENESS_LIMIT)},
    )
    assert operator.chart_env["HPO_TRIAL_KINDS"] == "[]"  # the chart's default: pods only
    cluster = Cluster(api, namespace)
    operator.start()
    probe = None
    try:
        operator.wait_acting()
        probe = LivenessProbe(operator)
        kubectl.run("apply", "-n", namespace, "-f", str(JOB_EXAMPLE))
        applied = time.monotonic()

        def invalid():
            st = cluster.get("job-trials").get("status") or {}
            failed = next((c for c in st.get("conditions") or [] if c["type"] == "Failed"), None)
            return st.get("phase") == "Failed" and failed and failed["reason"] == "InvalidSpec" and failed

        failed = wait_until(invalid, timeout=30, what="the experiment to be refused as InvalidSpec")
        seconds = time.monotonic() - applied
        message = trial_kinds.not_enabled(("batch", "Job"))
        assert failed["message"] == message
        [event] = cluster.events("InvalidSpec")
        assert (event.type, event.message) == ("Warning", message)
        assert not cluster.trials()
        # Past the liveness limit, and more: the probe never failed.
        time.sleep(PAST_THE_LIMIT)
        answers = probe.stop()
        assert answers and set(answers) == {200}, answers
        # No Job was ever listed or watched: the operator's metrics know every informer it ran.
        watched = {k for k in operator.metrics() if k.startswith("hpo_watch_last_event_age_seconds")}
        assert watched and not [k for k in watched if 'resource="jobs"' in k], watched

        # Fixed (its trials as pods), the same experiment goes on.
        pod_template = yaml.safe_load(JOB_EXAMPLE.read_text())["spec"]["trialTemplate"]["job"]["spec"]["template"]
        cluster.patch(
            "job-trials",
            {
                "spec": {
                    "maxTrialCount": 2,
                    "parallelTrialCount": 2,
                    "trialTemplate": {"job": None, "template": pod_template},
                }
            },
        )
        # (Still Failed from the refusal until the operator sees the edit: wait for its end.)
        wait_until(
            lambda: (cluster.get("job-trials").get("status") or {}).get("phase") == "Succeeded",
            timeout=90,
            what="the fixed experiment to succeed",
        )
        assert len(cluster.trials()) == 2
    finally:
        if probe is not None:
            probe.stop()
        operator.stop()
    log = operator.log()
    print(f"refused as InvalidSpec {seconds:.1f} s after kubectl apply")
    assert "jobs in namespace" not in log and "forbidden" not in log.lower(), log
    assert "Traceback" not in log, log


def test_a_forbidden_watch_marks_its_experiment_spares_the_others_and_liveness_and_recovers_once_granted(
    release, kubectl, kubeconfig, api, namespace, kwok_nodes, tmp_path
):
    """Job trials allowed (HPO_TRIAL_KINDS names them), but the chart's RBAC grants no Jobs:
    the Job watch is refused."""
    release.install("trialKindsPolicy.enabled=false")
    operator = ChartOperator(
        kubectl,
        kubeconfig,
        namespace,
        release.name,
        tmp_path / "operator.log",
        env={
            "HPO_TRIAL_KINDS": JOB_ALLOWED,
            "HPO_WATCH_DOWN_LIVENESS_SECONDS": str(LIVENESS_LIMIT),
            # The refused watch is retried after 1-2 s, growing to 10-20 s (30-60 s to 5-10 min by default).
            "HPO_WATCH_FORBIDDEN_BACKOFF_SECONDS": "1",
        },
    )
    cluster = Cluster(api, namespace)
    operator.start()
    probe = None
    try:
        operator.wait_acting()
        probe = LivenessProbe(operator)
        cluster.create(as_job(experiment("jobs", X, annotations=loss_is_x(), max_trials=2, parallel=2)))
        cluster.create(experiment("pods", X, annotations=loss_is_x(), max_trials=4, parallel=2))

        def forbidden():
            st = cluster.get("jobs").get("status") or {}
            cond = next((c for c in st.get("conditions") or [] if c["type"] == "WorkloadsWatched"), None)
            return cond and cond["status"] == "False" and cond

        cond = wait_until(forbidden, timeout=30, what="the Job experiment to say its watch is forbidden")
        refused_at = time.monotonic()
        assert cond["reason"] == "WatchForbidden"
        assert f"may not watch jobs.batch in namespace {namespace} (403)" in cond["message"]
        assert "add {apiGroup: batch, resource: jobs}" in cond["message"]
        [event] = cluster.events("WatchForbidden")
        assert (event.type, event.message) == ("Warning", cond["message"])
        assert not [t for t in cluster.trials() if t.startswith("jobs-")]

        # The pod experiment in the same namespace runs to its end meanwhile.
        exp = cluster.wait_finished("pods", timeout=90)
        assert exp["status"]["phase"] == "Succeeded", exp["status"]
        time.sleep(max(0.0, refused_at + PAST_THE_LIMIT - time.monotonic()))
        answers = probe.stop()
        assert answers and set(answers) == {200}, answers
        assert cluster.get("jobs")["status"].get("phase") == "Created"
        assert len(cluster.wait_events("WatchForbidden")) == 1  # retried, said once

        # The platform grants Jobs (the chart's trialKinds): the experiment goes on by itself.
        granted = time.monotonic()
        release.install(
            "trialKindsPolicy.enabled=false",
            "trialKinds[0].apiGroup=batch",
            "trialKinds[0].resource=jobs",
            verb="upgrade",
        )
        exp = cluster.wait_finished("jobs", timeout=120)
        assert exp["status"]["phase"] == "Succeeded", exp["status"]
        watched = next(c for c in exp["status"]["conditions"] if c["type"] == "WorkloadsWatched")
        assert (watched["status"], watched["reason"]) == ("True", "Watched")
        jobs = client.BatchV1Api(api).list_namespaced_job(namespace).items
        assert sorted(j.metadata.name for j in jobs) == ["jobs-0000", "jobs-0001"]
        print(f"the Job experiment finished {time.monotonic() - granted:.1f} s after the grant")
    finally:
        if probe is not None:
            probe.stop()
        operator.stop()
    assert "Traceback" not in operator.log(), operator.log()
