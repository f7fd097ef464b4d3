"""Launch: pods for queued trials and new suggestions within parallelTrialCount, and the results
the search algorithm is told."""

from __future__ import annotations

from hpo_operator.api.vocabulary import A_NOT_BEFORE
from hpo_operator.core import times
from hpo_operator.core.podstate import FINISHED_POD_PHASES, stranded
from hpo_operator.core.space import config_hash
from hpo_operator.search.suggest import Outcome
from .state import DUPLICATE_SUGGESTION_FACTOR, MAX_ASKS_PER_ROUND, RoundState, TrialView


class Launch(RoundState):
    def launch(self, suggestions: bool = True) -> bool:
        """Starts pods for queued trials, then for new suggestions, within parallelTrialCount
        (counting them in self.suggestion_count and self.configurations); True when the search
        space is used up."""
        suggestion_count, configurations = self.suggestion_count, self.configurations
        # Every unfinished pod counts, also one still shutting down after its trial was stopped,
        # but not one stranded on a lost node: it would hold its slot forever.
        busy = {name for name, pod in self.pods.items()
                if (pod.get("status") or {}).get("phase") not in FINISHED_POD_PHASES
                and not stranded(pod, self.now)}
        busy |= {t.name for t in self.active() if self.has_pod.get(t.name)}
        slots = self.spec.parallel_trial_count - len(busy)
        for t in self.active():
            if slots <= 0:
                break
            if self.has_pod.get(t.name):
                continue
            try:
                not_before = times.parse(t.annotations.get(A_NOT_BEFORE))
            except ValueError:
                not_before = None  # edited by hand into something else: do not wait
            if not_before and not_before > self.now:
                self.plan.requeue((not_before - self.now).total_seconds())
                continue
            self.start(t)
            slots -= 1
        exhausted = False
        known = self.groups()
        if suggestions:
            slots, configurations = self.relaunch_lost(known, slots, configurations)
        asks = 0
        limit = self.spec.max_trial_count * DUPLICATE_SUGGESTION_FACTOR
        while suggestions and slots > 0 and configurations < self.spec.max_trial_count and asks < MAX_ASKS_PER_ROUND:
            if suggestion_count >= limit:
                exhausted = True
                break
            values = self.suggest(suggestion_count)
            if values is None:
                exhausted = True
                break
            index = suggestion_count
            suggestion_count += 1
            asks += 1
            existing = known.get(config_hash(values))
            if existing:
                # A configuration the experiment already has: the sampler hears its result, and
                # nothing runs twice.
                outcome = self.outcome(existing, self.config_of(existing[0]) in self.failed_keys)
                if outcome:
                    self.told(index, outcome)
                continue
            name = f"{self.exp.name}-{index:04d}"
            t = self.new_trial(name, values, 1, "Suggestion", name, index=index)
            self.start(t)
            configurations += 1
            slots -= 1
        self.suggestion_count, self.configurations = suggestion_count, configurations
        return exhausted

    def relaunch_lost(self, known: dict[str, list[TrialView]], slots: int, configurations: int) -> tuple[int, int]:
        """Launches the suggestions that were asked but never became Trials, while a later one
        did: a round cut short (the operator killed mid-round, the API server gone between two
        creates). Below suggestion_count, they would never be asked again, and a grid would run
        out with its points unused. A suggestion without a Trial that repeated a configuration the
        experiment has is not lost: it is skipped. Returns the slots and configurations left."""
        made = {t.suggestion_index for t in self.trials
                if t.suggestion_index is not None and t.owned_by(self.exp.uid)}
        for index in range(self.suggestion_count):
            if slots <= 0 or configurations >= self.spec.max_trial_count:
                break
            if index in made:
                continue
            try:
                values = self.suggest(index)
            except LookupError:
                continue  # rebuilt from results after a restart: its values are not kept; a new one replaces it
            if values is None or config_hash(values) in known:
                continue
            name = f"{self.exp.name}-{index:04d}"
            t = self.new_trial(name, values, 1, "Suggestion", name, index=index)
            self.start(t)
            known[config_hash(values)] = [t]
            configurations += 1
            slots -= 1
        return slots, configurations

    def told(self, index: int, outcome: Outcome) -> None:
        # Told at once, not after the round: a suggestion asked later in this round must see it,
        # as it would in Optuna's own loop.
        self.tell(index, outcome)
        self.plan.tells.append((index, outcome))

    def outcome(self, trials: list[TrialView], finally_failed: bool = False) -> Outcome | None:
        """What the sampler is told of a configuration once it is decided."""
        for t in trials:
            st = self.current(t)
            if self.phase(t) == "Succeeded" and st.objective_value is not None:
                return Outcome(value=st.objective_value, at=st.completion_time)
        latest = self.latest(trials)
        if self.phase(latest) == "EarlyStopped":
            return Outcome(pruned=True, at=self.current(latest).completion_time)
        if finally_failed:
            return Outcome(failed=True, at=self.current(latest).completion_time)
        return None

    def tell_results(self, finally_failed_keys: set[str]) -> None:
        for key, trials in self.groups().items():
            indexes = {t.suggestion_index for t in trials} - {None}
            outcome = self.outcome(trials, key in finally_failed_keys) if indexes else None
            if outcome:
                for i in indexes:
                    self.told(i, outcome)
