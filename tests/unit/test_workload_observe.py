"""What a trial that runs as a Job or another resource says (hpo_operator.workloads.observe): the
observation the planner decides by, and what it reads instead of a pod's status (deleting,
finished, holds_slot, mounted), made from the workload's conditions and its pods."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hpo_operator.controller.namespace import WorkloadObservations
from hpo_operator.workloads.kinds import JOB
from hpo_operator.workloads.observe import Observed, observe_workload, primary_pod
from hpo_operator.workloads.population import COPY_CONTAINER, COPY_LOST
from tests.support.rounds import workload_spec as spec

NOW = datetime(2026, 1, 1, 0, 10, tzinfo=UTC)
CONTAINERS = [{"name": "train", "image": "trainer:1"}]
JOBSET = {
    "apiVersion": "jobset.x-k8s.io/v1alpha2",
    "kind": "JobSet",
    "manifest": {"spec": {"replicatedJobs": [{"name": "leader", "template": {}}]}},
    "successCondition": {"type": "Completed"},
}


def pod(
    name: str,
    phase: str | None,
    *,
    created: str = "2026-01-01T00:00:00Z",
    index: str | None = None,
    terminated: dict | None = None,
    waiting: dict | None = None,
    reason: str | None = None,
    message: str | None = None,
    labels: dict | None = None,
    conditions: list | None = None,
    init: list | None = None,
    node: str | None = "node-a",
    deleted: str | None = None,
) -> dict:
    lab = {"hpo.dev/trial": "exp-0003", **(labels or {})}
    if index is not None:
        lab["batch.kubernetes.io/job-completion-index"] = index
    status: dict = {"startTime": created}
    if phase is not None:
        status["phase"] = phase
    if terminated is not None:
        status["containerStatuses"] = [{"name": "train", "state": {"terminated": terminated}}]
    elif waiting is not None:
        status["containerStatuses"] = [{"name": "train", "state": {"waiting": waiting}}]
    elif phase == "Running":
        status["containerStatuses"] = [{"name": "train", "state": {"running": {"startedAt": created}}}]
    for key, value in (("reason", reason), ("message", message), ("conditions", conditions)):
        if value is not None:
            status[key] = value
    if init is not None:
        status["initContainerStatuses"] = init
    meta = {"name": name, "namespace": "ns", "uid": f"uid-{name}", "labels": lab, "creationTimestamp": created}
    if deleted:
        meta["deletionTimestamp"] = deleted
    return {"metadata": meta, "spec": {"containers": [{"name": "train"}], "nodeName": node}, "status": status}


def job(*conditions: tuple[str, str], suspend: bool | None = None, deleted: str | None = None) -> dict:
    meta = {"name": "exp-0003", "namespace": "ns", "uid": "job-uid", "creationTimestamp": "2026-01-01T00:00:00Z"}
    if deleted:
        meta["deletionTimestamp"] = deleted
    body = {
        "metadata": meta,
        "status": {
            "conditions": [{"type": t, "status": "True", "reason": r, "message": f"{t}: {r}"} for t, r in conditions]
        },
    }
    if suspend is not None:
        body["spec"] = {"suspend": suspend}
    return body


def seen(workload: dict, pods: list[dict], **kw) -> Observed:
    return observe_workload("Job", workload, pods, now=kw.pop("now", NOW), **kw)


def flags(s: Observed) -> tuple[bool, bool, bool, bool]:
    return (s.deleting, s.finished, s.holds_slot, s.mounted)


def test_a_complete_job_succeeds_with_its_primary_pods_exit_and_message():
    done = pod(
        "exp-0003-abc",
        "Succeeded",
        terminated={
            "exitCode": 0,
            "reason": "Completed",
            "message": '{"loss": 0.3}',
            "finishedAt": "2026-01-01T00:05:00Z",
        },
    )
    s = seen(job(("Complete", "")), [done])
    obs = s.observation
    assert (obs.phase, obs.failure_class, obs.exit_code, obs.termination_message) == (
        "Succeeded",
        None,
        0,
        '{"loss": 0.3}',
    )
    assert obs.finish_time == "2026-01-01T00:05:00Z"
    assert s.pod is done  # its log is read by the pod's own name
    assert flags(s) == (False, True, False, True)
    # Its pods already gone: a success with no message, and the Job's own name to read a log by.
    s = seen(job(("Complete", "")), [])
    assert (s.observation.phase, s.observation.exit_code, s.observation.termination_message) == ("Succeeded", 0, None)
    assert s.pod["metadata"] == {"name": "exp-0003", "namespace": "ns", "uid": "job-uid"}


@pytest.mark.parametrize(
    "pods, reason, expected",
    [
        (
            [pod("p1", "Failed", terminated={"exitCode": 137, "reason": "OOMKilled"})],
            "BackoffLimitExceeded",
            ("OOMKilled", "OOMKilled"),
        ),
        ([pod("p1", "Failed", reason="Evicted")], "BackoffLimitExceeded", ("Evicted", "Infrastructure")),
        ([pod("p1", "Failed", reason="Preempting")], "BackoffLimitExceeded", ("Preempting", "Infrastructure")),
        (
            [pod("p1", "Failed", terminated={"exitCode": 2, "reason": "Error"})],
            "BackoffLimitExceeded",
            ("Error", "Error"),
        ),
        ([pod("p1", "Running")], "DeadlineExceeded", ("DeadlineExceeded", "Timeout")),
        # Past its deadline, whatever its last pod's exit.
        (
            [pod("p1", "Failed", terminated={"exitCode": 137, "reason": "OOMKilled"})],
            "DeadlineExceeded",
            ("DeadlineExceeded", "Timeout"),
        ),
        ([], "DeadlineExceeded", ("DeadlineExceeded", "Timeout")),
        ([], "BackoffLimitExceeded", ("BackoffLimitExceeded", "Error")),
        ([], "", ("Failed", "Error")),
    ],
)
def test_a_failed_jobs_class_comes_from_its_pods(pods, reason, expected):
    s = seen(job(("Failed", reason)), pods)
    assert (s.observation.phase, s.observation.reason, s.observation.failure_class) == ("Failed", *expected)
    assert flags(s) == (False, True, False, True)


def test_a_failed_job_says_what_its_pod_or_itself_said():
    # Past its deadline: the Job's own message.
    obs = seen(job(("Failed", "DeadlineExceeded")), [pod("p1", "Running")]).observation
    assert obs.message == "Failed: DeadlineExceeded"
    # Evicted: the pod's message, else the Job's.
    obs = seen(job(("Failed", "BackoffLimitExceeded")), [pod("p1", "Failed", reason="Evicted", message="low memory")])
    assert obs.observation.message == "low memory"
    obs = seen(job(("Failed", "BackoffLimitExceeded")), [pod("p1", "Failed", reason="Evicted")]).observation
    assert obs.message == "Failed: BackoffLimitExceeded"
    # A container's exit: its code, and what it wrote to its termination message.
    said = {"exitCode": 3, "reason": "Error", "message": "ValueError: lr", "startedAt": "2026-01-01T00:01:00Z"}
    obs = seen(job(("Failed", "BackoffLimitExceeded")), [pod("p1", "Failed", terminated=said)]).observation
    assert (obs.exit_code, obs.termination_message) == (3, "ValueError: lr")
    assert obs.message == "the container exited with code 3 (Error): ValueError: lr"
    assert obs.start_time == "2026-01-01T00:01:00Z"


def test_a_disrupted_pod_makes_its_jobs_failure_infrastructure():
    disrupted = [{"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager"}]
    killed = {"exitCode": 137, "reason": "Error"}
    obs = seen(job(("Failed", "BackoffLimitExceeded")), [pod("p1", "Failed", terminated=killed, conditions=disrupted)])
    assert obs.observation.failure_class == "Infrastructure"
    not_disrupted = [{**disrupted[0], "status": "False"}]
    obs = seen(
        job(("Failed", "BackoffLimitExceeded")), [pod("p1", "Failed", terminated=killed, conditions=not_disrupted)]
    )
    assert obs.observation.failure_class == "Error"


def test_a_job_whose_pod_failed_before_its_containers_started_says_so():
    other = [{"name": "setup", "state": {"terminated": {"exitCode": 1}}}]
    s = seen(job(("Failed", "BackoffLimitExceeded")), [pod("p1", "Failed", init=other)])
    assert (s.observation.reason, s.observation.failure_class) == ("PodFailed", "Error")
    assert s.observation.message == "Failed: BackoffLimitExceeded"
    # A pbt segment's copy step found its parent's checkpoint not whole: not retried.
    copy = [{"name": COPY_CONTAINER, "state": {"terminated": {"exitCode": COPY_LOST, "message": "no step file"}}}]
    s = seen(job(("Failed", "BackoffLimitExceeded")), [pod("p1", "Failed", init=copy)])
    assert (s.observation.reason, s.observation.failure_class, s.observation.message) == (
        "CheckpointLost",
        "Startup",
        "no step file",
    )


def test_the_newest_failed_pod_explains_a_job_that_retried_its_pods():
    pods = [
        pod("p1", "Failed", created="2026-01-01T00:00:00Z", terminated={"exitCode": 2, "reason": "Error"}),
        pod("p2", "Failed", created="2026-01-01T00:01:00Z", terminated={"exitCode": 137, "reason": "OOMKilled"}),
        pod("p3", "Running", created="2026-01-01T00:02:00Z"),
    ]
    assert seen(job(("Failed", "BackoffLimitExceeded")), pods).observation.failure_class == "OOMKilled"


def test_an_unfinished_job_is_its_primary_pod_or_pending():
    s = seen(job(), [pod("p1", "Running")])
    assert (s.observation.phase, s.observation.start_time) == ("Running", "2026-01-01T00:00:00Z")
    assert flags(s) == (False, False, True, True)
    s = seen(job(), [pod("p1", "Pending", waiting={"reason": "ImagePullBackOff", "message": "no such image"})])
    assert (s.observation.phase, s.observation.reason, s.observation.failure_class) == (
        "Pending",
        "ImagePullBackOff",
        "Startup",
    )
    assert s.observation.stuck_since == "2026-01-01T00:00:00Z" and flags(s) == (False, False, True, False)
    s = seen({**job(), "metadata": {**job()["metadata"], "creationTimestamp": "2026-01-01T00:03:00Z"}}, [])
    assert (s.observation.phase, s.observation.reason, s.observation.stuck_since) == (
        "Pending",
        "PodPending",
        "2026-01-01T00:03:00Z",
    )
    assert s.pod["metadata"]["name"] == "exp-0003" and flags(s) == (False, False, True, False)


def test_a_pod_that_ended_while_its_job_goes_on_leaves_the_trial_running():
    # The Job retries, or waits for other indexes: it has not decided.
    for ended in (
        pod("p1", "Failed", terminated={"exitCode": 1, "reason": "Error"}, created="2026-01-01T00:02:00Z"),
        pod("p1", "Succeeded", terminated={"exitCode": 0}, created="2026-01-01T00:02:00Z"),
    ):
        s = seen(job(), [ended])
        assert (s.observation.phase, s.observation.failure_class) == ("Running", None)
        assert s.observation.start_time == "2026-01-01T00:02:00Z"
        assert flags(s) == (False, False, True, True)


def test_a_primary_container_that_ended_before_its_pod_leaves_a_job_trial_running():
    # The kubelet reports the container's exit a moment before the pod's phase: the Job has not counted
    # the pod yet, so the trial goes on (a plain pod's trial would end here, by its primary container).
    for code in (0, 1):
        s = seen(job(), [pod("p1", "Running", terminated={"exitCode": code}, created="2026-01-01T00:02:00Z")])
        assert (s.observation.phase, s.observation.reason) == ("Running", "Running")
        assert flags(s) == (False, False, True, True)


def test_a_suspended_job_or_resource_is_waiting_for_admission_whatever_its_pods_do():
    s = seen(job(suspend=True), [])
    obs = s.observation
    assert (obs.phase, obs.reason, obs.queued, obs.failure_class) == ("Pending", "WaitingForAdmission", True, None)
    assert obs.message == "waiting for admission: the Job is suspended"
    assert flags(s) == (False, False, True, False)
    # Preempted: its pods are still terminating, but the Job is held again.
    s = seen(job(suspend=True), [pod("p1", "Running")])
    assert s.observation.queued and flags(s) == (False, False, True, False)
    # Its pod's own scheduling gates say why.
    gated = pod("p1", "Pending")
    gated["spec"]["schedulingGates"] = [{"name": "kueue.x-k8s.io/admission"}]
    assert seen(job(suspend=True), [gated]).observation.message == (
        "waiting for admission (scheduling gates: kueue.x-k8s.io/admission)"
    )
    # Admitted (Kueue sets suspend false): the pod speaks again.
    s = seen(job(suspend=False), [pod("p1", "Running")])
    assert (s.observation.phase, s.observation.queued) == ("Running", False)
    # A finished workload is finished, suspended or not (a JobSet may be suspended after it ends).
    assert seen(job(("Complete", ""), suspend=True), []).observation.phase == "Succeeded"
    jobset = spec(resource=JOBSET).trial_template.resource
    obs = observe_workload("JobSet", job(suspend=True), [], jobset).observation
    assert obs.queued and obs.message == "waiting for admission: the JobSet is suspended"


def test_a_job_deleted_past_its_grace_period_with_its_pod_never_finished_is_lost():
    deleted = "2026-01-01T00:09:00Z"  # 60 s before NOW
    s = seen(job(deleted=deleted), [pod("p1", "Running", node="node-a")])
    obs = s.observation
    assert (obs.phase, obs.reason, obs.failure_class) == ("Failed", "NodeLost", "Infrastructure")
    assert "node-a never finished it (60s past its grace period)" in obs.message
    assert flags(s) == (True, False, False, True)  # it holds no trial slot
    # Not yet due: looked at again when it would be.
    s = seen(job(deleted="2026-01-01T00:09:55Z"), [pod("p1", "Running")])
    assert (s.observation.phase, s.observation.recheck_in, s.deleting, s.holds_slot) == ("Running", 10.0, True, True)
    # Never placed on a node: nothing is stranded.
    s = seen(job(deleted=deleted), [])
    assert (s.observation.phase, s.holds_slot) == ("Pending", True)
    # Suspended, and its pods never finished: lost as well.
    s = seen(job(suspend=True, deleted=deleted), [pod("p1", "Running", node="node-b")])
    assert (s.observation.reason, s.holds_slot) == ("NodeLost", False)
    s = seen(job(suspend=True, deleted="2026-01-01T00:09:55Z"), [pod("p1", "Running")])
    assert (s.observation.reason, s.observation.recheck_in, s.holds_slot) == ("WaitingForAdmission", 10.0, True)
    # A decided Job is what it decided, being deleted or not.
    s = seen(job(("Complete", ""), deleted=deleted), [pod("p1", "Running")])
    assert s.observation.phase == "Succeeded" and flags(s) == (True, True, False, True)


def test_a_pod_deleted_while_its_job_goes_on_is_not_the_trials_end():
    # The Job replaces a pod it lost (an eviction, a drained node): the trial goes on.
    lost = pod("p1", "Running", deleted="2026-01-01T00:09:00Z")
    s = seen(job(), [lost])
    assert (s.observation.phase, s.observation.recheck_in) == ("Running", None)
    assert flags(s) == (False, False, True, True)


def test_a_resource_follows_its_own_success_and_failure_conditions():
    resource = spec(resource={**JOBSET, "failureCondition": {"type": "Broken"}}).trial_template.resource
    running = {
        "metadata": {"name": "exp-0003", "namespace": "ns", "uid": "r"},
        "status": {"conditions": [{"type": "Completed", "status": "False"}]},
    }

    def observed(body: dict, pods: list[dict]) -> str:
        obs = observe_workload("JobSet", body, pods, resource).observation
        return f"{obs.phase}/{obs.failure_class}"

    assert observed(running, [pod("w", "Running")]) == "Running/None"
    completed = {**running, "status": {"conditions": [{"type": "Completed", "status": "True"}]}}
    assert observed(completed, []) == "Succeeded/None"
    # A Job's condition names mean nothing to it.
    assert (
        observed({**running, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}, []) == "Pending/None"
    )
    assert observed({**running, "status": {"conditions": [{"type": "Failed", "status": "True"}]}}, []) == "Pending/None"
    broken = {**running, "status": {"conditions": [{"type": "Broken", "status": "True", "reason": "FailedJobs"}]}}
    oom = pod("w", "Failed", terminated={"exitCode": 137, "reason": "OOMKilled"})
    assert observed(broken, [oom]) == "Failed/OOMKilled"
    assert observed(broken, []) == "Failed/Error"


def test_the_primary_pod_is_index_0_of_an_indexed_job_or_the_newest_or_the_labelled_one():
    i0 = pod("a-0", "Running", index="0", created="2026-01-01T00:00:00Z")
    i1 = pod("a-1", "Running", index="1", created="2026-01-01T00:00:05Z")
    assert primary_pod([i1, i0], None) is i0
    old, new = (
        pod("b-old", "Failed", created="2026-01-01T00:00:00Z"),
        pod("b-new", "Running", created="2026-01-01T00:00:09Z"),
    )
    assert primary_pod([new, old], None) is new
    leader = pod("c-l", "Running", labels={"role": "leader"}, created="2026-01-01T00:00:00Z")
    assert primary_pod([i1, leader], {"role": "leader"}) is leader
    assert primary_pod([i1], {"role": "leader"}) is None
    # The primary pod speaks for the trial, not another one.
    waiting = pod("l", "Pending", labels={"role": "leader"}, waiting={"reason": "ErrImagePull"})
    s = observe_workload("Job", job(), [waiting, i1], primary_labels={"role": "leader"})
    assert (s.observation.reason, s.pod) == ("ErrImagePull", waiting)


def test_the_primary_pod_among_labelled_ones_is_completion_index_0():
    node = {"jobset.sigs.k8s.io/replicatedjob-name": "node", "jobset.sigs.k8s.io/job-index": "0"}
    n0 = pod("n-0", "Running", index="0", labels=node, created="2026-01-01T00:00:00Z")
    n1 = pod("n-1", "Running", index="1", labels=node, created="2026-01-01T00:00:05Z")
    other = pod("i-0", "Running", index="0", labels={"jobset.sigs.k8s.io/replicatedjob-name": "init"})
    assert primary_pod([n1, other, n0], node) is n0


def test_an_observation_is_made_again_only_for_a_trial_whose_job_or_pods_changed():
    s = spec(job={"spec": {"template": {"spec": {"containers": CONTAINERS}}}})
    jobs = {"exp-0003": job(), "exp-0004": {**job(), "metadata": {**job()["metadata"], "name": "exp-0004"}}}
    running = pod("p3", "Running")
    waiting = pod("p4", "Pending", labels={"hpo.dev/trial": "exp-0004"})
    cache = WorkloadObservations()
    first = cache.observe(JOB, s, jobs, [running, waiting], NOW)
    assert first["exp-0003"].observation.phase == "Running" and first["exp-0004"].observation.phase == "Pending"

    # The informers store a new dict for each change: exp-0004's pod started, exp-0003 is as it was.
    started = pod("p4", "Running", labels={"hpo.dev/trial": "exp-0004"})
    second = cache.observe(JOB, s, dict(jobs), [running, started], NOW)
    assert second["exp-0003"] is first["exp-0003"]
    assert second["exp-0004"].observation.phase == "Running"

    # exp-0003's Job completed.
    jobs["exp-0003"] = job(("Complete", ""))
    third = cache.observe(JOB, s, jobs, [running, started], NOW)
    assert third["exp-0003"].observation.phase == "Succeeded" and third["exp-0004"] is second["exp-0004"]

    # Another primary pod in the template: every trial is observed again.
    edited = spec(job={"spec": {"template": {"spec": {"containers": CONTAINERS}}}}, primaryPod={"labels": {"r": "x"}})
    fourth = cache.observe(JOB, edited, jobs, [running, started], NOW)
    assert fourth["exp-0003"] is not third["exp-0003"] and fourth["exp-0004"] is not third["exp-0004"]

    # A Job being deleted is observed every round: the round's clock decides whether it is lost.
    deleting = {**jobs["exp-0004"]["metadata"], "deletionTimestamp": "2026-01-01T00:09:55Z"}
    jobs["exp-0004"] = {**jobs["exp-0004"], "metadata": deleting}
    fifth = cache.observe(JOB, s, jobs, [running, started], NOW)
    assert fifth["exp-0004"].observation.phase == "Running"
    later = datetime(2026, 1, 1, 0, 11, tzinfo=UTC)
    assert cache.observe(JOB, s, jobs, [running, started], later)["exp-0004"].observation.reason == "NodeLost"
    assert cache.observe(JOB, s, jobs, [running, started], later)["exp-0003"] is fifth["exp-0003"]

    # A trial whose Job is gone is forgotten.
    del jobs["exp-0004"]
    assert list(cache.observe(JOB, s, jobs, [running], NOW)) == ["exp-0003"] and list(cache.kept) == ["exp-0003"]
