"""`kubectl hpo trials`, `metrics`, `logs` and `restart-trials`: an experiment's trials.

No `from __future__ import annotations` here: typer reads the commands' annotations (see app.py).
Annotations naming the client's classes are strings, and each command imports what it formats
with as it runs, so that loading the plugin loads neither the client's modules nor rich (main.py).
"""

import sys
from typing import Annotated, Any

import typer

from hpo_operator import client as hpo
from hpo_operator.cli.app import PROG, ContextOpt, ExperimentArg, KubeconfigOpt, NamespaceOpt, OutputOpt, shared_option
from hpo_operator.cli.output import Output, echo, emit, note, show, table, text


def trial_rows(trials: "list[hpo.TrialSummary]", verbose: bool = False) -> tuple[list[str], list[list]]:
    from hpo_operator.client.views import format_number, format_params, format_when

    columns = [
        "NAME",
        "STATUS",
        "REASON",
        "OBJECTIVE",
        "ATTEMPT",
        "RESUMED",
        "LAUNCH",
        "PARAMETERS",
        "METRICS",
        "CREATED (UTC)",
    ]
    if verbose:
        columns += ["RETRY-OF", "RETRIED-BY", "LABELS"]
    rows = []
    for t in trials:
        resumed = f"step {t.resumed_from['step']}" if t.resumed_from else ""
        objective = (
            format_number(t.objective_value)
            if t.objective_values is None
            else format_params({k: format_number(v) for k, v in t.objective_values.items()})
        )
        if t.feasible is False:
            objective += " (infeasible)"
        row = [
            t.name,
            t.phase,
            t.reason or "",
            objective,
            t.attempt,
            resumed,
            t.launch_reason or "",
            format_params(t.parameters),
            format_params({k: format_number(v) for k, v in t.metrics.items()}),
            format_when(t.created),
        ]
        if verbose:
            row += [t.retry_of or "", t.retried_by or "", ",".join(f"{k}={v}" for k, v in t.labels.items())]
        rows.append(row)
    return columns, rows


def trials(
    experiment: ExperimentArg,
    selector: Annotated[
        str | None, shared_option("selector", "Label selector (e.g. hpo.dev/launch-reason=Retry).")
    ] = None,
    status: Annotated[str | None, shared_option("status", "Only these phases, comma-separated.")] = None,
    order_by: Annotated[
        str | None,
        typer.Option(
            "--order-by",
            metavar="ORDER",
            help="'created asc' (default), 'name desc', 'GmtCreateTime DESC,Name ASC', ...",
        ),
    ] = None,
    page_token: Annotated[
        str | None,
        typer.Option(
            "--page-token", metavar="TOKEN", help="Where the page starts: the token a previous page printed (0 first)."
        ),
    ] = None,
    max_results: Annotated[
        int | None, typer.Option("--max-results", metavar="N", help="Trials per page with tokens (default 10).")
    ] = None,
    page: Annotated[int | None, shared_option("page", "Page number, from 1.")] = None,
    page_size: Annotated[int | None, shared_option("page_size", "Trials per numbered page (default 10).")] = None,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="Also labels, retries and each trial's per-step metric history.")
    ] = False,
    lineage: Annotated[
        bool,
        typer.Option(
            "--lineage",
            help="pbt: the segments as a tree, each under the segment whose checkpoint it started from.",
        ),
    ] = False,
    namespace: NamespaceOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """List an experiment's trials (ListRuns): parameters, final metrics, labels; paged by token."""
    from hpo_operator.client.views import format_when

    if lineage:
        return show_lineage(experiment, namespace, kubeconfig, context, output)
    phases = hpo.parse_phases(status, hpo.TRIAL_PHASES)
    hpo.parse_order_by(order_by)  # bad input fails before the cluster is contacted
    s = hpo.connect(kubeconfig, context)
    result = hpo.list_trials(
        s,
        experiment,
        namespace,
        selector=selector,
        phases=phases,
        order_by=order_by,
        page_token=page_token,
        max_results=max_results,
        page=page,
        page_size=page_size,
        verbose=verbose,
    )
    if output != Output.table:
        data: dict[str, Any] = {"totalCount": result.total, "runs": [t.to_dict() for t in result.items]}
        if result.next_token is not None:
            data["nextPageToken"] = result.next_token
        if result.page is not None:
            data.update(pageNumber=result.page, pageSize=result.page_size)
        return emit(data, output)
    if not result.items:
        note(f"No trials found for experiment {experiment}.")
    else:
        show(table(*trial_rows(result.items, verbose)))
    if verbose:
        for t in result.items:
            if t.metric_history:
                show(
                    text(),
                    table(
                        ["METRIC", "STEP", "VALUE", "TIMESTAMP (UTC)"],
                        [
                            [p.name, "" if p.step is None else p.step, p.value, format_when(p.timestamp)]
                            for p in t.metric_history
                        ],
                        title=f"Metrics of {t.name}",
                    ),
                )
    if result.page is not None and result.page_size:
        note(f"Page {result.page} of {result.pages} ({result.total} trials)")
    elif result.next_token not in (None, "0"):
        note(
            f"Next page token: {result.next_token} ({result.total} trials; "
            f"{PROG} trials {experiment} --page-token {result.next_token}"
            + (f" --max-results {result.page_size}" if result.page_size else "")
            + ")"
        )


