"""Every example applies cleanly: the API server validates it (schema and CEL) without storing it."""

from pathlib import Path

import pytest

from tests.experiments import condition
from tests.kube import Cluster

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_applies_cleanly(path, crds, namespace, kubectl):
    out = kubectl.run("apply", "--dry-run=server", "-n", namespace, "-f", str(path), check=False)
    assert out.returncode == 0, out.stderr


def test_the_simulated_examples_run_to_the_documented_end(api, namespace, operator, kwok_nodes, kubectl):
    cluster = Cluster(api, namespace)
    for name in ("grid", "retries", "job-trials"):
        kubectl.run("apply", "-n", namespace, "-f", str(EXAMPLES[0].parent / f"{name}.yaml"))
    grid, retries = cluster.wait_finished("grid"), cluster.wait_finished("retries")
    assert condition(grid, "Succeeded")["reason"] == "SearchSpaceExhausted"
    assert grid["status"]["configurations"] == 10
    assert retries["status"]["phase"] == "Succeeded"
    assert (
        retries["status"]["configurations"],
        retries["status"]["failedConfigurations"],
        retries["status"]["trialsRetried"],
    ) == (4, 1, 5)
    jobs = cluster.wait_finished("job-trials")
    assert jobs["status"]["phase"] == "Succeeded", jobs["status"]
    trials = {n: t for n, t in cluster.trials().items() if n.startswith("job-trials-")}
    retried = [t for t in trials.values() if t["status"]["phase"] == "Failed"]
    # Every configuration with layers=1 was OOMKilled once and recovered; each trial ran 2 pods.
    assert retried and all(t["status"]["failureClass"] == "OOMKilled" and t["status"].get("retriedBy") for t in retried)
    assert jobs["status"]["trialsSucceeded"] == 6 and len(trials) == 6 + len(retried)
    pods = [p for p in cluster.pods().values() if p.metadata.labels.get("hpo.dev/experiment") == "job-trials"]
    assert len(pods) == 2 * len(trials)
