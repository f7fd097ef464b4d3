# One piece: one bounded reader of a trial's output (formats, budgets, notes) and its sources.
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

Every byte a trial prints is one tenant's input to an operator many share, so reading it is bounded
and never raises (tests/unit/test_metrics.py throws hostile text at every reader):
- regexes are RE2's (api/regex.py): linear in the line, no backtracking;
- a line longer than MAX_LINE_BYTES is not read, nor a termination message longer than that;
- a line whose regexes take more than LINE_SECONDS of CPU is not read (each single search is bounded
  by RE2: the line's length times the program's size);
- a caller passes a Budget of CPU time (the loop: per experiment and round) and reads on later;
- a value that is not a finite number (`nan`, `abc`, a 5,000-digit integer) is no sample.
What was not read is counted in Notes, which the trial's message shows.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import re2

from hpo_operator.api.regex import compile_format
from hpo_operator.api.status import METRIC_HISTORY_LIMIT

# The longest line (in UTF-8 bytes) that is read, and the longest termination message. A line of
# metrics is tens to hundreds of bytes (a JSON object of 200 metrics is about 6 KiB); the kubelet
# itself keeps at most 4 KiB of a termination message. With RE2 one search of a line costs at most
# its length times the regex's program size (api/regex.MAX_PROGRAM_SIZE): 16 KiB keeps the worst
# single search near 0.1 s of one core, in a thread that does not hold the GIL.
MAX_LINE_BYTES = 16 << 10
# CPU time the regexes of one line may take (metricsFormat; the other forms are linear and cheap):
# looked at before each search, so a line costs at most this plus one search (RE2: at most the line's
# length times the program's size, about 0.1 s at MAX_LINE_BYTES and api/regex.MAX_PROGRAM_SIZE, on
# the NFA's worst case). Katib's default format reads a 16 KiB line of 1,500 name=value pairs in
# about 10 ms. A pattern that matches at every byte and scans ahead to the line's end for each match
# (quadratic in the matches: `(a)((?:a*b)?)`) reaches it, and the line is not read.
LINE_SECONDS = 0.05
# A JSON integer longer than this is read as the text it is (then as a float: infinite, so no
# sample): Python refuses to convert more than 4,300 digits to an int (a ValueError).
_MAX_INT_DIGITS = 1000
_PREVIEW = 24

_PAIR = re2.compile(
    # name=value, matched against a whole token (the line split at spaces, commas and semicolons,
    # as Python's str.split() splits at whitespace); \p{Nd} is what Python's \d matched.
    r"([A-Za-z_][A-Za-z0-9_./-]*)=([-+]?(?:\p{Nd}+\.?\p{Nd}*|\.\p{Nd}+)(?:[eE][-+]?\p{Nd}+)?|[-+]?inf|nan)"
)
# The time the API server puts before each line of a log read with timestamps=true (RFC 3339).
_STAMP = re2.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{1,9}))?(Z|[+-][0-9]{2}:[0-9]{2})"
)

MAX_STEP = 2**53 - 1  # what a JSON number holds exactly, and the API server accepts as an integer


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    value: float
    step: int | None = None
    timestamp: str | None = None


class Budget:
    """CPU time a reader may still spend (`seconds` of `clock`, by default the reading thread's CPU
    time; None: no bound), and the clock that bounds each line (LINE_SECONDS). A line is read whole
    or not at all: the budget is looked at between lines, so it may be overdrawn by one line."""

    def __init__(self, seconds: float | None = None, clock: Callable[[], float] = time.thread_time):
        self.clock = clock
        self.seconds = seconds
        self.used = 0.0
        self.start: float | None = clock()

    def pause(self) -> None:
        """Stops counting: a thread's CPU clock is its own, so a budget spent by several threads
        (one after the other) is paused in one and resumed in the next."""
        if self.start is not None:
            self.used += self.clock() - self.start
            self.start = None

    def resume(self) -> None:
        self.start = self.clock()

    def spent(self) -> float:
        return self.used + (self.clock() - self.start if self.start is not None else 0.0)

    @property
    def exhausted(self) -> bool:
        return self.seconds is not None and self.spent() >= self.seconds


