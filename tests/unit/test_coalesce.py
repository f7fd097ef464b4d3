"""What of an experiment's writes waits (controller/coalesce.py) and how the executor writes it: a
status of new counts alone at most once per interval per experiment and at a bounded rate across
them, anything else at once with what waited; the routine Events gathered across rounds; and an
Experiment event that only brings back our own status write wakes no round."""

from __future__ import annotations

import asyncio
import time

import pytest

from hpo_operator import planner
from hpo_operator.api.status import ExperimentStatus
from hpo_operator.controller import coalesce
from hpo_operator.controller.coalesce import Deferral, Pacer, RoutineEvents, urgent
from hpo_operator.controller.executor import Executor
from hpo_operator.controller.pending import Pacing, PendingWrites
from hpo_operator.controller.runtime import news

RUNNING = {"type": "Running", "status": "True", "reason": "Running", "message": "1 of 9", "lastTransitionTime": "t0"}


def never() -> int:
    raise AssertionError("the Trials' suggestions are counted only when suggestionCount changed")


def test_a_change_of_counts_alone_can_wait_and_anything_else_cannot():
    stored = {"phase": "Running", "trials": 2, "trialsRunning": 2, "conditions": [RUNNING], "suggestionCount": 2}
    counts = {**stored, "trials": 3, "trialsRunning": 1, "trialsSucceeded": 2, "currentOptimalTrial": {"x": 1}}
    assert not urgent(stored, counts, never)
    # A condition's message restates the counts: it waits with them.
    assert not urgent(stored, {**counts, "conditions": [{**RUNNING, "message": "2 of 9"}]}, never)
    assert urgent(stored, {**counts, "phase": "Succeeded"}, never)
    assert urgent(stored, {**counts, "conditions": [{**RUNNING, "status": "False"}]}, never)
    assert urgent(stored, {**counts, "conditions": [{**RUNNING, "reason": "Other"}]}, never)
    assert urgent(stored, {**counts, "conditions": [RUNNING, {**RUNNING, "type": "Failed"}]}, never)
    assert urgent(stored, {**counts, "observedGeneration": 2}, never)
    assert urgent(stored, {**counts, "completionTime": "t1"}, never)
    # What was spent moves with every round while trials run: it waits with the counts, and goes
    # at once with a new phase (which keeps its running time exact).
    spent = {"durationSeconds": 12.0, "time": "t1"}
    assert not urgent({**stored, "spent": {"durationSeconds": 10.0, "time": "t0"}}, {**counts, "spent": spent}, never)
    assert urgent(stored, {**counts, "spent": spent, "phase": "Suspended"}, never)
    # A field this module does not know (another feature's) is written at once: never held back.
    assert urgent(stored, {**counts, "somethingNew": 1}, never)
    # Suggestions the Trials account for wait; one that made no Trial (a repeated configuration)
    # lives only in the status, and is written at once.
    assert not urgent(stored, {**counts, "suggestionCount": 3}, lambda: 3)
    assert urgent(stored, {**counts, "suggestionCount": 4}, lambda: 3)


def test_counts_wait_for_the_interval_and_for_their_turn_across_experiments():
    pacer = Pacer(rate=10)  # one every 0.1 s across experiments
    a, b = Deferral(interval=1.0), Deferral(interval=1.0)
    assert a.may_write(100.0, pacer)  # never wrote: at once
    a.wrote(100.0)
    assert not a.may_write(100.5, pacer)  # within its interval: waits
    assert a.pending() == pytest.approx(101.0)
    assert not a.may_write(100.9, pacer) and a.pending() == pytest.approx(101.0)  # one turn, kept
    assert not b.may_write(100.05, pacer)  # the rate: a's write took the turn until 100.1
    assert b.pending() == pytest.approx(100.1)  # a's later turn keeps none from the others
    c = Deferral(interval=1.0)
    assert not c.may_write(100.05, pacer) and c.pending() == pytest.approx(100.2)  # after b's turn
    assert b.may_write(100.1, pacer)
    assert a.may_write(101.0, pacer)
    a.wrote(101.0)
    assert a.pending() is None


def test_no_rate_bound_leaves_only_the_interval():
    pacer = Pacer(rate=0)
    deferrals = [Deferral(interval=1.0) for _ in range(100)]
    assert all(d.may_write(5.0, pacer) for d in deferrals)


