"""The executor against an in-memory API: order where one write needs another, concurrency
everywhere else, failures that do not stop the round, and aggregated Events."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from hpo_operator import planner
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.api.status import ExperimentStatus, TrialStatus
from hpo_operator.api.vocabulary import A_RESTART, L_LAUNCH
from hpo_operator.controller.authority import Authority, Tenancy
from hpo_operator.controller.executor import Executor
from hpo_operator.controller.pending import PendingWrites
from hpo_operator.core import times
from hpo_operator.core.authorship import Author, signed
from hpo_operator.kube.client import ApiException

SPEC = ExperimentSpec.model_validate(
    {
        "objective": {"type": "minimize", "metricName": "loss"},
        "algorithm": {"name": "random", "seed": 1},
        "parameters": [{"name": "x", "type": "double", "min": 0, "max": 1}],
        "parallelTrialCount": 20,
        "maxTrialCount": 20,
        "trialTemplate": {"template": {"spec": {"containers": [{"name": "train", "image": "t:1"}]}}},
    }
)
EXPERIMENT = {
    "apiVersion": "hpo.dev/v1alpha1",
    "kind": "Experiment",
    "metadata": {"name": "exp", "namespace": "ns", "uid": "uid-exp", "generation": 1},
    "spec": {},
    "status": {},
}


def refused(status: int, message: str = "no") -> ApiException:
    e = ApiException(status=status, reason="Refused")
    e.body = json.dumps({"message": message})
    return e


class FakeApi:
    """Objects in dicts; every call waits a little, so that calls made together overlap."""

    def __init__(self, fail: dict[tuple[str, str], Exception] | None = None):
        self.objects: dict[tuple[str, str], dict] = {}
        self.calls: list[tuple[str, str]] = []  # (verb, name), in the order they completed
        self.in_flight = 0
        self.peak = 0
        self.fail = fail or {}
        self.statuses: dict[tuple[str, str], list[dict]] = {}  # each status patch, as sent
        self.acting: dict[tuple[str, str], str | None] = {}  # (verb, name) -> the user it was made as
        self.allowed: set[tuple[str, str]] = set()  # (user, resource) an access review allows
        self.reviews: list[dict] = []

    async def _call(self, verb: str, name: str) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        self.calls.append((verb, name))
        if (verb, name) in self.fail:
            raise self.fail[(verb, name)]

    async def create(self, plural: str, namespace: str, body: dict) -> dict:
        name = body["metadata"]["name"]
        await self._call(f"create {plural}", name)
        if (plural, name) in self.objects:
            raise refused(409)
        created = {**body, "metadata": {**body["metadata"], "uid": f"uid-{name}"}}
        self.objects[(plural, name)] = created
        return created

    async def get(self, plural: str, namespace: str, name: str) -> dict:
        await self._call(f"get {plural}", name)
        return self.objects[(plural, name)]

    async def patch(self, plural: str, namespace: str, name: str, body: dict) -> dict:
        await self._call(f"patch {plural}", name)
        return {}

    async def patch_status(self, plural: str, namespace: str, name: str, status: dict) -> dict:
        await self._call(f"status {plural}", name)
        # As the client sends it: JSON, so a model left in a status fails here as it would there.
        self.statuses.setdefault((plural, name), []).append(json.loads(json.dumps(status)))
        return {}

    async def create_object(
        self, resource: tuple[str, str, str], namespace: str, body: dict, as_user: str | None = None
    ) -> dict:
        plural, name = resource[2], body["metadata"]["name"]
        self.acting[(f"create {plural}", name)] = as_user
        await self._call(f"create {plural}", name)
        if (plural, name) in self.objects and plural != "pods":
            raise refused(409)
        self.objects[(plural, name)] = body
        return body

    async def delete_object(
        self, resource: tuple[str, str, str], namespace: str, name: str, as_user: str | None = None
    ) -> dict:
        self.acting[(f"delete {resource[2]}", name)] = as_user
        await self._call(f"delete {resource[2]}", name)
        return {}

    async def local_access_review(self, namespace: str, spec: dict) -> dict:
        self.reviews.append(spec)
        await self._call("review", spec["resourceAttributes"]["resource"])
        allowed = (spec["user"], spec["resourceAttributes"]["resource"]) in self.allowed
        return {"allowed": allowed, **({} if allowed else {"reason": "no RBAC policy matched"})}


def new_trial(name: str) -> dict:
    return {
        "apiVersion": "hpo.dev/v1alpha1",
        "kind": "Trial",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "labels": {L_LAUNCH: "Suggestion"},
            "ownerReferences": [{"uid": "uid-exp", "controller": True}],
        },
        "spec": {"experimentName": "exp", "attempt": 1, "parameters": [{"name": "x", "value": "0.5"}]},
        "status": {"phase": "Pending", "reason": "PodCreated", "parameterSummary": "x=0.5"},
    }


def existing(name: str, **status) -> planner.TrialView:
    body = {
        "apiVersion": "hpo.dev/v1alpha1",
        "kind": "Trial",
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "labels": {}},
        "spec": {"experimentName": "exp", "parameters": [{"name": "x", "value": "0.1"}]},
        "status": {"phase": "Running", **status},
    }
    return planner.TrialView(name, f"uid-{name}", body)


def run(
    api: FakeApi,
    plan: planner.Plan,
    trials: list[planner.TrialView] = (),
    refused: dict[str, planner.Refusal] | None = None,
    authority: Authority | None = None,
    experiment: dict = EXPERIMENT,
    written: PendingWrites | None = None,
) -> list[tuple]:
    events: list[tuple] = []
    executor = Executor(
        api,
        dict(experiment),
        SPEC,
        list(trials),
        PendingWrites() if written is None else written,
        lambda obj, *rest: events.append((obj["metadata"]["name"], *rest)),
        refused=refused,
        authority=authority,
    )
    asyncio.run(executor.run(plan))
    return events


def test_a_new_trial_gets_its_pod_after_it_exists_and_the_experiment_status_comes_last():
    names = [f"exp-{i:04d}" for i in range(10)]
    plan = planner.Plan(
        create_trials=[new_trial(n) for n in names],
        start_workloads=list(names),
        experiment_status=ExperimentStatus(phase="Running"),
    )
    api = FakeApi()
    written = PendingWrites()
    run(api, plan, written=written)
    order = [c for c in api.calls]
    for n in names:
        assert order.index(("create trials", n)) < order.index(("create pods", n))
        # The pod's ownerReference names the Trial's uid, which only the create returned.
        assert api.objects[("pods", n)]["metadata"]["ownerReferences"][0]["uid"] == f"uid-{n}"
    assert order[-1] == ("status experiments", "exp")
    # The ten trials' chains ran together, not one after another.
    assert api.peak == 10
    # Each first status (Pending, PodCreated) waits: a pod that runs within its turn has the
    # trial written once, as running. The next round plans on it all the same.
    assert not any(verb == "status trials" for verb, _ in order)
    assert {n: w[1]["reason"] for n, w in written.trial_waiting.items()} == {n: "PodCreated" for n in names}
    bodies = written.trial_bodies({})
    assert [b["status"]["reason"] for b in bodies] == ["PodCreated"] * 10


def test_status_before_metadata_for_one_trial_and_independent_writes_at_once():
    trials = [existing(f"t{i}") for i in range(6)]
    plan = planner.Plan(
        trial_status={t.name: TrialStatus(phase="Succeeded") for t in trials},
        trial_metadata={"t0": {"annotations": {A_RESTART: None}}},
        delete_workloads=["t1", "t2"],
        experiment_status=ExperimentStatus(phase="Running"),
    )
    api = FakeApi()
    run(api, plan, trials)
    assert api.calls.index(("status trials", "t0")) < api.calls.index(("patch trials", "t0"))
    assert api.peak == 8  # six status patches and two deletions together
    assert api.calls[-1] == ("status experiments", "exp")


def test_one_refused_write_does_not_stop_the_others_and_fails_the_round_at_the_end():
    trials = [existing("t0"), existing("t1")]
    plan = planner.Plan(
        trial_status={"t0": TrialStatus(phase="Succeeded"), "t1": TrialStatus(phase="Succeeded")},
        delete_workloads=["t0"],
        experiment_status=ExperimentStatus(phase="Running"),
    )
    api = FakeApi(fail={("status trials", "t0"): refused(500)})
    with pytest.raises(ApiException) as e:
        run(api, plan, trials)
    assert e.value.status == 500
    assert {("status trials", "t1"), ("delete pods", "t0"), ("status experiments", "exp")} <= set(api.calls)


@pytest.mark.parametrize(
    "failure",
    [refused(500), TimeoutError(), aiohttp.ServerDisconnectedError()],
    ids=["refused", "timed-out", "cut"],
)
def test_a_trial_not_made_keeps_the_experiment_status_from_counting_it(failure):
    """A status written over a Trial that was not made would be ahead of the Trials: its
    suggestion would be skipped for good (a configuration lost after an API-server outage)."""
    names = ["exp-0000", "exp-0001"]
    plan = planner.Plan(
        create_trials=[new_trial(n) for n in names],
        start_workloads=list(names),
        experiment_status=ExperimentStatus(phase="Running", suggestion_count=2, configurations=2),
    )
    api = FakeApi(fail={("create trials", "exp-0001"): failure})
    with pytest.raises(type(failure)):
        run(api, plan)
    assert ("create pods", "exp-0000") in api.calls  # the other chain ran to its end
    assert ("status experiments", "exp") not in api.calls


def test_a_lost_connection_fails_the_round_after_every_other_write_ran():
    trials = [existing("t0"), existing("t1")]
    plan = planner.Plan(
        trial_status={"t0": TrialStatus(phase="Succeeded"), "t1": TrialStatus(phase="Succeeded")},
        delete_workloads=["t1"],
        experiment_status=ExperimentStatus(phase="Running"),
    )
    api = FakeApi(fail={("status trials", "t0"): aiohttp.ClientPayloadError("cut")})
    with pytest.raises(aiohttp.ClientPayloadError):
        run(api, plan, trials)
    assert {("status trials", "t1"), ("delete pods", "t1"), ("status experiments", "exp")} <= set(api.calls)


def test_a_pod_the_api_server_finds_invalid_is_reported_not_a_failed_round():
    """The executor decides no status: it reports the refusal, and the next round's planner fails
    the trial (test_planner_lifecycle.py: test_a_create_the_api_server_refused_fails_the_trial_next_round)."""
    plan = planner.Plan(
        create_trials=[new_trial("exp-0000")],
        start_workloads=["exp-0000"],
        experiment_status=ExperimentStatus(phase="Running"),
    )
    api = FakeApi(fail={("create pods", "exp-0000"): refused(422, "metadata.labels: Invalid value")})
    reported: dict[str, str] = {}
    events = run(api, plan, refused=reported)  # no exception: the trial will carry the failure
    assert reported == {"exp-0000": planner.Refusal("InvalidPod", "metadata.labels: Invalid value")}
    # No status but the trial's first (which waits): its failure is the planner's to write.
    assert ("trials", "exp-0000") not in api.statuses
    assert not [e for e in events if e[0] == "exp-0000"]
    assert ("status experiments", "exp") in api.calls


def test_a_pod_create_that_fails_otherwise_fails_the_round_and_is_not_reported():
    plan = planner.Plan(
        start_workloads=["t0"],
        experiment_status=ExperimentStatus(phase="Running"),
    )
    api = FakeApi(fail={("create pods", "t0"): refused(403, "exceeded quota")})
    reported: dict[str, str] = {}
    with pytest.raises(ApiException):
        run(api, plan, [existing("t0", phase="Pending")], refused=reported)
    assert reported == {}  # tried again next round
    assert ("status trials", "t0") not in api.calls


def test_an_invalid_spec_is_written_as_the_phase_and_its_condition_only():
    """The loop's invalid specs (planner.plan_invalid_spec) go out like any plan: a merge patch of the
    phase and the conditions alone, then the Event; found again, nothing is written."""
    status = {
        "phase": "Running",
        "trials": 1,
        "observedGeneration": 1,
        "conditions": [
            {"type": "Running", "status": "True", "reason": "Running", "message": "", "lastTransitionTime": "t0"}
        ],
    }
    experiment = {**EXPERIMENT, "spec": {"maxTrialCount": "many"}, "status": status}
    plan = planner.plan_invalid_spec(status, 1, "spec.maxTrialCount: not an integer", times.now())
    api, events, written = FakeApi(), [], PendingWrites()

    def execute(experiment: dict) -> None:
        post = lambda obj, *rest: events.append((obj["metadata"]["name"], *rest))  # noqa: E731
        asyncio.run(Executor(api, experiment, None, [], written, post).run(plan))

    execute(experiment)
    [patch] = api.statuses[("experiments", "exp")]
    assert set(patch) == {"phase", "conditions"} and patch["phase"] == "Failed"
    assert [(c["type"], c["status"], c.get("reason")) for c in patch["conditions"]] == [
        ("Running", "True", "Running"),
        ("Failed", "True", "InvalidSpec"),
    ]
    assert events == [("exp", "Warning", "InvalidSpec", "spec.maxTrialCount: not an integer")]
    # The next round reads the status it wrote (the watch's, or PendingWrites'): nothing more.
    plan = planner.plan_invalid_spec(written.experiment_status, 1, "spec.maxTrialCount: not an integer", times.now())
    execute({**experiment, "status": written.experiment_status})
    assert len(api.statuses[("experiments", "exp")]) == 1 and len(events) == 1


def test_routine_events_are_one_per_reason_and_round_on_the_experiment():
    names = [f"exp-{i:04d}" for i in range(3)]
    trials = [existing("t0"), existing("t1")]
    plan = planner.Plan(
        create_trials=[new_trial(n) for n in names],
        start_workloads=list(names),
        experiment_status=ExperimentStatus(phase="Running"),
        events=[
            planner.Event("t0", "Normal", "TrialSucceeded", "objective loss=0.1"),
            planner.Event("t1", "Warning", "TrialFailed", "exit code 1"),
        ],
    )
    events = run(FakeApi(), plan, trials)
    created = [e for e in events if e[2] == "TrialCreated"]
    assert len(created) == 1 and created[0][:2] == ("exp", "Normal")
    assert created[0][3].startswith("3 trials: ") and all(n in created[0][3] for n in names)
    assert ("exp", "Normal", "TrialSucceeded", "trial t0: objective loss=0.1") in events
    assert ("t1", "Warning", "TrialFailed", "exit code 1") in events  # warnings stay on their trial


def test_pending_writes_lay_our_statuses_over_the_watch_without_changing_it():
    written = PendingWrites()
    watched = {"t0": {"metadata": {"name": "t0", "uid": "u"}, "status": {"phase": "Running"}}}
    written.trial_status["t0"] = {"phase": "Succeeded"}
    written.trials["t1"] = {"metadata": {"name": "t1", "uid": "u1"}}
    bodies = {b["metadata"]["name"]: b for b in written.trial_bodies(watched)}
    assert bodies["t0"]["status"] == {"phase": "Succeeded"}
    assert watched["t0"]["status"] == {"phase": "Running"}  # the watch's body is untouched
    assert "t1" in bodies
    # Once the watch shows what we wrote, the overlay is dropped.
    watched = {"t0": {"metadata": {"name": "t0"}, "status": {"phase": "Succeeded"}}, "t1": {"metadata": {"name": "t1"}}}
    written.trial_bodies(watched)
    assert not written.trial_status and not written.trials


def test_a_plans_writes_come_as_data_in_three_stages():
    """apply.stages() is the one order both targets walk: independent chains, then the Experiment's
    status, then the Events; a new trial's start rides on its create, an old one's is its own."""
    from hpo_operator.planner import apply

    new = {"metadata": {"name": "t9"}, "status": {"phase": "Pending"}}
    plan = planner.Plan(
        create_trials=[new],
        start_workloads=["t9", "t1"],
        trial_status={"t2": TrialStatus(phase="Succeeded")},
        trial_metadata={"t2": {"annotations": {A_RESTART: None}}},
        delete_workloads=["t3"],
        delete_volumes=["claim-a"],
        experiment_status=ExperimentStatus(phase="Running"),
        events=[planner.Event(None, "Normal", "Running", "ok")],
    )
    chains, status, events = apply.stages(plan)
    assert apply.CreateTrial(new, True) in chains and apply.StartTrial("t1") in chains
    assert apply.StartTrial("t9") not in chains
    assert apply.UpdateTrial("t2", {"phase": "Succeeded"}, {"annotations": {A_RESTART: None}}) in chains
    assert apply.DeleteWorkload("t3") in chains and apply.DeleteClaim("claim-a") in chains
    assert len(chains) == 5
    assert status == [apply.WriteExperimentStatus({"phase": "Running"})]
    assert events == [apply.PostEvents(plan.events)]


class RecordingTarget:
    """An apply.Target that records each call: (method, arguments)."""

    def __init__(self):
        self.calls: list[tuple] = []

    async def create_trial(self, body, start):
        self.calls.append(("create_trial", body, start))

    async def update_trial(self, name, status, metadata):
        self.calls.append(("update_trial", name, status, metadata))

    async def start(self, name):
        self.calls.append(("start", name))

    async def delete_workload(self, name):
        self.calls.append(("delete_workload", name))

    async def set_queue_active(self, name, active):
        self.calls.append(("set_queue_active", name, active))

    async def delete_claim(self, name):
        self.calls.append(("delete_claim", name))

    async def write_experiment_status(self, status):
        self.calls.append(("write_experiment_status", status))

    def post_events(self, events):
        self.calls.append(("post_events", events))


def test_each_kind_of_write_reaches_its_own_target_method_with_its_fields():
    """apply.perform() is the one dispatch the executor and the in-memory cluster share: every kind
    of write in apply.Write calls exactly one method, the one for its kind, with the write's fields."""
    import typing

    from hpo_operator.planner import apply

    events = [planner.Event(None, "Normal", "Running", "ok")]
    expected = [
        (apply.CreateTrial({"metadata": {"name": "t0"}}, True), ("create_trial", {"metadata": {"name": "t0"}}, True)),
        (
            apply.UpdateTrial("t1", {"phase": "Running"}, {"labels": {"a": "b"}}),
            (
                "update_trial",
                "t1",
                {"phase": "Running"},
                {"labels": {"a": "b"}},
            ),
        ),
        (apply.StartTrial("t2"), ("start", "t2")),
        (apply.DeleteWorkload("t3"), ("delete_workload", "t3")),
        (apply.SetQueueActive("t4", False), ("set_queue_active", "t4", False)),
        (apply.DeleteClaim("claim-a"), ("delete_claim", "claim-a")),
        (apply.WriteExperimentStatus({"phase": "Running"}), ("write_experiment_status", {"phase": "Running"})),
        (apply.PostEvents(events), ("post_events", events)),
    ]
    kinds = [type(w) for w, _ in expected]
    assert len(kinds) == len(set(kinds)) and set(kinds) == set(typing.get_args(apply.Write))  # every kind, once
    for write, call in expected:
        target = RecordingTarget()
        asyncio.run(apply.perform(write, target))
        assert target.calls == [call], write


