"""Admission: trials users create, restart requests, and retries of failed configurations.

Steps over one RoundState (state.py), which is all they import of the planner: lifecycle's
observe_trials() calls admit_user_trial() for a Trial a user made, and plan() then calls
handle_restart_requests() and recover_failures(), in that order."""

from __future__ import annotations

from datetime import timedelta

from hpo_operator.api.admission import configuration_refusal, population_refusal, restart_refusal
from hpo_operator.api.spec import ExperimentSpec, RetryPolicy
from hpo_operator.api.status import TrialStatus
from hpo_operator.api.vocabulary import (
    A_RESTART,
    A_RESTART_AUTHOR,
    A_RESTART_AUTHOR_SIGNATURE,
    A_RESTART_REQUEST,
    L_ATTEMPT,
    L_CONFIG,
    L_EXPERIMENT,
    L_LAUNCH,
    L_LINEAGE,
    L_TRIAL,
    MANAGED_BY,
    TERMINAL_PHASES,
    AlgorithmName,
    LaunchReason,
    TrialPhase,
)
from hpo_operator.core import times
from hpo_operator.core.authorship import RESTART_AUTHOR, inherited
from hpo_operator.core.conditions import set_condition
from hpo_operator.core.space import InvalidConfiguration, config_hash, normalize_assignment, summary

from .state import FINISHED, REQUEST_KEY_LENGTH, SUSPENDED, Event, RoundState, TrialView


def backoff_seconds(spec: ExperimentSpec, retries_so_far: int) -> int:
    policy = spec.retry_policy
    # An int power of an int is typed Any (a negative exponent gives a float); retries are >= 0.
    factor: int = 2**retries_so_far
    return min(policy.backoff_seconds * factor, policy.max_backoff_seconds)


def _retried_class(st: TrialStatus, policy: RetryPolicy) -> bool:
    """Whether the policy's retryOn lists the trial's failure class."""
    # The models keep enum fields as their values (use_enum_values), so both sides are the same
    # strings at run time; typed as two distinct enums, mypy would call them never equal.
    return st.failure_class in policy.retry_on  # type: ignore[comparison-overlap]


def admit_user_trial(state: RoundState, t: TrialView) -> None:
    """A Trial a user created to run a configuration: adopt it, or refuse it with a reason."""
    if state.spec.algorithm.name == AlgorithmName.pbt:
        return refuse(state, t, *population_refusal("a Trial of your own"))
    try:
        values = normalize_assignment(state.spec.parameters, t.values)
    except InvalidConfiguration as e:
        return refuse(state, t, "InvalidParameters", str(e))
    key = config_hash(values)
    refusal = configuration_refusal(runs(state, state.groups().get(key, [])))
    if refusal:
        return refuse(state, t, *refusal)
    labels = {
        **MANAGED_BY,
        L_EXPERIMENT: state.exp.name,
        L_CONFIG: key,
        L_ATTEMPT: str(t.attempt),
        L_LINEAGE: t.name,
        L_LAUNCH: LaunchReason.user,
        L_TRIAL: t.name,
    }
    state.plan.trial_metadata[t.name] = {"labels": labels, "ownerReferences": [state.owner_ref()]}
    # Seen as adopted for the rest of this round (a new body: the given one is the watch's).
    t.body = {
        **t.body,
        "metadata": {**t.meta, "labels": {**t.labels, **labels}, "ownerReferences": [state.owner_ref()]},
    }
    state.regroup()
    state.set_status(
        t,
        phase=TrialPhase.pending,
        reason="WaitingForSlot",
        message="waiting for a free trial slot",
        parameter_summary=summary(values),
    )
    state.plan.events.append(
        Event(None, "Normal", "ConfigurationAccepted", f"trial {t.name} will run {summary(values)}")
    )


def runs(state: RoundState, trials: list[TrialView]) -> list[tuple[str, str]]:
    return [(x.name, state.phase(x)) for x in trials]


def refuse(state: RoundState, t: TrialView, reason: str, message: str) -> None:
    state.set_status(t, phase=TrialPhase.refused, reason=reason, message=message)
    # Labelled like the experiment's own trials, so a selector finds it too.
    state.plan.trial_metadata[t.name] = {"labels": {L_EXPERIMENT: state.exp.name}}
    state.plan.events.append(Event(None, "Warning", "ConfigurationRefused", f"trial {t.name}: {message}"))


