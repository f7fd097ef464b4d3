# One piece: the reading commands, typer functions whose options and help are most of their lines.
"""`kubectl hpo list`, `describe`, `pareto` and `watch`: reading experiments.

No `from __future__ import annotations` here: typer reads the commands' annotations (see app.py).
Annotations naming the client's classes are strings, and each command imports what it formats
with as it runs, so that loading the plugin loads neither the client's modules nor rich (main.py).
"""

from typing import Annotated, Any

import typer

from hpo_operator import client as hpo
from hpo_operator.cli.app import PROG, ContextOpt, ExperimentArg, KubeconfigOpt, NamespaceOpt, OutputOpt, shared_option
from hpo_operator.cli.output import Output, console, echo, emit, kv, note, show, table, text
from hpo_operator.cli.trials import trial_rows


def _experiment_rows(items: "list[hpo.ExperimentSummary]", all_namespaces: bool) -> tuple[list[str], list[list]]:
    from hpo_operator.client.views import format_number, format_when

    columns = (["NAMESPACE"] if all_namespaces else []) + [
        "NAME",
        "STATUS",
        "CREATOR",
        "CONFIGS",
        "TRIALS",
        "SUCCEEDED",
        "RUNNING",
        "PENDING",
        "QUEUED",
        "FAILED",
        "KILLED",
        "EARLY-STOPPED",
        "BEST",
        "BOOKMARKED",
        "CREATED (UTC)",
    ]
    rows = []
    for e in items:
        counts = e.trial_status
        rows.append(
            ([e.namespace] if all_namespaces else [])
            + [
                e.name,
                e.phase,
                e.creator or "<none>",
                f"{e.configurations}/{e.max_trial_count}",
                e.trials,
                counts["Succeeded"],
                counts["Running"],
                counts["Pending"],
                counts["Queued"],
                counts["Failed"],
                counts["Killed"],
                counts["EarlyStopped"],
                format_number(e.best_value) if e.pareto_front_size is None else f"front of {e.pareto_front_size}",
                "yes" if e.bookmarked else "",
                format_when(e.created),
            ]
        )
    return columns, rows


def list_experiments(
    name: Annotated[
        str | None,
        typer.Option("--name", metavar="KEYWORD", help="Only experiments whose name contains this keyword (any case)."),
    ] = None,
    creator: Annotated[
        str | None,
        typer.Option(
            "--creator", metavar="USER", help="Only experiments created by this user (annotation hpo.dev/creator)."
        ),
    ] = None,
    mine: Annotated[bool, typer.Option("--mine", help="Only experiments created by you.")] = False,
    status: Annotated[
        str | None,
        shared_option("status", "Only these phases, comma-separated: Created, Running, Suspended, Succeeded, Failed."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            "--created-after",
            "--min-create-time",
            metavar="TIME",
            help="Created at or after this time: yyyy-mm-dd or 'yyyy-mm-dd hh:mm:ss' (UTC).",
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            "--created-before",
            "--max-create-time",
            metavar="TIME",
            help="Created at or before this time (a bare date includes that whole day), UTC.",
        ),
    ] = None,
    selector: Annotated[
        str | None, shared_option("selector", "Label selector, as kubectl's (e.g. team=vision,stage!=dev).")
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option(
            "--tag",
            metavar="KEY=VALUE",
            help="A tag (label) key=value or key:value; repeat for several (all must match).",
        ),
    ] = None,
    bookmarked: Annotated[bool, typer.Option("--bookmarked", help="Only bookmarked experiments.")] = False,
    sort_by: Annotated[
        str | None, typer.Option("--sort-by", metavar="FIELD", help="created (default) or name.")
    ] = None,
    order: Annotated[
        str | None,
        typer.Option("--order", metavar="ORDER", help="asc or desc (default desc for created, asc for name)."),
    ] = None,
    page: Annotated[int | None, shared_option("page", "Page number, from 1 (with --page-size, default 10).")] = None,
    page_size: Annotated[int | None, shared_option("page_size", "Experiments per page.")] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            metavar="N",
            help="The API server's paging: at most this many per request (filters other than labels apply to each "
            "page).",
        ),
    ] = None,
    continue_token: Annotated[
        str | None, typer.Option("--continue", metavar="TOKEN", help="The token a previous --limit page printed.")
    ] = None,
    all_namespaces: Annotated[
        bool, typer.Option("-A", "--all-namespaces", help="List experiments in every namespace.")
    ] = False,
    namespace: NamespaceOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """List experiments (ListHpoExperiments): filter, sort and page them, with trial counts by status."""
    token_mode = limit is not None or continue_token is not None
    if token_mode and (page is not None or page_size is not None):
        raise hpo.InvalidInput("use --page/--page-size or --limit/--continue, not both")
    if token_mode and (sort_by or order):
        raise hpo.InvalidInput(
            "--sort-by and --order need --page/--page-size: with --limit/--continue the API "
            "server returns experiments in its own order (by namespace and name)"
        )
    if mine and creator:
        raise hpo.InvalidInput("use --creator or --mine, not both")
    flt_kwargs: dict[str, Any] = dict(
        name=name, creator=creator, phases=hpo.parse_phases(status), created=hpo.TimeRange.parse(since, until)
    )
    extra = [f"{hpo.L_BOOKMARKED}=true"] if bookmarked else []
    label_selector = hpo.build_selector(selector, tag or [], extra)
    key = hpo.sort_field(sort_by or "created")
    desc = hpo.sort_direction(order, default="desc" if key == "created" else "asc")
    s = hpo.connect(kubeconfig, context)
    if mine:
        flt_kwargs["creator"] = hpo.whoami(s)
        if flt_kwargs["creator"] is None:
            raise hpo.HpoError("--mine: the API server did not say who you are (SelfSubjectReview)")
    flt = hpo.ExperimentFilter(**flt_kwargs)
    ns = None if all_namespaces else s.ns(namespace)
    where = "any namespace" if all_namespaces else f"namespace {ns}"

    if token_mode:
        result = hpo.list_experiments_chunk(
            s, ns, limit=limit or 50, continue_token=continue_token, filter=flt, selector=label_selector
        )
        data = {"experiments": [e.to_dict() for e in result.items], "continue": result.next_token}
    else:
        paged = page is not None or page_size is not None
        result = hpo.list_experiments(
            s,
            ns,
            filter=flt,
            selector=label_selector,
            order=[(key, desc)],
            page=page or 1,
            page_size=(page_size or 10) if paged else None,
        )
        data = {
            "totalCount": result.total,
            "pageNumber": result.page,
            "pageSize": result.page_size,
            "experiments": [e.to_dict() for e in result.items],
        }
    if output != Output.table:
        emit(data, output)
        return
    if result.items:
        show(table(*_experiment_rows(result.items, all_namespaces)))
    else:
        note(f"No experiments found in {where}.")
    if token_mode:
        if result.next_token:
            more = ["--limit", str(limit or 50), "--continue", result.next_token]
            note(f"More experiments: {PROG} list {' '.join(more)}")
    elif result.page_size:
        note(f"Page {result.page} of {result.pages} ({result.total} experiments, {result.page_size} per page)")


