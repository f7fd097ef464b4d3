"""A planner round by hand, for the planner's unit tests: the experiment, its Trials and pods as the
cluster would hold them (keyed by trial name), readers of the plan that comes back, and `Cluster`,
on which plans are carried out round after round for the rules that only show over several rounds.

Suggestion i is x=i (`counting`), so a test knows which trial each suggestion becomes, and times
are fixed (NOW, EARLIER, ago()), so no plan depends on the clock."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

from hpo_operator import planner
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.api.vocabulary import L_ATTEMPT, L_CONFIG, L_EXPERIMENT, L_LAUNCH, L_LINEAGE, L_TRIAL
from hpo_operator.controller.loop import settle_refusals
from hpo_operator.core import times
from hpo_operator.core.space import config_hash
from hpo_operator.planner import ExperimentView, TrialView
from tests.support.simulate import MemoryCluster

EXP = "exp"
NS = "team-a"
EXP_UID = "0b6c1d2e-exp-uid"
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
EARLIER = "2024-05-01T11:00:00Z"


def iso(t: datetime) -> str:
    return times.iso(t)


def ago(seconds: float) -> str:
    return iso(NOW - timedelta(seconds=seconds))


# --- the experiment ----------------------------------------------------------------------------


def make_spec(**overrides) -> ExperimentSpec:
    """An experiment over one int parameter x in [0, 10000]; overrides use the API's camelCase."""
    body = {
        "objective": {"type": "minimize", "metricName": "loss"},
        "algorithm": {"name": "random", "seed": 1},
        "parameters": [{"name": "x", "type": "int", "min": 0, "max": 10000}],
        "parallelTrialCount": 2,
        "maxTrialCount": 10,
        "trialTemplate": {
            "primaryContainerName": "train",
            "template": {
                "spec": {
                    "containers": [
                        {"name": "train", "image": "trainer:1", "args": ["--x=${params.x}", "--name=${trial.name}"]}
                    ]
                }
            },
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return ExperimentSpec.model_validate(body)


def counting(index: int) -> dict[str, str]:
    """The suggestion function: suggestion i is x=i."""
    return {"x": str(index)}


def exhausted_after(n: int):
    return lambda index: {"x": str(index)} if index < n else None


def run(
    spec: ExperimentSpec,
    trials=(),
    pods=None,
    logs=None,
    now=NOW,
    suggest=counting,
    status=None,
    observations=None,
    refused=None,
    outputs=None,
    workloads=None,
):
    """One round. The pods are observed as the operator's loop observes them (planner.observe_pods),
    unless a test gives the observations itself; their output is read from `logs` unless a test
    gives the outputs (metrics.Output) as the loop does. `workloads`: what Job or resource trials'
    workloads say (workloads.observe), by trial name, as the loop gives them."""
    exp = ExperimentView(EXP, NS, EXP_UID, 3, spec, copy.deepcopy(status or {}))
    trials, pods = list(trials), pods or {}
    if observations is None:
        observations = planner.observe_pods(spec, trials, pods, now, workloads)
    return planner.plan(
        planner.RoundInput(
            experiment=exp,
            trials=trials,
            pods=pods,
            now=now,
            suggest=suggest,
            logs=logs or {},
            observations=observations,
            refused=refused,
            outputs=outputs,
            workloads=workloads,
        )
    )


def owner_refs() -> list[dict]:
    return [
        {
            "apiVersion": "hpo.dev/v1alpha1",
            "kind": "Experiment",
            "name": EXP,
            "uid": EXP_UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


# --- trials ------------------------------------------------------------------------------------


def trial(
    name: str,
    values: dict[str, str],
    *,
    phase: str | None = None,
    status: dict | None = None,
    attempt: int = 1,
    launch: str = "Suggestion",
    lineage: str | None = None,
    index: int | None = None,
    retry_of: str | None = None,
    annotations: dict | None = None,
    owned: bool = True,
    created: str = EARLIER,
) -> TrialView:
    """A Trial as the cluster would hold it (made by the operator unless owned=False)."""
    metadata = {
        "name": name,
        "namespace": NS,
        "uid": f"uid-{name}",
        "creationTimestamp": created,
        "annotations": dict(annotations or {}),
    }
    if owned:
        metadata["labels"] = {
            "app.kubernetes.io/managed-by": "hpo-operator",
            "app.kubernetes.io/part-of": "hpo-operator",
            L_EXPERIMENT: EXP,
            L_CONFIG: config_hash(values),
            L_ATTEMPT: str(attempt),
            L_LINEAGE: lineage or name,
            L_LAUNCH: launch,
            L_TRIAL: name,
        }
        metadata["ownerReferences"] = owner_refs()
    spec = {
        "experimentName": EXP,
        "attempt": attempt,
        "parameters": [{"name": k, "value": v} for k, v in values.items()],
    }
    if retry_of:
        spec["retryOf"] = retry_of
    if index is not None:
        spec["suggestionIndex"] = index
    st = dict(status or {})
    if phase:
        st["phase"] = phase
    if owned:
        st.setdefault("parameterSummary", ", ".join(f"{k}={v}" for k, v in values.items()))
    body = {"apiVersion": "hpo.dev/v1alpha1", "kind": "Trial", "metadata": metadata, "spec": spec, "status": st}
    return TrialView(name, metadata["uid"], body)


def suggested(i: int, phase: str | None = "Running", attempt: int = 1, created: str = EARLIER, **kw) -> TrialView:
    """Suggestion i (x=i), or its attempt-th run; status fields go in as keyword arguments."""
    name = f"{EXP}-{i:04d}" if attempt == 1 else f"{EXP}-{i:04d}-a{attempt}"
    status = {k: v for k, v in kw.items() if k not in ("launch", "retry_of", "annotations")}
    if phase in ("Running", "Pending"):
        status.setdefault("podName", name)
    launch = kw.get("launch", "Suggestion" if attempt == 1 else "Retry")
    retry_of = kw.get(
        "retry_of", None if attempt == 1 else (f"{EXP}-{i:04d}" if attempt == 2 else f"{EXP}-{i:04d}-a{attempt - 1}")
    )
    return trial(
        name,
        {"x": str(i)},
        phase=phase,
        status=status,
        attempt=attempt,
        launch=launch,
        lineage=f"{EXP}-{i:04d}",
        index=i,
        retry_of=retry_of,
        annotations=kw.get("annotations"),
        created=created,
    )


def failed(i: int, failure_class: str = "OOMKilled", attempt: int = 1, completed: str = ago(60), **kw) -> TrialView:
    reason = {"Infrastructure": "Evicted", "Error": "Error"}.get(failure_class, failure_class)
    return suggested(
        i,
        "Failed",
        attempt,
        reason=reason,
        failureClass=failure_class,
        completionTime=completed,
        podName=f"{EXP}-{i:04d}" if attempt == 1 else f"{EXP}-{i:04d}-a{attempt}",
        **kw,
    )


def succeeded(i: int, loss: float, attempt: int = 1, **kw) -> TrialView:
    return suggested(
        i,
        "Succeeded",
        attempt,
        reason="Completed",
        objectiveValue=loss,
        metrics=[{"name": "loss", "value": loss}],
        completionTime=ago(60),
        **kw,
    )


def user_trial(name: str, values: dict[str, str], **kw) -> TrialView:
    """A Trial a user created with kubectl: no labels, no owner, no status."""
    t = trial(name, values, owned=False, **kw)
    t.body = {**t.body, "status": {}}
    return t


# --- pods ------------------------------------------------------------------------------------


def pod(
    name: str,
    phase: str,
    container_state: dict | None = None,
    *,
    created: str = EARLIER,
    started: str | None = EARLIER,
    reason: str | None = None,
    conditions: list | None = None,
) -> dict:
    status: dict = {"phase": phase, "conditions": conditions or []}
    if started:
        status["startTime"] = started
    if reason:
        status["reason"] = reason
        status["message"] = f"pod {reason.lower()}"
    if container_state is not None:
        status["containerStatuses"] = [
            {
                "name": "train",
                "image": "trainer:1",
                "restartCount": 0,
                "ready": phase == "Running",
                "state": container_state,
            }
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"pod-{name}",
            "creationTimestamp": created,
            "labels": {L_EXPERIMENT: EXP, L_TRIAL: name},
        },
        "spec": {"restartPolicy": "Never", "containers": [{"name": "train", "image": "trainer:1"}]},
        "status": status,
    }


def pod_pending(name: str, created: str = EARLIER) -> dict:
    return pod(name, "Pending", created=created, started=None, conditions=[{"type": "PodScheduled", "status": "True"}])


def pod_running(name: str, started: str = EARLIER) -> dict:
    return pod(name, "Running", {"running": {"startedAt": started}}, started=started)


def pod_succeeded(name: str, message: str | None = None) -> dict:
    term = {"exitCode": 0, "reason": "Completed", "startedAt": EARLIER, "finishedAt": ago(5)}
    if message is not None:
        term["message"] = message
    return pod(name, "Succeeded", {"terminated": term})


def pod_failed(name: str, exit_code: int = 1, reason: str = "Error") -> dict:
    return pod(
        name,
        "Failed",
        {"terminated": {"exitCode": exit_code, "reason": reason, "startedAt": EARLIER, "finishedAt": ago(5)}},
    )


def pod_evicted(name: str) -> dict:
    return pod(
        name, "Failed", {"terminated": {"exitCode": 137, "reason": "Error", "finishedAt": ago(5)}}, reason="Evicted"
    )


def pod_waiting(name: str, reason: str, created: str = EARLIER) -> dict:
    return pod(
        name,
        "Pending",
        {"waiting": {"reason": reason, "message": f"{reason}: trainer:1"}},
        created=created,
        started=created,
    )


# --- reading a plan ----------------------------------------------------------------------------


def created(plan, name: str) -> dict:
    bodies = [b for b in plan.create_trials if b["metadata"]["name"] == name]
    assert len(bodies) == 1, f"{name} not created once: {[b['metadata']['name'] for b in plan.create_trials]}"
    return bodies[0]


def created_names(plan) -> list[str]:
    return [b["metadata"]["name"] for b in plan.create_trials]


def exp_status(plan) -> dict:
    """The Experiment's status as the executor writes it (apply.stages dumps the model) (the plan's model, dumped)."""
    return plan.experiment_status.dump()


def trial_statuses(plan) -> dict[str, dict]:
    """The Trial statuses the round changed, as the executor writes them."""
    return {name: st.dump() for name, st in plan.trial_status.items()}


def get_condition(conditions: list[dict] | None, type_: str) -> dict | None:
    return next((c for c in conditions or [] if c["type"] == type_), None)


def cond(conditions, type_: str) -> dict:
    found = get_condition(conditions, type_)
    assert found is not None, f"no {type_} condition in {conditions}"
    return found


def experiment_outcome(plan) -> tuple:
    st = exp_status(plan)
    current = get_condition(st.get("conditions"), st["phase"]) if st.get("phase") else None
    return st.get("phase"), (current or {}).get("reason")


def told(plan) -> dict[int, tuple]:
    """What the plan tells the sampler: suggestion index -> (objective value, finally failed)."""
    return {index: (outcome.value, outcome.failed) for index, outcome in plan.tells}


def event_reasons(plan, target: str | None = "any") -> list[str]:
    return [e.reason for e in plan.events if target == "any" or e.target == target]


# --- several rounds: the cluster carries the plans out ----------------------------------------


class Cluster(MemoryCluster):
    """Trials and pods on which plans are carried out as the operator does (apply.stages);
    tests decide the pods' fates."""

    def __init__(self, spec: ExperimentSpec, suggest=counting):
        super().__init__(lambda name: pod_pending(name, created=iso(self.now)))
        self.spec, self.suggest = spec, suggest
        self.now = NOW
        self.logs: dict[str, str] = {}
        self.plans: list = []
        self.invalid: set[str] = set()  # trials whose pod the API server refuses as invalid
        self.refused: dict[str, planner.Refusal] = {}  # the executor's reports, kept by the loop between rounds
        self.starts: list[str] = []

    def round(self):
        exp = ExperimentView(EXP, NS, EXP_UID, 1, self.spec, copy.deepcopy(self.status))
        views = self.views()
        settle_refusals(self.refused, views)  # as the loop does before each round
        p = planner.plan(
            planner.RoundInput(
                experiment=exp,
                trials=views,
                pods=copy.deepcopy(self.pods),
                now=self.now,
                suggest=self.suggest,
                logs=dict(self.logs),
                refused=dict(self.refused),
            )
        )
        self.apply(p)
        self.plans.append(p)
        return p

    async def start(self, name: str) -> None:
        self.starts.append(name)
        if name in self.invalid:
            self.refused[name] = planner.Refusal(
                "InvalidPod", "metadata.labels: Invalid value"
            )  # what the executor reports
            return
        await super().start(name)

    def tick(self, seconds: float = 10) -> None:
        self.now += timedelta(seconds=seconds)

    def add_user_trial(self, name: str, values: dict[str, str]) -> None:
        body = user_trial(name, values, created=iso(self.now)).body
        self.trials[name] = body

    def annotate(self, name: str, key: str, value: str) -> None:
        self.trials[name]["metadata"].setdefault("annotations", {})[key] = value

    def unfinished_pods(self) -> list[str]:
        return [n for n, p in self.pods.items() if p["status"]["phase"] not in ("Succeeded", "Failed")]

    def phase(self, name: str) -> str | None:
        return (self.trials[name].get("status") or {}).get("phase")


def workload_spec(**trial_template) -> ExperimentSpec:
    """A one-parameter experiment around the given trialTemplate (a Job's or resource's), for the
    workload tests."""
    return ExperimentSpec.model_validate(
        {
            "objective": {"type": "minimize", "metricName": "loss"},
            "parameters": [{"name": "lr", "type": "double", "min": 0.001, "max": 1}],
            "maxTrialCount": 4,
            "trialTemplate": trial_template,
        }
    )
