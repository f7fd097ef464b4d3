"""What a trial's pod says about the trial (hpo_operator.core.podstate.observe)."""

import pytest

from hpo_operator.core import times
from hpo_operator.core.podstate import finished, observe

CREATED = "2024-05-01T10:00:00Z"
STARTED = "2024-05-01T10:00:05Z"
FINISHED = "2024-05-01T10:03:00Z"


def pod(phase, containers=None, reason=None, message=None, conditions=None, start=STARTED):
    """A pod shaped like what the API server returns (only the fields observe() may read)."""
    status = {"phase": phase, "conditions": conditions or [], "containerStatuses": containers or []}
    if start:
        status["startTime"] = start
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "exp-0000", "namespace": "ns", "uid": "pod-uid", "creationTimestamp": CREATED},
        "spec": {"containers": [{"name": c["name"], "image": "img"} for c in containers or []]},
        "status": status,
    }


def terminated(name="main", exit_code=0, reason=None, message=None):
    state = {
        "exitCode": exit_code,
        "startedAt": STARTED,
        "finishedAt": FINISHED,
        "reason": reason or ("Completed" if exit_code == 0 else "Error"),
        "containerID": "containerd://abc",
    }
    if message is not None:
        state["message"] = message
    return {
        "name": name,
        "ready": False,
        "restartCount": 0,
        "image": "img",
        "imageID": "",
        "started": False,
        "state": {"terminated": state},
    }


def running(name="main"):
    return {
        "name": name,
        "ready": True,
        "restartCount": 0,
        "image": "img",
        "started": True,
        "state": {"running": {"startedAt": STARTED}},
    }


def waiting(reason, message="", name="main"):
    return {
        "name": name,
        "ready": False,
        "restartCount": 0,
        "image": "img",
        "started": False,
        "state": {"waiting": {"reason": reason, "message": message}},
    }


def condition(type_, status, reason=None, message=None):
    cond = {"type": type_, "status": status, "lastProbeTime": None, "lastTransitionTime": CREATED}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


# --- finished pods ---------------------------------------------------------------------------


def test_succeeded_with_exit_code_zero():
    obs = observe(pod("Succeeded", [terminated(exit_code=0, message='{"loss": 0.5}')]))
    assert obs.phase == "Succeeded"
    assert obs.reason == "Completed"
    assert obs.failure_class is None
    assert obs.exit_code == 0
    assert obs.message == ""
    assert obs.termination_message == '{"loss": 0.5}'
    assert obs.start_time == STARTED
    assert obs.finish_time == FINISHED
    assert obs.fatal is False


def test_succeeded_without_a_termination_message():
    obs = observe(pod("Succeeded", [terminated(exit_code=0)]))
    assert obs.phase == "Succeeded" and obs.termination_message is None


def test_failed_with_exit_code_3_is_class_error():
    obs = observe(pod("Failed", [terminated(exit_code=3, message="boom")]))
    assert obs.phase == "Failed"
    assert obs.reason == "Error"
    assert obs.failure_class == "Error"
    assert obs.exit_code == 3
    assert "3" in obs.message
    assert obs.termination_message == "boom"
    assert obs.finish_time == FINISHED


def test_a_failed_containers_termination_message_explains_its_failure():
    said = 'Traceback (most recent call last):\n  File "objective.py", line 3\nValueError: lr must be positive'
    obs = observe(pod("Failed", [terminated(exit_code=1, message=said)]))
    assert obs.message == f"the container exited with code 1 (Error): {said}"


def test_a_long_termination_message_keeps_its_end_in_the_failure_message():
    said = "x" * 5000 + "\nRuntimeError: the last line"
    obs = observe(pod("Failed", [terminated(exit_code=1, message=said)]))
    assert obs.message.endswith("RuntimeError: the last line")
    assert len(obs.message) < 2200


def test_metrics_in_a_failed_containers_termination_message_are_not_its_explanation():
    obs = observe(pod("Failed", [terminated(exit_code=1, message='{"loss": 0.5, "step": 3}')]))
    assert obs.message == "the container exited with code 1 (Error)"
    assert obs.termination_message == '{"loss": 0.5, "step": 3}'


