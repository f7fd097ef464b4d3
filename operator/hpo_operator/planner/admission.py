"""Admission: trials users create, restart requests, and retries of failed configurations."""

from __future__ import annotations

from datetime import timedelta

from hpo_operator.api.admission import configuration_refusal, restart_refusal
from hpo_operator.api.vocabulary import (A_RESTART, A_RESTART_REQUEST, L_ATTEMPT, L_CONFIG, L_EXPERIMENT, L_LAUNCH, L_LINEAGE, L_TRIAL,
                   MANAGED_BY, TERMINAL_PHASES)
from hpo_operator.core import times
from hpo_operator.core.conditions import set_condition
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.core.space import InvalidConfiguration, config_hash, normalize_assignment, summary
from .state import REQUEST_KEY_LENGTH, Event, RoundState, TrialView


def backoff_seconds(spec: ExperimentSpec, retries_so_far: int) -> int:
    policy = spec.retry_policy
    return min(policy.backoff_seconds * (2 ** retries_so_far), policy.max_backoff_seconds)


class Admission(RoundState):
    def admit_user_trial(self, t: TrialView) -> None:
        """A Trial a user created to run a configuration: adopt it, or refuse it with a reason."""
        try:
            values = normalize_assignment(self.spec.parameters, t.values)
        except InvalidConfiguration as e:
            return self.refuse(t, "InvalidParameters", str(e))
        key = config_hash(values)
        refusal = configuration_refusal(self.runs(self.groups().get(key, [])))
        if refusal:
            return self.refuse(t, *refusal)
        labels = {**MANAGED_BY, L_EXPERIMENT: self.exp.name, L_CONFIG: key, L_ATTEMPT: str(t.attempt),
                  L_LINEAGE: t.name, L_LAUNCH: "User", L_TRIAL: t.name}
        self.plan.trial_metadata[t.name] = {"labels": labels, "ownerReferences": [self.owner_ref()]}
        # Seen as adopted for the rest of this round (a new body: the given one is the watch's).
        t.body = {**t.body, "metadata": {**t.meta, "labels": {**t.labels, **labels},
                                         "ownerReferences": [self.owner_ref()]}}
        self._groups = None
        self.set_status(t, phase="Pending", reason="Queued", message="waiting for a free trial slot",
                        parameter_summary=summary(values))
        self.plan.events.append(Event(None, "Normal", "ConfigurationAccepted",
                                      f"trial {t.name} will run {summary(values)}"))

    def runs(self, trials: list[TrialView]) -> list[tuple[str, str]]:
        return [(x.name, self.phase(x)) for x in trials]

    def refuse(self, t: TrialView, reason: str, message: str) -> None:
        self.set_status(t, phase="Refused", reason=reason, message=message)
        # Labelled like the experiment's own trials, so a selector finds it too.
        self.plan.trial_metadata[t.name] = {"labels": {L_EXPERIMENT: self.exp.name}}
        self.plan.events.append(Event(None, "Warning", "ConfigurationRefused", f"trial {t.name}: {message}"))

    def handle_restart_requests(self) -> None:
        for t in self.trials:
            if A_RESTART not in t.annotations or not t.owned_by(self.exp.uid):
                continue
            # The condition's message quotes the request's value, so a client can tell which
            # request it answers.
            key = t.annotations[A_RESTART][:REQUEST_KEY_LENGTH]
            request = key[:64]
            self.plan.trial_metadata.setdefault(t.name, {}).setdefault("annotations", {})[A_RESTART] = None
            same = self.groups().get(self.config_of(t), [])
            reruns = [x for x in same if x.spec.get("retryOf") == t.name and x.labels.get(L_LAUNCH) == "Restart"]
            answered = next((x for x in reruns if x.annotations.get(A_RESTART_REQUEST) == key), None)
            if answered is not None:
                # Accepted by a round that stopped before it could remove the annotation (the
                # re-run may even have finished since): this request is answered.
                st = self.status[t.name]
                st.retried_by = st.retried_by or answered.name
                st.conditions = set_condition(st.conditions, "RestartAccepted", True, "Restarted",
                                              f"restarted as trial {answered.name} (request {request!r}; "
                                              "each request value runs once: use a new value to restart "
                                              "again)", self.now)
                continue
            refusal = restart_refusal(self.phase(t), self.runs(same))
            if refusal:
                reason, message = refusal
                st = self.status[t.name]
                st.conditions = set_condition(st.conditions, "RestartAccepted", False, reason,
                                              f"restart refused: {message} (request {request!r})", self.now)
                self.plan.events.append(Event(t.name, "Warning", "RestartRefused", f"restart refused: {message}"))
                continue
            new = self.rerun(t, "Restart", annotations={A_RESTART_REQUEST: key})
            st = self.status[t.name]
            st.conditions = set_condition(st.conditions, "RestartAccepted", True, "Restarted",
                                          f"restarted as trial {new.name} (request {request!r})", self.now)
            self.plan.events.append(Event(t.name, "Normal", "RestartAccepted", f"restarted as trial {new.name}"))

    def recover_failures(self) -> set[str]:
        """Creates retries and resumed runs; returns the configurations that finally failed."""
        finally_failed: set[str] = set()
        policy = self.spec.retry_policy
        for key, trials in self.groups().items():
            if self.succeeded(trials) or any(self.phase(x) not in TERMINAL_PHASES for x in trials):
                continue
            latest = self.latest(trials)
            st = self.current(latest)
            if self.phase(latest) == "EarlyStopped":
                continue  # stopped on purpose
            # A re-run named in retriedBy but not among the Trials was never created: the operator
            # stopped (or the create failed) after the failed trial's status was written. Our own
            # creations are in view at once (the executor's pending writes, an informer listing
            # after a restart), so it is made now, under the same deterministic name.
            if self.phase(latest) == "Killed" and st.reason in ("Suspended", "ExperimentFinished") \
                    and (self.finished or self.spec.suspend):
                continue  # stopped by the experiment, not failed
            if self.finished:
                finally_failed.add(key)
                continue
            if self.phase(latest) == "Killed" and st.reason == "Suspended":
                if not self.spec.suspend:
                    self.rerun(latest, "Resume")
                continue
            retries = sum(1 for x in trials if x.labels.get(L_LAUNCH) == "Retry")
            if (self.phase(latest) == "Failed" and st.failure_class in policy.retry_on
                    and retries < policy.max_retries and not self.spec.suspend):
                ended = times.parse(st.completion_time) or self.now
                new = self.rerun(latest, "Retry", ended + timedelta(seconds=backoff_seconds(self.spec, retries)))
                self.plan.events.append(Event(None, "Normal", "TrialRetried",
                                              f"trial {latest.name} failed ({st.reason}); retrying as "
                                              f"{new.name} (retry {retries + 1} of {policy.max_retries})"))
                continue
            if self.spec.suspend and self.phase(latest) == "Failed" and st.failure_class in policy.retry_on \
                    and retries < policy.max_retries:
                continue  # decided after resuming
            finally_failed.add(key)
        return finally_failed
