"""An informer stores what the operator reads of each object, and wakes an experiment only when
that changed."""

from hpo_operator.controller.namespace import by_experiment
from hpo_operator.controller.pending import PendingWrites
from hpo_operator.controller.slim import slim_custom_object, slim_pod, slim_workload
from hpo_operator.kube.client import PODS, TRIALS
from hpo_operator.kube.informer import Informer


def job(name: str, active: int, conditions: list[dict] | None = None) -> dict:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "labels": {"hpo.dev/experiment": "exp"},
            "resourceVersion": str(active),
        },
        "status": {"active": active, "conditions": conditions or []},
    }


def informer(slim) -> tuple[Informer, list]:
    woken: list = []
    return Informer(None, "ns", PODS, by_experiment, slim, woken.append), woken


def test_an_event_that_changes_nothing_the_operator_reads_wakes_no_round():
    inf, woken = informer(slim_workload)
    inf._put(job("exp-0000", active=1))
    stored = inf.objects["exp"]["exp-0000"]
    inf._put(job("exp-0000", active=2))  # the Job's counters: not read
    assert woken == ["exp"]
    assert inf.objects["exp"]["exp-0000"] is stored  # views cached on it stay valid
    inf._put(job("exp-0000", active=0, conditions=[{"type": "Complete", "status": "True"}]))
    assert woken == ["exp", "exp"]
    assert inf.objects["exp"]["exp-0000"]["status"]["conditions"][0]["type"] == "Complete"


def test_a_pod_whose_phase_changes_wakes_its_experiment():
    inf, woken = informer(slim_pod)
    pod = {
        "metadata": {"name": "exp-0000", "labels": {"hpo.dev/experiment": "exp"}},
        "spec": {"containers": [{"name": "train"}]},
        "status": {"phase": "Pending", "podIP": "10.0.0.1"},
    }
    inf._put(pod)
    inf._put({**pod, "status": {"phase": "Pending", "podIP": "10.0.0.2"}})
    inf._put({**pod, "status": {"phase": "Running"}})
    inf._drop("exp-0000")
    assert woken == ["exp", "exp", "exp"] and "exp" not in inf.objects


def test_a_pods_readiness_conditions_wake_no_round_but_why_it_is_not_scheduled_does():
    inf, woken = informer(slim_pod)
    pod = {
        "metadata": {"name": "exp-0000", "labels": {"hpo.dev/experiment": "exp"}},
        "spec": {"containers": [{"name": "train"}], "nodeName": "n1"},
        "status": {"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}]},
    }
    inf._put(pod)
    for ready in ("True", "False"):  # the kubelet's Ready, ContainersReady: not read
        conditions = [{"type": t, "status": ready} for t in ("Initialized", "Ready", "ContainersReady")]
        inf._put({**pod, "status": {**pod["status"], "conditions": pod["status"]["conditions"] + conditions}})
    assert woken == ["exp"]
    disrupted = {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager"}
    inf._put({**pod, "status": {**pod["status"], "conditions": [*pod["status"]["conditions"], disrupted]}})
    assert woken == ["exp", "exp"]
    assert inf.objects["exp"]["exp-0000"]["status"]["conditions"][-1]["type"] == "DisruptionTarget"


def test_a_job_its_queue_suspends_or_admits_wakes_its_experiment_and_is_seen_so():
    inf, woken = informer(slim_workload)
    inf._put({**job("exp-0000", active=0), "spec": {"suspend": True, "template": {"spec": {}}}})
    assert inf.objects["exp"]["exp-0000"]["spec"] == {"suspend": True}  # the template is dropped
    inf._put({**job("exp-0000", active=0), "spec": {"suspend": False}})
    assert woken == ["exp", "exp"]
    assert inf.objects["exp"]["exp-0000"]["spec"] == {"suspend": False}


def test_a_pod_keeps_its_scheduling_gates_until_they_are_removed():
    inf, woken = informer(slim_pod)
    pod = {
        "metadata": {"name": "exp-0000", "labels": {"hpo.dev/experiment": "exp"}},
        "spec": {"containers": [{"name": "train"}], "schedulingGates": [{"name": "kueue.x-k8s.io/admission"}]},
        "status": {"phase": "Pending"},
    }
    inf._put(pod)
    assert inf.objects["exp"]["exp-0000"]["spec"]["schedulingGates"] == [{"name": "kueue.x-k8s.io/admission"}]
    inf._put({**pod, "spec": {"containers": [{"name": "train"}]}})
    assert woken == ["exp", "exp"] and "schedulingGates" not in inf.objects["exp"]["exp-0000"]["spec"]


def test_a_trials_own_writes_coming_back_wake_no_round_and_anything_else_does():
    """The experiment's loop remembers its writes (PendingWrites): the watch bringing back its create
    and its status writes is stored, but a round for it would find nothing new. A change of
    anyone else's, or a status other than ours, wakes the experiment."""
    written = PendingWrites()
    woken: list = []
    inf = Informer(
        None,
        "ns",
        TRIALS,
        lambda t: t["spec"]["experimentName"],
        slim_custom_object,
        woken.append,
        echo=lambda key, name, before, now: key == "exp" and written.echo(name, before, now),
    )
    made = {
        "metadata": {"name": "t0", "uid": "u0", "resourceVersion": "1", "managedFields": [{"manager": "op"}]},
        "spec": {"experimentName": "exp", "attempt": 1},
    }
    written.trials["t0"] = made
    inf._put(made)  # our create
    written.trial_status["t0"] = {"phase": "Pending"}
    inf._put({**made, "metadata": {**made["metadata"], "resourceVersion": "2"}, "status": {"phase": "Pending"}})
    assert woken == []
    inf._put({**made, "metadata": {**made["metadata"], "resourceVersion": "3"}, "status": {"phase": "Running"}})
    assert woken == ["exp"]  # not what we wrote: the kubelet's news, or a user's
    written.trial_status["t0"] = {"phase": "Running"}
    annotated = {**made["metadata"], "resourceVersion": "4", "annotations": {"hpo.dev/restart": "please"}}
    inf._put({**made, "metadata": annotated, "status": {"phase": "Running"}})
    assert woken == ["exp"] * 2  # our status, but a user's annotation with it
    inf._put(
        {
            **made,
            "metadata": {**annotated, "resourceVersion": "5"},
            "spec": {"experimentName": "exp", "attempt": 2},
            "status": {"phase": "Running"},
        }
    )
    assert woken == ["exp"] * 3
