"""Sharing a cluster: nothing is created with more rights than its author has.

The chart as installed (tenancy on, its default; namespace mode), with the operator run on this host
as the chart's ServiceAccount and its admission webhook called by the real API server. Tenants are
ServiceAccounts with their own RBAC, acting through kubectl with their own tokens:

- "limited" may create Experiments and Trials, and patch Trials, but not pods;
- "powerful" is bound to the `edit` ClusterRole (a trial pod running as it could do much);
- the test's admin may do anything.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support import kube
from tests.support.chart import CHART, ChartOperator, token_kubeconfig
from tests.support.experiments import GROUP, VERSION, experiment, loss_is_x, x_space

RUNNER = "hpo-trial-runner"  # the chart's tenancy.trialServiceAccount


@dataclass
class Tenancy:
    """The installed chart's tenancy in the test's namespace, and the operator serving it."""

    kubectl: kube.Kubectl
    kubeconfig: str
    namespace: str
    release: str
    operator: kube.OperatorProcess
    tmp: Path

    def account(self, name: str, rules: list[dict] | None = None, cluster_role: str | None = None) -> kube.Kubectl:
        """A ServiceAccount with these rules (or that ClusterRole) in the namespace, as kubectl."""
        ns = self.namespace
        self.kubectl.run("create", "serviceaccount", name, "-n", ns)
        if rules is not None:
            role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name}}
            self.kubectl.apply({**role, "rules": rules}, namespace=ns)
            self.kubectl.run("create", "rolebinding", name, f"--role={name}", f"--serviceaccount={ns}:{name}", "-n", ns)
        if cluster_role is not None:
            self.kubectl.run(
                "create",
                "rolebinding",
                name,
                f"--clusterrole={cluster_role}",
                f"--serviceaccount={ns}:{name}",
                "-n",
                ns,
            )
        token = self.kubectl.run("create", "token", name, "-n", ns, "--duration=1h").stdout.strip()
        path = self.tmp / f"{name}.kubeconfig"
        return kube.Kubectl(self.kubectl.binary, token_kubeconfig(self.kubeconfig, token, path))

    def user(self, name: str) -> str:
        return f"system:serviceaccount:{self.namespace}:{name}"


EXPERIMENTS_AND_TRIALS = [
    {"apiGroups": [GROUP], "resources": ["experiments", "trials"], "verbs": ["get", "list", "watch", "create", "patch"]}
]


@pytest.fixture
def tenancy(helm, kubectl, kubeconfig, api, namespace, crds, kwok_nodes, tmp_path):
    """The chart installed in `namespace` (no operator pod: it runs here), the operator as its
    ServiceAccount with the Deployment's arguments and environment, and its webhook served here."""
    release = f"hpo-ten-{uuid.uuid4().hex[:6]}"
    helm.run(
        "install", release, str(CHART), "--kubeconfig", kubeconfig, "--namespace", namespace,
        "--set", "watch.scope=namespace", "--set", "replicaCount=0",
    )  # fmt: skip
    operator = None
    try:
        operator = ChartOperator(kubectl, kubeconfig, namespace, release, tmp_path / "operator.log")
        assert operator.chart_env["HPO_TRIAL_SERVICE_ACCOUNT"] == RUNNER
        assert (
            operator.chart_env["HPO_OPERATOR_USERNAME"] == f"system:serviceaccount:{namespace}:{release}-hpo-operator"
        )
        assert operator.webhook is not None
        operator.start()
        # The webhook answers once an Experiment can be written at all (its configuration fails closed).
        probe = experiment("probe", x_space(), annotations={}, max_trials=1)
        kube.wait_until(
            lambda: (
                kubectl.run(
                    "create", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(probe), check=False
                ).returncode
                == 0
            ),
            timeout=60,
            what="the operator's admission webhook to answer",
        )
        yield Tenancy(kubectl, kubeconfig, namespace, release, operator, tmp_path)
    finally:
        if operator is not None:
            operator.stop()
        helm.remove(release, kubeconfig, namespace, kubectl)


def hostile(name: str, **spec: object) -> dict:
    """An experiment whose pods would run as the powerful account with the node's /etc mounted."""
    body = experiment(
        name,
        x_space(),
        annotations=loss_is_x(),
        max_trials=4,
        maxFailedTrialCount=1,  # the experiment fails with more than one failed
        **spec,
    )
    pod = body["spec"]["trialTemplate"]["template"]["spec"]
    pod["serviceAccountName"] = "powerful"
    pod["volumes"] = [{"name": "etc", "hostPath": {"path": "/etc"}}]
    pod["containers"][0]["volumeMounts"] = [{"name": "etc", "mountPath": "/host-etc"}]
    # A client's claim to be someone else is worth nothing.
    body["metadata"]["annotations"] = {"hpo.dev/creator": "admin", "hpo.dev/author": '{"username":"admin"}'}
    return body


def apply_as(who: kube.Kubectl, namespace: str, body: dict) -> None:
    who.run("create", "-n", namespace, "-f", "-", input=yaml.safe_dump(body))