# --- tenancy: the author's rights, and the ServiceAccount workloads are written as ----------------

KEY = b"signing-key"
RUNNER = "system:serviceaccount:ns:hpo-trial-runner"


def authored(author: str | None) -> dict:
    annotations = signed(Author(author, groups=("team",)), "ns", KEY) if author else {}
    return {**EXPERIMENT, "metadata": {**EXPERIMENT["metadata"], "annotations": annotations}}


def tenancy(api: FakeApi) -> Authority:
    return Authority(api, Tenancy(KEY, "hpo-trial-runner"))


def starting(names: list[str]) -> planner.Plan:
    return planner.Plan(
        create_trials=[new_trial(n) for n in names],
        start_workloads=list(names),
        experiment_status=ExperimentStatus(phase="Running"),
    )


def test_workloads_are_made_as_the_namespaces_trial_account_once_the_author_may_make_them():
    api = FakeApi()
    api.allowed.add(("alice", "pods"))
    names = [f"exp-{i:04d}" for i in range(10)]
    reported: dict[str, planner.Refusal] = {}
    run(api, starting(names), refused=reported, authority=tenancy(api), experiment=authored("alice"))
    assert reported == {}
    assert {n: api.acting[("create pods", n)] for n in names} == dict.fromkeys(names, RUNNER)
    # Ten trials started at once ask the API server once.
    assert [(r["user"], r["groups"], r["resourceAttributes"]) for r in api.reviews] == [
        ("alice", ["team"], {"verb": "create", "group": "", "resource": "pods"})
    ]


