"""Faults under an experiment whose Job trials wait in a Kueue queue, while it is suspended and
resumed: the trials are held in their queue (their Kueue Workloads deactivated) and run again on
resume, exactly once each, whether the operator's API server dies at the moment of the suspension
or Kueue itself is down (its webhooks then refuse every change of a Workload).

Real controllers (hack/training.sh) on KWOK nodes; skipped with the reason when they are not
running, or when the cluster is not the local one (the faults need its processes)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kubernetes import client

from tests.support import faults
from tests.support.experiments import as_job, experiment, loss_is_x, x_space
from tests.support.kube import Cluster, OperatorProcess, wait_until
from tests.support.training import KUEUE, local_queue, set_quota

pytestmark = pytest.mark.usefixtures("training_controllers", "kwok_nodes")

X = x_space(10)


def held_experiment(queue: str, duration: str) -> dict:
    """Two Job trials of one CPU each, at once, in a queue with one CPU: one runs (for longer than
    the fault lasts, so that it still runs when the operator can act again), one waits."""
    body = as_job(
        experiment(
            "held",
            X,
            annotations=loss_is_x(duration),
            max_trials=2,
            parallel=2,
        )
    )
    body["spec"]["trialTemplate"]["queueName"] = queue
    template = body["spec"]["trialTemplate"]["job"]["spec"]["template"]["spec"]
    template["containers"][0]["resources"] = {"requests": {"cpu": "1"}}
    template["nodeSelector"] = {"type": "kwok"}
    return body


def one_running_one_queued(cluster: Cluster) -> None:
    wait_until(
        lambda: (s := cluster.get("held").get("status", {})).get("trialsRunning") == 1 and s.get("trialsQueued") == 1,
        60,
        what="one trial running, one queued",
    )


def held(api, cluster: Cluster) -> bool:
    """The experiment's two trials held by the suspension (Queued, their Kueue Workloads inactive),
    but for one that finished while the operator could not act; no pod running."""
    trials = cluster.trials()
    workloads = client.CustomObjectsApi(api).list_namespaced_custom_object(*KUEUE, cluster.ns, "workloads")["items"]
    active = {w["metadata"]["ownerReferences"][0]["name"]: w["spec"].get("active") for w in workloads}
    kept = [
        n for n, t in trials.items() if (t["status"]["phase"], t["status"].get("reason")) == ("Queued", "Suspended")
    ]
    done = [n for n, t in trials.items() if t["status"]["phase"] == "Succeeded"]
    return (
        len(trials) == 2
        and len(kept) >= 1
        and len(kept) + len(done) == 2
        and all(active.get(n) is False for n in kept)
        and not any(p.status.phase == "Running" for p in cluster.pods().values())
    )


def wait_held(api, cluster: Cluster, what: str) -> None:
    try:
        wait_until(lambda: held(api, cluster), 60, what=what)
    except AssertionError as e:
        trials = {n: (t["status"].get("phase"), t["status"].get("reason")) for n, t in cluster.trials().items()}
        workloads = client.CustomObjectsApi(api).list_namespaced_custom_object(*KUEUE, cluster.ns, "workloads")
        active = {w["metadata"]["name"]: w["spec"].get("active") for w in workloads["items"]}
        pods = {n: p.status.phase for n, p in cluster.pods().items()}
        raise AssertionError(f"{e}\ntrials: {trials}\nworkloads active: {active}\npods: {pods}") from e


def resumed_exactly_once(api, cluster: Cluster, queue: str) -> None:
    set_quota(api, cluster.ns, queue, "2")  # both at once from here: a shorter test
    cluster.patch("held", {"spec": {"suspend": False}})
    exp = cluster.wait_finished("held", timeout=120)
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    trials = cluster.trials()
    outcomes = {n: (t["status"]["phase"], t["status"].get("reason")) for n, t in trials.items()}
    assert len(trials) == 2 and all(p == "Succeeded" for p, _ in outcomes.values()), outcomes
    status = exp["status"]
    assert (status["configurations"], status.get("trialsKilled", 0), status.get("trialsFailed", 0)) == (2, 0, 0)


@pytest.fixture
def operator_log(tmp_path: Path):
    """Operators started by the test, stopped at teardown with their log's end printed."""
    started: list[OperatorProcess] = []
    yield started
    for op in started:
        op.stop()
        print(f"--- {op.log_path}\n{op.log()[-6000:]}")


def test_suspended_while_the_operators_api_server_is_killed_the_trials_are_held_then_run_once(
    api, namespace, crds, apiserver, tmp_path, operator_log
):
    cluster = Cluster(api, namespace)
    op = OperatorProcess(str(apiserver.write_kubeconfig(tmp_path / "kubeconfig")), namespace, tmp_path / "op.log")
    operator_log.append(op)
    op.start()
    with local_queue(api, namespace, cpu="1") as queue:
        cluster.create(held_experiment(queue, "30s"))
        one_running_one_queued(cluster)
        cluster.patch("held", {"spec": {"suspend": True}})
        apiserver.kill()
        time.sleep(8)
        apiserver.restart()
        wait_held(api, cluster, "both trials held in their queue")
        time.sleep(3)
        assert held(api, cluster), "a held trial ran again while the experiment was suspended"
        resumed_exactly_once(api, cluster, queue)
    assert op.starts == 1 and op.proc is not None and op.proc.poll() is None


@pytest.mark.alone
def test_suspended_while_kueue_is_down_the_trials_are_held_once_it_is_back_then_run_once(
    api, namespace, local_cluster, operator
):
    cluster = Cluster(api, namespace)
    kueue = faults.Kueue(local_cluster)
    with local_queue(api, namespace, cpu="1") as queue:
        cluster.create(held_experiment(queue, "20s"))
        one_running_one_queued(cluster)
        kueue.kill()
        try:
            cluster.patch("held", {"spec": {"suspend": True}})
            # The trials say Suspended at once, but their Workloads cannot be deactivated: Kueue's
            # webhooks refuse every change while it is down.
            wait_until(
                lambda: all(t["status"].get("reason") == "Suspended" for t in cluster.trials().values()),
                30,
                what="the trials to be marked suspended",
            )
            time.sleep(3)
        finally:
            kueue.restart()
        wait_held(api, cluster, "both trials held in their queue once Kueue is back")
        time.sleep(3)
        assert held(api, cluster), "a held trial ran again while the experiment was suspended"
        resumed_exactly_once(api, cluster, queue)
