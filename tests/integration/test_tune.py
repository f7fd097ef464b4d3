"""tune() end to end on the local cluster's real node: a Python function from this file runs in
trial pods of the image hpo.local/trial:1 (python3, numpy, scikit-learn; no hpo_operator in it),
the operator reads what it reports and returns, and the notebook's calls (wait, best_trial,
trials_frame) read the results back. Skipped, with the reason, when no real node is Ready (see
test_real_node.py)."""

from __future__ import annotations

import pandas
import pytest
from kubernetes import client

from hpo_operator import client as hpo
from tests.support.kube import wait_until

pytestmark = pytest.mark.realnode

# Where the real node's trials may run, as examples/real-sklearn.yaml says it.
REAL_NODE = dict(
    image="hpo.local/trial:1",
    image_pull_policy="Never",
    node_selector={"hpo.dev/node": "real"},
    tolerations=[{"key": "hpo.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}],
    pod={"dnsPolicy": "Default", "terminationGracePeriodSeconds": 5},
    resources={"cpu": "500m", "memory": "256Mi"},
    env={"OPENBLAS_NUM_THREADS": "1"},
)


def digits(features, gamma, alpha, report):
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.kernel_approximation import RBFSampler
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import log_loss
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, test_size=0.25, random_state=0, stratify=y)
    rff = RBFSampler(gamma=gamma, n_components=features, random_state=0)
    Z_train = rff.fit_transform(X_train)
    Z_test = rff.transform(X_test)
    classes = np.unique(y)
    model = SGDClassifier(loss="log_loss", alpha=alpha, random_state=0)
    for epoch in range(1, 4):
        model.partial_fit(Z_train, y_train, classes=classes)
        accuracy = model.score(Z_test, y_test)
        loss = log_loss(y_test, model.predict_proba(Z_test), labels=classes)
        report(step=epoch, accuracy=accuracy, loss=loss)
    return {"accuracy": accuracy, "loss": loss}


DIGITS_SPACE = {
    "features": hpo.discrete([300, 1000]),
    "gamma": hpo.double(0.02, 0.05),
    "alpha": hpo.double(1e-4, 2e-4, log=True),
}


def refuses_large_rates(lr):
    if lr > 0.1:
        raise ValueError(f"lr {lr} is too large for this model")
    return {"loss": lr}


def test_tune_runs_a_python_function_in_real_trial_pods(session, restricted, operator, real_node, api):
    # tune()'s pods meet Pod Security's restricted level: this namespace enforces it.
    namespace = restricted
    created = hpo.tune(
        session,
        digits,
        name="digits",
        namespace=namespace,
        parameters=DIGITS_SPACE,
        objective_metric="accuracy",
        direction="maximize",
        additional_metrics=["loss"],
        max_trials=3,
        parallel=2,
        retries=0,
        seed=3,
        **REAL_NODE,
    )
    assert created.name == "digits"
    # Once more under the same name: refused, and its ConfigMap not left behind.
    with pytest.raises(hpo.Conflict, match="experiment digits already exists"):
        hpo.tune(session, digits, name="digits", namespace=namespace, parameters=DIGITS_SPACE, **REAL_NODE)
    core = client.CoreV1Api(api)
    selector = "app.kubernetes.io/name=hpo-objective"
    assert len(core.list_namespaced_config_map(namespace, label_selector=selector).items) == 1
    done = hpo.wait(session, "digits", namespace, timeout=300, progress=False)
    assert done.phase == "Succeeded"
    assert done.trial_status["Succeeded"] == 3

    best = hpo.best_trial(session, "digits", namespace)
    assert 0.8 < best.metrics["accuracy"] <= 1 and best.metrics["loss"] > 0
    assert best.objective_value == best.metrics["accuracy"]

    df = hpo.trials_frame(session, "digits", namespace)
    assert isinstance(df, pandas.DataFrame)
    assert len(df) == 3 and set(df.phase) == {"Succeeded"}
    assert df.loc[df["metrics.accuracy"].idxmax(), "trial"] == best.name
    assert set(df["params.features"]) <= {300, 1000}
    assert df["params.gamma"].between(0.02, 0.05).all()

    # report() made the metric history: one value per epoch.
    history = hpo.trial_metrics(session, trial=best.name, namespace=namespace, names=["accuracy"])
    assert sorted(p.step for p in history if p.step is not None) == [1, 2, 3]

    # The function travelled in a ConfigMap the experiment owns, not on the pod's command line.
    pod = core.read_namespaced_pod(best.pod_name, namespace)
    assert pod.spec.node_name == real_node
    assert pod.spec.security_context.run_as_non_root is True and pod.spec.security_context.run_as_user == 65534
    assert pod.spec.automount_service_account_token is False
    assert not any(v.name.startswith("kube-api-access") for v in pod.spec.volumes)
    command = pod.spec.containers[0].command
    assert not any("import" in word for word in command)
    assert [w for w in command if "=" in w] == [f"{k}={best.parameters[k]}" for k in ("features", "gamma", "alpha")]
    configmap = core.read_namespaced_config_map(pod.spec.volumes[0].config_map.name, namespace)
    assert "def digits(features, gamma, alpha, report):" in configmap.data["objective.py"]
    assert configmap.metadata.labels["app.kubernetes.io/instance"] == "digits"
    experiment = session.get("experiments", namespace, "digits")
    assert [(o.kind, o.uid) for o in configmap.metadata.owner_references] == [
        ("Experiment", experiment["metadata"]["uid"])
    ]

    # Deleting the experiment removes its ConfigMap (the garbage collector, by that owner).
    hpo.delete_experiment(session, "digits", namespace)

    def configmap_gone() -> bool:
        try:
            core.read_namespaced_config_map(configmap.metadata.name, namespace)
            return False
        except client.ApiException as e:
            return e.status == 404

    wait_until(configmap_gone, timeout=60, what="the garbage collector to delete the experiment's ConfigMap")


def test_an_exception_in_the_function_is_the_trials_failure_message(session, restricted, operator, real_node):
    # As user 65534, the runner still writes the termination message the operator reads.
    namespace = restricted
    created = hpo.tune(
        session,
        refuses_large_rates,
        namespace=namespace,
        parameters={"lr": hpo.discrete([0.5])},
        max_trials=1,
        retries=0,
        **REAL_NODE,
    )
    assert created.name.startswith("refuses-large-rates-")  # named after the function
    hpo.wait(session, created.name, namespace, timeout=240, progress=False)

    [trial] = hpo.list_trials(session, created.name, namespace).items
    assert trial.phase == "Failed"
    assert trial.message.startswith("the container exited with code 1 (Error): Traceback")
    assert 'objective.py", line 3, in refuses_large_rates' in trial.message
    assert trial.message.endswith("ValueError: lr 0.5 is too large for this model")
    with pytest.raises(hpo.NotFound, match="has no best trial yet"):
        hpo.best_trial(session, created.name, namespace)
