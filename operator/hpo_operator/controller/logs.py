"""What one experiment's trials reported, read from the API server and parsed off the event loop.

The planner wants a trial's output (planner.needs_output): a finished attempt's once (its
termination message, then its log when metricsCollector.source says so), a running pod's log every
metricsCollector.intervalSeconds, for early stopping. This module reads those logs (the last
LOG_TAIL_LINES lines, at most LOG_LIMIT_BYTES) and parses them, and the termination messages, in a
thread of PARSE_THREADS shared by every experiment (RE2 releases the GIL while it matches), within
ROUND_SECONDS of CPU time (metrics.Budget) per experiment and round: what is left is parsed in the
next round, and the planner waits for a finished attempt's whole output. A trial's bytes therefore
never hold the event loop, which serves every other experiment, the informers, the liveness probe
and the leader's lease.

It keeps samples, not text: per pod, the last sample of each metric and the last
METRIC_HISTORY_LIMIT with a step (metrics.Collector). A running pod's log is read on from the last
line seen (sinceTime), not again from its start; a finished pod's is read once.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from hpo_operator import planner
from hpo_operator.api.spec import ExperimentSpec, MetricsCollector
from hpo_operator.core import metrics
from hpo_operator.core.podstate import PodObservation
from hpo_operator.kube.client import ApiException, KubeClient

# Metrics count from the end of a log ("the last value counts"): read its tail.
LOG_TAIL_LINES = 5000
LOG_LIMIT_BYTES = 4 << 20
# Parsing per experiment and round, in CPU seconds of the parsing thread: a line is read whole, so
# a round may take one line more (metrics.LINE_SECONDS, plus one RE2 search). An ordinary 4 MiB log
# takes about 0.1 s with name=value pairs. The threads are shared by every experiment's rounds, so
# each holds one for about this long at most.
ROUND_SECONDS = float(os.environ.get("HPO_PARSE_ROUND_SECONDS", "0.25"))
PARSE_THREADS = 2
# Logs read per experiment and round: what is read and not parsed yet is at most this many times
# LOG_LIMIT_BYTES (64 MiB), however many pods want theirs read at once.
READS_PER_ROUND = 16

_pool: ThreadPoolExecutor | None = None


def _parser_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(PARSE_THREADS, thread_name_prefix="trial-output")
    return _pool


@dataclass
class Reading:
    """One pod's output as it is read: `need` is "final" or "running" (planner.needs_output)."""

    need: str
    collector: metrics.Collector = field(default_factory=metrics.Collector)
    message_read: bool = False
    # "wanted" once the termination message (or the source) says the log is read, then "done";
    # "skip" when it is not; "" until the message is read.
    log: str = ""
    text: str | None = None  # a log read, not split into lines yet (the thread splits it)
    pending: deque[str] = field(default_factory=deque)  # lines left to parse
    read_at: float | None = None  # (monotonic) when a running pod's log was last read
    since: int | None = None  # the time of the last line seen (ns), from which it is read on
    seen_at_since: int = 0  # how many lines with exactly that time were seen
    output: metrics.Output | None = None  # the collector's, as of the last parse

    def busy(self) -> bool:
        return self.text is not None or bool(self.pending)

    def complete(self) -> bool:
        return self.message_read and self.log in ("skip", "done") and not self.busy()


@dataclass
class PodLogs:
    """One experiment's reader: a Reading per (pod uid, "final" or "running")."""

    api: KubeClient
    # With tenancy on, logs are read as the namespace's trial ServiceAccount (authority.py): a
    # trial's output is its namespace's, not the operator's.
    as_user: str | None = None
    kept: dict[tuple[str, str], Reading] = field(default_factory=dict)

    async def wanted(
        self,
        spec: ExperimentSpec,
        trials: list[planner.TrialView],
        pods: dict[str, dict],
        observations: Mapping[str, PodObservation],
    ) -> dict[str, metrics.Output]:
        """What the trials' output reported, by trial, as far as it is read. `observations` are the
        round's (planner.observe_pods), which the planner is then given: the output is chosen by
        what it will decide on."""
        now = time.monotonic()
        current: dict[str, tuple[Reading, dict, PodObservation]] = {}
        for t in trials:
            obs = observations.get(t.name)
            need = planner.needs_output(spec, t, obs)
            if need is None or obs is None:
                continue
            pod = pods[t.name]
            key = (pod["metadata"]["uid"], need)
            reading = self.kept.get(key)
            if reading is None:
                reading = self.kept[key] = Reading(need)
            current[t.name] = (reading, pod, obs)
        used = {id(r) for r, _, _ in current.values()}
        for key in [k for k, r in self.kept.items() if id(r) not in used]:
            del self.kept[key]  # finished with: the planner recorded what it needed
        if not current:
            return {}
        unread = any(not r.message_read and r.need == "final" or r.busy() for r, _, _ in current.values())
        due = [(r, pod) for r, pod, _ in current.values() if self.due(r, spec.metrics_collector, now)]
        if not unread and not due:
            # Nothing to read or parse this round (the common one: every output already read):
            # no parser, no budget, no thread.
            return {name: r.output or metrics.Output(complete=False) for name, (r, _, _) in current.items()}
        parser = Parser(spec)
        budget = metrics.Budget(ROUND_SECONDS)
        budget.pause()  # counted in the parsing threads only
        loop = asyncio.get_running_loop()
        if unread:
            # Termination messages not read yet, and what earlier rounds left.
            await loop.run_in_executor(_parser_pool(), parser.parse, list(current.values()), budget)
            due = [(r, pod) for r, pod, _ in current.values() if self.due(r, spec.metrics_collector, now)]
        # Finished pods first (their results wait for it), then the running pods read longest ago.
        due.sort(key=lambda d: (d[0].need != "final", d[0].read_at or 0.0))
        reads = [self.read(r, pod, spec, now) for r, pod in due[:READS_PER_ROUND]]
        if reads:
            await asyncio.gather(*reads)
            if parser.may_read(budget):
                await loop.run_in_executor(_parser_pool(), parser.parse, list(current.values()), budget)
        return {name: r.output or metrics.Output(complete=False) for name, (r, _, _) in current.items()}

    @staticmethod
    def due(reading: Reading, collector: MetricsCollector, now: float) -> bool:
        """Whether the pod's log is read this round: a finished pod's once its message says so, a
        running pod's every intervalSeconds, once what was read before is parsed."""
        if reading.busy():
            return False
        if reading.need == "final":
            return reading.log == "wanted"
        return reading.read_at is None or now - reading.read_at >= collector.interval_seconds

    async def read(self, reading: Reading, pod: dict, spec: ExperimentSpec, now: float) -> None:
        containers = pod["spec"].get("containers") or [{}]
        container = spec.trial_template.primary_container_name or containers[0].get("name")
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        running = reading.need == "running"
        options: dict = dict(container=container, limit_bytes=LOG_LIMIT_BYTES, timestamps=running)
        if running and reading.since is not None:
            options["since_time"] = metrics.nanos_stamp(reading.since)
        else:
            options["tail_lines"] = LOG_TAIL_LINES
        try:
            text = await self.api.pod_log(namespace, name, as_user=self.as_user, **options)
        except ApiException:
            # No log to read yet, or none at all: a finished pod's result is its message's alone.
            if not running:
                reading.log = "done"
                reading.output = reading.collector.output(reading.complete())
            return
        finally:
            reading.read_at = now
        reading.text = text  # split and parsed in the thread