def test_routine_events_name_the_first_trials_and_count_all():
    events = RoutineEvents(Deferral(10.0))
    for i in range(coalesce.NAMED_PER_EVENT + 5):
        events.add("TrialCreated", f"trial t{i}: x={i}")
    events.add("TrialSucceeded", "trial t0: objective loss=1")
    taken = dict(events.take(0.0))
    assert taken["TrialSucceeded"] == "trial t0: objective loss=1"
    created = taken["TrialCreated"]
    assert created.startswith(f"{coalesce.NAMED_PER_EVENT + 5} trials: t0: x=0; t1: x=1")
    assert created.endswith("; and 5 more")
    assert not events and events.pending() is None


# --- the executor: what it writes now, what waits, and the flush ---------------------------------


class StatusApi:
    def __init__(self) -> None:
        self.patches: list[dict] = []

    async def patch_status(self, plural: str, namespace: str, name: str, status: dict) -> dict:
        assert plural == "experiments"
        self.patches.append(status)
        return {}


EXPERIMENT = {"metadata": {"name": "exp", "namespace": "ns", "uid": "uid-exp"}, "spec": {}}


class Rounds:
    """Rounds of one experiment whose plans only write its status, as the loop runs them."""

    def __init__(self, pacing: Pacing | None = None) -> None:
        self.api = StatusApi()
        self.written = PendingWrites(pacing or Pacing(0, 0))
        self.observed: dict = {}  # the watch's status (it never catches up here)
        self.events: list[tuple] = []

    def executor(self) -> Executor:
        body = {**EXPERIMENT, "status": self.written.status(self.observed)}
        return Executor(self.api, body, None, [], self.written, lambda obj, *rest: self.events.append(rest))

    def round(self, events: list[planner.Event] = (), **status) -> dict:
        """Runs a round writing this status; returns the status the next round starts from."""
        plan = planner.Plan(experiment_status=ExperimentStatus(**status), events=list(events))
        asyncio.run(self.executor().run(plan))
        return self.written.status(self.observed)

    def flush(self) -> None:
        asyncio.run(self.executor().flush())


def test_counts_alone_wait_and_the_next_round_plans_on_them_then_one_write_carries_the_newest():
    rounds = Rounds()
    rounds.round(phase="Running", trials=1, trials_pending=1)
    assert rounds.api.patches == [{"phase": "Running", "trials": 1, "trialsPending": 1}]
    start = rounds.round(phase="Running", trials=2, trials_pending=2)
    assert len(rounds.api.patches) == 1  # within its interval: waits
    assert start["trials"] == 2  # the next round starts from it, written or not
    rounds.round(phase="Running", trials=3, trials_pending=2, trials_running=1)
    rounds.flush()
    assert len(rounds.api.patches) == 1  # not its turn yet
    turn = rounds.written.next_turn()
    assert turn is not None and turn - time.monotonic() <= coalesce.STATUS_INTERVAL
    time.sleep(max(0.0, turn - time.monotonic()))
    rounds.flush()
    # One write, the newest counts, against what the API server holds.
    assert rounds.api.patches[1:] == [{"trials": 3, "trialsPending": 2, "trialsRunning": 1}]
    assert rounds.written.next_turn() is None
    rounds.flush()
    assert len(rounds.api.patches) == 2


def test_a_new_phase_is_written_at_once_with_the_counts_that_waited():
    rounds = Rounds()
    rounds.round(phase="Running", trials=1, trials_pending=1)
    rounds.round(phase="Running", trials=2, trials_pending=2)
    rounds.round(phase="Succeeded", trials=2, trials_succeeded=2, trials_pending=None)
    assert rounds.api.patches[1:] == [{"phase": "Succeeded", "trials": 2, "trialsSucceeded": 2, "trialsPending": None}]
    assert rounds.written.next_turn() is None


def test_counts_that_went_back_to_what_is_written_leave_nothing_waiting():
    rounds = Rounds()
    rounds.round(phase="Running", trials=1, trials_pending=1)
    rounds.round(phase="Running", trials=1, trials_running=1)
    assert rounds.written.next_turn() is not None
    rounds.round(phase="Running", trials=1, trials_pending=1)
    assert rounds.written.next_turn() is None and len(rounds.api.patches) == 1


