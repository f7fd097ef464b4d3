"""The notebook SDK's calls against the API server and the operator, on the local cluster's KWOK
nodes (the trials' fates simulated, so it runs without the real node): an experiment built from
typed parameters is created, waited for (a timeout first), and read back as its best trial and a
DataFrame."""

from __future__ import annotations

import pytest

from hpo_operator import client as hpo
from hpo_operator.api.template import TrialTemplate


def simulated_spec():
    # KWOK ends each trial's pod after 1s with this termination message: the trial's loss is its lr.
    template = TrialTemplate(
        template=hpo.pod_template([hpo.container("trainer:1", args=["--lr=${params.lr}"])])
        | {"metadata": {"annotations": {"sim.hpo.dev/duration": "1s", "sim.hpo.dev/message": '{"loss": ${params.lr}}'}}}
    )
    return hpo.experiment_spec(
        {"lr": hpo.double(0.001, 0.1, log=True), "layers": hpo.integer(1, 3), "act": hpo.categorical(["relu", "tanh"])},
        objective="loss",
        trial_template=template,
        max_trials=4,
        parallel=2,
        seed=5,
    )


def test_a_typed_experiment_is_created_waited_for_and_read_back(session, namespace, operator, kwok_nodes):
    created = hpo.create_experiment(session, "typed", simulated_spec(), namespace=namespace, labels={"team": "ml"})
    assert (created.name, created.namespace, created.labels) == ("typed", namespace, {"team": "ml"})
    with pytest.raises(hpo.Conflict, match=f"experiment typed already exists in namespace {namespace}"):
        hpo.create_experiment(session, "typed", simulated_spec(), namespace=namespace)

    with pytest.raises(hpo.Timeout, match=r"timed out after 0.5s waiting for experiment typed to finish \(phase "):
        hpo.wait(session, "typed", namespace, timeout=0.5, interval=0.2, progress=False)
    done = hpo.wait(session, "typed", namespace, timeout=120, interval=0.5, progress=False)
    assert done.phase == "Succeeded" and done.trial_status["Succeeded"] == 4

    df = hpo.trials_frame(session, "typed", namespace)
    assert len(df) == 4 and set(df.phase) == {"Succeeded"}
    assert (df["metrics.loss"] == df["params.lr"]).all()  # the lr a trial ran is the loss it reported
    assert str(df["params.layers"].dtype) == "int64" and set(df["params.act"]) <= {"relu", "tanh"}

    best = hpo.best_trial(session, "typed", namespace)
    assert best.name == df.loc[df.objective.idxmin(), "trial"]
    assert best.objective_value == df.objective.min()


def test_no_best_trial_while_none_has_succeeded(session, namespace, operator, kwok_nodes):
    spec = simulated_spec()
    spec.suspend = True  # nothing runs
    hpo.create_experiment(session, "idle", spec, namespace=namespace)
    with pytest.raises(hpo.NotFound, match="experiment idle has no best trial yet"):
        hpo.best_trial(session, "idle", namespace)
