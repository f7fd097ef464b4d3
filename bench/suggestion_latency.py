"""How long the operator takes to produce one suggestion, and to rebuild a study after a restart.

For random, tpe and cmaes (seeded, default settings) over a four-parameter space (log double,
double, int, categorical):

- suggest: the time of Suggester.suggest(n) with n finished trials (all of 0..n-1 asked and told
  first, as at parallelTrialCount 1). At 10 and 100 finished trials every sample is a fresh
  Suggester brought to n trials (untimed) and timed once; at 1000 one Suggester is brought to
  1000 trials and the next few suggestions are timed one after another (1000..1000+reps-1
  finished trials), since bringing a TPE study to 1000 trials takes tens of seconds.
- rebuild: what the operator does for an experiment after a restart: a new Suggester,
  replay() of n recorded suggestions, the n results told, and the replay carried out (the first
  suggestion afterwards is not included).

Times are wall-clock (time.perf_counter) in milliseconds; p50 and p95 are over the samples (with
few samples p95 is close to the maximum). Default repetitions keep the run to a few minutes.

    .venv/bin/python bench/suggestion_latency.py [--sizes 10,100,1000] [--quick]

This is a benchmark: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

import optuna  # noqa: E402

from hpo_operator.api.spec import ExperimentSpec  # noqa: E402
from hpo_operator.core import times
from hpo_operator.search.suggest import REPLAY_LIMIT, Outcome, Recorded, Suggester  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

ALGORITHMS = ["random", "tpe", "cmaes"]
PARAMETERS = [
    {"name": "lr", "type": "double", "min": 0.0001, "max": 0.1, "log": True},
    {"name": "dropout", "type": "double", "min": 0.0, "max": 0.5},
    {"name": "layers", "type": "int", "min": 1, "max": 8},
    {"name": "optimizer", "type": "categorical", "values": ["adam", "sgd", "rmsprop"]},
]
T0 = datetime(2024, 5, 1, tzinfo=UTC)
# (suggest samples, rebuild samples) per size; --quick divides them.
REPS = {10: (40, 10), 100: (15, 5), 1000: (10, 2)}


def spec(algorithm: str) -> ExperimentSpec:
    return ExperimentSpec.model_validate(
        {
            "objective": {"type": "minimize", "metricName": "loss"},
            "algorithm": {"name": algorithm, "seed": 1},
            "parameters": PARAMETERS,
            "maxTrialCount": 100_000,
            "trialTemplate": {"template": {"spec": {"containers": [{"name": "train", "image": "bench"}]}}},
        }
    )


def loss(values: dict[str, str]) -> float:
    return (
        (math.log10(float(values["lr"])) + 2.5) ** 2
        + (float(values["dropout"]) - 0.2) ** 2
        + (int(values["layers"]) - 3) ** 2 / 10
        + {"adam": 0.0, "sgd": 0.3, "rmsprop": 0.1}[values["optimizer"]]
    )


def at(seconds: float) -> str:
    return times.iso(T0 + timedelta(seconds=seconds))


class History:
    """n suggestions asked and told one at a time, kept for replaying."""

    def __init__(self, algorithm: str):
        self.suggester = Suggester(spec(algorithm))
        self.recorded: dict[int, Recorded] = {}
        self.outcomes: dict[int, Outcome] = {}

    def step(self) -> float:
        """Asks the next suggestion (timed), then tells its result (untimed)."""
        index = len(self.recorded)
        started = time.perf_counter()
        values = self.suggester.suggest(index)
        elapsed = time.perf_counter() - started
        self.recorded[index] = Recorded(values, created=at(10 * index))
        self.outcomes[index] = Outcome(value=loss(values), at=at(10 * index + 5))
        self.suggester.tell(index, self.outcomes[index])
        return elapsed

    def grow(self, n: int) -> History:
        while len(self.recorded) < n:
            self.step()
        return self


def rebuild_seconds(algorithm: str, history: History, n: int) -> float:
    recorded = {i: history.recorded[i] for i in range(n)}
    started = time.perf_counter()
    sug = Suggester(spec(algorithm))
    sug.replay(recorded, count=n)
    for i in range(n):
        sug.tell(i, history.outcomes[i])
    assert sug.count == n  # carries out the replay
    elapsed = time.perf_counter() - started
    return elapsed


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]

    def line(r: list[str]) -> str:
        cells = (str(c).rjust(w) if i > 1 else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        return "| " + " | ".join(cells) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def restart_seconds(algorithm: str, n: int) -> tuple[float, float]:
    """A restart of an experiment with n finished suggestions: (rebuild, first new suggestion).
    The history is made up (random configurations, told their loss): growing a real TPE study to
    10,000 trials would take hours, and the rebuild does not care who chose the values."""
    rng = random.Random(n)
    recorded, outcomes = {}, {}
    for i in range(n):
        values = {
            "lr": repr(10 ** rng.uniform(-4, -1)),
            "dropout": repr(rng.uniform(0, 0.5)),
            "layers": str(rng.randint(1, 8)),
            "optimizer": rng.choice(["adam", "sgd", "rmsprop"]),
        }
        recorded[i] = Recorded(values, created=at(10 * i))
        outcomes[i] = Outcome(value=loss(values), at=at(10 * i + 5))
    started = time.perf_counter()
    sug = Suggester(spec(algorithm))
    sug.replay(recorded, count=n)
    for i in range(n):
        sug.tell(i, outcomes[i])
    assert sug.count == n
    rebuilt = time.perf_counter()
    sug.suggest(n)
    return rebuilt - started, time.perf_counter() - rebuilt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,100,1000", help="finished trials (default 10,100,1000)")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    parser.add_argument("--quick", action="store_true", help="a third of the repetitions")
    parser.add_argument(
        "--restart-sizes",
        default="2000,10000",
        help="finished trials for the restart-at-scale table (past the replay limit)",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    started = time.perf_counter()
    rows = []
    for algorithm in args.algorithms.split(","):
        for n in sizes:
            reps_suggest, reps_rebuild = REPS.get(n, (10, 2))
            if args.quick:
                reps_suggest, reps_rebuild = max(3, reps_suggest // 3), max(1, reps_rebuild // 3)
            if n >= 1000:
                history = History(algorithm).grow(n)
                suggest = [history.step() for _ in range(reps_suggest)]
            else:
                suggest = []
                for _ in range(reps_suggest):
                    history = History(algorithm).grow(n)
                    suggest.append(history.step())
            rebuild = [rebuild_seconds(algorithm, history, n) for _ in range(reps_rebuild)]
            rows.append(
                [
                    algorithm,
                    str(n),
                    ms(percentile(suggest, 0.5)),
                    ms(percentile(suggest, 0.95)),
                    str(len(suggest)),
                    ms(percentile(rebuild, 0.5)),
                    ms(percentile(rebuild, 0.95)),
                    str(len(rebuild)),
                ]
            )
            print(f"  {algorithm} n={n} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    print(f"Suggestion latency (ms, wall clock; Optuna {optuna.__version__}, Python {sys.version.split()[0]})\n")
    print(
        table(
            [
                "algorithm",
                "finished trials",
                "suggest p50",
                "suggest p95",
                "samples",
                "rebuild p50",
                "rebuild p95",
                "samples",
            ],
            rows,
        )
    )
    restart_rows = []
    for algorithm in ("tpe", "cmaes"):
        for n in [int(x) for x in args.restart_sizes.split(",") if x]:
            rebuild, first = restart_seconds(algorithm, n)
            restart_rows.append([algorithm, str(n), f"{rebuild:.2f}", f"{first:.2f}", f"{rebuild + first:.2f}"])
    if restart_rows:
        print(
            f"\nRestart at scale (s): a new process rebuilds the study from the results, then suggests "
            f"(replay limit {REPLAY_LIMIT})\n"
        )
        print(table(["algorithm", "finished trials", "rebuild", "first suggestion", "total"], restart_rows))
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
