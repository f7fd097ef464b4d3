"""Correctness under load: hundreds of trials, 50 at a time, failures injected, the operator killed
in the middle. Every count must come out exact; how fast is bench/scale.py's business."""

from __future__ import annotations

import asyncio
import collections

from hpo_operator.kube import client as kubeapi
from tests.support.experiments import experiment, loss_is_x, oom_killed_first, x_space
from tests.support.kube import Cluster, wait_until

CONFIGURATIONS = 300
PARALLEL = 50
MAX_RETRIES = 2
# A configuration's f is how many of its first attempts are OOMKilled: 0 and 1 and 2 end
# Succeeded (after f retries), 3 exhausts the retries and the configuration finally fails.
FAIL_ATTEMPTS = ["0", "0", "0", "1", "2", "3"]


def load_experiment() -> dict:
    return experiment(
        "load",
        [*x_space(), {"name": "f", "type": "discrete", "values": sorted(set(FAIL_ATTEMPTS))}],
        annotations={"sim.hpo.dev/duration": "200ms", **oom_killed_first("${params.f}"), **loss_is_x()},
        args=[],
        algorithm={"name": "random", "seed": 3},
        max_trials=CONFIGURATIONS,
        parallel=PARALLEL,
        maxFailedTrialCount=CONFIGURATIONS,
        retryPolicy={"maxRetries": MAX_RETRIES, "retryOn": ["OOMKilled"], "backoffSeconds": 0},
        metricsCollector={"source": "TerminationMessage"},
    )


def test_hundreds_of_trials_with_failures_and_a_killed_operator_end_with_exact_counts(
    api, namespace, operator, kwok_nodes
):
    cluster = Cluster(api, namespace)
    cluster.create(load_experiment())

    # Kill the operator (no cleanup at all) once a third of the configurations have run, and start
    # a new one: nothing may be created twice or lost.
    wait_until(
        lambda: (cluster.get("load").get("status") or {}).get("configurations", 0) >= CONFIGURATIONS // 3,
        timeout=240,
        what="a third of the configurations",
    )
    operator.kill()
    operator.start()

    exp = cluster.wait_finished("load", timeout=600)
    status = exp["status"]
    trials = cluster.trials()
    pods = cluster.pods()

    by_config = collections.defaultdict(list)
    for t in trials.values():
        by_config[t["metadata"]["labels"]["hpo.dev/config"]].append(t)
    assert len(by_config) == CONFIGURATIONS
    expected_trials = succeeded = failed_configs = retried = 0
    for config, runs in by_config.items():
        runs.sort(key=lambda t: t["spec"]["attempt"])
        f = int(runs[0]["spec"]["parameters"][1]["value"])
        assert {p["name"] for p in runs[0]["spec"]["parameters"]} == {"x", "f"}
        # Exactly min(f, maxRetries) + 1 runs, attempts 1..n, each a retry of the one before.
        n = min(f, MAX_RETRIES) + 1
        assert [t["spec"]["attempt"] for t in runs] == list(range(1, n + 1)), config
        assert [t["spec"].get("retryOf") for t in runs] == [None] + [t["metadata"]["name"] for t in runs[:-1]]
        phases = [t["status"]["phase"] for t in runs]
        if f <= MAX_RETRIES:
            assert phases == ["Failed"] * f + ["Succeeded"], (config, phases)
            succeeded += 1
        else:
            assert phases == ["Failed"] * n, (config, phases)
            failed_configs += 1
        assert all(t["status"]["failureClass"] == "OOMKilled" for t in runs if t["status"]["phase"] == "Failed")
        expected_trials += n
        retried += n - 1

    assert len(trials) == expected_trials
    assert status["phase"] == "Succeeded"
    assert (
        status["configurations"],
        status["trials"],
        status["trialsSucceeded"],
        status["failedConfigurations"],
        status["trialsRetried"],
        status["trialsFailed"],
    ) == (CONFIGURATIONS, expected_trials, succeeded, failed_configs, retried, expected_trials - succeeded)
    # One pod per trial, named after it (podRetention Keep), and no pod of anything else.
    assert set(pods) == set(trials)
    assert all(p.metadata.owner_references[0].name == p.metadata.name for p in pods.values())
    # The failures that were injected did happen: every value of f was drawn.
    assert {t["spec"]["parameters"][1]["value"] for t in trials.values()} == set(FAIL_ATTEMPTS)
    best = min(
        (t for t in trials.values() if t["status"]["phase"] == "Succeeded"), key=lambda t: t["status"]["objectiveValue"]
    )
    assert status["currentOptimalTrial"]["trialName"] == best["metadata"]["name"]


def test_the_api_layer_raises_what_the_api_server_refuses(kubeconfig, namespace, crds, monkeypatch):
    """kubeapi reads responses raw (no model objects): errors must still come out as exceptions,
    with the API server's message."""
    monkeypatch.setenv("KUBECONFIG", kubeconfig)

    async def scenario() -> list:
        api = await kubeapi.connect()
        body = load_experiment()
        try:
            seen: list = [(await api.create("experiments", namespace, body))["metadata"]["name"]]
            for call in (
                lambda: api.create("experiments", namespace, body),
                lambda: api.get("experiments", namespace, "missing"),
                lambda: api.patch_status("experiments", namespace, "missing", {"phase": "Running"}),
                lambda: api.create_pod(namespace, {"metadata": {"name": "Not_Valid"}, "spec": {"containers": []}}),
            ):
                try:
                    await call()
                    seen.append("no error")
                except kubeapi.ApiException as e:
                    seen.append((e.status, kubeapi.api_reason(e)))
            return seen
        finally:
            await api.close()

    seen = asyncio.run(scenario())
    assert seen[0] == "load"
    assert [s[0] for s in seen[1:]] == [409, 404, 404, 422]
    assert "already exists" in seen[1][1] and "Not_Valid" in seen[4][1]