def test_routine_events_are_gathered_across_rounds_until_their_turn():
    rounds = Rounds()
    created = lambda n: planner.Event(None, "Normal", "TrialCreated", f"trial t{n}: x={n}")  # noqa: E731
    rounds.round([created(0)], phase="Running")
    assert rounds.events == [("Normal", "TrialCreated", "trial t0: x=0")]  # the first: at once
    rounds.round([created(1)], phase="Running")
    rounds.round([created(2)], phase="Running")
    assert len(rounds.events) == 1
    turn = rounds.written.next_turn()
    assert turn is not None and turn - time.monotonic() <= coalesce.EVENT_INTERVAL + 0.01
    rounds.written.events.deferral.turn = time.monotonic()  # (its turn, without the wait)
    rounds.flush()
    assert rounds.events[1:] == [("Normal", "TrialCreated", "2 trials: t1: x=1; t2: x=2")]


def test_gathered_events_go_before_another_event_of_the_experiment_and_when_it_finishes():
    rounds = Rounds()
    created = lambda n: planner.Event(None, "Normal", "TrialCreated", f"trial t{n}")  # noqa: E731
    rounds.round([created(0)], phase="Running")
    rounds.round([created(1)], phase="Running")
    rounds.round([planner.Event(None, "Normal", "Suspended", "spec.suspend is true")], phase="Suspended")
    assert [e[1] for e in rounds.events] == ["TrialCreated", "TrialCreated", "Suspended"]
    rounds.round([created(2)], phase="Running")
    rounds.round([created(3)], phase="Succeeded")
    assert rounds.events[-1] == ("Normal", "TrialCreated", "2 trials: t2; t3")


def test_across_experiments_counts_wait_for_the_rate():
    pacing = Pacing(status_rate=1, event_rate=0)  # one status write of counts a second, for all
    a, b = Rounds(pacing), Rounds(pacing)
    for rounds in (a, b):
        rounds.written.status_deferral.last = time.monotonic() - 10  # wrote long ago
        rounds.observed = {"phase": "Running", "trials": 1}
    a.round(phase="Running", trials=2)
    b.round(phase="Running", trials=2)
    assert len(a.api.patches) == 1 and b.api.patches == []  # b's turn comes a second after a's
    turn = b.written.next_turn()
    assert turn is not None and 0 < turn - time.monotonic() <= 1.0  # the next turn of the second


def test_only_an_experiment_event_with_news_wakes_a_round():
    body = {"metadata": {"name": "e", "resourceVersion": "1", "generation": 1}, "spec": {"x": 1}, "status": {"a": 1}}
    ours = {"a": 2}
    echo = {**body, "metadata": {**body["metadata"], "resourceVersion": "2"}, "status": ours}
    assert not news(body, echo, ours)  # our own write, back from the watch
    assert news(body, {**echo, "status": {"a": 3}}, ours)  # someone else's
    assert news(body, {**echo, "spec": {"x": 2}, "metadata": {**echo["metadata"], "generation": 2}}, ours)
    deleting = {**echo, "metadata": {**echo["metadata"], "deletionTimestamp": "t"}}
    assert news(body, deleting, ours)
    assert not news(body, {**body, "metadata": {**body["metadata"], "resourceVersion": "3"}}, None)


# --- a trial's status while it waits to start -----------------------------------------------------