def describe(
    experiment: ExperimentArg,
    namespace: NamespaceOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Show an experiment: spec summary, progress, conditions, status history, best trial and trials."""
    from hpo_operator.client.spending import spending_lines
    from hpo_operator.client.views import format_number, format_params, format_when

    s = hpo.connect(kubeconfig, context)
    d = hpo.describe_experiment(s, experiment, namespace)
    if output != Output.table:
        emit(d.to_dict(), output)
        return
    e, spec = d.summary, d.spec
    retry = spec.get("retryPolicy") or {}
    params = "; ".join(f"{p['name']} {p['range']}" for p in spec.get("parameters") or [])
    counts = e.trial_status
    progress = f"{e.configurations}/{e.max_trial_count} configurations; {e.trials} trials: " + ", ".join(
        f"{v} {k.lower()}" for k, v in counts.items() if v
    )
    algorithm = spec.get("algorithm", "") + (f" (seed {spec['seed']})" if spec.get("seed") is not None else "")
    show(
        kv(
            [
                ("Name", e.name),
                ("Namespace", e.namespace),
                ("Status", f"{e.phase}" + (f" ({e.reason})" if e.reason else "")),
                ("Creator", e.creator or "<none>"),
                ("Created", format_when(e.created) + " UTC"),
                ("Started", format_when(e.started)),
                ("Completed", format_when(e.completed)),
                ("Original", e.original),
                ("Bookmarked", "yes" if e.bookmarked else None),
                ("Labels", ",".join(f"{k}={v}" for k, v in e.labels.items())),
                ("Objective", spec.get("objective")),
                ("Constraints", ", ".join(spec.get("constraints") or []) or None),
                ("Algorithm", algorithm),
                ("Parameters", params),
                (
                    "Budgets",
                    f"maxTrialCount {spec.get('maxTrialCount')}, parallelTrialCount "
                    f"{spec.get('parallelTrialCount')}, maxFailedTrialCount "
                    f"{spec.get('maxFailedTrialCount', 'unlimited')}",
                ),
                ("Retries", f"up to {retry.get('maxRetries')} on {', '.join(retry.get('retryOn') or []) or 'nothing'}"),
                ("Spent", "; ".join(spending_lines(d.spent)) if d.spent else None),
                (
                    "On a limit",
                    f"running trials {'finish' if d.spent.running_trials == 'Finish' else 'are stopped'} "
                    f"(budget.runningTrials {d.spent.running_trials})"
                    if d.spent and d.spent.running_trials
                    else None,
                ),
                ("Suspend", "true" if spec.get("suspend") else None),
                ("Warm start from", spec.get("warmStartFrom")),
                ("Early stopping", spec.get("earlyStopping")),
                ("Progress", progress),
            ]
        )
    )
    if d.best:
        show(
            text(),
            kv(
                [
                    ("Best trial", d.best["trialName"]),
                    ("Objective value", format_number(d.best["objectiveValue"])),
                    ("Parameters", format_params(d.best["parameters"])),
                    ("Metrics", format_params({k: format_number(v) for k, v in d.best["metrics"].items()})),
                ]
            ),
        )
    if e.pareto_front_size is not None:
        show(
            text(),
            text(
                f"Pareto front: {e.pareto_front_size} trials"
                + (f", hypervolume {format_number(e.hypervolume)}" if e.hypervolume is not None else "")
                + f" (kubectl hpo pareto {e.name})"
            ),
        )
    if d.conditions:
        show(
            text(),
            table(
                ["TYPE", "STATUS", "REASON", "MESSAGE", "LAST TRANSITION (UTC)"],
                [[c.type, c.status, c.reason, c.message, format_when(c.last_transition_time)] for c in d.conditions],
                title="Conditions",
            ),
        )
    if d.status_history:
        show(
            text(),
            table(
                ["TIME (UTC)", "PHASE", "REASON"],
                [[format_when(h.time), h.phase, h.reason] for h in d.status_history],
                title="Status history",
            ),
        )
    if d.trials:
        show(text(), table(*trial_rows(d.trials), title=f"Trials ({len(d.trials)})"))
    else:
        show(text(), text("No trials yet."))


def pareto(
    experiment: ExperimentArg,
    complete: Annotated[
        bool,
        typer.Option("--all", help="Compute the whole front from the trials (the status holds its first 100 only)."),
    ] = False,
    namespace: NamespaceOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Show the Pareto front of an experiment with several objectives: the feasible trials no other
    beats in every objective, best first by the first objective, with their values and parameters."""
    from hpo_operator.client.views import format_number, format_params

    s = hpo.connect(kubeconfig, context)
    front = hpo.pareto_front(s, experiment, namespace, complete=complete)
    if output != Output.table:
        emit({**front.to_dict(), "truncated": front.truncated}, output)
        return
    arrows = {"maximize": "↑", "minimize": "↓"}
    names = [m.get("metricName", "") for m in front.objectives]
    columns = [
        "TRIAL",
        *(f"{n} {arrows.get(m.get('type', ''), '')}".strip() for n, m in zip(names, front.objectives, strict=True)),
    ]
    rows = [
        [p.trial, *(format_number(p.values.get(n)) for n in names), format_params(p.parameters)] for p in front.trials
    ]
    title = f"Pareto front of {front.experiment}: {front.size} trials"
    if front.hypervolume is not None:
        title += f", hypervolume {format_number(front.hypervolume)}"
    # A line of its own, not the table's title: a title wraps at the table's width.
    show(text(title), table([*columns, "PARAMETERS"], rows))
    if front.truncated:
        note(f"Showing the first {len(front.trials)} of {front.size}; --all computes the whole front from the trials.")
    elif not front.trials:
        note("No feasible trial has succeeded yet.")


def watch(
    experiment: ExperimentArg,
    timeout: Annotated[
        float | None, typer.Option("--timeout", metavar="SECONDS", help="Give up after this many seconds (exit 1).")
    ] = None,
    interval: Annotated[float, typer.Option("--interval", metavar="SECONDS", help="Seconds between looks.")] = 1.0,
    namespace: NamespaceOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Follow an experiment with a progress bar until it Succeeds or Fails (exit 1 when it Fails)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hpo_operator.client.views import format_number

    s = hpo.connect(kubeconfig, context)
    hpo.get_experiment(s, experiment, namespace)  # an unknown experiment fails before the bar shows
    last: hpo.ExperimentSummary | None = None
    if output != Output.table:
        for last in hpo.follow_experiment(s, experiment, namespace, timeout=timeout, interval=interval):  # noqa: B007
            pass  # only the last summary is printed
    else:
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[best]}"),
            TimeElapsedColumn(),
            console=console(),
        )
        with progress:
            task = progress.add_task(experiment, total=None, best="")
            for last in hpo.follow_experiment(s, experiment, namespace, timeout=timeout, interval=interval):
                best = (
                    f"best {format_number(last.best_value)} ({last.best_trial})" if last.best_trial else "no result yet"
                )
                if last.pareto_front_size:  # several objectives: a front, no best trial
                    best = f"front of {last.pareto_front_size}"
                total = max(last.max_trial_count or 1, last.configurations)
                progress.update(
                    task,
                    total=total,
                    completed=last.configurations,
                    description=f"{experiment} {last.phase}",
                    best=best,
                )
    assert last is not None
    if output != Output.table:
        emit(last.to_dict(), output)
    else:
        best = (
            f"; best {last.objective} {format_number(last.best_value)} in trial {last.best_trial}"
            if last.best_trial
            else ""
        )
        if last.pareto_front_size is not None:
            best = f"; a Pareto front of {last.pareto_front_size} (kubectl hpo pareto {last.name})"
        echo(
            f"experiment {last.name} {last.phase}"
            + (f" ({last.reason})" if last.reason else "")
            + f": {last.configurations}/{last.max_trial_count} configurations, {last.trials} trials{best}"
        )
    if last.phase == "Failed":
        raise typer.Exit(1)
