"""The Helm chart (deploy/helm/hpo-operator): lint, rendering in both RBAC modes, the values schema,
an install on the real cluster, and the RBAC proof: the operator runs an experiment to completion
authenticated as the chart's ServiceAccount, with nothing refused and nothing more granted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from hpo_operator.api import trial_kinds
from tests.support import kube
from tests.support.chart import CHART, Helm, token_kubeconfig
from tests.support.experiments import GROUP, VERSION, experiment, loss_is_x, x_space

REPO = Path(__file__).resolve().parents[2]

# What the operator does, verb by verb (see templates/_helpers.tpl for why each is needed).
OWN_KINDS_RULES = {
    ("hpo.dev", "experiments"): {"get", "list", "watch"},
    ("hpo.dev", "experiments/status"): {"get", "patch"},
    ("hpo.dev", "trials"): {"get", "list", "watch", "create", "patch"},
    ("hpo.dev", "trials/status"): {"get", "patch"},
    ("hpo.dev", "experiments/finalizers"): {"update"},
    ("hpo.dev", "trials/finalizers"): {"update"},
    ("", "events"): {"create"},
}
# With tenancy (the default): trials' workloads are only watched; they are written and read as the
# namespace's trial ServiceAccount, which the operator may impersonate, after asking about their author.
NAMESPACED_RULES = {
    **OWN_KINDS_RULES,
    ("", "pods"): {"get", "list", "watch"},
    ("", "persistentvolumeclaims"): {"get", "list", "watch"},
    ("", "serviceaccounts[hpo-trial-runner]"): {"impersonate"},
    ("authorization.k8s.io", "localsubjectaccessreviews"): {"create"},
}
# tenancy.enabled=false: the operator writes trials' workloads with its own rights.
OWN_RIGHTS_RULES = {
    **OWN_KINDS_RULES,
    ("", "pods"): {"get", "list", "watch", "create", "delete"},
    ("", "persistentvolumeclaims"): {"get", "list", "watch", "create", "delete"},
    ("", "pods/log"): {"get"},
}
# What the trial ServiceAccount of a namespace may do (the ClusterRole its RoleBinding names).
TRIAL_RUNNER_RULES = {
    ("", "pods"): {"get", "create", "delete"},
    ("", "persistentvolumeclaims"): {"get", "create", "delete"},
    ("", "pods/log"): {"get"},
    ("hpo.dev", "experiments/finalizers"): {"update"},
    ("hpo.dev", "trials/finalizers"): {"update"},
}
# Cluster-wide mode only: kopf's resource observer watches CRDs.
CRD_RULES = {("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"}}
CLUSTER_RULES = {**NAMESPACED_RULES, **CRD_RULES}

HARDENED_CONTAINER = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
# The leader-election Role: its one Lease, in the release namespace, and nothing else.
LEASE_RULES = [
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": ["hpo-hpo-operator"],
        "verbs": ["get", "update"],
    },
]
# The trial-kinds admission policy and its binding, on by default.
POLICY = ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
LABEL_KEYS = {f"app.kubernetes.io/{k}" for k in ("name", "instance", "version", "component", "part-of", "managed-by")}


def only(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects rendered"
    return found[0]


def kinds(docs: list[dict]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def rules_of(role: dict) -> dict[tuple[str, str], set[str]]:
    """Rules as {(apiGroup, resource): verbs}, a rule's resourceNames in brackets after its
    resource; no wildcards, no duplicates."""
    result: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule, rule
        names = f"[{','.join(rule['resourceNames'])}]" if "resourceNames" in rule else ""
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert "*" not in (group, resource) and "*" not in rule["verbs"], rule
                resource += names
                assert (group, resource) not in result, f"{group}/{resource} appears twice"
                result[(group, resource)] = set(rule["verbs"])
    return result


def is_lease_role(doc: dict) -> bool:
    return doc["metadata"]["name"].endswith("-leader-election")


def is_tenancy(doc: dict) -> bool:
    """One of templates/tenancy.yaml's objects (tested on their own below)."""
    name = doc["metadata"]["name"]
    return name.endswith(("-admission", "-author", "-trial-runner")) or name == "hpo-trial-runner"


def rendered(helm: Helm, *values: str) -> list[dict]:
    """The chart's objects but those of tenancy.yaml."""
    return [d for d in helm.template(*values) if not is_tenancy(d)]


def watch_roles(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in ("Role", "ClusterRole") and not is_lease_role(d) and not is_tenancy(d)]


def container(deployment: dict) -> dict:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def env_of(deployment: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container(deployment).get("env", [])}


def check_deployment(dep: dict) -> None:
    spec = dep["spec"]
    assert spec["replicas"] == 1
    # Leader election is on: new pods may start before old ones stop (they stand by).
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert env_of(dep)["HPO_LEADER_ELECTION_LEASE"] == "hpo-system/hpo-hpo-operator"
    pod_name = next(e for e in container(dep)["env"] if e["name"] == "POD_NAME")
    assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    pod = spec["template"]["spec"]
    c = container(dep)
    assert "--standalone" in c["args"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"health": 8080, "metrics": 9090, "admission": 9443}
    for key, value in HARDENED_CONTAINER.items():
        assert c["securityContext"][key] == value, f"securityContext.{key}"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert isinstance(pod["securityContext"]["runAsUser"], int) and pod["securityContext"]["runAsUser"] > 0
    assert set(c["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"]
    # The root filesystem is read-only: /tmp is a volume.
    assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])
    assert env_of(dep)["HPO_METRICS_PORT"] == "9090"
    assert pod["serviceAccountName"] == "hpo-hpo-operator"
    assert LABEL_KEYS <= set(spec["template"]["metadata"]["labels"])


def check_labels(docs: list[dict], release: str = "hpo") -> None:
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert LABEL_KEYS <= set(labels), f"{doc['kind']} lacks {LABEL_KEYS - set(labels)}"
        assert labels["app.kubernetes.io/instance"] == release
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"


# --- lint and render --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["--set", "watch.scope=namespace"],
        ["--set", "metrics.serviceMonitor.enabled=true"],
        ["--set", "dashboard.enabled=true"],
        ["--set", "dashboard.enabled=true", "--set", "watch.scope=namespace"],
        ["--set", "trialKinds[0].apiGroup=batch", "--set", "trialKinds[0].resource=jobs"],
        ["--set", "trialKindsPolicy.enabled=false"],
        ["--set", "networkPolicy.enabled=true", "--set", "networkPolicy.apiServer.cidrs={10.0.0.5/32}"],
        [
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "networkPolicy.apiServer.cidrs={10.0.0.5/32}",
            "--set",
            "dashboard.enabled=true",
            "--set",
            "networkPolicy.dashboard.from[0].namespaceSelector.matchLabels.team=ingress",
        ],
    ],
)
def test_lint_passes(helm, values):
    out = helm.run("lint", "--strict", str(CHART), *values).stdout
    assert "0 chart(s) failed" in out