class Parser:
    """The parsing half of a round, run in a thread of the pool (it touches only this experiment's
    Readings, which its loop leaves alone until the thread is done)."""

    def __init__(self, spec: ExperimentSpec):
        self.source = spec.metrics_collector.source
        self.required = spec.objective.required_names
        self.reader = metrics.LineReader(planner.wanted_metrics(spec), spec.metrics_collector.metrics_format or ())
        self.lines_read = 0  # this round's

    def parse(self, readings: list[tuple[Reading, dict, PodObservation]], budget: metrics.Budget) -> None:
        budget.resume()
        try:
            self.parse_all(readings, budget)
        finally:
            budget.pause()

    def parse_all(self, readings: list[tuple[Reading, dict, PodObservation]], budget: metrics.Budget) -> None:
        for reading, _, obs in readings:
            changed = reading.output is None
            if reading.need == "final" and not reading.message_read and self.may_read(budget):
                self.lines_read += 1  # (a message counts as a line: at most 16 KiB, or 50 ms of regexes)
                message = (
                    []
                    if self.source == "StdoutLog"
                    else self.reader.message(obs.termination_message, reading.collector.notes, budget)
                )
                reading.collector.add(message)
                reading.message_read = True
                reading.log = "wanted" if metrics.log_wanted(self.source, message, self.required) else "skip"
                changed = True
            if reading.text is not None:
                self.split(reading)
                changed = True
            if reading.pending and self.may_read(budget):
                running = reading.need == "running"
                for samples in self.reader.lines(
                    self.take(reading.pending, budget), reading.collector.notes, budget, timestamps=running
                ):
                    reading.collector.add(samples)
                if reading.need == "final" and not reading.pending:
                    reading.log = "done"
                changed = True
            if changed:
                reading.output = reading.collector.output(reading.complete())

    def may_read(self, budget: metrics.Budget) -> bool:
        """Whether another line is read this round: while the budget lasts, and one line at least."""
        return self.lines_read == 0 or not budget.exhausted

    def take(self, pending: deque[str], budget: metrics.Budget) -> Iterator[str]:
        """Lines from the front of `pending`, while may_read()."""
        while pending and self.may_read(budget):
            self.lines_read += 1
            yield pending.popleft()

    @staticmethod
    def split(reading: Reading) -> None:
        """The log read, into lines to parse: a running pod's from the last line seen on (the read
        began at that line's time), with a line cut at LOG_LIMIT_BYTES left for the next read."""
        text, reading.text = reading.text or "", None
        # (A character cut at the limit was decoded as one replacement character.)
        truncated = len(text) * 4 >= LOG_LIMIT_BYTES - 4 and len(text.encode("utf-8", "replace")) >= LOG_LIMIT_BYTES - 4
        running = reading.need == "running"
        lines = metrics.log_lines(text, running)
        if lines and lines[-1] == "":
            lines.pop()  # the newline that ends the log
        elif truncated and lines:
            cut = lines.pop()  # read on from it next time
            if not lines and running:
                # A single line longer than the read: it is never read whole, so it is skipped (by
                # its time: other lines of the same nanosecond go with it).
                reading.collector.notes.long_lines += 1
                reading.collector.notes.longest = max(reading.collector.notes.longest, len(cut))
                stamp = metrics.stamp_nanos(cut.partition(" ")[0])
                if stamp is not None:
                    reading.since, reading.seen_at_since = stamp + 1, 0
        if not running:
            reading.pending.extend(lines)
            return
        # The read began at the time of the last line seen: the lines of that very time that were
        # seen come first again, and are skipped.
        since, skip = reading.since, reading.seen_at_since
        for line in lines:
            stamp = metrics.stamp_nanos(line.partition(" ")[0])
            if stamp is not None and since is not None:
                if stamp < since:
                    continue
                if stamp == since and skip > 0:
                    skip -= 1
                    continue
            if stamp is not None:
                if stamp == reading.since:
                    reading.seen_at_since += 1
                else:
                    reading.since, reading.seen_at_since = stamp, 1
            reading.pending.append(line)