def test_a_trials_status_waits_while_it_waits_to_start_and_its_start_writes_it_once():
    written = PendingWrites()
    api = StatusApi()
    patches: list[tuple[str, dict]] = []

    async def patch_status(plural: str, namespace: str, name: str, status: dict) -> dict:
        patches.append((name, status))
        return {}

    api.patch_status = patch_status  # type: ignore[method-assign]
    made = {"metadata": {"name": "t0", "uid": "u0"}, "spec": {}}
    written.trials["t0"] = made

    def round_(status: dict, metadata: dict | None = None) -> None:
        body = {**EXPERIMENT, "status": {}}
        trials = [planner.TrialView(b["metadata"]["name"], "u0", b) for b in written.trial_bodies({})]
        executor = Executor(api, body, None, trials, written, lambda *a: None)
        asyncio.run(executor.update_trial("t0", status, metadata))

    round_({"phase": "Pending", "reason": "PodCreated", "parameterSummary": "x=1"})
    round_({"phase": "Pending", "reason": "ContainerCreating", "parameterSummary": "x=1"})
    assert patches == []  # both wait, for the turn the first got
    assert written.trial_bodies({})[0]["status"]["reason"] == "ContainerCreating"  # planned on
    turn = written.next_turn()
    assert turn is not None and turn - time.monotonic() <= coalesce.TRIAL_STATUS_INTERVAL
    round_({"phase": "Running", "reason": "Running", "parameterSummary": "x=1"})
    # Running: at once, the whole status against what the API server holds (nothing yet).
    assert patches == [("t0", {"phase": "Running", "reason": "Running", "parameterSummary": "x=1"})]
    assert written.next_turn() is None


def test_a_waiting_trial_status_is_written_at_its_turn_and_a_restart_request_never_waits():
    written = PendingWrites()
    patches: list[tuple[str, dict]] = []

    class Api:
        async def patch_status(self, plural: str, namespace: str, name: str, status: dict) -> dict:
            patches.append((name, status))
            return {}

        async def patch(self, plural: str, namespace: str, name: str, body: dict) -> dict:
            patches.append((name, body))
            return {}

    trial = planner.TrialView("t0", "u0", {"metadata": {"name": "t0", "uid": "u0"}, "spec": {}, "status": {}})
    executor = Executor(Api(), {**EXPERIMENT, "status": {}}, None, [trial], written, lambda *a: None)
    asyncio.run(executor.update_trial("t0", {"phase": "Pending", "reason": "PodCreated"}, None))
    written.trial_waiting["t0"] = (*written.trial_waiting["t0"][:2], time.monotonic())  # (its turn, now)
    asyncio.run(executor.flush())
    assert patches == [("t0", {"phase": "Pending", "reason": "PodCreated"})]
    assert written.trial_waiting == {} and written.trial_status["t0"] == {"phase": "Pending", "reason": "PodCreated"}
    # A status with a metadata change (a restart request answered): the status first, at once.
    executor.trials["t0"] = {**trial.body, "status": {"phase": "Pending", "reason": "PodCreated"}}
    annotations = {"metadata": {"annotations": {"hpo.dev/restart": None}}}
    asyncio.run(executor.update_trial("t0", {"phase": "Pending", "reason": "Restarted"}, annotations["metadata"]))
    assert patches[1:] == [("t0", {"reason": "Restarted"}), ("t0", annotations)]


def test_a_status_laid_over_a_trial_gives_the_same_body_while_neither_changes():
    """The round's view of a Trial (and what it worked out) is kept while its body is the same object:
    a status that waits, or one written and not yet seen, must not make a new body every round."""
    written = PendingWrites()
    watched = {"exp-0000": {"metadata": {"name": "exp-0000"}, "status": {"phase": "Pending"}}}
    written.wait_trial("exp-0000", {"phase": "Pending"}, {"phase": "Pending", "reason": "PodCreated"}, 0.0)
    [first] = written.trial_bodies(watched)
    assert first["status"]["reason"] == "PodCreated"
    [again] = written.trial_bodies(watched)
    assert again is first
    watched = {"exp-0000": {**watched["exp-0000"], "metadata": {"name": "exp-0000", "labels": {}}}}
    [changed] = written.trial_bodies(watched)  # the watch brought a new version
    assert changed is not first and changed["status"]["reason"] == "PodCreated"
    written.wait_trial("exp-0000", {"phase": "Pending"}, {"phase": "Running"}, 0.0)
    [newer] = written.trial_bodies(watched)  # a newer status waits
    assert newer is not changed and newer["status"] == {"phase": "Running"}
    written.wrote_trial_status("exp-0000", {"phase": "Running"})
    [mine] = written.trial_bodies(watched)  # written, not yet seen
    assert mine["status"] == {"phase": "Running"} and written.trial_bodies(watched)[0] is mine
    watched = {"exp-0000": {**watched["exp-0000"], "status": {"phase": "Running"}}}
    assert written.trial_bodies(watched)[0] is watched["exp-0000"]  # seen: the watched body itself
