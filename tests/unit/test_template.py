"""Building a trial's pod from the experiment's template (hpo_operator.workloads.pod)."""

import copy

from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.workloads.pod import build_pod, substitute


def template():
    return {
        "metadata": {
            "labels": {"team": "ml", "run": "${trial.name}", "hpo.dev/trial": "template-value"},
            "annotations": {
                "note/${params.lr}": "lr=${params.lr}",
                "attempt": "${trial.attempt}",
                "exp": "${experiment.name}",
            },
        },
        "spec": {
            "restartPolicy": "OnFailure",
            "containers": [
                {
                    "name": "train",
                    "image": "trainer:1",
                    "command": ["python", "train.py"],
                    "args": [
                        "--lr=${params.lr}",
                        "--opt",
                        "${params.opt}",
                        "--out=/out/${experiment.name}/${trial.name}",
                        "--keep=${params.unknown}",
                        "--other=${trial.uid}",
                        "--literal=$HOME",
                        "${foo.bar}",
                    ],
                    "env": [
                        {"name": "ATTEMPT", "value": "${trial.attempt}"},
                        {"name": "TRIAL", "value": "${trial.name}-${params.opt}"},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    ],
                    "resources": {"limits": {"memory": "1Gi"}},
                }
            ],
            "nodeSelector": {"pool": "gpu"},
        },
    }


def spec(tmpl=None):
    return ExperimentSpec.model_validate(
        {
            "objective": {"type": "minimize", "metricName": "loss"},
            "parameters": [
                {"name": "lr", "type": "double", "min": 0.001, "max": 1},
                {"name": "opt", "type": "categorical", "values": ["adam", "sgd"]},
            ],
            "maxTrialCount": 4,
            "trialTemplate": {"template": template() if tmpl is None else tmpl},
        }
    )


def trial(name="mnist-0003", attempt=2, labels=None):
    spec_ = {
        "experimentName": "mnist",
        "parameters": [{"name": "lr", "value": "0.01"}, {"name": "opt", "value": "sgd"}],
    }
    if attempt is not None:
        spec_["attempt"] = attempt
    return {
        "apiVersion": "hpo.dev/v1alpha1",
        "kind": "Trial",
        "metadata": {
            "name": name,
            "namespace": "team-a",
            "uid": "trial-uid-1",
            "labels": labels
            if labels is not None
            else {"hpo.dev/experiment": "mnist", "hpo.dev/trial": name, "hpo.dev/config": "abc"},
        },
        "spec": spec_,
    }


def container(pod):
    return pod["spec"]["containers"][0]


def test_args_are_substituted():
    pod = build_pod(spec(), "mnist", trial())
    assert container(pod)["args"][:4] == ["--lr=0.01", "--opt", "sgd", "--out=/out/mnist/mnist-0003"]
    assert container(pod)["command"] == ["python", "train.py"]


def test_unknown_placeholders_and_other_dollars_are_left_as_they_are():
    args = container(build_pod(spec(), "mnist", trial()))["args"]
    assert args[4:] == ["--keep=${params.unknown}", "--other=${trial.uid}", "--literal=$HOME", "${foo.bar}"]


def test_env_values_are_substituted():
    env = container(build_pod(spec(), "mnist", trial()))["env"]
    assert env[0] == {"name": "ATTEMPT", "value": "2"}
    assert env[1] == {"name": "TRIAL", "value": "mnist-0003-sgd"}
    assert env[2] == {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}


def test_attempt_defaults_to_one():
    env = container(build_pod(spec(), "mnist", trial(attempt=None)))["env"]
    assert env[0] == {"name": "ATTEMPT", "value": "1"}


def test_annotations_values_and_keys_are_substituted():
    annotations = build_pod(spec(), "mnist", trial())["metadata"]["annotations"]
    assert annotations == {"note/0.01": "lr=0.01", "attempt": "2", "exp": "mnist"}