def test_cluster_scope_renders_a_cluster_role_and_watches_all_namespaces(helm):
    docs = rendered(helm)
    assert kinds(docs) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Lease",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        *POLICY,
    ]
    check_labels(docs)
    dep = only(docs, "Deployment")
    check_deployment(dep)
    args = container(dep)["args"]
    assert "--all-namespaces" in args and not any(a.startswith("--namespace") for a in args)
    assert "HPO_CLUSTER_SCANNING" not in env_of(dep)
    assert rules_of(only(docs, "ClusterRole")) == CLUSTER_RULES
    binding = only(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "hpo-hpo-operator",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hpo-hpo-operator", "namespace": "hpo-system"}]
    service = only(docs, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    assert service["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("watched", [[], ["team-a", "team-b"]])
def test_namespace_scope_renders_roles_and_watches_only_those_namespaces(helm, watched):
    values = ["--set", "watch.scope=namespace"]
    if watched:
        values += ["--set", "watch.namespaces={" + ",".join(watched) + "}"]
    docs = rendered(helm, *values)
    expected = watched or ["hpo-system"]
    assert kinds(docs) == sorted(
        ["Deployment", "Lease", "Service", "ServiceAccount", *POLICY] + ["Role", "RoleBinding"] * (len(expected) + 1)
    )
    check_labels(docs)
    dep = only(docs, "Deployment")
    check_deployment(dep)
    args = container(dep)["args"]
    assert "--all-namespaces" not in args
    assert [a for a in args if a.startswith("--namespace")] == [f"--namespace={ns}" for ns in expected]
    assert env_of(dep)["HPO_CLUSTER_SCANNING"] == "false"
    roles = watch_roles(docs)
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(expected)
    for role in roles:
        assert rules_of(role) == NAMESPACED_RULES
    for binding in (d for d in docs if d["kind"] == "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "hpo-hpo-operator", "namespace": "hpo-system"}
        ]


def test_leader_election_role_and_its_switch(helm):
    docs = rendered(helm)
    (role,) = [d for d in docs if d["kind"] == "Role" and is_lease_role(d)]
    assert role["metadata"]["namespace"] == "hpo-system"
    assert role["rules"] == LEASE_RULES
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding" and is_lease_role(d)]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    lease = only(docs, "Lease")  # Helm's, so that uninstall removes it; the operator never creates one
    assert (lease["metadata"]["namespace"], lease["metadata"]["name"]) == ("hpo-system", "hpo-hpo-operator")

    docs = rendered(helm, "--set", "leaderElection.enabled=false")
    assert kinds(docs) == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount", *POLICY]
    dep = only(docs, "Deployment")
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    assert "HPO_LEADER_ELECTION_LEASE" not in env_of(dep)

    dep = only(
        rendered(helm, "--set", "replicaCount=2", "--set", "apiServer.host=10.9.8.7", "--set", "apiServer.port=6443"),
        "Deployment",
    )
    assert dep["spec"]["replicas"] == 2
    assert env_of(dep)["KUBERNETES_SERVICE_HOST"] == "10.9.8.7" and env_of(dep)["KUBERNETES_SERVICE_PORT"] == "6443"
    assert "KUBERNETES_SERVICE_HOST" not in env_of(only(rendered(helm), "Deployment"))


@pytest.mark.parametrize(
    "values, error",
    [
        (["replicaCount=2", "leaderElection.enabled=false"], "replicaCount > 1 needs leaderElection.enabled"),
        (
            ["leaderElection.renewDeadlineSeconds=20"],
            "retryPeriodSeconds < renewDeadlineSeconds < leaseDurationSeconds",
        ),
        (["apiServer.host=10.0.0.9"], "apiServer.port is needed"),
        (
            ["trialKinds[0].apiGroup=kubeflow.org", "trialKinds[0].resource=pytorchjobs"],
            "trialKinds: the chart does not know the kind of pytorchjobs in kubeflow.org: give it, e.g. "
            "{apiGroup: kubeflow.org, resource: pytorchjobs, kind: TrainRun}",
        ),
        (
            ["trialKinds[0].apiGroup=batch", "trialKinds[0].resource=jobs", "trialKinds[0].kind=CronJob"],
            "trialKinds: jobs of batch are kind Job, not CronJob",
        ),
        (["networkPolicy.enabled=true"], "networkPolicy.apiServer.cidrs is needed with networkPolicy.enabled"),
    ],
)
def test_chart_refuses_inconsistent_values(helm, values, error):
    proc = helm.run("template", "hpo", str(CHART), *[a for v in values for a in ("--set", v)], check=False)
    assert proc.returncode != 0 and error in proc.stderr, proc.stderr


def test_trial_kinds_grow_the_rbac_by_exactly_those_kinds(helm):
    for scope in ("cluster", "namespace"):
        docs = rendered(
            helm,
            "--set",
            f"watch.scope={scope}",
            "--set",
            "trialKinds[0].apiGroup=batch",
            "--set",
            "trialKinds[0].resource=jobs",
            "--set",
            "trialKinds[1].apiGroup=jobset.x-k8s.io",
            "--set",
            "trialKinds[1].resource=jobsets",
        )
        base = CLUSTER_RULES if scope == "cluster" else NAMESPACED_RULES
        # Watched by the operator; written by the trial account (the tenancy tests below).
        for role in watch_roles(docs):
            assert rules_of(role) == {
                **base,
                ("batch", "jobs"): {"get", "list", "watch"},
                ("jobset.x-k8s.io", "jobsets"): {"get", "list", "watch"},
            }
    proc = helm.run("template", "hpo", str(CHART), "--set", "trialKinds[0].apiGroup=batch", check=False)
    assert proc.returncode != 0 and "resource" in proc.stderr


def test_trainjob_trials_may_also_read_training_runtimes_and_nothing_else_cluster_scoped(helm):
    trainjobs = ("--set", "trialKinds[0].apiGroup=trainer.kubeflow.org", "--set", "trialKinds[0].resource=trainjobs")
    for scope in ("cluster", "namespace"):
        docs = rendered(helm, "--set", f"watch.scope={scope}", *trainjobs)
        base = CLUSTER_RULES if scope == "cluster" else NAMESPACED_RULES
        extra = {("trainer.kubeflow.org", "clustertrainingruntimes"): {"get"}} if scope == "cluster" else {}
        for role in [r for r in watch_roles(docs) if not r["metadata"]["name"].endswith("-training-runtimes")]:
            assert rules_of(role) == {
                **base,
                ("trainer.kubeflow.org", "trainjobs"): {"get", "list", "watch"},
                ("trainer.kubeflow.org", "trainingruntimes"): {"get"},
                **extra,
            }
        runtimes = [d for d in docs if d["metadata"]["name"].endswith("-training-runtimes")]
        if scope == "cluster":
            assert runtimes == []  # the ClusterRole has it
        else:
            role, binding = only(runtimes, "ClusterRole"), only(runtimes, "ClusterRoleBinding")
            assert rules_of(role) == {("trainer.kubeflow.org", "clustertrainingruntimes"): {"get"}}
            assert binding["roleRef"]["name"] == role["metadata"]["name"]
    # Without TrainJob trials, no such ClusterRole.
    docs = rendered(helm, "--set", "watch.scope=namespace")
    assert not [d for d in docs if d["metadata"]["name"].endswith("-training-runtimes")]


# trialKinds as a platform team writes them: the three kinds the chart knows, and one it does not.
TRIAL_KINDS = [
    "--set",
    "trialKinds[0].apiGroup=batch",
    "--set",
    "trialKinds[0].resource=jobs",
    "--set",
    "trialKinds[1].apiGroup=jobset.x-k8s.io",
    "--set",
    "trialKinds[1].resource=jobsets",
    "--set",
    "trialKinds[2].apiGroup=trainer.kubeflow.org",
    "--set",
    "trialKinds[2].resource=trainjobs",
    "--set",
    "trialKinds[3].apiGroup=kubeflow.org",
    "--set",
    "trialKinds[3].resource=pytorchjobs",
    "--set",
    "trialKinds[3].kind=PyTorchJob",
]


def test_the_operator_is_told_the_trial_kinds_the_chart_enables(helm):
    # By default, pods only: the variable is set, to an empty list (unset would allow every kind).
    assert env_of(only(helm.template(), "Deployment"))["HPO_TRIAL_KINDS"] == "[]"
    assert trial_kinds.parse_allowed("[]") == {("", "Pod")}
    value = env_of(only(helm.template(*TRIAL_KINDS), "Deployment"))["HPO_TRIAL_KINDS"]
    given = json.loads(value)
    assert given == [
        {"apiGroup": "batch", "kind": "Job", "resource": "jobs"},
        {"apiGroup": "jobset.x-k8s.io", "kind": "JobSet", "resource": "jobsets"},
        {"apiGroup": "trainer.kubeflow.org", "kind": "TrainJob", "resource": "trainjobs"},
        {"apiGroup": "kubeflow.org", "kind": "PyTorchJob", "resource": "pytorchjobs"},
    ]
    # The kinds the chart knows by their resource are the operator's (api/trial_kinds.py).
    assert {(k["apiGroup"], k["kind"]): k["resource"] for k in given[:3]} == trial_kinds.KNOWN_RESOURCES
    # ... and the operator reads what the chart writes.
    assert trial_kinds.parse_allowed(value) == {
        ("", "Pod"),
        ("batch", "Job"),
        ("jobset.x-k8s.io", "JobSet"),
        ("trainer.kubeflow.org", "TrainJob"),
        ("kubeflow.org", "PyTorchJob"),
    }
    # Backwards compatible: the entries of before (no kind) grant the same RBAC as before (watching
    # to the operator, writing to the trial account).
    docs = helm.template(*TRIAL_KINDS)
    (rules,) = [rules_of(r) for r in watch_roles(docs)]
    assert rules[("kubeflow.org", "pytorchjobs")] == {"get", "list", "watch"}
    (runner,) = [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-trial-runner")]
    assert rules_of(runner)[("kubeflow.org", "pytorchjobs")] == {"get", "create", "delete"}


@pytest.mark.parametrize("scope, watched", [("cluster", []), ("namespace", []), ("namespace", ["team-a", "team-b"])])
def test_the_trial_kinds_policy_refuses_other_kinds_in_the_watched_namespaces(helm, scope, watched):
    values = ["--set", f"watch.scope={scope}", *TRIAL_KINDS[:4]]
    if watched:
        values += ["--set", "watch.namespaces={" + ",".join(watched) + "}"]
    docs = helm.template(*values)
    policy, binding = only(docs, "ValidatingAdmissionPolicy"), only(docs, "ValidatingAdmissionPolicyBinding")
    assert policy["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    name = "hpo-hpo-operator-trial-kinds.hpo-system"
    assert policy["metadata"]["name"] == binding["metadata"]["name"] == binding["spec"]["policyName"] == name
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["resourceRules"] == [
        {
            "apiGroups": ["hpo.dev"],
            "apiVersions": ["*"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["experiments"],
        }
    ]
    variables = {v["name"]: v["expression"] for v in spec["variables"]}
    assert variables["allowed"] == "['/Pod', 'batch/Job']"
    assert variables["known"] == (
        "{'batch/Job': 'jobs', 'jobset.x-k8s.io/JobSet': 'jobsets', 'trainer.kubeflow.org/TrainJob': 'trainjobs'}"
    )
    [rule] = spec["validations"]
    assert rule["reason"] == "Forbidden" and "messageExpression" in rule
    assert binding["spec"]["validationActions"] == ["Deny"]
    if scope == "cluster":
        assert "matchResources" not in binding["spec"]  # every namespace
    else:
        assert binding["spec"]["matchResources"] == {
            "namespaceSelector": {
                "matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "In", "values": watched or ["hpo-system"]}
                ]
            }
        }
    # Cluster-scoped, named per release and namespace: two releases' policies coexist.
    names = {
        only(helm.template(*values, release=r, namespace=n), "ValidatingAdmissionPolicy")["metadata"]["name"]
        for r, n in (("hpo", "hpo-system"), ("hpo", "team-c"), ("other", "hpo-system"))
    }
    assert len(names) == 3
    # The switch, for a cluster without the API: the operator is still told the kinds.
    docs = helm.template(*values, "--set", "trialKindsPolicy.enabled=false")
    assert not set(kinds(docs)) & set(POLICY)
    assert json.loads(env_of(only(docs, "Deployment"))["HPO_TRIAL_KINDS"])[0]["kind"] == "Job"


def test_kueue_enabled_lets_the_operator_set_its_trials_kueue_workloads_active(helm):
    for scope in ("cluster", "namespace"):
        base = CLUSTER_RULES if scope == "cluster" else NAMESPACED_RULES
        for role in watch_roles(rendered(helm, "--set", f"watch.scope={scope}")):
            assert rules_of(role) == base
        for role in watch_roles(rendered(helm, "--set", f"watch.scope={scope}", "--set", "kueue.enabled=true")):
            assert rules_of(role) == {**base, ("kueue.x-k8s.io", "workloads"): {"get", "list", "patch"}}


def test_values_switch_objects_on_and_off(helm):
    docs = rendered(helm, "--set", "rbac.create=false")
    assert kinds(docs) == ["Deployment", "Lease", "Service", "ServiceAccount", *POLICY]

    docs = rendered(helm, "--set", "serviceAccount.create=false", "--set", "serviceAccount.name=mine")
    assert "ServiceAccount" not in kinds(docs)
    assert only(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mine"
    assert only(docs, "ClusterRoleBinding")["subjects"][0]["name"] == "mine"

    docs = rendered(helm, "--set", "metrics.enabled=false")
    assert "Service" not in kinds(docs)
    dep = only(docs, "Deployment")
    assert "HPO_METRICS_PORT" not in env_of(dep)
    assert [p["name"] for p in container(dep)["ports"]] == ["health", "admission"]

    docs = rendered(helm, "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.port=9100")
    monitor = only(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert env_of(only(docs, "Deployment"))["HPO_METRICS_PORT"] == "9100"


def test_the_gp_flavour_runs_the_image_with_pytorch_unless_a_tag_is_given(helm):
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert container(only(rendered(helm), "Deployment"))["image"] == f"hpo-operator:{version}"
    dep = only(rendered(helm, "--set", "image.flavour=gp"), "Deployment")
    assert container(dep)["image"] == f"hpo-operator:{version}-gp"
    dep = only(rendered(helm, "--set", "image.flavour=gp", "--set", "image.tag=mine"), "Deployment")
    assert container(dep)["image"] == "hpo-operator:mine"


# --- tenancy -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scope, watched", [("cluster", []), ("namespace", ["team-a", "team-b"])])
def test_tenancy_renders_the_webhook_the_trial_account_and_the_operator_without_write_rights(helm, scope, watched):
    values = [
        "--set",
        f"watch.scope={scope}",
        "--set",
        "trialKinds[0].apiGroup=batch",
        "--set",
        "trialKinds[0].resource=jobs",
    ]
    if watched:
        values += ["--set", "watch.namespaces={" + ",".join(watched) + "}"]
    docs = helm.template(*values)
    check_labels(docs)
    mine = [d for d in docs if is_tenancy(d)]
    assert kinds(mine) == sorted(
        ["ClusterRole", "MutatingWebhookConfiguration", "Secret", "Service"]
        + ["RoleBinding", "ServiceAccount"] * len(watched)
    )
    operator_user = "system:serviceaccount:hpo-system:hpo-hpo-operator"
    (hook,) = only(mine, "MutatingWebhookConfiguration")["webhooks"]
    assert hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "None"
    assert hook["clientConfig"]["service"] == {
        "name": "hpo-hpo-operator-admission",
        "namespace": "hpo-system",
        "path": "/author",
        "port": 443,
    }
    assert hook["rules"] == [
        {
            "apiGroups": ["hpo.dev"],
            "apiVersions": ["*"],
            "resources": ["experiments", "trials"],
            "operations": ["CREATE", "UPDATE"],
            "scope": "Namespaced",
        }
    ]
    assert hook["matchConditions"] == [
        {"name": "not-the-operator", "expression": f'request.userInfo.username != "{operator_user}"'}
    ]
    if watched:
        assert hook["namespaceSelector"]["matchExpressions"] == [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": watched}
        ]
    else:
        assert "namespaceSelector" not in hook
    given = helm.template(*values, "--set", "tenancy.webhook.namespaceSelector.matchLabels.tenant=yes")
    (hook_given,) = only(given, "MutatingWebhookConfiguration")["webhooks"]
    assert hook_given["namespaceSelector"] == {"matchLabels": {"tenant": "yes"}}
    secret = only(mine, "Secret")
    assert set(secret["data"]) == {"ca.crt", "tls.crt", "tls.key", "author.key"}
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    runner = only(mine, "ClusterRole")
    assert rules_of(runner) == {**TRIAL_RUNNER_RULES, ("batch", "jobs"): {"get", "create", "delete"}}
    for account in (d for d in mine if d["kind"] == "ServiceAccount"):
        assert account["metadata"]["name"] == "hpo-trial-runner" and account["automountServiceAccountToken"] is False
    for binding in (d for d in mine if d["kind"] == "RoleBinding"):
        assert binding["roleRef"]["name"] == runner["metadata"]["name"]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "hpo-trial-runner", "namespace": binding["metadata"]["namespace"]}
        ]
    assert sorted(b["metadata"]["namespace"] for b in mine if b["kind"] == "RoleBinding") == watched
    dep = only(docs, "Deployment")
    env = env_of(dep)
    assert env["HPO_TRIAL_SERVICE_ACCOUNT"] == "hpo-trial-runner"
    assert env["HPO_OPERATOR_USERNAME"] == operator_user
    assert env["HPO_ADMISSION_PORT"] == "9443"
    for name in ("HPO_ADMISSION_CERT_FILE", "HPO_ADMISSION_KEY_FILE", "HPO_AUTHOR_KEY_FILE"):
        mount = next(m for m in container(dep)["volumeMounts"] if env[name].startswith(m["mountPath"]))
        assert mount["readOnly"] is True
    assert container(dep)["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "admission", "scheme": "HTTPS"}
    service = only([d for d in mine if d["kind"] == "Service"], "Service")
    assert service["spec"]["ports"] == [
        {"name": "admission", "port": 443, "targetPort": "admission", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_tenancy_off_leaves_the_operator_its_own_write_rights_and_no_webhook(helm):
    docs = helm.template("--set", "tenancy.enabled=false")
    assert not [d for d in docs if is_tenancy(d)]
    assert rules_of(only(docs, "ClusterRole")) == {**OWN_RIGHTS_RULES, **CRD_RULES}
    dep = only(docs, "Deployment")
    assert not [k for k in env_of(dep) if k.startswith(("HPO_ADMISSION", "HPO_AUTHOR", "HPO_TRIAL_SERVICE"))]
    assert "readinessProbe" not in container(dep)


@pytest.mark.parametrize(
    "values, error",
    [
        (["tenancy.existingSecret=mine"], "tenancy.existingSecret mine: give its ca.crt (base64) as tenancy.caBundle"),
        (["tenancy.webhook.port=9090"], "tenancy.webhook.port must differ"),
    ],
)
def test_tenancy_refuses_inconsistent_values(helm, values, error):
    proc = helm.run("template", "hpo", str(CHART), *[a for v in values for a in ("--set", v)], check=False)
    assert proc.returncode != 0 and error in proc.stderr, proc.stderr


# --- the dashboard -----------------------------------------------------------------------------

DASHBOARD_RULES = {
    ("hpo.dev", "experiments"): {"get", "list", "watch"},
    ("hpo.dev", "trials"): {"get", "list", "watch"},
}
# What the dashboard's authentication asks the API server (a ClusterRole of its own: reviews are
# cluster-scoped): whether a user may list experiments, and (mode token) who a token is.
REVIEW_RULES = {
    "token": {
        ("authorization.k8s.io", "subjectaccessreviews"): {"create"},
        ("authentication.k8s.io", "tokenreviews"): {"create"},
    },
    "proxy": {("authorization.k8s.io", "subjectaccessreviews"): {"create"}},
}


def dashboard_objects(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == "dashboard"]


@pytest.mark.parametrize("scope, watched", [("cluster", []), ("namespace", []), ("namespace", ["team-a", "team-b"])])
def test_the_dashboard_is_off_by_default_and_read_only_when_on(helm, scope, watched):
    values = ["--set", f"watch.scope={scope}"] + (
        ["--set", "watch.namespaces={" + ",".join(watched) + "}"] if watched else []
    )
    assert not dashboard_objects(rendered(helm, *values))
    docs = rendered(
        helm, *values, "--set", "dashboard.enabled=true", "--set", "dashboard.allowedHosts={hpo.example.org}"
    )
    check_labels(docs)
    mine = dashboard_objects(docs)
    expected = watched or ["hpo-system"]
    assert kinds(mine) == sorted(
        ["Deployment", "Service", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"]  # the reviews'
        + (["ClusterRole", "ClusterRoleBinding"] if scope == "cluster" else ["Role", "RoleBinding"] * len(expected))
    )
    name = "hpo-hpo-operator-dashboard"
    dep = only(mine, "Deployment")
    c = container(dep)
    assert c["image"] == container(only([d for d in docs if d not in mine], "Deployment"))["image"]  # the same image
    assert c["command"] == ["python3", "-m", "hpo_operator.dashboard"]
    namespaces = ["--all-namespaces"] if scope == "cluster" else [f"--namespace={ns}" for ns in expected]
    assert c["args"] == [
        "--address=0.0.0.0",
        "--port=8080",
        *namespaces,
        *(
            f"--allowed-host={name}{suffix}"
            for suffix in ("", ".hpo-system", ".hpo-system.svc", ".hpo-system.svc.cluster.local")
        ),
        "--allowed-host=hpo.example.org",
        "--auth=token",  # the default: a user's own token, reviewed by the API server
        "--session-seconds=28800",
        "--access-seconds=20",
    ]
    assert "--allow-write" not in " ".join(c["args"])
    for key, value in HARDENED_CONTAINER.items():
        assert c["securityContext"][key] == value
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == name and only(mine, "ServiceAccount")["metadata"]["name"] == name
    # Its pods are not the operator's: neither the operator's Deployment nor its metrics Service selects them.
    labels = dep["spec"]["template"]["metadata"]["labels"]
    operator = only([d for d in docs if d not in mine], "Deployment")
    for selector in (
        operator["spec"]["selector"]["matchLabels"],
        only([d for d in docs if d not in mine], "Service")["spec"]["selector"],
    ):
        assert not selector.items() <= labels.items()
    service = only(mine, "Service")
    assert service["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    reviews = [d for d in mine if d["metadata"]["name"] == f"{name}-reviews"]
    assert kinds(reviews) == ["ClusterRole", "ClusterRoleBinding"]
    assert rules_of(only(reviews, "ClusterRole")) == REVIEW_RULES["token"]
    roles = [d for d in mine if d["kind"] in ("Role", "ClusterRole") and d not in reviews]
    assert all(rules_of(r) == DASHBOARD_RULES for r in roles)
    if scope == "namespace":
        assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(expected)
    for binding in (d for d in mine if d["kind"].endswith("Binding")):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": "hpo-system"}]


def _auth_args(docs: list[dict]) -> list[str]:
    args = container(only(dashboard_objects(docs), "Deployment"))["args"]
    return args[args.index(next(a for a in args if a.startswith("--auth="))) :]


def test_the_dashboard_auth_modes_render_their_arguments_and_review_rights(helm):
    on = ["--set", "dashboard.enabled=true"]
    name = "hpo-hpo-operator-dashboard"
    proxy = helm.template(
        *on,
        "--set",
        "dashboard.auth.mode=proxy",
        "--set",
        "dashboard.auth.proxy.trustedSources={10.1.0.0/16,fd00::7}",
        "--set",
        "dashboard.auth.proxy.userHeader=X-Forwarded-Email",
        "--set",
        "dashboard.auth.proxy.groupHeader=X-Forwarded-Groups",
        "--set",
        "dashboard.auth.proxy.userPrefix=oidc:",
    )
    assert _auth_args(proxy) == [
        "--auth=proxy",
        "--trusted-proxy=10.1.0.0/16",
        "--trusted-proxy=fd00::7",
        "--user-header=X-Forwarded-Email",
        "--group-header=X-Forwarded-Groups",
        "--group-separator=,",
        "--user-prefix=oidc:",
        "--access-seconds=20",
    ]
    reviews = [d for d in dashboard_objects(proxy) if d["metadata"]["name"] == f"{name}-reviews"]
    assert rules_of(only(reviews, "ClusterRole")) == REVIEW_RULES["proxy"]  # no tokenreviews
    # none (port-forward only): no question asked, so no review rights at all.
    none = helm.template(*on, "--set", "dashboard.auth.mode=none")
    assert _auth_args(none) == ["--auth=none"]
    assert not [d for d in dashboard_objects(none) if d["metadata"]["name"] == f"{name}-reviews"]


NONE_EXPOSED = "dashboard.auth.mode=none serves every watched namespace to whoever reaches the dashboard"


@pytest.mark.parametrize(
    "values, message",
    [
        (
            ["dashboard.service.type=NodePort"],
            NONE_EXPOSED + ", so it is for kubectl port-forward only: a NodePort Service would expose it.",
        ),
        (
            ["dashboard.service.type=LoadBalancer"],
            NONE_EXPOSED + ", so it is for kubectl port-forward only: a LoadBalancer Service would expose it.",
        ),
        (
            ["dashboard.allowedHosts={hpo.example.org}"],
            NONE_EXPOSED + ", so it is for kubectl port-forward only: dashboard.allowedHosts names an Ingress",
        ),
    ],
)
def test_auth_mode_none_is_refused_with_anything_that_exposes_the_dashboard(helm, values, message):
    args = ["--set", "dashboard.enabled=true", "--set", "dashboard.auth.mode=none"]
    for value in values:
        args += ["--set", value]
    proc = helm.run("template", "hpo", str(CHART), *args, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert "Set dashboard.auth.mode to token or proxy" in proc.stderr
    # The same Service or host with a mode that asks who is asking: rendered.
    helm.template(*[a.replace("mode=none", "mode=token") for a in args])


def test_auth_mode_proxy_needs_its_trusted_sources(helm):
    proc = helm.run(
        "template",
        "hpo",
        str(CHART),
        "--set",
        "dashboard.enabled=true",
        "--set",
        "dashboard.auth.mode=proxy",
        check=False,
    )
    assert proc.returncode != 0
    assert "dashboard.auth.mode=proxy needs dashboard.auth.proxy.trustedSources" in proc.stderr, proc.stderr


def test_the_chart_grants_nothing_on_secrets_and_no_wildcards(helm):
    for values in ([], ["--set", "watch.scope=namespace"]):
        for role in watch_roles(rendered(helm, *values)):
            resources = {resource for _, resource in rules_of(role)}
            assert not resources & {"secrets", "configmaps", "nodes", "namespaces"}


@pytest.mark.parametrize(
    "value, error",
    [
        ("replicaCount=two", "/replicaCount"),
        ("replicaCount=-1", "/replicaCount"),
        ("leaderElection.leaseDurationSeconds=soon", "/leaderElection/leaseDurationSeconds"),
        ("rbac.create=yes", "/rbac/create"),
        ("serviceAccount.create=no", "/serviceAccount/create"),
        ("watch.scope=everywhere", "/watch/scope"),
        ("watch.namespaces={team-a}", "/watch/namespaces"),  # namespaces only go with scope namespace
        ("metrics.port=0", "/metrics/port"),
        ("logFormat=xml", "/logFormat"),
        ("rbca.create=true", "rbca"),
        ("dashboard.enabled=yes", "/dashboard/enabled"),
        ("dashboard.port=0", "/dashboard/port"),
        ("dashboard.service.type=Ingress", "/dashboard/service/type"),
        ("dashboard.allowedHosts={a b}", "/dashboard/allowedHosts/0"),
        ("dashboard.writable=true", "writable"),
        ("dashboard.auth.mode=open", "/dashboard/auth/mode"),
        ("dashboard.auth.proxy.trustedSources={proxy.example}", "/dashboard/auth/proxy/trustedSources/0"),
        ("dashboard.auth.accessSeconds=3600", "/dashboard/auth/accessSeconds"),
        ("networkPolicy.enabled=yes", "/networkPolicy/enabled"),
        ("networkPolicy.apiServer.cidrs={10.0.0.5}", "/networkPolicy/apiServer/cidrs/0"),
        ("networkPolicy.apiServer.ports={0}", "/networkPolicy/apiServer/ports/0"),
        ("networkPolicy.operator.metricsFrom[0].namespace=monitoring", "/networkPolicy/operator/metricsFrom/0"),
        ("networkPolicy.operator.extraIngress[0].port=9443", "/networkPolicy/operator/extraIngress/0"),  # no from
        ("networkPolicy.dashboard.from[0].podSelector.matchLabels=x", "/networkPolicy/dashboard/from/0"),
        ("networkPolicy.egress=[]", "egress"),
        ("image.flavour=cuda", "/image/flavour"),
    ],
)
def test_values_schema_rejects_bad_values(helm, value, error):
    proc = helm.run("template", "hpo", str(CHART), "--set", value, check=False)
    assert proc.returncode != 0, f"--set {value} was accepted"
    assert "schema" in proc.stderr and error in proc.stderr, proc.stderr


def test_lint_and_install_refuse_bad_values(helm, kubeconfig):
    lint = helm.run("lint", str(CHART), "--set", "replicaCount=two", check=False)
    assert lint.returncode != 0 and "/replicaCount" in lint.stdout + lint.stderr
    release = f"hpo-bad-{uuid.uuid4().hex[:6]}"
    install = helm.run(
        "install",
        release,
        str(CHART),
        "--kubeconfig",
        kubeconfig,
        "--namespace",
        "default",
        "--set",
        "rbac.create=yes",
        check=False,
    )
    if install.returncode == 0:  # not expected: leave nothing behind
        helm.run("uninstall", release, "--kubeconfig", kubeconfig, "--namespace", "default", check=False)
    assert install.returncode != 0 and "/rbac/create" in install.stderr, install.stderr


# --- network policies ----------------------------------------------------------------------------

API_SERVER = ["--set", "networkPolicy.enabled=true", "--set", "networkPolicy.apiServer.cidrs={10.0.0.5/32,fd00::5/128}"]
PROMETHEUS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}
INGRESS_CONTROLLER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
# What both kinds of pods may open: the API server (its Service's port and its endpoints'), DNS.
EGRESS = [
    {
        "to": [{"ipBlock": {"cidr": "10.0.0.5/32"}}, {"ipBlock": {"cidr": "fd00::5/128"}}],
        "ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}],
    },
    {
        "to": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }
        ],
        "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
    },
]


def values_file(tmp_path: Path, values: dict) -> list[str]:
    path = tmp_path / f"values-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(values))
    return ["-f", str(path)]


def policies(docs: list[dict]) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}


def test_network_policies_are_off_by_default(helm):
    assert not policies(helm.template("--set", "dashboard.enabled=true"))


def test_network_policies_admit_only_the_operators_and_dashboards_ports_from_their_peers(helm, tmp_path):
    values = {
        "dashboard": {"enabled": True},
        "networkPolicy": {
            "operator": {"metricsFrom": [PROMETHEUS], "healthFrom": [{"ipBlock": {"cidr": "10.1.0.0/16"}}]},
            "dashboard": {"from": [INGRESS_CONTROLLER]},
        },
    }
    docs = helm.template(*API_SERVER, *values_file(tmp_path, values))
    check_labels(docs)
    found = policies(docs)
    assert set(found) == {"hpo-hpo-operator", "hpo-hpo-operator-dashboard"}
    operator, dashboard = found["hpo-hpo-operator"], found["hpo-hpo-operator-dashboard"]
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    for policy in (operator, dashboard):
        name = policy["metadata"]["name"]
        assert policy["metadata"]["namespace"] == "hpo-system"
        # It selects exactly its Deployment's pods, for both directions.
        assert policy["spec"]["podSelector"] == deployments[name]["spec"]["selector"]
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        assert policy["spec"]["egress"] == EGRESS
    assert operator["spec"]["ingress"] == [
        {"from": [{"ipBlock": {"cidr": "10.1.0.0/16"}}], "ports": [{"port": 8080, "protocol": "TCP"}]},
        {"from": [PROMETHEUS], "ports": [{"port": 9090, "protocol": "TCP"}]},
        # The admission webhook (tenancy), called by the API server.
        {
            "from": [{"ipBlock": {"cidr": "10.0.0.5/32"}}, {"ipBlock": {"cidr": "fd00::5/128"}}],
            "ports": [{"port": 9443, "protocol": "TCP"}],
        },
    ]
    assert dashboard["spec"]["ingress"] == [
        {"from": [INGRESS_CONTROLLER], "ports": [{"port": 8080, "protocol": "TCP"}]}
    ]
    # The ports are the containers' own.
    ports = {p["name"]: p["containerPort"] for p in container(deployments["hpo-hpo-operator"])["ports"]}
    assert ports == {"health": 8080, "metrics": 9090, "admission": 9443}


def test_network_policies_with_no_peers_admit_nobody_and_take_extra_ports_and_rules(helm, tmp_path):
    # No peer given: no ingress rule at all (nobody but the node), not a rule without `from` (anybody).
    docs = helm.template(*API_SERVER, "--set", "dashboard.enabled=true", "--set", "tenancy.enabled=false")
    assert [p["spec"]["ingress"] for p in policies(docs).values()] == [[], []]
    # metrics off: no rule for its port, whatever its peers; an extra port (a webhook's, say) with its
    # peers; more egress; apiServer.port (a cluster without kube-proxy) joins the API server's ports.
    webhook = {"port": 9443, "protocol": "TCP", "from": [{"ipBlock": {"cidr": "10.0.0.5/32"}}]}
    extra_egress = [{"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}], "ports": [{"port": 4317, "protocol": "TCP"}]}]
    values = {
        "metrics": {"enabled": False},
        "tenancy": {"enabled": False},
        "apiServer": {"host": "10.0.0.5", "port": 16443},
        "networkPolicy": {
            "operator": {"metricsFrom": [PROMETHEUS], "extraIngress": [webhook], "extraEgress": extra_egress}
        },
    }
    (operator,) = policies(helm.template(*API_SERVER, *values_file(tmp_path, values))).values()
    assert operator["spec"]["ingress"] == [{"from": webhook["from"], "ports": [{"port": 9443, "protocol": "TCP"}]}]
    api_ports = operator["spec"]["egress"][0]["ports"]
    assert [p["port"] for p in api_ports] == [443, 6443, 16443]
    assert operator["spec"]["egress"][2:] == extra_egress
    # DNS off.
    (operator,) = policies(helm.template(*API_SERVER, "--set", "networkPolicy.dns.to=null")).values()
    assert operator["spec"]["egress"] == EGRESS[:1]


def test_the_network_policies_are_valid_objects_for_the_api_server(helm, kubectl, namespace, tmp_path):
    values = {
        "dashboard": {"enabled": True},
        "networkPolicy": {
            "operator": {"metricsFrom": [PROMETHEUS], "extraIngress": [{"port": 9443, "from": [PROMETHEUS]}]},
            "dashboard": {"from": [INGRESS_CONTROLLER]},
        },
    }
    docs = list(policies(helm.template(*API_SERVER, *values_file(tmp_path, values), namespace=namespace)).values())
    assert len(docs) == 2
    out = kubectl.run("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))
    assert out.stdout.count("networkpolicy.networking.k8s.io/") == 2, out.stdout


# --- on the cluster ---------------------------------------------------------------------------


def get_json(kubectl: kube.Kubectl, *args: str) -> dict:
    return json.loads(kubectl.run("get", *args, "-o", "json").stdout)


def test_install_creates_the_objects_and_uninstall_removes_them(helm, kubectl, kubeconfig, namespace):
    release = f"hpo-it-{uuid.uuid4().hex[:8]}"
    name = f"{release}-hpo-operator"
    try:
        # Cluster scope, with the admission webhook limited to the test's namespace and without the
        # trial-kinds policy: this cluster is shared by other tests, whose Experiments either would
        # otherwise see or refuse (test_allowed_trial_kinds.py installs the policy, bound to a test
        # namespace).
        selector = f"tenancy.webhook.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name={namespace}"
        out = helm.run(
            "install",
            release,
            str(CHART),
            "--kubeconfig",
            kubeconfig,
            "--namespace",
            namespace,
            "--set",
            selector,
            "--set",
            "trialKindsPolicy.enabled=false",
        ).stdout
        assert f"kubectl -n {namespace} get experiments,trials" in out  # NOTES.txt
        for crd in ("experiments.hpo.dev", "trials.hpo.dev"):
            conditions = get_json(kubectl, "crd", crd)["status"]["conditions"]
            assert {"type": "Established", "status": "True"}.items() <= next(
                c for c in conditions if c["type"] == "Established"
            ).items()
        dep = get_json(kubectl, "deployment", name, "-n", namespace)
        assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "RollingUpdate"
        for key, value in HARDENED_CONTAINER.items():
            assert container(dep)["securityContext"][key] == value
        assert dep["spec"]["template"]["spec"]["serviceAccountName"] == name
        get_json(kubectl, "serviceaccount", name, "-n", namespace)
        get_json(kubectl, "service", f"{name}-metrics", "-n", namespace)
        assert rules_of(get_json(kubectl, "clusterrole", name)) == CLUSTER_RULES
        binding = get_json(kubectl, "clusterrolebinding", name)
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]
        assert binding["roleRef"]["name"] == name

        helm.run("uninstall", release, "--kubeconfig", kubeconfig, "--namespace", namespace, "--wait")
        left = kubectl.run(
            "get",
            "clusterrole,clusterrolebinding,role,rolebinding,mutatingwebhookconfiguration",
            "-A",
            "-l",
            f"app.kubernetes.io/instance={release}",
            "-o",
            "name",
        ).stdout
        assert not left.strip(), left
        # Helm never deletes the CRDs of a chart's crds/ directory.
        get_json(kubectl, "crd", "experiments.hpo.dev")
    finally:
        helm.remove(release, kubeconfig, namespace, kubectl)


def http_get(url: str, headers: dict | None = None) -> tuple[int, str]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as response:
        return response.status, response.read().decode()


def test_operator_runs_an_experiment_as_the_charts_service_account(
    helm, kubectl, kubeconfig, api, namespace, crds, kwok_nodes, tmp_path
):
    release = f"hpo-rbac-{uuid.uuid4().hex[:6]}"
    sa = f"{release}-hpo-operator"
    # The chart in namespace mode, with the operator's own rights (tenancy off; test_tenancy.py runs
    # it with the default tenancy); replicaCount 0: the operator runs below, as a local process.
    helm.run(
        "install",
        release,
        str(CHART),
        "--kubeconfig",
        kubeconfig,
        "--namespace",
        namespace,
        "--set",
        "watch.scope=namespace",
        "--set",
        "replicaCount=0",
        "--set",
        "tenancy.enabled=false",
    )
    operator = None
    try:
        token = kubectl.run("create", "token", sa, "-n", namespace, "--duration=1h").stdout.strip()
        as_operator = kube.Kubectl(kubectl.binary, token_kubeconfig(kubeconfig, token, tmp_path / "sa-kubeconfig"))

        def can_i(*args: str) -> str:
            return as_operator.run("auth", "can-i", *args, check=False).stdout.strip()

        assert can_i("create", "pods", "-n", namespace) == "yes"
        assert can_i("patch", "experiments.hpo.dev", "--subresource=status", "-n", namespace) == "yes"
        assert can_i("patch", "experiments.hpo.dev", "-n", namespace) == "no"  # only its status
        assert can_i("get", "secrets", "-n", namespace) == "no"
        assert can_i("delete", "experiments.hpo.dev", "-n", namespace) == "no"
        assert can_i("update", "experiments.hpo.dev", "-n", namespace) == "no"
        assert can_i("delete", "trials.hpo.dev", "-n", namespace) == "no"
        assert can_i("update", "pods", "-n", namespace) == "no"
        assert can_i("list", "pods", "-n", "default") == "no"  # only the watched namespace
        assert can_i("list", "nodes") == "no"  # nothing cluster-scoped in namespace mode
        assert can_i("list", "namespaces") == "no"
        assert can_i("list", "customresourcedefinitions.apiextensions.k8s.io") == "no"

        # The operator with the installed Deployment's arguments and environment, on free ports.
        dep = get_json(kubectl, "deployment", sa, "-n", namespace)
        health, metrics = kube.free_port(), kube.free_port()
        args = [
            f"--liveness=http://127.0.0.1:{health}/healthz" if a.startswith("--liveness=") else a
            for a in container(dep)["args"]
        ]
        assert f"--namespace={namespace}" in args and "--standalone" in args
        # POD_NAME comes from the downward API in a pod; the election (through the chart's Lease and
        # its Role) runs here too.
        env = {
            **{k: v for k, v in env_of(dep).items() if v is not None},
            "HPO_METRICS_PORT": str(metrics),
            "POD_NAME": "operator-on-the-host",
        }
        assert env["HPO_LEADER_ELECTION_LEASE"] == f"{namespace}/{sa}"
        operator = kube.OperatorProcess(
            as_operator.kubeconfig, namespace, tmp_path / "operator.log", args=args, env=env
        )
        operator.start()

        custom = client.CustomObjectsApi(api)
        custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "experiments",
            experiment(
                "least-privilege",
                x_space(10),
                annotations=loss_is_x("300ms"),
                algorithm={"name": "random", "seed": 3},
                max_trials=4,
                parallel=2,
            ),
        )

        def finished():
            exp = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "experiments", "least-privilege")
            return exp.get("status", {}).get("phase") in ("Succeeded", "Failed") and exp

        exp = kube.wait_until(finished, timeout=45, what="the experiment to finish")
        assert exp["status"]["phase"] == "Succeeded", exp["status"]
        trials = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "trials")["items"]
        assert len(trials) == 4
        assert all(t["status"]["phase"] == "Succeeded" for t in trials)
        events = client.CoreV1Api(api).list_namespaced_event(namespace).items
        assert any(e.reason == "TrialCreated" for e in events)  # kopf posted Events as the operator

        # kopf's health endpoint (the chart's liveness probe) and the metrics port from the chart's env.
        status, body = http_get(f"http://127.0.0.1:{health}/healthz")
        assert status == 200, body
        status, body = http_get(f"http://127.0.0.1:{metrics}/metrics")
        assert status == 200 and "hpo_trials_created_total" in body

        # Deleted with the operator still running: had kopf put a finalizer on it, taking it off
        # would be one more request that must not be refused.
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "experiments", "least-privilege")

        def gone():
            try:
                custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "experiments", "least-privilege")
            except client.ApiException as e:
                return e.status == 404
            return False

        kube.wait_until(gone, timeout=30, what="the experiment to be deleted")
    finally:
        if operator is not None:
            operator.stop()
        helm.remove(release, kubeconfig, namespace, kubectl)
    log = operator.log()
    refused = [line for line in log.splitlines() if kube.REFUSED.search(line) and '"GET /healthz' not in line]
    assert not refused, "the operator was refused:\n" + "\n".join(refused)
    assert "Traceback" not in log, log


def test_the_dashboard_shows_the_cluster_as_its_service_account_and_can_change_nothing(
    helm, kubectl, kubeconfig, api, namespace, crds, tmp_path
):
    """The dashboard with the chart's read-only RBAC: everything it shows is readable, nothing is
    refused, and nothing can be changed (the pod's command and arguments, run here as a process).
    With the chart's default auth (token), a user's bearer token is reviewed with the rights the
    chart grants for that (TokenReview, SubjectAccessReview), and the user sees what they may list."""
    from tests.support import dashboard_objects

    release = f"hpo-dash-{uuid.uuid4().hex[:6]}"
    sa = f"{release}-hpo-operator-dashboard"
    helm.run(
        "install",
        release,
        str(CHART),
        "--kubeconfig",
        kubeconfig,
        "--namespace",
        namespace,
        "--set",
        "watch.scope=namespace",
        "--set",
        "replicaCount=0",
        "--set",
        "dashboard.enabled=true",
        "--set",
        "dashboard.replicaCount=0",
        # Its Experiments are written by the test as the admin: no operator serves the admission
        # webhook here (test_tenancy.py covers it).
        "--set",
        "tenancy.enabled=false",
    )
    proc = None
    try:
        token = kubectl.run("create", "token", sa, "-n", namespace, "--duration=1h").stdout.strip()
        as_dashboard = kube.Kubectl(kubectl.binary, token_kubeconfig(kubeconfig, token, tmp_path / "sa-kubeconfig"))

        def can_i(*args: str) -> str:
            return as_dashboard.run("auth", "can-i", *args, check=False).stdout.strip()

        for verb in ("get", "list", "watch"):
            assert can_i(verb, "experiments.hpo.dev", "-n", namespace) == "yes"
            assert can_i(verb, "trials.hpo.dev", "-n", namespace) == "yes"
        for args in (
            ("patch", "experiments.hpo.dev"),
            ("create", "trials.hpo.dev"),
            ("patch", "trials.hpo.dev"),
            ("delete", "experiments.hpo.dev"),
            ("list", "pods"),
            ("get", "pods/log"),
            ("get", "secrets"),
        ):
            assert can_i(*args, "-n", namespace) == "no", args
        assert can_i("list", "experiments.hpo.dev", "-n", "default") == "no"
        # The reviews its authentication asks for (cluster-scoped), and nothing more of them.
        assert can_i("create", "tokenreviews.authentication.k8s.io") == "yes"
        assert can_i("create", "subjectaccessreviews.authorization.k8s.io") == "yes"
        assert can_i("create", "localsubjectaccessreviews.authorization.k8s.io", "-n", namespace) == "no"
        assert can_i("create", "serviceaccounts/token", "-n", namespace) == "no"

        # A user who may read the namespace's experiments: a ServiceAccount with a Role.
        kubectl.run("create", "serviceaccount", "reader", "-n", namespace)
        kubectl.run(
            "create", "role", "reader", "-n", namespace, "--verb=get,list,watch", "--resource=experiments.hpo.dev"
        )
        kubectl.run(
            "create", "rolebinding", "reader", "-n", namespace, "--role=reader", f"--serviceaccount={namespace}:reader"
        )
        reader = kubectl.run("create", "token", "reader", "-n", namespace, "--duration=1h").stdout.strip()
        bearer = {"Authorization": f"Bearer {reader}"}

        exp, trials = dashboard_objects.make("charted", 5)
        dashboard_objects.create(api, namespace, exp, trials)
        dep = get_json(kubectl, "deployment", sa, "-n", namespace)
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        port = kube.free_port()
        args = [
            f"--port={port}" if a.startswith("--port=") else "--address=127.0.0.1" if a.startswith("--address=") else a
            for a in c["args"]
        ]
        assert c["command"] == ["python3", "-m", "hpo_operator.dashboard"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "hpo_operator.dashboard", *args],
            env={**os.environ, "KUBECONFIG": as_dashboard.kubeconfig},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
        )
        base = f"http://127.0.0.1:{port}"
        kube.wait_until(lambda: _status(f"{base}/healthz") == 200, timeout=60, what="the dashboard to serve")
        assert _status(f"{base}/api/experiments") == 401  # nobody named: nothing shown
        status, body = http_get(f"{base}/api/experiments", bearer)
        listing = json.loads(body)
        assert [e["name"] for e in listing["experiments"]] == ["charted"] and listing["errors"] == []
        status, body = http_get(f"{base}/api/experiments/{namespace}/charted/trials", bearer)
        assert [r["name"] for r in json.loads(body)] == [t["metadata"]["name"] for t in trials]
        # The Service's name is an allowed Host; another name is not.
        request = urllib.request.Request(f"{base}/api/config", headers={"Host": f"{sa}.{namespace}.svc", **bearer})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.loads(response.read())["allowWrite"] is False
        assert _status(f"{base}/api/config", host="elsewhere.example") == 421
        assert _status(f"{base}/api/experiments/{namespace}/charted/stop", method="POST", headers=bearer) == 403
    finally:
        if proc is not None:
            proc.terminate()
            output = proc.communicate(timeout=15)[0]
        helm.remove(release, kubeconfig, namespace, kubectl)
    refused = [line for line in output.splitlines() if kube.REFUSED.search(line)]
    assert not refused, "the dashboard was refused:\n" + output
    assert "Traceback" not in output, output


def _status(url: str, host: str | None = None, method: str = "GET", headers: dict | None = None) -> int:
    request = urllib.request.Request(
        url,
        method=method,
        headers={**({"Host": host} if host else {}), **(headers or {})},
        data=b"{}" if method == "POST" else None,
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0
