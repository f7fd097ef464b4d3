"""tune()'s runner (hpo_operator.client.trial_runner) as a trial's pod runs it: a plain python3,
isolated (-I: no PYTHONPATH, so no hpo_operator), over a directory holding what the ConfigMap holds
(objective_files()), with the NAME=VALUE arguments the pod's args give. What it prints is read back
with the operator's own parser (core.metrics), and a failure's termination message through
core.podstate, as the operator reads them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from hpo_operator.client import categorical, discrete, double, integer
from hpo_operator.client.space import Space
from hpo_operator.client.tuning import CONFIG_FILE, RUNNER_FILE, objective_files
from hpo_operator.core import metrics
from hpo_operator.core.podstate import failure_message

PYTHON = shutil.which("python3") or sys.executable


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    termination: str | None

    def metrics(self, *names: str) -> dict[str, float]:
        return {n: s.value for n, s in metrics.latest(metrics.parse_log(self.stdout, names)).items()}


def run(
    tmp_path: Path,
    source: str,
    args: list[str],
    parameters: dict[str, Space],
    *,
    function: str = "objective",
    objective: str = "loss",
    packages: list[str] | None = None,
    pip_args: list[str] | None = None,
) -> Run:
    config_dir = tmp_path / "objective"
    config_dir.mkdir()
    files = objective_files(function, textwrap.dedent(source), objective, parameters, packages or [], pip_args or [])
    for name, text in files.items():
        (config_dir / name).write_text(text)
    termination = tmp_path / "termination-log"
    done = subprocess.run(
        [PYTHON, "-I", str(config_dir / RUNNER_FILE), str(config_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"HPO_TERMINATION_LOG": str(termination), "PATH": "/usr/bin:/bin"},
    )
    return Run(done.returncode, done.stdout, done.stderr, termination.read_text() if termination.exists() else None)


SPACE = {
    "lr": double(1e-4, 1.0, log=True),
    "layers": integer(1, 8),
    "act": categorical(["relu", "tanh"]),
    "batch": discrete([16, 32]),
    "drop": discrete([0.1, 0.5]),
}


def test_each_parameter_arrives_as_a_keyword_argument_of_its_type(tmp_path):
    source = """
    def objective(lr, layers, act, batch, drop):
        types = {"lr": float, "layers": int, "act": str, "batch": int, "drop": float}
        given = {"lr": lr, "layers": layers, "act": act, "batch": batch, "drop": drop}
        right = all(type(given[k]) is t for k, t in types.items())
        return {"loss": lr * layers + batch + drop, "typed": 1.0 if right and act == "tanh" else 0.0}
    """
    result = run(tmp_path, source, ["lr=0.5", "layers=3", "act=tanh", "batch=32", "drop=0.1"], SPACE)
    assert result.code == 0, result.stderr
    assert result.metrics("loss", "typed") == {"loss": 0.5 * 3 + 32 + 0.1, "typed": 1.0}
    assert result.termination is None


def test_the_returned_dict_is_the_last_line_of_the_log(tmp_path):
    source = """
    def objective(lr):
        print("training with", lr)
        return {"loss": 0.25, "accuracy": 0.9}
    """
    result = run(tmp_path, source, ["lr=0.1"], {"lr": double(0.01, 1)})
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"loss": 0.25, "accuracy": 0.9}
    assert result.metrics("loss", "accuracy") == {"loss": 0.25, "accuracy": 0.9}


def test_a_returned_number_is_the_objectives_value(tmp_path):
    source = """
    def objective(x):
        return (x - 2) ** 2
    """
    result = run(tmp_path, source, ["x=5"], {"x": integer(0, 10)}, objective="error")
    assert result.code == 0, result.stderr
    assert result.metrics("error") == {"error": 9.0}


def test_reported_values_are_the_metric_history_and_the_return_the_final_value(tmp_path):
    source = """
    def objective(lr, report):
        loss = 1.0
        for epoch in range(1, 4):
            loss *= lr
            report(step=epoch, loss=loss)
        return {"loss": loss / 2}
    """
    result = run(tmp_path, source, ["lr=0.5"], {"lr": double(0.1, 1)})
    assert result.code == 0, result.stderr
    samples = metrics.parse_log(result.stdout, ["loss"])
    assert [(s.step, s.value) for s in samples] == [(1, 0.5), (2, 0.25), (3, 0.125), (None, 0.0625)]
    assert result.metrics("loss") == {"loss": 0.0625}


def test_a_function_that_only_reports_succeeds_with_its_last_report(tmp_path):
    source = """
    def objective(lr, report):
        report(step=1, loss=lr)
        report(step=2, loss=lr / 10)
    """
    result = run(tmp_path, source, ["lr=0.5"], {"lr": double(0.1, 1)})
    assert result.code == 0, result.stderr
    assert result.metrics("loss") == {"loss": 0.05}


def test_an_exception_is_the_termination_message_with_the_error_line_last(tmp_path):
    source = """
    def objective(lr):
        import math
        if lr > 0.5:
            raise ValueError(f"lr {lr} is too large")
        return math.log(lr)
    """
    result = run(tmp_path, source, ["lr=0.9"], {"lr": double(0.1, 1)})
    assert result.code == 1
    assert result.termination.splitlines()[-1] == "ValueError: lr 0.9 is too large"
    assert "objective.py" in result.termination and "line 5, in objective" in result.termination
    # The runner's own frames are not the function author's business.
    assert "runner.py" not in result.termination
    assert "Traceback" in result.stderr  # the whole traceback stays in the log
    # What the operator then makes the failed trial's message.
    message = failure_message(1, "Error", result.termination)
    assert message.startswith("the container exited with code 1 (Error): Traceback")
    assert message.endswith("ValueError: lr 0.9 is too large")


def test_a_long_traceback_keeps_its_end_within_the_termination_message_limit(tmp_path):
    source = """
    def objective(depth):
        def down(n):
            if n == 0:
                raise RuntimeError("bottom reached")
            return down(n - 1)
        return down(depth)
    """
    result = run(tmp_path, source, ["depth=60"], {"depth": integer(1, 100)})
    assert result.code == 1
    assert len(result.termination.encode()) <= 4096
    assert result.termination.splitlines()[-1] == "RuntimeError: bottom reached"


def test_a_metric_that_is_not_a_number_fails_the_trial_naming_it(tmp_path):
    source = """
    def objective(lr):
        return {"loss": 0.1, "model": "a model"}
    """
    result = run(tmp_path, source, ["lr=0.5"], {"lr": double(0.1, 1)})
    assert result.code == 1
    assert result.termination == "metric model is 'a model', not a number"


def test_a_return_that_is_not_metrics_fails_the_trial_saying_what_to_return(tmp_path):
    source = """
    def objective(lr):
        return [lr]
    """
    result = run(tmp_path, source, ["lr=0.5"], {"lr": double(0.1, 1)})
    assert result.code == 1
    assert result.termination.startswith("the function returned list [0.5]: return a dict of metrics")


def test_a_bad_report_fails_the_trial_saying_why(tmp_path):
    source = """
    def objective(lr, report):
        report(step=-1, loss=lr)
    """
    result = run(tmp_path, source, ["lr=0.5"], {"lr": double(0.1, 1)})
    assert result.code == 1
    assert result.termination == "report(step=-1): the step must be a whole number >= 0"


def test_a_missing_argument_fails_the_trial_naming_it(tmp_path):
    result = run(
        tmp_path, "def objective(lr, n):\n    return 1.0\n", ["lr=0.5"], {"lr": double(0.1, 1), "n": integer(1, 3)}
    )
    assert result.code == 1
    assert result.termination == "no value was given for n"


def test_a_failed_package_install_is_the_trials_failure_message(tmp_path):
    # --no-index: pip looks nowhere, so the install fails at once and without a network.
    result = run(
        tmp_path,
        "def objective(lr):\n    return lr\n",
        ["lr=0.5"],
        {"lr": double(0.1, 1)},
        packages=["hpo-no-such-package"],
        pip_args=["--no-index"],
    )
    assert result.code == 1
    assert result.termination.startswith("installing hpo-no-such-package failed (pip exited ")
    assert "loss" not in result.stdout


def test_packages_are_not_installed_unless_asked(tmp_path):
    result = run(tmp_path, "def objective(lr):\n    return lr\n", ["lr=0.5"], {"lr": double(0.1, 1)})
    config = json.loads((tmp_path / "objective" / CONFIG_FILE).read_text())
    assert config["packages"] == []
    assert result.code == 0 and "pip" not in result.stderr


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [("3", "int", 3), ("3.0", "int", 3), ("0.25", "float", 0.25), ("1e-3", "float", 0.001), ("relu", "str", "relu")],
)
def test_a_parameters_text_is_read_as_its_type(text, kind, value):
    from hpo_operator.client.trial_runner import typed_value

    assert typed_value(text, kind) == value and type(typed_value(text, kind)) is type(value)
