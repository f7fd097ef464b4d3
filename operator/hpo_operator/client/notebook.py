"""The notebook's verbs over the client: create an experiment from a typed spec (build.py), wait for
it with a progress bar, read its best trial, and its trials as a pandas DataFrame.

    from hpo_operator import client as hpo
    s = hpo.connect()
    hpo.create_experiment(s, "mnist", spec)
    done = hpo.wait(s, "mnist", timeout=3600)       # a progress bar in a notebook or a terminal
    best = hpo.best_trial(s, "mnist")               # a TrialSummary: .parameters, .metrics
    df = hpo.trials_frame(s, "mnist")               # needs pandas (pip install 'hpo-operator[notebook]')

Each reads through the client's own functions (follow_experiment, get_experiment, list_trials).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hpo_operator.api.parameters import Parameter
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.api.vocabulary import FINISHED_PHASES

from .build import experiment_manifest
from .connection import Session
from .errors import HpoError, NotFound
from .experiments import create_experiments, follow_experiment, get_experiment, get_experiment_object
from .space import python_type
from .trial_runner import typed_value
from .trials import get_trial_object, list_trials
from .views import ExperimentSummary, TrialSummary, format_number, trial_summary

if TYPE_CHECKING:
    import pandas

PANDAS_MISSING = (
    "trials_frame() needs pandas: pip install pandas (or 'hpo-operator[notebook]'); "
    "list_trials() gives the same trials as dataclasses"
)


def create_experiment(
    s: Session,
    name: str,
    spec: ExperimentSpec,
    *,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
    creator: str | None = None,
) -> ExperimentSummary:
    """Creates the Experiment of `spec` (experiment_spec()); a name ending in "-" is a prefix the
    API server completes (the summary names it). Raises Conflict when it exists."""
    return create_experiments(s, [experiment_manifest(name, spec, labels=labels)], namespace, creator)[0]


# --- waiting -------------------------------------------------------------------------------------------


def progress_counts(summary: ExperimentSummary) -> tuple[int, int | None]:
    """(configurations finished, maxTrialCount) for a progress bar. A failed attempt that was retried
    is not a finished configuration: each retry (trialsRetried) takes one back."""
    counts = summary.trial_status
    ended = counts["Succeeded"] + counts["Failed"] + counts["Killed"] + counts["EarlyStopped"]
    done = max(0, ended - counts["Retried"])
    total = summary.max_trial_count
    if summary.phase in FINISHED_PHASES and total is not None:
        done = total  # the goal reached, or too many failures: nothing more will run
    return (min(done, total) if total is not None else done), total


def progress_text(summary: ExperimentSummary) -> str:
    """What the bar says beside the count: the phase, what runs, the best value so far."""
    parts = [summary.phase]
    running = summary.trial_status["Running"] + summary.trial_status["Pending"]
    if running and summary.phase not in FINISHED_PHASES:
        parts.append(f"{running} running")
    if summary.trial_status["Queued"] and summary.phase not in FINISHED_PHASES:
        parts.append(f"{summary.trial_status['Queued']} queued")
    if summary.best_value is not None:
        parts.append(f"best {summary.objective or 'objective'} {format_number(summary.best_value)}")
    return " · ".join(parts)


def interactive() -> bool:
    """Whether a person watches: a terminal or a notebook (not a pipe, a log file or a test)."""
    from rich.console import Console

    console = Console()
    return console.is_terminal or console.is_jupyter


def wait(
    s: Session,
    name: str,
    namespace: str | None = None,
    *,
    timeout: float | None = None,
    interval: float = 2.0,
    progress: bool | None = None,
) -> ExperimentSummary:
    """Waits until the experiment is Succeeded or Failed and returns its final summary.

    A progress bar (configurations finished of maxTrialCount, the phase, the best value) shows in a
    notebook or a terminal; `progress=False` hides it, True shows it anyway. Raises Timeout after
    `timeout` seconds (None: no limit), saying how far the experiment got. For each summary along the
    way, iterate follow_experiment() instead.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    show = interactive() if progress is None else progress
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    last: ExperimentSummary | None = None
    with Progress(*columns, disable=not show) as bar:
        task = bar.add_task(name, total=None, status="")
        for summary in follow_experiment(s, name, namespace, timeout=timeout, interval=interval):
            done, total = progress_counts(summary)
            bar.update(task, completed=done, total=total, status=progress_text(summary))
            last = summary
    assert last is not None  # follow_experiment yields at least once, or raises
    return last


# --- results --------------------------------------------------------------------------------------------


def best_trial(s: Session, name: str, namespace: str | None = None) -> TrialSummary:
    """The experiment's best trial so far (status.currentOptimalTrial): its parameters, metrics,
    objective value. Raises NotFound while no trial has succeeded."""
    summary = get_experiment(s, name, namespace)
    if not summary.best_trial:
        raise NotFound(
            f"experiment {name} has no best trial yet: no trial has succeeded with its objective "
            f"({summary.objective}); it is {summary.phase}, {summary.trial_status['Failed']} trials failed"
        )
    return trial_summary(get_trial_object(s, summary.best_trial, summary.namespace))


PARAM_PREFIX = "params."
METRIC_PREFIX = "metrics."


def trial_rows(trials: Sequence[TrialSummary], parameters: Sequence[Parameter]) -> list[dict[str, Any]]:
    """One row per trial: its name, phase, objective value, each parameter (`params.NAME`, typed as
    the trial's function receives it), each final metric (`metrics.NAME`), and when and why it
    ended. Columns are the same in every row (None where a trial has no value)."""
    kinds = {p.name: python_type(p) for p in parameters}
    metric_names = sorted({m for t in trials for m in t.metrics})
    rows = []
    for t in trials:
        row: dict[str, Any] = {"trial": t.name, "phase": t.phase, "objective": t.objective_value}
        for name, kind in kinds.items():
            text = t.parameters.get(name)
            row[PARAM_PREFIX + name] = None if text is None else typed_value(text, kind)
        for name in metric_names:
            row[METRIC_PREFIX + name] = t.metrics.get(name)
        row.update(
            attempt=t.attempt,
            reason=t.reason,
            message=t.message,
            started=t.started,
            completed=t.completed,
        )
        rows.append(row)
    return rows


def _pandas() -> Any:
    """pandas, imported only when a DataFrame is asked for: the rest of the client runs without it."""
    try:
        import pandas
    except ImportError:
        raise HpoError(PANDAS_MISSING) from None
    return pandas


def frame(rows: list[dict[str, Any]]) -> pandas.DataFrame:
    """The rows as a DataFrame."""
    columns = list(rows[0]) if rows else ["trial", "phase", "objective"]
    return _pandas().DataFrame(rows, columns=columns)


def trials_frame(
    s: Session, name: str, namespace: str | None = None, *, phases: frozenset[str] = frozenset()
) -> pandas.DataFrame:
    """The experiment's trials (list_trials(), in creation order) as a pandas DataFrame, one row
    per trial, columns as trial_rows() says; `phases` keeps only trials in those phases.

    pandas is optional (pip install 'hpo-operator[notebook]'): without it this raises HpoError
    saying so, and list_trials() gives the same trials as dataclasses."""
    _pandas()  # before asking the API server anything
    exp = get_experiment_object(s, name, namespace)
    parameters = [Parameter.model_validate(p) for p in (exp.get("spec") or {}).get("parameters") or []]
    page = list_trials(s, name, exp["metadata"]["namespace"], phases=phases)
    return frame(trial_rows(page.items, parameters))
