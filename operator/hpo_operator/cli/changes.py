"""`kubectl hpo create`, `stop`, `resume`, `restart`, `copy`, `delete`, `bookmark` and
`unbookmark`: the commands that change experiments (Polyaxon's experiment actions).

No `from __future__ import annotations` here: typer reads the commands' annotations (see app.py).
Annotations naming the client's classes are strings, and each command imports what it formats
with as it runs, so that loading the plugin loads neither the client's modules nor rich (main.py).
"""

from collections.abc import Callable
from typing import Annotated, Any

import typer

from hpo_operator import client as hpo
from hpo_operator.cli.app import ContextOpt, ExperimentArg, KubeconfigOpt, NamespaceOpt, OutputOpt, read_input
from hpo_operator.cli.output import Output, echo, emit, note


def create(
    filename: Annotated[
        str,
        typer.Option("-f", "--filename", metavar="FILE", help="A YAML or JSON file of Experiments ('-' reads stdin)."),
    ],
    namespace: NamespaceOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Create the experiments in a file, recording you as their creator (annotation hpo.dev/creator)."""
    text, source = read_input(filename)
    docs = hpo.load_manifests(text, source)
    s = hpo.connect(kubeconfig, context)
    creator = hpo.whoami(s)
    if creator is None:
        note("warning: the API server did not say who you are (SelfSubjectReview): no hpo.dev/creator recorded")
    created = hpo.create_experiments(s, docs, namespace, creator)
    if output != Output.table:
        emit([e.to_dict() for e in created], output)
        return
    for e in created:
        echo(f"experiment.hpo.dev/{e.name} created" + (f" in namespace {e.namespace}" if namespace is None else ""))


def _one_change(
    doc: str, act: "Callable[[hpo.Session, str, str | None], Any]", said: str, with_output: bool = False
) -> Callable[..., None]:
    """A command that makes one change to an experiment and says so: `said`, with {name} the
    experiment's. With `with_output`, -o json|yaml prints the experiment as changed instead."""
    if with_output:

        def run(
            experiment: ExperimentArg,
            namespace: NamespaceOpt = None,
            kubeconfig: KubeconfigOpt = None,
            context: ContextOpt = None,
            output: OutputOpt = Output.table,
        ) -> None:
            e = act(hpo.connect(kubeconfig, context), experiment, namespace)
            if output != Output.table:
                return emit(e.to_dict(), output)
            echo(said.format(name=e.name))
    else:

        def run(  # type: ignore[misc]  # the same command without -o
            experiment: ExperimentArg,
            namespace: NamespaceOpt = None,
            kubeconfig: KubeconfigOpt = None,
            context: ContextOpt = None,
        ) -> None:
            act(hpo.connect(kubeconfig, context), experiment, namespace)
            echo(said.format(name=experiment))

    run.__doc__ = doc
    return run


stop = _one_change(
    "Stop an experiment (spec.suspend=true): running trials are stopped, nothing new is launched.",
    lambda s, experiment, namespace: hpo.set_suspend(s, experiment, True, namespace),
    "experiment {name} stopped (spec.suspend=true): its running trials are stopped and re-run on resume",
    with_output=True,
)
resume = _one_change(
    "Resume a stopped experiment (spec.suspend=false): stopped configurations run again.",
    lambda s, experiment, namespace: hpo.set_suspend(s, experiment, False, namespace),
    "experiment {name} resumed (spec.suspend=false)",
    with_output=True,
)


def _clone(
    experiment: str,
    new_name: str | None,
    warm_start: bool,
    namespace: str | None,
    kubeconfig: str | None,
    context: str | None,
    output: Output,
    verb: str,
) -> None:
    s = hpo.connect(kubeconfig, context)
    creator = hpo.whoami(s)
    if creator is None:
        note("warning: the API server did not say who you are (SelfSubjectReview): no hpo.dev/creator recorded")
    e = hpo.clone_experiment(s, experiment, namespace, new_name=new_name, warm_start=warm_start, creator=creator)
    if output != Output.table:
        return emit(e.to_dict(), output)
    extra = f", warm-started from {experiment}" if warm_start else ""
    echo(f"experiment.hpo.dev/{e.name} created ({verb} of {experiment}{extra})")


def restart(
    experiment: ExperimentArg,
    new_name: Annotated[
        str | None, typer.Option("--name", metavar="NAME", help="The new experiment's name (default: <name>-xxxxx).")
    ] = None,
    namespace: NamespaceOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Start a new experiment with this one's spec (annotation hpo.dev/original names this one)."""
    _clone(experiment, new_name, False, namespace, kubeconfig, context, output, "restart")


def copy_experiment(
    experiment: ExperimentArg,
    new_name: Annotated[
        str | None, typer.Option("--name", metavar="NAME", help="The copy's name (default: <name>-xxxxx).")
    ] = None,
    warm_start: Annotated[
        bool,
        typer.Option(
            "--warm-start",
            help="The copy's search first learns from this experiment's finished trials (spec.warmStartFrom).",
        ),
    ] = False,
    namespace: NamespaceOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Copy an experiment, optionally warm-starting the copy from this one's results."""
    _clone(experiment, new_name, warm_start, namespace, kubeconfig, context, output, "copy")


# Each `act` looks its client function up as it runs (hpo's names load their modules when first used).
delete = _one_change(
    "Delete an experiment with its trials and their pods.",
    lambda s, experiment, namespace: hpo.delete_experiment(s, experiment, namespace),
    'experiment.hpo.dev "{name}" deleted',
)
bookmark = _one_change(
    "Bookmark an experiment (label hpo.dev/bookmarked=true; list --bookmarked shows these).",
    lambda s, experiment, namespace: hpo.set_bookmark(s, experiment, True, namespace),
    "experiment {name} bookmarked",
)
unbookmark = _one_change(
    "Remove an experiment's bookmark.",
    lambda s, experiment, namespace: hpo.set_bookmark(s, experiment, False, namespace),
    "experiment {name} unbookmarked",
)


def _resource_seconds(items: list[str] | None) -> dict[str, float] | None:
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise typer.BadParameter(f"{item!r}: give RESOURCE=SECONDS, e.g. nvidia.com/gpu=36000") from None
        if not sep or not name.strip():
            raise typer.BadParameter(f"{item!r}: give RESOURCE=SECONDS, e.g. nvidia.com/gpu=36000")
    return out or None


def extend(
    experiment: ExperimentArg,
    trials: Annotated[
        int | None,
        typer.Option(
            "--trials", min=1, metavar="N", help="N more configurations than it has launched (raises maxTrialCount)."
        ),
    ] = None,
    duration: Annotated[
        int | None,
        typer.Option(
            "--duration",
            min=1,
            metavar="SECONDS",
            help="SECONDS more running time than it has spent (raises budget.maxDurationSeconds).",
        ),
    ] = None,
    compute: Annotated[
        list[str] | None,
        typer.Option(
            "--compute",
            metavar="RESOURCE=SECONDS",
            help="More resource-seconds than its trials spent, e.g. nvidia.com/gpu=36000 (raises "
            "budget.maxResourceSeconds; repeatable).",
        ),
    ] = None,
    goal: Annotated[
        float | None,
        typer.Option("--goal", metavar="VALUE", help="A new goal (continues an experiment that reached its goal)."),
    ] = None,
    namespace: NamespaceOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Raise an experiment's limits. One that ended at a limit (MaxTrialsReached, MaxDurationReached,
    ComputeBudgetReached) goes on with the same search: its trials are kept, new ones are numbered
    after them, and the trials its end stopped run again."""
    s = hpo.connect(kubeconfig, context)
    result = hpo.extend_experiment(
        s,
        experiment,
        namespace,
        more_trials=trials,
        more_seconds=duration,
        more_resource_seconds=_resource_seconds(compute),
        goal=goal,
    )
    if output != Output.table:
        return emit(result.to_dict(), output)
    changed = "; ".join(
        f"{field} {old if old is not None else 'unset'} -> {new}" for field, (old, new) in result.changes.items()
    )
    then = ": it goes on with the same search" if result.goes_on else ""
    echo(f"experiment {result.experiment} extended ({changed}){then}")
