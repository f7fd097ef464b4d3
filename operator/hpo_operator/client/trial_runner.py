"""Runs a tune() objective inside a trial's pod.

This file is copied as it is into the experiment's ConfigMap (runner.py) and run there by the
trial image's own python3: it uses the standard library only, and nothing of hpo_operator, which a
trial image need not have. (The client imports typed_value() from here, so that the values a
trial's function receives and the ones a notebook reads back are typed by one rule.)

    python3 runner.py CONFIG_DIR NAME=VALUE...

CONFIG_DIR holds objective.py (the function's source) and config.json:
    {"function": "objective", "objective": "loss", "types": {"lr": "float", "layers": "int"},
     "packages": [], "pip_args": []}
Each NAME=VALUE is a trial's parameter (the pod's args hold ${params.NAME}), passed to the function
as a keyword argument of its type (int, float or str). What it writes, for the operator to read:
- each report(step=..., **metrics) the function makes: a JSON line on stdout, {"step": 3, "loss": 0.41};
- the function's returned dict (or number: the objective's value): the last JSON line on stdout
  (the experiment's metricsCollector is StdoutLog, so the latest value of each metric counts);
- when the function raises: the traceback on stderr, its end (the error's own line last) in the
  termination message ($HPO_TERMINATION_LOG, default /dev/termination-log), which the operator
  puts into the failed trial's message; the exit status is then 1.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import traceback
from typing import Any

TERMINATION_LOG = "/dev/termination-log"
# The kubelet keeps 4096 bytes of a termination message; the end of a traceback says the most.
MESSAGE_MAX = 2000
REPORT_ARGUMENT = "report"


class ObjectiveError(Exception):
    """The function or its setup is unusable (a message for the trial, not a traceback)."""


def typed_value(text: str, kind: str) -> Any:
    """A trial's parameter value (text) as its Python type ("int", "float" or "str"); text that
    is not one stays text."""
    try:
        if kind == "int":
            return int(text) if re.fullmatch(r"[-+]?[0-9]+", text) else int(float(text))
        if kind == "float":
            return float(text)
    except (ValueError, OverflowError):
        pass
    return text


def _metric_value(name: object, value: object) -> int | float:
    if not isinstance(name, str) or not name:
        raise ObjectiveError(f"a metric's name must be a string, not {name!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        # numpy's scalars convert; anything else is a mistake worth a clear failure
        try:
            value = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ObjectiveError(f"metric {name} is {value!r}, not a number") from None
    return value


def report(step: int | None = None, **metrics: object) -> None:
    """Reports intermediate metrics (e.g. per epoch): a JSON line on stdout that the operator
    reads into the trial's metric history (and early stopping, when the experiment has it)."""
    line: dict[str, Any] = {}
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ObjectiveError(f"report(step={step!r}): the step must be a whole number >= 0")
        line["step"] = step
    if not metrics:
        raise ObjectiveError("report() needs at least one metric, e.g. report(step=1, loss=0.4)")
    for name, value in metrics.items():
        line[name] = _metric_value(name, value)
    print(json.dumps(line), flush=True)


def parse_arguments(argv: list[str], types: dict[str, str]) -> dict[str, Any]:
    """The keyword arguments from NAME=VALUE words, typed as config.json says."""
    kwargs: dict[str, Any] = {}
    for word in argv:
        name, sep, text = word.partition("=")
        if not sep or name not in types:
            raise ObjectiveError(f"unexpected argument {word!r}: expected NAME=VALUE for {', '.join(types)}")
        kwargs[name] = typed_value(text, types[name])
    missing = [n for n in types if n not in kwargs]
    if missing:
        raise ObjectiveError(f"no value was given for {', '.join(missing)}")
    return kwargs


def install(packages: list[str], pip_args: list[str]) -> None:
    """pip-installs the packages into a fresh directory put first on sys.path (the image's own
    site-packages may not be writable)."""
    target = tempfile.mkdtemp(prefix="hpo-packages-")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-warn-script-location", "--target", target]
    done = subprocess.run([*command, *pip_args, *packages], capture_output=True, text=True)
    sys.stderr.write(done.stdout + done.stderr)
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise ObjectiveError(
            f"installing {', '.join(packages)} failed (pip exited {done.returncode}): " + " / ".join(said)
        )
    sys.path.insert(0, target)


def load(config_dir: str, function: str) -> Any:
    """The function, defined by running objective.py (its source) in a module of its own."""
    path = os.path.join(config_dir, "objective.py")
    with open(path, encoding="utf-8") as f:
        source = f.read()
    module: dict[str, Any] = {"__name__": "__hpo_objective__", "__file__": path}
    exec(compile(source, path, "exec"), module)
    fn = module.get(function)
    if not callable(fn):
        raise ObjectiveError(f"objective.py defines no function {function}")
    return fn


def metrics_of(result: object, objective: str) -> dict[str, Any] | None:
    """The returned value as metrics: a dict of numbers, or a number (the objective's value);
    None when the function returned nothing (it reported its metrics itself)."""
    if result is None:
        return None
    if isinstance(result, dict):
        return {name: _metric_value(name, value) for name, value in result.items()}
    if isinstance(result, (int, float)) and not isinstance(result, bool):
        return {objective: result}
    try:  # a numpy scalar
        return {objective: _metric_value(objective, result)}
    except ObjectiveError:
        raise ObjectiveError(
            f"the function returned {type(result).__name__} {result!r}: return a dict of metrics, e.g. "
            f'{{"{objective}": 0.1}}, or the value of {objective}'
        ) from None


def run(config_dir: str, argv: list[str]) -> None:
    with open(os.path.join(config_dir, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    if config.get("packages"):
        install(list(config["packages"]), list(config.get("pip_args") or []))
    kwargs = parse_arguments(argv, dict(config["types"]))
    fn = load(config_dir, config["function"])
    if REPORT_ARGUMENT in inspect.signature(fn).parameters:
        kwargs[REPORT_ARGUMENT] = report
    found = metrics_of(fn(**kwargs), config["objective"])
    if found is None:
        sys.stderr.write("the function returned None: its metrics are the ones it reported\n")
        return
    for name, value in found.items():
        if isinstance(value, float) and not math.isfinite(value):
            sys.stderr.write(f"metric {name} is {value}: a trial's metrics must be finite numbers\n")
    print(json.dumps(found), flush=True)


def explanation(error: BaseException, objective_file: str) -> str:
    """The end of the error's traceback from the function's first frame (the runner's own frames
    say nothing to the function's author), the error's line last."""
    if isinstance(error, ObjectiveError):
        return str(error)
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != objective_file:
        tb = tb.tb_next
    lines = traceback.format_exception(type(error), error, tb)
    text = "".join(lines).strip()
    if len(text) > MESSAGE_MAX:
        text = text[-MESSAGE_MAX:]
        text = text[text.find("\n") + 1 :] if "\n" in text else text
    return text


def main(argv: list[str]) -> int:
    if len(argv) < 1:
        sys.stderr.write("usage: runner.py CONFIG_DIR NAME=VALUE...\n")
        return 2
    config_dir = argv[0]
    try:
        run(config_dir, argv[1:])
    except Exception as error:
        traceback.print_exc()
        message = explanation(error, os.path.join(config_dir, "objective.py"))
        try:
            with open(os.environ.get("HPO_TERMINATION_LOG", TERMINATION_LOG), "w", encoding="utf-8") as f:
                f.write(message)
        except OSError as e:  # no termination log (run by hand): the traceback above says it all
            sys.stderr.write(f"cannot write the termination message: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