@dataclass
class Notes:
    """What a trial's output held that was not read, counted (bounded: one entry per metric)."""

    long_lines: int = 0
    longest: int = 0
    costly_lines: int = 0
    long_message: int = 0  # the termination message's length when it was too long to read
    unreadable: dict[str, str] = field(default_factory=dict)  # metric -> its first value that is no number

    def copy(self) -> Notes:
        return Notes(self.long_lines, self.longest, self.costly_lines, self.long_message, dict(self.unreadable))

    def skipped(self) -> str:
        """What was not read at all ('' if nothing)."""
        parts = []
        if self.long_message:
            parts.append(f"the termination message ({self.long_message} bytes) is longer than {MAX_LINE_BYTES} bytes")
        if self.long_lines:
            s = "" if self.long_lines == 1 else "s"
            parts.append(f"{self.long_lines} line{s} longer than {MAX_LINE_BYTES} bytes (the longest {self.longest})")
        if self.costly_lines:
            s = "" if self.costly_lines == 1 else "s"
            parts.append(f"{self.costly_lines} line{s} that metricsFormat could not read within {LINE_SECONDS} s")
        return f"not read: {'; '.join(parts)}" if parts else ""

    def unreadable_text(self, names: Iterable[str]) -> str:
        """Why these metrics have no value although the output named them ('' if it did not)."""
        return "; ".join(
            f"the value of {name} could not be read as a number: {self.unreadable[name]}"
            for name in names
            if name in self.unreadable
        )

    def unread(self, name: str, raw: Any) -> None:
        if name in self.unreadable:
            return
        if isinstance(raw, str):
            short = len(raw) <= _PREVIEW
            self.unreadable[name] = repr(raw) if short else f"{raw[:_PREVIEW]!r}… ({len(raw)} characters)"
        elif raw is None or isinstance(raw, bool):
            self.unreadable[name] = json.dumps(raw)
        elif isinstance(raw, float):
            self.unreadable[name] = repr(raw)
        else:
            self.unreadable[name] = f"a JSON {'array' if isinstance(raw, list) else 'object'}"


def _utf8(text: str) -> bytes:
    # What RE2 reads: a lone surrogate (which no decoded log holds, but a str may) becomes "?".
    return text.encode("utf-8", "replace")


def stamp_nanos(stamp: str) -> int | None:
    """The time the API server puts before a log line (RFC 3339, to the nanosecond), in nanoseconds
    since the epoch; None for text that is not one."""
    if len(stamp) > 40:
        return None
    match = _STAMP.fullmatch(_utf8(stamp))
    if match is None:
        return None
    whole, fraction, zone = (part.decode() if part else "" for part in match.groups())
    try:
        seconds = int(datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone)).timestamp())
    except ValueError:
        return None  # e.g. month 13
    return seconds * 1_000_000_000 + int((fraction or "").ljust(9, "0"))


def nanos_stamp(nanos: int) -> str:
    """stamp_nanos() back to RFC 3339 (UTC), as the API server takes it for sinceTime."""
    seconds, rest = divmod(nanos, 1_000_000_000)
    return f"{datetime.fromtimestamp(seconds, UTC).strftime('%Y-%m-%dT%H:%M:%S')}.{rest:09d}Z"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _step(value: object) -> int | None:
    number = _number(value)
    if number is None or not 0 <= number <= MAX_STEP or number != int(number):
        return None
    return int(number)


def _json_int(digits: str) -> int | str:
    # An integer too long for int() stays text: read as a number, it is infinite (no sample).
    return int(digits) if len(digits) <= _MAX_INT_DIGITS else digits


_NOT_JSON = object()


def _json(text: str) -> Any:
    """The JSON value of text, or _NOT_JSON when it is not JSON (or too deep to read)."""
    try:
        return json.loads(text, parse_int=_json_int)
    except (ValueError, RecursionError):
        return _NOT_JSON


def _utf8_length(line: str) -> int:
    # A character is 1 to 4 bytes: the encoding is needed only near the bound.
    if len(line) * 4 <= MAX_LINE_BYTES:
        return len(line)
    return len(_utf8(line))


