"""Reading trial metrics from what a container leaves behind.

Two documented formats:
- the termination message (/dev/termination-log): one JSON object of numbers,
  e.g. {"loss": 0.12, "accuracy": 0.97};
- stdout lines, either `name=value` pairs separated by spaces or commas (an optional `step=N`
  pair gives the step), e.g. `epoch 3: step=3 loss=0.41, accuracy=0.88`, or a JSON object per
  line, e.g. {"step": 3, "loss": 0.41}. Lines in neither form are ignored.
  With metricsCollector.metricsFormat, stdout lines are read with those regexes instead (as Katib
  reads them): every match of a regex is one metric, its first group the name and its second the
  value; a match named `step` gives the line's step. JSON and name=value lines are then not read.
Only the metrics the experiment names (objective and additional metrics) are kept; the latest
value of each is the trial's result.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

_PAIR = re.compile(
    r"(?:^|[\s,;])([A-Za-z_][A-Za-z0-9_./-]*)=([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf|nan)(?=$|[\s,;])"
)


@dataclass(frozen=True)
class Sample:
    name: str
    value: float
    step: int | None = None
    timestamp: str | None = None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


MAX_STEP = 2**53 - 1  # what a JSON number holds exactly, and the API server accepts as an integer


def _step(value: object) -> int | None:
    number = _number(value)
    if number is None or not 0 <= number <= MAX_STEP or number != int(number):
        return None
    return int(number)


def _from_object(obj: dict[str, Any], wanted: set[str]) -> list[Sample]:
    step = _step(obj.get("step"))
    samples = []
    for name, raw in obj.items():
        if name in wanted and (value := _number(raw)) is not None:
            samples.append(Sample(name, value, step))
    return samples


def parse_termination_message(text: str | None, wanted: Iterable[str], formats: Sequence[str] = ()) -> list[Sample]:
    if not text:
        return []
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        # Not JSON: the message may still hold lines, read as the log is.
        return parse_log(text, wanted, formats=formats)
    return _from_object(obj, set(wanted)) if isinstance(obj, dict) else []


def _from_formats(line: str, wanted: set[str], formats: Sequence[str]) -> list[Sample]:
    # re caches compiled patterns: a log is read with the same few regexes line after line.
    pairs = [
        (match.group(1).strip(), (match.group(2) or "").strip())
        for pattern in formats
        for match in re.finditer(pattern, line)
        if match.group(1)
    ]
    step = _step(dict(pairs).get("step"))
    return [Sample(name, value, step) for name, raw in pairs if name in wanted and (value := _number(raw)) is not None]


def parse_line(line: str, wanted: set[str], formats: Sequence[str] = ()) -> list[Sample]:
    if formats:
        return _from_formats(line, wanted, formats)
    line = line.strip()
    if line.startswith("{"):
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            return []
        return _from_object(obj, wanted) if isinstance(obj, dict) else []
    pairs = _PAIR.findall(line)
    if not pairs:
        return []
    values = dict(pairs)
    step = _step(values.get("step"))
    return [Sample(name, value, step) for name, raw in pairs if name in wanted and (value := _number(raw)) is not None]


def parse_log(text: str, wanted: Iterable[str], timestamps: bool = False, formats: Sequence[str] = ()) -> list[Sample]:
    """Samples from a log; with timestamps=True each line starts with its RFC 3339 time, as the
    API server returns logs read with timestamps=true. formats: metricsCollector.metricsFormat."""
    wanted = set(wanted)
    samples: list[Sample] = []
    for line in text.splitlines():
        stamp = None
        if timestamps:
            stamp, _, line = line.partition(" ")
        for sample in parse_line(line, wanted, formats):
            samples.append(Sample(sample.name, sample.value, sample.step, stamp) if stamp else sample)
    return samples


def latest(samples: Iterable[Sample]) -> dict[str, Sample]:
    """The last reported sample of each metric (a later line overrides an earlier one)."""
    result: dict[str, Sample] = {}
    for sample in samples:
        result[sample.name] = sample
    return result


# --- where a trial's result is read: metricsCollector.source ------------------------------------


def _names(required: str | Sequence[str]) -> list[str]:
    return [required] if isinstance(required, str) else list(required)


def log_needed(
    source: str, termination_message: str | None, required: str | Sequence[str], formats: Sequence[str] = ()
) -> bool:
    """Whether a succeeded trial's log must be read for its result: always with StdoutLog, never
    with TerminationMessage, and with Auto when the termination message lacks a required metric
    (the objective, each of several objectives, each constraint's metric)."""
    if source == "TerminationMessage":
        return False
    names = _names(required)
    found = {s.name for s in parse_termination_message(termination_message, names, formats)}
    return source == "StdoutLog" or not all(n in found for n in names)


def final_samples(
    source: str,
    required: str | Sequence[str],
    termination_message: str | None,
    log: str,
    wanted: Iterable[str],
    formats: Sequence[str] = (),
) -> list[Sample]:
    """A finished attempt's metrics by source: the termination message, the log, or (Auto) the
    message and then the log when the message lacks a required metric. formats: the log's regexes
    (metricsCollector.metricsFormat), also for a termination message that is not JSON."""
    wanted = list(wanted)
    samples = [] if source == "StdoutLog" else parse_termination_message(termination_message, wanted, formats)
    found = {s.name for s in samples}
    if source == "StdoutLog" or (source == "Auto" and not all(n in found for n in _names(required))):
        samples += parse_log(log, wanted, formats=formats)
    return samples
