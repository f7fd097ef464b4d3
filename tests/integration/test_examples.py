"""Every example applies cleanly: the API server validates it (schema and CEL) without storing it."""

from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_applies_cleanly(path, crds, namespace, kubectl):
    out = kubectl.run("apply", "--dry-run=server", "-n", namespace, "-f", str(path), check=False)
    assert out.returncode == 0, out.stderr


def test_the_simulated_examples_run_to_the_documented_end(api, namespace, operator, kwok_nodes, kubectl):
    from tests.integration.test_operator import Cluster, condition
    cluster = Cluster(api, namespace)
    for name in ("grid", "retries"):
        kubectl.run("apply", "-n", namespace, "-f", str(EXAMPLES[0].parent / f"{name}.yaml"))
    grid, retries = cluster.wait_finished("grid"), cluster.wait_finished("retries")
    assert condition(grid, "Succeeded")["reason"] == "SearchSpaceExhausted"
    assert grid["status"]["configurations"] == 10
    assert retries["status"]["phase"] == "Succeeded"
    assert (retries["status"]["configurations"], retries["status"]["failedConfigurations"],
            retries["status"]["trialsRetried"]) == (4, 1, 5)