class LineReader:
    """Reads lines of one experiment's trials: its wanted metrics, and its metricsFormat regexes
    (compiled once; the spec's validation has refused those RE2 cannot take)."""

    def __init__(self, wanted: Iterable[str], formats: Sequence[str] = ()):
        self.wanted = set(wanted)
        self.patterns = [compile_format(f) for f in formats]

    def line(self, line: str, notes: Notes, budget: Budget) -> list[Sample]:
        """The samples of one line (no timestamp); a line not read is counted in notes."""
        size = _utf8_length(line)
        if size > MAX_LINE_BYTES:
            notes.long_lines += 1
            notes.longest = max(notes.longest, size)
            return []
        if self.patterns:
            return self._formats(line, notes, budget)
        line = line.strip()
        if line.startswith("{"):
            obj = _json(line)
            return self.object(obj, notes) if isinstance(obj, dict) else []
        return self._pairs(line, notes)

    def object(self, obj: dict[str, Any], notes: Notes) -> list[Sample]:
        step = _step(obj.get("step"))
        samples = []
        for name, raw in obj.items():
            if name in self.wanted:
                value = _number(raw)
                if value is None:
                    notes.unread(name, raw)
                else:
                    samples.append(Sample(name, value, step))
        return samples

    def _pairs(self, line: str, notes: Notes) -> list[Sample]:
        pairs = []
        for token in line.replace(",", " ").replace(";", " ").split():
            name, equals, raw = token.partition("=")
            if not equals or (name not in self.wanted and name != "step"):
                continue  # (a name holds no "="): only the names that matter are matched
            match = _PAIR.fullmatch(_utf8(token))
            if match is not None:
                pairs.append((match.group(1).decode(), match.group(2).decode()))
            elif name in self.wanted:
                notes.unread(name, raw)
        return self._samples(pairs, notes)

    def _samples(self, pairs: list[tuple[str, str]], notes: Notes) -> list[Sample]:
        step = _step(dict(pairs).get("step"))
        samples = []
        for name, raw in pairs:
            if name in self.wanted:
                value = _number(raw)
                if value is None:
                    notes.unread(name, raw)
                else:
                    samples.append(Sample(name, value, step))
        return samples

    def _formats(self, line: str, notes: Notes, budget: Budget) -> list[Sample]:
        data = _utf8(line)
        deadline = budget.clock() + LINE_SECONDS
        pairs = []
        for pattern in self.patterns:
            for match in pattern.finditer(data):  # (each step of it one search, in RE2's linear time)
                if budget.clock() > deadline:
                    notes.costly_lines += 1
                    return []
                name = match.group(1)
                if name:
                    value = match.group(2) or b""
                    pairs.append((name.decode("utf-8", "replace").strip(), value.decode("utf-8", "replace").strip()))
            if budget.clock() > deadline:
                notes.costly_lines += 1
                return []
        return self._samples(pairs, notes)

    def lines(
        self, lines: Iterable[str], notes: Notes, budget: Budget, timestamps: bool = False
    ) -> Iterator[list[Sample]]:
        """The samples of each line, one list per line (a caller that reads within a budget stops
        taking lines when it is spent). With timestamps, each line starts with its RFC 3339 time, as
        the API server returns logs read with timestamps=true; a text that is not one is no time."""
        for line in lines:
            stamp = None
            if timestamps:
                head, _, rest = line.partition(" ")
                if stamp_nanos(head) is not None:
                    stamp, line = head, rest
            samples = []
            for part in line.splitlines() or [""]:
                samples += self.line(part, notes, budget)
            yield [Sample(s.name, s.value, s.step, stamp) for s in samples] if stamp else samples

    def message(self, text: str | None, notes: Notes, budget: Budget) -> list[Sample]:
        """The termination message's samples: a JSON object, else lines read as the log is."""
        if not text:
            return []
        size = _utf8_length(text)
        if size > MAX_LINE_BYTES:
            notes.long_message = size
            return []
        obj = _json(text)
        if obj is not _NOT_JSON:
            return self.object(obj, notes) if isinstance(obj, dict) else []
        # Lines, read as the log's are; their regexes, all together, in one line's time at most.
        own = Budget(LINE_SECONDS, budget.clock)
        samples = []
        for line in text.splitlines():
            if own.exhausted:
                notes.costly_lines += 1
            else:
                samples += self.line(line, notes, own)
        return samples


def log_lines(text: str, timestamps: bool) -> list[str]:
    """A log's lines. A log read with timestamps is cut at newlines only, as the API server put a
    time at the start of each (other line breaks are read within the line)."""
    return text.split("\n") if timestamps else text.splitlines()


@dataclass(frozen=True)
class Output:
    """What one attempt's output reported, as read: the last sample of each metric (in the order
    they first appeared), the last METRIC_HISTORY_LIMIT samples that have a step, what was not read,
    and whether all of it was read (a reader that ran out of budget reads on in a later round)."""

    latest: dict[str, Sample] = field(default_factory=dict)
    history: tuple[Sample, ...] = ()
    notes: Notes = field(default_factory=Notes)
    complete: bool = True