def lineage_rows(roots: "list[hpo.SegmentNode]") -> tuple[list[str], list[list]]:
    from hpo_operator.client.lineage import rows
    from hpo_operator.client.views import format_number, format_params

    columns = ["SEGMENT", "MEMBER", "GENERATION", "FROM", "STATUS", "OBJECTIVE", "ATTEMPTS", "PARAMETERS"]
    out = []
    for drawing, node in rows(roots):
        origin = f"exploited m{node.parent_member}" if node.exploited else ""
        status = node.phase if node.failure is None else f"{node.phase} ({node.failure})"
        out.append(
            [
                drawing + node.trial,
                f"m{node.member}",
                node.generation,
                origin,
                status,
                format_number(node.objective_value),
                node.attempts,
                format_params(node.parameters),
            ]
        )
    return columns, out


def show_lineage(experiment: str, namespace: str | None, kubeconfig: str | None, context: str | None, output: Output):
    s = hpo.connect(kubeconfig, context)
    roots = hpo.lineage(s, experiment, namespace)
    if output != Output.table:
        return emit([r.to_dict() for r in roots], output)
    if not roots:
        note(f"Experiment {experiment} has no segments: --lineage is for algorithm pbt.")
        return
    show(table(*lineage_rows(roots)))
    note(
        "Each segment is under the segment whose checkpoint it started from: its own member's last, or "
        "(exploited mK) member K's, whose hyperparameters it perturbed."
    )


def metrics(
    trial: Annotated[str | None, typer.Argument(metavar="TRIAL", show_default=False, help="The trial's name.")] = None,
    experiment: Annotated[
        str | None,
        typer.Option("--experiment", "-e", metavar="EXPERIMENT", help="Every trial of this experiment instead."),
    ] = None,
    metric: Annotated[
        list[str] | None, typer.Option("--name", metavar="METRIC", help="Only this metric (repeat for several).")
    ] = None,
    namespace: NamespaceOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Show metric history (step, value, timestamp) of a trial, or of an experiment's trials."""
    from hpo_operator.client.views import format_when

    if bool(trial) == bool(experiment):
        raise hpo.InvalidInput("name a TRIAL, or an experiment with --experiment (not both)")
    s = hpo.connect(kubeconfig, context)
    points = hpo.trial_metrics(s, trial=trial, experiment=experiment, namespace=namespace, names=metric or [])
    if output != Output.table:
        return emit([p.to_dict() for p in points], output)
    if not points:
        note("No metrics recorded yet.")
        return
    show(
        table(
            ["TRIAL", "METRIC", "STEP", "VALUE", "TIMESTAMP (UTC)"],
            [[p.trial, p.name, "" if p.step is None else p.step, p.value, format_when(p.timestamp)] for p in points],
        )
    )


def logs(
    trial: Annotated[str, typer.Argument(metavar="TRIAL", show_default=False, help="The trial's name.")],
    container: Annotated[
        str | None, typer.Option("-c", "--container", metavar="NAME", help="Container (default: the primary one).")
    ] = None,
    tail: Annotated[int | None, typer.Option("--tail", metavar="N", help="Only the last N lines.")] = None,
    timestamps: Annotated[bool, typer.Option("--timestamps", help="Prefix each line with its time.")] = False,
    namespace: NamespaceOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
) -> None:
    """Print the log of a trial's pod (read through the API server, as kubectl logs)."""
    text = hpo.trial_logs(
        hpo.connect(kubeconfig, context), trial, namespace, container=container, tail=tail, timestamps=timestamps
    )
    sys.stdout.write(text)
    if text and not text.endswith("\n"):
        sys.stdout.write("\n")


def restart_trials(
    experiment: ExperimentArg,
    trial_names: Annotated[
        list[str] | None,
        typer.Option("--trials", metavar="NAMES", help="Trial names, comma-separated (or repeat the option)."),
    ] = None,
    params: Annotated[
        str | None,
        typer.Option(
            "--params",
            metavar="JSON",
            help="""A configuration to run, as a JSON object: '{"lr": "0.01", "layers": 2}'.""",
        ),
    ] = None,
    wait: Annotated[
        float, typer.Option("--wait", metavar="SECONDS", help="Seconds to wait for the operator's answer.")
    ] = 5.0,
    namespace: NamespaceOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Restart trials (RestartHpoTrials) by name, or run a configuration given by --params.

    A configuration that already succeeded is never run again: such requests are refused with a
    reason. Trial names win when both are given; neither is a no-op.
    """
    names = hpo.parse_names(trial_names)
    values = hpo.parse_params_json(params)
    if names and values:
        note("note: --trials and --params given: trial names win, --params is ignored")
        values = {}
    s = hpo.connect(kubeconfig, context)
    if not names and not values:
        hpo.get_experiment(s, experiment, namespace)  # still says so when the experiment does not exist
        if output != Output.table:
            return emit({}, output)
        echo("nothing to restart: give trial names with --trials or a configuration with --params")
        return
    creator = hpo.whoami(s) if values else None
    results = hpo.restart_trials(s, experiment, namespace, trials=names, params=values, wait=wait, creator=creator)
    if output != Output.table:
        return emit({k: v.to_dict() for k, v in results.items()}, output)
    show(
        table(
            ["TRIAL", "RESULT", "REASON", "MESSAGE", "NEW TRIAL", "DECIDED BY"],
            [[r.trial, r.outcome, r.reason, r.message, r.new_trial or "", r.decided_by] for r in results.values()],
        )
    )