def test_failed_without_a_terminated_reason_defaults_to_error():
    status = terminated(exit_code=2)
    del status["state"]["terminated"]["reason"]
    obs = observe(pod("Failed", [status]))
    assert (obs.reason, obs.failure_class, obs.exit_code) == ("Error", "Error", 2)


def test_oom_killed_is_its_own_class():
    obs = observe(pod("Failed", [terminated(exit_code=137, reason="OOMKilled")]))
    assert obs.phase == "Failed"
    assert obs.reason == "OOMKilled"
    assert obs.failure_class == "OOMKilled"
    assert obs.exit_code == 137
    assert "memory" in obs.message


@pytest.mark.parametrize(
    "reason",
    ["Evicted", "Preempting", "NodeLost", "NodeShutdown", "Terminated", "UnexpectedAdmissionError", "OutOfmemory"],
)
def test_pod_level_infrastructure_reasons(reason):
    obs = observe(
        pod("Failed", [terminated(exit_code=137)], reason=reason, message="The node was low on resource: memory.")
    )
    assert obs.phase == "Failed"
    assert obs.reason == reason
    assert obs.failure_class == "Infrastructure"
    assert obs.message == "The node was low on resource: memory."
    assert obs.exit_code == 137


def test_evicted_before_any_container_ran():
    # An eviction can leave no terminated container state behind at all.
    obs = observe(pod("Failed", [waiting("ContainerCreating")], reason="Evicted", message="evicted"))
    assert (obs.phase, obs.reason, obs.failure_class, obs.exit_code) == ("Failed", "Evicted", "Infrastructure", None)


def test_deadline_exceeded_is_a_timeout():
    obs = observe(
        pod(
            "Failed",
            [terminated(exit_code=137)],
            reason="DeadlineExceeded",
            message="Pod was active on the node longer than the specified deadline",
        )
    )
    assert (obs.phase, obs.failure_class) == ("Failed", "Timeout")


def test_unknown_pod_level_reason_is_an_error():
    obs = observe(pod("Failed", [terminated(exit_code=1)], reason="SomethingElse"))
    assert obs.failure_class == "Error"


def test_disruption_target_condition_is_infrastructure():
    # Preemption, taint-manager deletions and API evictions set DisruptionTarget on the pod.
    conditions = [
        condition("Ready", "False"),
        condition("DisruptionTarget", "True", "PreemptionByScheduler", "preempted"),
    ]
    obs = observe(pod("Failed", [terminated(exit_code=137, reason="Error")], conditions=conditions))
    assert obs.phase == "Failed"
    assert obs.failure_class == "Infrastructure"
    assert obs.exit_code == 137


def test_disruption_target_false_does_not_count():
    conditions = [condition("DisruptionTarget", "False")]
    obs = observe(pod("Failed", [terminated(exit_code=1)], conditions=conditions))
    assert obs.failure_class == "Error"


def test_oom_killed_wins_over_a_disruption_condition():
    conditions = [condition("DisruptionTarget", "True", "TerminationByKubelet")]
    obs = observe(pod("Failed", [terminated(exit_code=137, reason="OOMKilled")], conditions=conditions))
    assert obs.failure_class == "OOMKilled"


def test_failed_pod_without_container_states():
    obs = observe(pod("Failed", [], message="init failed"))
    assert (obs.phase, obs.reason, obs.failure_class) == ("Failed", "PodFailed", "Error")
    assert obs.message == "init failed"


def test_failed_pod_without_container_states_but_disrupted():
    obs = observe(pod("Failed", [], conditions=[condition("DisruptionTarget", "True", "DeletionByTaintManager")]))
    assert (obs.phase, obs.failure_class) == ("Failed", "Infrastructure")


# --- running and pending pods ---------------------------------------------------------------


def test_running():
    obs = observe(pod("Running", [running()]))
    assert (obs.phase, obs.reason, obs.failure_class, obs.fatal) == ("Running", "Running", None, False)
    assert obs.start_time == STARTED


def test_waiting_image_pull_back_off_is_startup_and_may_heal():
    obs = observe(pod("Pending", [waiting("ImagePullBackOff", 'Back-off pulling image "nope:1"')], start=STARTED))
    assert obs.phase == "Pending"
    assert obs.reason == "ImagePullBackOff"
    assert obs.failure_class == "Startup"
    assert obs.fatal is False
    assert obs.message == 'Back-off pulling image "nope:1"'
    assert obs.stuck_since == CREATED