def test_a_tenant_who_may_not_create_pods_gets_no_pod_from_its_experiment(tenancy, api, namespace):
    tenancy.account("powerful", cluster_role="edit")
    limited = tenancy.account("limited", EXPERIMENTS_AND_TRIALS)
    assert limited.run("auth", "can-i", "create", "pods", "-n", namespace, check=False).stdout.strip() == "no"
    apply_as(limited, namespace, hostile("escalate"))
    cluster = kube.Cluster(api, namespace)
    exp = cluster.wait_finished("escalate", timeout=60)
    # The API server's word on who wrote it, whatever the manifest claimed.
    me = tenancy.user("limited")
    annotations = exp["metadata"]["annotations"]
    assert annotations["hpo.dev/creator"] == me
    assert json.loads(annotations["hpo.dev/author"])["username"] == me
    assert exp["status"]["phase"] == "Failed"
    trials = cluster.trials()
    assert len(trials) == 2, {n: (t["status"].get("phase"), t["status"].get("reason")) for n, t in trials.items()}
    for t in trials.values():
        st = t["status"]
        assert (st["phase"], st["reason"], st["failureClass"]) == ("Failed", "Forbidden", "Startup")
        assert st["message"].startswith(f"{me} may not create pods in namespace {namespace}")
    assert cluster.pods() == {}
    assert len(cluster.wait_events("TrialForbidden", 2)) == 2
    assert not tenancy.operator.refused_own_requests()


def test_pod_security_refuses_the_pod_made_as_the_trial_account(tenancy, api, kubectl, namespace):
    """The author may create pods (the admin), but the pod is created as the namespace's trial
    account, so admission judges it: Pod Security's baseline level refuses its hostPath."""
    kubectl.run("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=baseline")
    tenancy.account("powerful", cluster_role="edit")
    cluster = kube.Cluster(api, namespace)
    cluster.create(hostile("hostpath"))
    cluster.wait_finished("hostpath", timeout=60)
    trials = cluster.trials()
    assert len(trials) == 2
    for t in trials.values():
        st = t["status"]
        assert (st["phase"], st["reason"]) == ("Failed", "Forbidden"), st
        assert f"created as {tenancy.user(RUNNER)}" in st["message"]
        assert "violates PodSecurity" in st["message"] and "hostPath" in st["message"]
    assert cluster.pods() == {}


def test_the_api_server_holds_the_trial_account_to_its_own_rbac(tenancy, api, kubectl, namespace):
    """An author who may create pods (the admin) gets trials that run; without the chart's
    RoleBinding for the trial account, the next one gets no pod: the operator creates nothing with
    its own rights."""
    cluster = kube.Cluster(api, namespace)
    params = x_space()
    ok = experiment("runs", params, annotations=loss_is_x(), max_trials=2)
    cluster.create(ok)
    assert cluster.wait_finished("runs", timeout=60)["status"]["phase"] == "Succeeded"
    assert len(cluster.pods()) == 2
    kubectl.run("delete", "rolebinding", f"{tenancy.release}-hpo-operator-trial-runner", "-n", namespace)
    cluster.create(experiment("refused", params, annotations={}, max_trials=1))
    trial = cluster.wait_trial("refused-0000", ("Failed",), timeout=60)
    assert trial["status"]["reason"] == "Forbidden"
    assert f'User "{tenancy.user(RUNNER)}" cannot create resource "pods"' in trial["status"]["message"]
    assert "refused-0000" not in cluster.pods()


def test_a_restart_or_a_trial_asked_for_by_a_tenant_without_pod_rights_gets_no_pod(tenancy, api, namespace):
    """The admin's experiment runs; a tenant who may patch and create Trials but not pods asks for a
    restart and for a configuration of its own: both are checked against that tenant's rights, not
    the experiment author's."""
    cluster = kube.Cluster(api, namespace)
    params = x_space()
    body = experiment("shared", params, annotations={"sim.hpo.dev/exit-code": "1"}, max_trials=1)
    cluster.create(body)
    assert cluster.wait_trial("shared-0000", ("Failed",))["status"]["reason"] != "Forbidden"
    limited = tenancy.account("limited", EXPERIMENTS_AND_TRIALS)
    limited.run("annotate", "trial", "shared-0000", "-n", namespace, "hpo.dev/restart=please")
    rerun = cluster.wait_trial("shared-0000-a2", ("Failed",), timeout=60)
    me = tenancy.user("limited")
    assert rerun["status"]["reason"] == "Forbidden"
    assert rerun["status"]["message"].startswith(f"{me} may not create pods")
    asked = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Trial",
        "metadata": {"name": "mine"},
        "spec": {"experimentName": "shared", "parameters": [{"name": "x", "value": "0.25"}]},
    }
    apply_as(limited, namespace, asked)
    mine = cluster.wait_trial("mine", ("Failed", "Refused"), timeout=60)
    assert (mine["status"]["phase"], mine["status"]["reason"]) == ("Failed", "Forbidden")
    assert mine["status"]["message"].startswith(f"{me} may not create pods")
    assert set(cluster.pods()) == {"shared-0000"}
