"""hack/test.sh (make test): the tests in parallel workers first, then those marked `alone`, one at a
time and after all the others; a failure in either phase fails the run, and so does a selection with
no test in it. Run here on a small suite of its own (HPO_KUBECONFIG names a cluster, so none starts)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SUITE = """
import os, time
import pytest

def record(tmp, name):
    with open(os.path.join(os.environ["RECORD_DIR"], name), "a") as f:
        f.write(f"{os.environ.get('PYTEST_XDIST_WORKER', '-')} {time.time()}\\n")

@pytest.mark.parametrize("i", range(4))
def test_beside_others(i):
    time.sleep(0.3)
    record(None, f"beside-{i}")

@pytest.mark.alone
def test_alone():
    record(None, "alone")
    assert os.environ.get("FAIL_ALONE") != "1"
"""

CONFTEST = """
def pytest_configure(config):
    config.addinivalue_line("markers", "alone: runs after the others, one at a time")
"""


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    suite = tmp_path / "suite"
    suite.mkdir(exist_ok=True)
    (suite / "conftest.py").write_text(CONFTEST)
    (suite / "test_small.py").write_text(SUITE)
    records = tmp_path / "records"
    records.mkdir(exist_ok=True)
    return subprocess.run(
        [str(REPO / "hack/test.sh"), "-p", "no:cacheprovider", "-q", str(suite), *args],
        env={
            # (not this run's own worker: the small suite's tests say which worker ran them)
            **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")},
            "PY": sys.executable,
            "HPO_KUBECONFIG": str(tmp_path / "no-cluster-needed"),
            "HPO_TEST_WORKERS": "2",
            "RECORD_DIR": str(records),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


def records(tmp_path: Path) -> dict[str, tuple[str, float]]:
    """Where and when each test ran; each must have run once."""
    seen = {}
    for f in (tmp_path / "records").iterdir():
        runs = f.read_text().splitlines()
        assert len(runs) == 1, f"{f.name} ran {len(runs)} times"
        worker, when = runs[0].split()
        seen[f.name] = (worker, float(when))
    return seen


def test_the_alone_tests_run_after_the_parallel_ones_outside_the_workers(tmp_path):
    done = run(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    seen = records(tmp_path)
    beside = [seen[f"beside-{i}"] for i in range(4)]
    assert {worker for worker, _ in beside} <= {"gw0", "gw1"} and len({w for w, _ in beside}) == 2
    worker, when = seen["alone"]
    assert worker == "-"  # in a process of its own, no worker beside it
    assert when > max(t for _, t in beside)


def test_a_failure_alone_fails_the_run_though_the_parallel_phase_passed(tmp_path):
    done = run(tmp_path, FAIL_ALONE="1")
    assert done.returncode != 0
    assert "the alone phase" in done.stderr
    assert "4 passed" in done.stdout


def test_a_selection_with_no_test_fails(tmp_path):
    done = run(tmp_path, "-k", "no_such_test")
    assert done.returncode != 0
    assert "no tests ran" in done.stderr


def test_zero_workers_runs_everything_in_one_process(tmp_path):
    done = run(tmp_path, HPO_TEST_WORKERS="0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert {worker for worker, _ in records(tmp_path).values()} == {"-"}