def test_an_author_who_may_not_create_the_kind_gets_no_workload_and_the_trial_is_refused():
    api = FakeApi()  # alice may create nothing
    reported: dict[str, planner.Refusal] = {}
    run(api, starting(["exp-0000"]), refused=reported, authority=tenancy(api), experiment=authored("alice"))
    assert ("create pods", "exp-0000") not in api.calls
    refusal = reported["exp-0000"]
    assert refusal.reason == "Forbidden"
    assert refusal.message.startswith("alice may not create pods in namespace ns")
    assert "no RBAC policy matched" in refusal.message


def test_an_experiment_without_a_verified_author_gets_no_workload():
    api = FakeApi()
    api.allowed.add(("alice", "pods"))
    forged = authored("alice")
    forged["metadata"]["annotations"] = {**forged["metadata"]["annotations"], "hpo.dev/author": '{"username":"root"}'}
    for experiment in (authored(None), forged):
        reported: dict[str, planner.Refusal] = {}
        run(api, starting(["exp-0000"]), refused=reported, authority=tenancy(api), experiment=experiment)
        assert reported["exp-0000"].reason == "AuthorUnknown"
    assert api.reviews == [] and ("create pods", "exp-0000") not in api.calls


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (
            'pods "exp-0000" is forbidden: User "system:serviceaccount:ns:hpo-trial-runner" cannot create resource',
            "Forbidden",
        ),
        ('pods "exp-0000" is forbidden: violates PodSecurity "baseline:latest": hostPath volumes', "Forbidden"),
        ("exceeded quota: compute, requested: pods=1", None),  # frees up: the round is tried again
    ],
)
def test_a_forbidden_create_fails_the_trial_but_a_quota_is_waited_for(message, reason):
    api = FakeApi(fail={("create pods", "exp-0000"): refused(403, message)})
    api.allowed.add(("alice", "pods"))
    reported: dict[str, planner.Refusal] = {}
    if reason is None:
        with pytest.raises(ApiException):
            run(api, starting(["exp-0000"]), refused=reported, authority=tenancy(api), experiment=authored("alice"))
        assert reported == {}
        return
    run(api, starting(["exp-0000"]), refused=reported, authority=tenancy(api), experiment=authored("alice"))
    assert reported["exp-0000"] == planner.Refusal(
        reason, f"the API server refused the trial's Pod (created as {RUNNER}): {message}"
    )


