"""What the operator keeps in memory for running trials' logs (early stopping), measured with
tracemalloc: N running trials, each with a 4 MiB log (5,000 lines, the read's limits), read through
controller.logs.PodLogs as a round reads them, against a fake API server (no cluster).

- before: the reader kept each pod's last log text between rounds (4 MiB a pod), as it did until
  the parsing moved off the event loop; measured here by keeping those texts the same way;
- after: PodLogs keeps per pod the samples (the last of each metric, the last METRIC_HISTORY_LIMIT
  with a step) and the time of the last line read, never the text.

    .venv/bin/python bench/trial_output_memory.py --trials 1000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
import tracemalloc

from hpo_operator import planner
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.controller import logs as logs_module
from hpo_operator.controller.logs import LOG_LIMIT_BYTES, LOG_TAIL_LINES, PodLogs
from hpo_operator.core import metrics
from hpo_operator.core.podstate import PodObservation

MiB = 1 << 20


def spec() -> ExperimentSpec:
    return ExperimentSpec.model_validate(
        {
            "objective": {"type": "minimize", "metricName": "loss"},
            "algorithm": {"name": "random"},
            "maxTrialCount": 1,
            "parameters": [{"name": "x", "type": "double", "min": 0, "max": 1}],
            "metricsCollector": {"source": "StdoutLog"},
            "earlyStopping": {"algorithm": "median"},
            "trialTemplate": {"template": {"spec": {"containers": [{"name": "train", "image": "t:1"}]}}},
        }
    )


def log_text(pod: int) -> str:
    """A 4 MiB log read with timestamps: 5,000 lines, each a step and its loss, and the rest of the
    line a program's chatter."""
    width = LOG_LIMIT_BYTES // LOG_TAIL_LINES
    base = 1_700_000_000_000_000_000
    lines = []
    for step in range(1, LOG_TAIL_LINES + 1):
        head = f"{metrics.nanos_stamp(base + step * 1_000_000)} step={step} loss={1 / (step + pod):.6f} "
        lines.append(head + "x" * (width - len(head) - 1))
    return "\n".join(lines)[: LOG_LIMIT_BYTES - 1] + "\n"


class FakeApi:
    async def pod_log(self, namespace: str, pod: str, **kw) -> str:
        return log_text(int(pod.rsplit("-", 1)[1]))


def before(trials: int) -> int:
    """The old reader's keeping: (monotonic time, text) per pod."""
    tracemalloc.start()
    kept = {(f"uid-{i}", "running"): (time.monotonic(), log_text(i)) for i in range(trials)}
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return size


def after(trials: int) -> tuple[int, int, float]:
    """PodLogs's keeping once every pod's log is read and parsed: (bytes kept, peak bytes, seconds)."""
    logs_module.ROUND_SECONDS = 3600.0  # every read parsed in its round: the kept state, not the budget
    experiment = spec()
    names = [f"exp-{i:04d}" for i in range(trials)]
    views = [planner.TrialView(n, f"uid-{n}", {"metadata": {"name": n}, "status": {"phase": "Running"}}) for n in names]
    pods = {
        n: {
            "metadata": {"name": n, "namespace": "ns", "uid": f"uid-{n}"},
            "spec": {"containers": [{"name": "train"}]},
            "status": {"phase": "Running"},
        }
        for n in names
    }
    observations = {n: PodObservation("Running", "Running") for n in names}
    reader = PodLogs(FakeApi())  # type: ignore[arg-type]
    gc.collect()
    tracemalloc.start()
    started = time.monotonic()
    while len([r for r in reader.kept.values() if r.read_at is not None]) < trials:
        asyncio.run(reader.wanted(experiment, views, pods, observations))
    took = time.monotonic() - started
    gc.collect()
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert all(len(r.collector.history) == 200 and r.text is None and not r.pending for r in reader.kept.values())
    return kept, peak, took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--before-trials", type=int, default=100, help="measured, then scaled to --trials")
    args = parser.parse_args()
    old = before(args.before_trials)
    kept, peak, took = after(args.trials)
    print(f"{args.trials} running trials, a 4 MiB log each ({LOG_TAIL_LINES} lines)")
    print(
        f"before: {old / MiB:.1f} MiB for {args.before_trials} trials "
        f"-> {old * args.trials / args.before_trials / MiB:,.0f} MiB for {args.trials}"
    )
    print(
        f"after:  {kept / MiB:.1f} MiB kept ({kept / args.trials / 1024:.1f} KiB a trial); peak while reading "
        f"{peak / MiB:.0f} MiB; {took:.0f} s to read and parse them all"
    )


if __name__ == "__main__":
    main()