class Collector:
    """Samples as they are read, kept bounded: the last of each metric and the last
    METRIC_HISTORY_LIMIT with a step (what a trial's status keeps), not the text."""

    def __init__(self) -> None:
        self.latest: dict[str, Sample] = {}
        self.history: deque[Sample] = deque(maxlen=METRIC_HISTORY_LIMIT)
        self.notes = Notes()

    def add(self, samples: Iterable[Sample]) -> None:
        for s in samples:
            self.latest[s.name] = s
            if s.step is not None:
                self.history.append(s)

    def output(self, complete: bool = True) -> Output:
        return Output(dict(self.latest), tuple(self.history), self.notes.copy(), complete)


# --- the readers tests and one-shot callers use: a whole text at once, no budget -----------------


def parse_termination_message(text: str | None, wanted: Iterable[str], formats: Sequence[str] = ()) -> list[Sample]:
    return LineReader(wanted, formats).message(text, Notes(), Budget())


def parse_line(line: str, wanted: set[str], formats: Sequence[str] = ()) -> list[Sample]:
    return LineReader(wanted, formats).line(line, Notes(), Budget())


def parse_log(text: str, wanted: Iterable[str], timestamps: bool = False, formats: Sequence[str] = ()) -> list[Sample]:
    """Samples from a log; with timestamps=True each line starts with its RFC 3339 time, as the
    API server returns logs read with timestamps=true. formats: metricsCollector.metricsFormat."""
    reader = LineReader(wanted, formats)
    lines = reader.lines(iter(log_lines(text, timestamps)), Notes(), Budget(), timestamps)
    return [s for samples in lines for s in samples]


def latest(samples: Iterable[Sample]) -> dict[str, Sample]:
    """The last reported sample of each metric (a later line overrides an earlier one)."""
    result: dict[str, Sample] = {}
    for sample in samples:
        result[sample.name] = sample
    return result


# --- where a trial's result is read: metricsCollector.source ------------------------------------


def _names(required: str | Sequence[str]) -> list[str]:
    return [required] if isinstance(required, str) else list(required)


def log_wanted(source: str, message_samples: Iterable[Sample], required: str | Sequence[str]) -> bool:
    """Whether a finished attempt's log is read, given what its termination message held: always
    with StdoutLog, never with TerminationMessage, and with Auto when the message lacks a required
    metric (the objective, each of several objectives, each constraint's metric)."""
    if source == "TerminationMessage":
        return False
    found = {s.name for s in message_samples}
    return source == "StdoutLog" or not all(n in found for n in _names(required))


def log_needed(
    source: str, termination_message: str | None, required: str | Sequence[str], formats: Sequence[str] = ()
) -> bool:
    """log_wanted() of a termination message not read yet."""
    if source == "TerminationMessage":
        return False
    return log_wanted(source, parse_termination_message(termination_message, _names(required), formats), required)


def read_final(
    source: str,
    required: str | Sequence[str],
    termination_message: str | None,
    log: str,
    wanted: Iterable[str],
    formats: Sequence[str] = (),
) -> Output:
    """A finished attempt's output by source: the termination message, the log, or (Auto) the
    message and then the log when the message lacks a required metric. formats: the log's regexes
    (metricsCollector.metricsFormat), also for a termination message that is not JSON."""
    reader = LineReader(wanted, formats)
    collector = Collector()
    budget = Budget()
    message = [] if source == "StdoutLog" else reader.message(termination_message, collector.notes, budget)
    collector.add(message)
    if log_wanted(source, message, required):
        for samples in reader.lines(iter(log_lines(log, False)), collector.notes, budget):
            collector.add(samples)
    return collector.output()


def read_running(log: str, wanted: Iterable[str], formats: Sequence[str] = ()) -> Output:
    """A running attempt's log so far, read with timestamps."""
    reader = LineReader(wanted, formats)
    collector = Collector()
    for samples in reader.lines(iter(log_lines(log, True)), collector.notes, Budget(), timestamps=True):
        collector.add(samples)
    return collector.output()


def final_samples(
    source: str,
    required: str | Sequence[str],
    termination_message: str | None,
    log: str,
    wanted: Iterable[str],
    formats: Sequence[str] = (),
) -> list[Sample]:
    """read_final()'s samples, unbounded, in the order reported."""
    reader = LineReader(wanted, formats)
    message = [] if source == "StdoutLog" else reader.message(termination_message, Notes(), Budget())
    if not log_wanted(source, message, required):
        return message
    return message + parse_log(log, wanted, formats=formats)