@pytest.mark.parametrize("launch", ["User", "Restart"])
def test_a_users_trial_or_restart_is_checked_against_its_requester_never_the_experiments_author(launch):
    api = FakeApi()
    api.allowed.add(("alice", "pods"))  # the experiment's author may; the requester may not
    body = new_trial("exp-0000")
    body["metadata"]["labels"] = {L_LAUNCH: launch}
    plan = planner.Plan(create_trials=[body], start_workloads=["exp-0000"], experiment_status=ExperimentStatus())
    reported: dict[str, planner.Refusal] = {}
    run(api, plan, refused=reported, authority=tenancy(api), experiment=authored("alice"))
    assert reported["exp-0000"].reason == "AuthorUnknown"  # no requester recorded
    body = new_trial("exp-0001")
    body["metadata"]["labels"] = {L_LAUNCH: launch}
    body["metadata"]["annotations"] = signed(Author("mallory"), "ns", KEY)
    plan = planner.Plan(create_trials=[body], start_workloads=["exp-0001"], experiment_status=ExperimentStatus())
    run(api, plan, refused=reported, authority=tenancy(api), experiment=authored("alice"))
    assert reported["exp-0001"].message.startswith("mallory may not create pods")
    assert ("create pods", "exp-0000") not in api.calls and ("create pods", "exp-0001") not in api.calls


def test_workloads_are_deleted_as_the_trial_account_too():
    api = FakeApi()
    plan = planner.Plan(delete_workloads=["t0"], experiment_status=ExperimentStatus(phase="Running"))
    run(api, plan, [existing("t0")], authority=tenancy(api), experiment=authored("alice"))
    assert api.acting[("delete pods", "t0")] == RUNNER