def test_restart_policy_is_forced_to_never():
    assert build_pod(spec(), "mnist", trial())["spec"]["restartPolicy"] == "Never"
    tmpl = template()
    del tmpl["spec"]["restartPolicy"]
    assert build_pod(spec(tmpl), "mnist", trial())["spec"]["restartPolicy"] == "Never"


def test_rest_of_the_pod_spec_is_kept():
    pod = build_pod(spec(), "mnist", trial())
    assert pod["spec"]["nodeSelector"] == {"pool": "gpu"}
    assert container(pod)["resources"] == {"limits": {"memory": "1Gi"}}
    assert container(pod)["image"] == "trainer:1"


def test_pod_identity_and_owner_is_the_trial():
    pod = build_pod(spec(), "mnist", trial())
    assert pod["apiVersion"] == "v1" and pod["kind"] == "Pod"
    assert pod["metadata"]["name"] == "mnist-0003"
    assert pod["metadata"]["namespace"] == "team-a"
    assert pod["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "hpo.dev/v1alpha1",
            "kind": "Trial",
            "name": "mnist-0003",
            "uid": "trial-uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_labels_merge_template_trial_and_fixed_labels():
    labels = build_pod(spec(), "mnist", trial())["metadata"]["labels"]
    assert labels == {
        "team": "ml",
        "run": "mnist-0003",  # substituted
        "hpo.dev/trial": "mnist-0003",  # the trial's labels win over the template's
        "hpo.dev/experiment": "mnist",
        "hpo.dev/config": "abc",
        "app.kubernetes.io/name": "hpo-trial",
        "app.kubernetes.io/instance": "mnist",
        "app.kubernetes.io/component": "trial",
    }


def test_template_without_metadata():
    tmpl = {"spec": {"containers": [{"name": "c", "image": "i", "args": ["${params.opt}"]}]}}
    pod = build_pod(spec(tmpl), "mnist", trial(labels={}))
    assert pod["metadata"]["annotations"] == {}
    assert pod["metadata"]["labels"] == {
        "app.kubernetes.io/name": "hpo-trial",
        "app.kubernetes.io/instance": "mnist",
        "app.kubernetes.io/component": "trial",
    }
    assert pod["spec"] == {
        "containers": [{"name": "c", "image": "i", "args": ["sgd"]}],
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
    }


def test_a_trial_pod_gets_no_service_account_token_unless_its_template_sets_it():
    assert build_pod(spec(), "mnist", trial())["spec"]["automountServiceAccountToken"] is False
    for asked in (True, False):
        tmpl = template()
        tmpl["spec"]["automountServiceAccountToken"] = asked
        assert build_pod(spec(tmpl), "mnist", trial())["spec"]["automountServiceAccountToken"] is asked


def test_the_experiments_template_is_not_mutated():
    s = spec()
    before = copy.deepcopy(s.trial_template.template)
    first = build_pod(s, "mnist", trial())
    assert s.trial_template.template == before
    # Changing one pod does not leak into the next either.
    first["spec"]["containers"][0]["args"].append("extra")
    first["metadata"]["annotations"]["x"] = "y"
    second = build_pod(s, "mnist", trial(name="mnist-0004"))
    assert "extra" not in container(second)["args"]
    assert "x" not in second["metadata"]["annotations"]
    assert s.trial_template.template == before


def test_the_trial_is_not_mutated():
    t = trial()
    before = copy.deepcopy(t)
    build_pod(spec(), "mnist", t)
    assert t == before


def test_substitute_walks_lists_dicts_and_keys_and_leaves_other_values():
    values = {"params.a": "1", "trial.name": "t"}
    tree = {"${params.a}": ["x${params.a}y", {"k": "${trial.name}", "n": 3, "b": True, "z": None}], "plain": 1.5}
    assert substitute(tree, values) == {"1": ["x1y", {"k": "t", "n": 3, "b": True, "z": None}], "plain": 1.5}


def test_substitute_replaces_every_occurrence_and_does_not_recurse_into_values():
    values = {"params.a": "${params.b}", "params.b": "2"}
    assert substitute("${params.a}/${params.a}/${params.b}", values) == "${params.b}/${params.b}/2"