def handle_restart_requests(state: RoundState) -> None:
    for t in state.trials:
        if A_RESTART not in t.annotations or not t.owned_by(state.exp.uid):
            continue
        # The condition's message quotes the request's value, so a client can tell which
        # request it answers.
        key = t.annotations[A_RESTART][:REQUEST_KEY_LENGTH]
        request = key[:64]
        # The request is answered once: it goes, with its requester's identity.
        state.plan.trial_metadata.setdefault(t.name, {}).setdefault("annotations", {}).update(
            {A_RESTART: None, A_RESTART_AUTHOR: None, A_RESTART_AUTHOR_SIGNATURE: None}
        )
        same = state.groups().get(state.config_of(t), [])
        reruns = [x for x in same if x.spec.get("retryOf") == t.name and x.labels.get(L_LAUNCH) == LaunchReason.restart]
        answered = next((x for x in reruns if x.annotations.get(A_RESTART_REQUEST) == key), None)
        if answered is not None:
            # Accepted by a round that stopped before it could remove the annotation (the
            # re-run may even have finished since): this request is answered.
            st = state.status[t.name]
            st.retried_by = st.retried_by or answered.name
            st.conditions = set_condition(
                st.conditions,
                "RestartAccepted",
                True,
                "Restarted",
                f"restarted as trial {answered.name} (request {request!r}; "
                "each request value runs once: use a new value to restart "
                "again)",
                state.now,
            )
            continue
        refusal = (
            population_refusal("a restart")
            if state.spec.algorithm.name == AlgorithmName.pbt
            else restart_refusal(state.phase(t), runs(state, same))
        )
        if refusal:
            reason, message = refusal
            st = state.status[t.name]
            st.conditions = set_condition(
                st.conditions,
                "RestartAccepted",
                False,
                reason,
                f"restart refused: {message} (request {request!r})",
                state.now,
            )
            state.plan.events.append(Event(t.name, "Warning", "RestartRefused", f"restart refused: {message}"))
            continue
        # Its author is whoever asked for the restart (the webhook's record), never the experiment's.
        new = state.rerun(
            t, LaunchReason.restart, annotations={A_RESTART_REQUEST: key, **inherited(t.annotations, RESTART_AUTHOR)}
        )
        st = state.status[t.name]
        st.conditions = set_condition(
            st.conditions,
            "RestartAccepted",
            True,
            "Restarted",
            f"restarted as trial {new.name} (request {request!r})",
            state.now,
        )
        state.plan.events.append(Event(t.name, "Normal", "RestartAccepted", f"restarted as trial {new.name}"))


def recover_failures(state: RoundState) -> set[str]:
    """Creates retries and resumed runs; returns the configurations that finally failed."""
    finally_failed: set[str] = set()
    spec = state.spec
    policy = spec.retry_policy
    for key, trials in state.groups().items():
        if state.succeeded(trials) or any(state.phase(x) not in TERMINAL_PHASES for x in trials):
            continue
        # The latest trial is the one in view: our own creations are in view at once (the
        # executor's pending writes, an informer listing after a restart), so a re-run that a
        # failed trial's retriedBy names but that is not among the Trials was never created, and
        # it is decided again below, under the same deterministic name.
        latest = state.latest(trials)
        st = state.current(latest)
        if state.phase(latest) == TrialPhase.early_stopped:
            continue  # stopped on purpose
        if (
            state.phase(latest) == TrialPhase.killed
            and st.reason in (SUSPENDED, FINISHED)
            and (state.finished or spec.suspend)
        ):
            continue  # stopped by the experiment, not failed
        if state.finished:
            finally_failed.add(key)
            continue
        if state.phase(latest) == TrialPhase.killed and st.reason in (SUSPENDED, FINISHED):
            # Stopped by the experiment's suspension, or by its end at a limit that was raised
            # since (experiment.reopen): run again, without spending a retry.
            if not spec.suspend:
                state.rerun(latest, LaunchReason.resume)
            continue
        retries = sum(1 for x in trials if x.labels.get(L_LAUNCH) == LaunchReason.retry)
        if (
            state.phase(latest) == TrialPhase.failed
            and _retried_class(st, policy)
            and retries < policy.max_retries
            and not spec.suspend
        ):
            ended = times.parse(st.completion_time) or state.now
            new = state.rerun(latest, LaunchReason.retry, ended + timedelta(seconds=backoff_seconds(spec, retries)))
            state.plan.events.append(
                Event(
                    None,
                    "Normal",
                    "TrialRetried",
                    f"trial {latest.name} failed ({st.reason}); retrying as "
                    f"{new.name} (retry {retries + 1} of {policy.max_retries})",
                )
            )
            continue
        if (
            spec.suspend
            and state.phase(latest) == TrialPhase.failed
            and _retried_class(st, policy)
            and retries < policy.max_retries
        ):
            continue  # decided after resuming
        finally_failed.add(key)
    return finally_failed