@pytest.mark.parametrize("reason", ["ErrImagePull", "ContainerCreating", "PodInitializing"])
def test_other_slow_waiting_reasons_are_not_fatal(reason):
    obs = observe(pod("Pending", [waiting(reason)]))
    assert (obs.phase, obs.reason, obs.failure_class, obs.fatal) == ("Pending", reason, "Startup", False)


@pytest.mark.parametrize(
    "reason",
    [
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    ],
)
def test_waiting_reasons_that_cannot_heal_are_fatal(reason):
    obs = observe(pod("Pending", [waiting(reason, "bad")]))
    assert (obs.phase, obs.reason, obs.failure_class, obs.fatal) == ("Pending", reason, "Startup", True)
    assert obs.message == "bad"
    assert obs.stuck_since == CREATED


def test_unschedulable():
    conditions = [
        condition("PodScheduled", "False", "Unschedulable", "0/2 nodes are available: 2 Insufficient memory.")
    ]
    obs = observe(pod("Pending", [], conditions=conditions, start=None))
    assert obs.phase == "Pending"
    assert obs.reason == "Unschedulable"
    assert obs.failure_class == "Startup"
    assert obs.fatal is False
    assert obs.message == "0/2 nodes are available: 2 Insufficient memory."
    assert obs.stuck_since == CREATED


def test_pod_scheduled_false_without_a_reason():
    obs = observe(pod("Pending", [], conditions=[condition("PodScheduled", "False")], start=None))
    assert (obs.reason, obs.failure_class) == ("Unschedulable", "Startup")


def test_scheduled_pod_still_pending():
    obs = observe(pod("Pending", [], conditions=[condition("PodScheduled", "True")], start=None))
    assert (obs.phase, obs.reason, obs.failure_class, obs.fatal) == ("Pending", "PodPending", None, False)
    assert obs.stuck_since == CREATED


def test_unknown_waiting_reason_is_just_pending():
    obs = observe(pod("Pending", [waiting("SomethingNew")]))
    assert (obs.phase, obs.reason, obs.failure_class) == ("Pending", "PodPending", None)


def test_pod_without_status_is_pending():
    obs = observe({"metadata": {"name": "x", "creationTimestamp": CREATED}})
    assert (obs.phase, obs.reason, obs.failure_class, obs.stuck_since) == ("Pending", "PodPending", None, CREATED)


# --- the primary container ---------------------------------------------------------------------


def test_first_container_is_primary_by_default():
    containers = [terminated("main", exit_code=137, reason="OOMKilled"), terminated("sidecar", exit_code=1)]
    assert observe(pod("Failed", containers)).failure_class == "OOMKilled"


def test_primary_container_is_chosen_by_name():
    containers = [terminated("sidecar", exit_code=1), terminated("train", exit_code=137, reason="OOMKilled")]
    assert observe(pod("Failed", containers)).failure_class == "Error"
    obs = observe(pod("Failed", containers), "train")
    assert (obs.failure_class, obs.exit_code, obs.reason) == ("OOMKilled", 137, "OOMKilled")


def test_termination_message_comes_from_the_primary_container():
    containers = [terminated("sidecar", message='{"loss": 9}'), terminated("train", message='{"loss": 1}')]
    assert observe(pod("Succeeded", containers), "train").termination_message == '{"loss": 1}'
    assert observe(pod("Succeeded", containers)).termination_message == '{"loss": 9}'


def test_waiting_state_comes_from_the_primary_container():
    containers = [running("sidecar"), waiting("InvalidImageName", name="train")]
    obs = observe(pod("Pending", containers), "train")
    assert (obs.reason, obs.fatal) == ("InvalidImageName", True)


def test_unknown_primary_name_falls_back_to_the_first_container():
    containers = [terminated("main", exit_code=137, reason="OOMKilled"), terminated("other", exit_code=1)]
    assert observe(pod("Failed", containers), "nope").failure_class == "OOMKilled"


