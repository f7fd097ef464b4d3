"""An experiment whose exact outcome is known in advance, for fault tests and the fault soak.

A grid over `fails` x `seed`: a configuration with fails=N is OOMKilled (KWOK, hack/kwok/stages.yaml)
on its first N attempts, and retried up to maxRetries times, so every count is fixed whatever
happens to the control plane meanwhile. `checks()` compares what the cluster holds with it:
every count, no duplicate suggestion, no orphan pod, no trial without its pod.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.support.experiments import experiment, fails_space, oom_killed_first


@dataclass(frozen=True)
class Check:
    what: str
    expected: Any
    seen: Any

    @property
    def ok(self) -> bool:
        return self.expected == self.seen


@dataclass(frozen=True)
class FaultyGrid:
    fails: int = 4  # fails = 0 .. fails-1
    seeds: int = 8
    max_retries: int = 2
    parallel: int = 5
    duration: str = "1500ms"

    @property
    def configs(self) -> int:
        return self.fails * self.seeds

    def runs(self, fails: int) -> int:
        """Trials of a configuration with this many failing attempts."""
        return min(fails, self.max_retries) + 1

    @property
    def trials(self) -> int:
        return self.seeds * sum(self.runs(f) for f in range(self.fails))

    @property
    def succeeded(self) -> int:
        return self.seeds * sum(1 for f in range(self.fails) if f <= self.max_retries)

    @property
    def failed_configs(self) -> int:
        return self.configs - self.succeeded

    def experiment(self, name: str) -> dict:
        return experiment(
            name,
            [*fails_space(self.fails - 1), {"name": "seed", "type": "int", "min": 0, "max": self.seeds - 1, "step": 1}],
            annotations={
                **oom_killed_first("${params.fails}"),
                "sim.hpo.dev/duration": self.duration,
                "sim.hpo.dev/message": '{"loss": ${params.seed}}',
            },
            algorithm={"name": "grid", "seed": 5},
            max_trials=self.configs,
            parallel=self.parallel,
            maxFailedTrialCount=self.failed_configs,
            retryPolicy={"maxRetries": self.max_retries, "backoffSeconds": 0},
        )

    def checks(self, experiment: dict, trials: dict[str, dict], pods: dict[str, dict]) -> list[Check]:
        """trials and pods by name, as dicts (the pods' metadata with ownerReferences)."""
        st = experiment.get("status") or {}
        runs: dict[tuple[int, int], list[str]] = {}
        for t in trials.values():
            runs.setdefault(_config(t), []).append((t.get("status") or {}).get("phase", ""))
        expected_runs = {(f, s): self.runs(f) for f in range(self.fails) for s in range(self.seeds)}
        suggested = [t for t in trials.values() if t["metadata"]["labels"].get("hpo.dev/launch-reason") == "Suggestion"]
        orphans = sorted(
            name
            for name, pod in pods.items()
            if [(o["kind"], o["name"], o["uid"]) for o in pod["metadata"].get("ownerReferences") or []]
            != [("Trial", name, (trials.get(name) or {}).get("metadata", {}).get("uid"))]
        )
        wrong_outcome = sorted(
            c for c, phases in runs.items() if phases.count("Succeeded") != (1 if c[0] <= self.max_retries else 0)
        )
        return [
            Check("experiment phase", "Succeeded", st.get("phase")),
            Check("configurations", self.configs, st.get("configurations")),
            Check("failed configurations", self.failed_configs, st.get("failedConfigurations")),
            Check("trials (status)", self.trials, st.get("trials")),
            Check("trials succeeded", self.succeeded, st.get("trialsSucceeded")),
            Check("trials failed", self.trials - self.succeeded, st.get("trialsFailed")),
            Check("trials retried", self.trials - self.configs, st.get("trialsRetried")),
            Check("Trial objects", self.trials, len(trials)),
            Check(
                "configurations with the wrong number of runs",
                [],
                sorted(c for c in set(runs) | set(expected_runs) if len(runs.get(c, ())) != expected_runs.get(c)),
            ),
            Check("configurations with the wrong outcome", [], wrong_outcome),
            Check("suggestions (one per configuration)", self.configs, len(suggested)),
            Check("duplicate suggestions", 0, len(suggested) - len({_config(t) for t in suggested})),
            Check("orphan pods", [], orphans),
            Check("trials without their pod", [], sorted(set(trials) - set(pods))),
        ]


def _config(trial: dict) -> tuple[int, int]:
    values = {p["name"]: p["value"] for p in trial["spec"]["parameters"]}
    return int(values["fails"]), int(values["seed"])


def assert_each_oom_killed_once_then_retried(exp: dict, trials: dict[str, dict], parameter: str, configs: int) -> None:
    """Every configuration's first attempt was OOMKilled and its retry (attempt 2) succeeded with the
    configuration's own value as its objective (what the tests' trials report): exactly `configs`
    configurations, twice as many trials."""
    groups: dict[str, list[dict]] = {}
    for t in sorted(trials.values(), key=lambda t: t["spec"]["attempt"]):
        value = next(p["value"] for p in t["spec"]["parameters"] if p["name"] == parameter)
        groups.setdefault(value, []).append(t)
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    assert len(groups) == configs and len(trials) == 2 * configs, {v: len(ts) for v, ts in groups.items()}
    for value, (first, retry) in groups.items():
        assert (first["status"]["phase"], first["status"]["failureClass"]) == ("Failed", "OOMKilled"), first["status"]
        assert retry["status"]["phase"] == "Succeeded" and retry["spec"]["attempt"] == 2, retry["status"]
        assert retry["status"]["objectiveValue"] == float(value)
    assert (exp["status"]["trialsFailed"], exp["status"]["trialsSucceeded"]) == (configs, configs)