def test_primary_container_exit_decides_even_when_a_sidecar_fails():
    # restartPolicy Never: the pod is Failed because the sidecar failed, the training container succeeded.
    containers = [terminated("train", exit_code=0, message='{"loss": 0.1}'), terminated("logs", exit_code=2)]
    obs = observe(pod("Failed", containers), "train")
    assert obs.phase == "Succeeded"
    assert obs.failure_class is None
    assert obs.termination_message == '{"loss": 0.1}'


# --- pods whose node is gone ------------------------------------------------------------------


def deleting(p, deadline, node="node-a", disruption=None):
    p["metadata"]["deletionTimestamp"] = deadline
    p["spec"]["nodeName"] = node
    if disruption:
        p["status"]["conditions"].append(condition("DisruptionTarget", "True", disruption))
    return p


NOW = times.parse("2024-05-01T10:05:00Z")


def test_a_pod_left_terminating_past_its_grace_period_has_lost_its_node():
    p = deleting(pod("Running", [running()]), "2024-05-01T10:04:40Z", disruption="DeletionByTaintManager")
    obs = observe(p, now=NOW)
    assert (obs.phase, obs.reason, obs.failure_class) == ("Failed", "NodeLost", "Infrastructure")
    assert "DeletionByTaintManager" in obs.message and "node-a" in obs.message
    assert obs.start_time == STARTED


def test_a_pod_within_its_grace_period_is_still_running_and_rechecked_later():
    p = deleting(pod("Running", [running()]), "2024-05-01T10:04:55Z")
    obs = observe(p, now=NOW)
    assert obs.phase == "Running"
    assert obs.recheck_in == pytest.approx(10)


def test_a_stranded_pod_that_never_started_has_lost_its_node_too():
    p = deleting(pod("Pending", [waiting("ContainerCreating")], start=None), "2024-05-01T10:00:30Z")
    obs = observe(p, now=NOW)
    assert (obs.phase, obs.reason, obs.failure_class) == ("Failed", "NodeLost", "Infrastructure")


def test_a_terminated_container_wins_over_a_late_deletion():
    # The kubelet finished the pod: its real outcome is recorded, not a lost node.
    p = deleting(pod("Failed", [terminated(exit_code=137, reason="OOMKilled")]), "2024-05-01T10:00:30Z")
    assert observe(p, now=NOW).reason == "OOMKilled"


def test_without_a_clock_deletion_is_not_judged():
    p = deleting(pod("Running", [running()]), "2024-05-01T10:00:30Z")
    obs = observe(p)
    assert obs.phase == "Running" and obs.recheck_in is None


def test_an_unscheduled_pod_being_deleted_is_not_a_lost_node():
    p = pod("Pending", [], start=None)
    p["metadata"]["deletionTimestamp"] = "2024-05-01T10:00:30Z"
    assert observe(p, now=NOW).phase == "Pending"


def test_a_pod_is_finished_once_its_phase_or_all_its_containers_say_so():
    def pod(phase, *states):
        return {
            "status": {
                "phase": phase,
                "containerStatuses": [{"name": f"c{i}", "state": s} for i, s in enumerate(states)],
            }
        }

    done, running = {"terminated": {"exitCode": 0}}, {"running": {}}
    assert finished(pod("Succeeded")) and finished(pod("Failed", running))
    assert finished(pod("Running", done, done))  # the kubelet has not set the phase yet
    assert not finished(pod("Running", done, running))  # a sidecar still runs
    assert not finished(pod("Pending")) and not finished({})


def test_a_pod_held_by_scheduling_gates_is_queued_not_stuck():
    gated = {
        "metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"schedulingGates": [{"name": "kueue.x-k8s.io/admission"}], "containers": [{"name": "c"}]},
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}],
        },
    }
    obs = observe(gated)
    assert (obs.phase, obs.reason, obs.queued, obs.failure_class) == ("Pending", "WaitingForAdmission", True, None)
    assert "kueue.x-k8s.io/admission" in obs.message
    # Gates removed, then unschedulable: startup trouble again, with the startup timeout's class.
    gated["spec"]["schedulingGates"] = []
    gated["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]
    obs = observe(gated)
    assert (obs.queued, obs.failure_class) == (False, "Startup")
