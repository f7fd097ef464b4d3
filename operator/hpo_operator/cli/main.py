"""`kubectl hpo`: the seed APIs (PAI's ListHpoExperiments, ListRuns, RestartHpoTrials; Polyaxon's
experiment actions) as a kubectl plugin. Installed as the console script `kubectl-hpo`, which
kubectl finds on PATH and runs for `kubectl hpo ...`.

Everything that talks to the cluster lives in hpo_operator.client; this module parses options and
prints. Errors (the client's HpoError, the API server's ApiException) end in one line on stderr and
exit code 1, never in a traceback (HPO_DEBUG=1 shows one); usage errors exit with 2.

No `from __future__ import annotations` here: typer reads the commands' annotations, and building
the command tree from string annotations costs about ten times as long.
"""

import functools
import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
import yaml
from kubernetes.client import ApiException
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

try:  # typer vendors click from 0.2x on; its usage errors derive from TyperException
    from typer.exceptions import TyperException as _UsageError
except ImportError:  # pragma: no cover
    from click import ClickException as _UsageError

from hpo_operator import client as hpo
from hpo_operator.client.errors import translate
from hpo_operator.client.views import format_number, format_params, format_when

PROG = "kubectl hpo"


class _Group(TyperGroup):
    """Help and usage say `kubectl hpo ...`, however the program was started."""

    def make_context(self, info_name, args, parent=None, **extra):  # type: ignore[override]
        return super().make_context(PROG if parent is None else info_name, args, parent, **extra)


app = typer.Typer(
    cls=_Group, name=PROG, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    help="Hyperparameter-optimisation experiments of hpo-operator: list, inspect, restart trials, "
         "stop, resume, copy. Experiments applied with plain kubectl have no creator unless they "
         "carry the annotation hpo.dev/creator; create, restart and copy set it to the user the API "
         "server authenticates.")


class Output(str, Enum):
    table = "table"
    json = "json"
    yaml = "yaml"


# Options every command takes (kubectl's names).
KubeconfigOpt = Annotated[Optional[str], typer.Option(
    "--kubeconfig", metavar="PATH", help="Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).")]
ContextOpt = Annotated[Optional[str], typer.Option("--context", metavar="NAME", help="The kubeconfig context to use.")]
NamespaceOpt = Annotated[Optional[str], typer.Option(
    "-n", "--namespace", metavar="NAMESPACE", help="The namespace (default: the context's namespace, else default).")]
OutputOpt = Annotated[Output, typer.Option("-o", "--output", case_sensitive=False, metavar="table|json|yaml",
                                           help="Output format: table, json or yaml.")]
ExperimentArg = Annotated[str, typer.Argument(metavar="EXPERIMENT", show_default=False, help="The experiment's name.")]

# Filters and paging that both list and trials take: each flag spelled once, with its metavar; each
# command says in its own help what it selects.
SHARED_FLAGS: dict[str, tuple[str, ...]] = {
    "selector": ("-l", "--selector", "SELECTOR"),
    "status": ("--status", "PHASES"),
    "page": ("--page", "N"),
    "page_size": ("--page-size", "N"),
}


def shared_option(flag: str, help: str) -> Any:
    *names, metavar = SHARED_FLAGS[flag]
    return typer.Option(*names, metavar=metavar, help=help)


# --- printing --------------------------------------------------------------------------------------

def _console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    tty = bool(getattr(stream, "isatty", lambda: False)())
    # Not a terminal (a pipe, a file, a test): wide enough that tables do not wrap.
    return Console(file=stream, highlight=False, width=None if tty else 250)


def _echo(text: str) -> None:
    typer.echo(text)


def _note(text: str) -> None:
    """Hints and page footers go to stderr, so that stdout stays the table or the document."""
    typer.echo(text, err=True)


def _emit(data: Any, output: Output) -> None:
    if output == Output.json:
        _echo(json.dumps(data, indent=2, default=str))
    else:
        _echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True).rstrip("\n"))


def _cell(value: Any) -> Text:
    if value is None:
        return Text("")
    if isinstance(value, float):
        return Text(format_number(value))
    return Text(str(value))


def _table(columns: list[str], rows: list[list[Any]], title: str | None = None) -> Table:
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False, show_edge=False,
                  padding=(0, 3, 0, 0), title=title, title_justify="left", title_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    return table


def _print(*renderables: Any) -> None:
    console = _console()
    if console.is_terminal:
        for r in renderables:
            console.print(r)
        return
    with console.capture() as captured:
        for r in renderables:
            console.print(r)
    # Rich pads every cell to its column's width: no trailing blanks in a pipe or a file.
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _handle_errors(fn: Callable) -> Callable:
    """Turns the client's and the API server's errors into one line and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, _UsageError):
            raise
        except hpo.HpoError as e:
            _fail(str(e))
        except ApiException as e:
            _fail(str(translate(e)))
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as e:  # never a traceback, unless asked for
            if os.environ.get("HPO_DEBUG"):
                raise
            _fail(_unexpected(e))

    return wrapper


def _unexpected(e: Exception) -> str:
    import urllib3.exceptions

    if isinstance(e, urllib3.exceptions.MaxRetryError):
        return f"cannot reach the API server: {e.reason}"
    if isinstance(e, (urllib3.exceptions.HTTPError, ConnectionError)):
        return f"cannot reach the API server: {e}"
    return f"{type(e).__name__}: {e} (set HPO_DEBUG=1 for a traceback)"


def command(*names: str, **kwargs: Any) -> Callable:
    """Registers a command under one or more names, with the error handling."""

    def decorate(fn: Callable) -> Callable:
        wrapped = _handle_errors(fn)
        app.command(names[0], **kwargs)(wrapped)
        for alias in names[1:]:
            app.command(alias, help=f"Same as {names[0]}.", **kwargs)(wrapped)
        return fn

    return decorate


def _session(kubeconfig: str | None, context: str | None) -> hpo.Session:
    return hpo.connect(kubeconfig, context)


# --- list ------------------------------------------------------------------------------------------

def _experiment_rows(items: list[hpo.ExperimentSummary], all_namespaces: bool) -> tuple[list[str], list[list]]:
    columns = (["NAMESPACE"] if all_namespaces else []) + [
        "NAME", "STATUS", "CREATOR", "CONFIGS", "TRIALS", "SUCCEEDED", "RUNNING", "PENDING", "FAILED",
        "KILLED", "EARLY-STOPPED", "BEST", "BOOKMARKED", "CREATED (UTC)"]
    rows = []
    for e in items:
        counts = e.trial_status
        rows.append(([e.namespace] if all_namespaces else []) + [
            e.name, e.phase, e.creator or "<none>", f"{e.configurations}/{e.max_trial_count}", e.trials,
            counts["Succeeded"], counts["Running"], counts["Pending"], counts["Failed"], counts["Killed"],
            counts["EarlyStopped"], format_number(e.best_value), "yes" if e.bookmarked else "",
            format_when(e.created)])
    return columns, rows


@command("list", "ls")
def list_experiments(
    name: Annotated[Optional[str], typer.Option("--name", metavar="KEYWORD", help="Only experiments whose name contains this keyword (any case).")] = None,
    creator: Annotated[Optional[str], typer.Option("--creator", metavar="USER", help="Only experiments created by this user (annotation hpo.dev/creator).")] = None,
    mine: Annotated[bool, typer.Option("--mine", help="Only experiments created by you.")] = False,
    status: Annotated[Optional[str], shared_option("status", "Only these phases, comma-separated: Created, Running, Suspended, Succeeded, Failed.")] = None,
    since: Annotated[Optional[str], typer.Option("--since", "--created-after", "--min-create-time", metavar="TIME", help="Created at or after this time: yyyy-mm-dd or 'yyyy-mm-dd hh:mm:ss' (UTC).")] = None,
    until: Annotated[Optional[str], typer.Option("--until", "--created-before", "--max-create-time", metavar="TIME", help="Created at or before this time (a bare date includes that whole day), UTC.")] = None,
    selector: Annotated[Optional[str], shared_option("selector", "Label selector, as kubectl's (e.g. team=vision,stage!=dev).")] = None,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", metavar="KEY=VALUE", help="A tag (label) key=value or key:value; repeat for several (all must match).")] = None,
    bookmarked: Annotated[bool, typer.Option("--bookmarked", help="Only bookmarked experiments.")] = False,
    sort_by: Annotated[Optional[str], typer.Option("--sort-by", metavar="FIELD", help="created (default) or name.")] = None,
    order: Annotated[Optional[str], typer.Option("--order", metavar="ORDER", help="asc or desc (default desc for created, asc for name).")] = None,
    page: Annotated[Optional[int], shared_option("page", "Page number, from 1 (with --page-size, default 10).")] = None,
    page_size: Annotated[Optional[int], shared_option("page_size", "Experiments per page.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", metavar="N", help="The API server's paging: at most this many per request (filters other than labels apply to each page).")] = None,
    continue_token: Annotated[Optional[str], typer.Option("--continue", metavar="TOKEN", help="The token a previous --limit page printed.")] = None,
    all_namespaces: Annotated[bool, typer.Option("-A", "--all-namespaces", help="List experiments in every namespace.")] = False,
    namespace: NamespaceOpt = None, kubeconfig: KubeconfigOpt = None, context: ContextOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """List experiments (ListHpoExperiments): filter, sort and page them, with trial counts by status."""
    token_mode = limit is not None or continue_token is not None
    if token_mode and (page is not None or page_size is not None):
        raise hpo.InvalidInput("use --page/--page-size or --limit/--continue, not both")
    if token_mode and (sort_by or order):
        raise hpo.InvalidInput("--sort-by and --order need --page/--page-size: with --limit/--continue the API "
                               "server returns experiments in its own order (by namespace and name)")
    if mine and creator:
        raise hpo.InvalidInput("use --creator or --mine, not both")
    flt_kwargs: dict[str, Any] = dict(name=name, creator=creator, phases=hpo.parse_phases(status),
                                      created=hpo.TimeRange.parse(since, until))
    extra = [f"{hpo.L_BOOKMARKED}=true"] if bookmarked else []
    label_selector = hpo.build_selector(selector, tag or [], extra)
    key = hpo.sort_field(sort_by or "created")
    desc = hpo.sort_direction(order, default="desc" if key == "created" else "asc")
    s = _session(kubeconfig, context)
    if mine:
        flt_kwargs["creator"] = hpo.whoami(s)
        if flt_kwargs["creator"] is None:
            raise hpo.HpoError("--mine: the API server did not say who you are (SelfSubjectReview)")
    flt = hpo.ExperimentFilter(**flt_kwargs)
    ns = None if all_namespaces else s.ns(namespace)
    where = "any namespace" if all_namespaces else f"namespace {ns}"

    if token_mode:
        result = hpo.list_experiments_chunk(s, ns, limit=limit or 50, continue_token=continue_token,
                                            filter=flt, selector=label_selector)
        data = {"experiments": [e.to_dict() for e in result.items], "continue": result.next_token}
    else:
        paged = page is not None or page_size is not None
        result = hpo.list_experiments(s, ns, filter=flt, selector=label_selector, order=[(key, desc)],
                                      page=page or 1, page_size=(page_size or 10) if paged else None)
        data = {"totalCount": result.total, "pageNumber": result.page, "pageSize": result.page_size,
                "experiments": [e.to_dict() for e in result.items]}
    if output != Output.table:
        _emit(data, output)
        return
    if result.items:
        _print(_table(*_experiment_rows(result.items, all_namespaces)))
    else:
        _note(f"No experiments found in {where}.")
    if token_mode:
        if result.next_token:
            more = ["--limit", str(limit or 50), "--continue", result.next_token]
            _note(f"More experiments: {PROG} list {' '.join(more)}")
    elif result.page_size:
        _note(f"Page {result.page} of {result.pages} ({result.total} experiments, {result.page_size} per page)")


# --- one experiment ------------------------------------------------------------------------------------

def _kv(rows: list[tuple[str, Any]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in rows:
        if value not in (None, "", [], {}):
            grid.add_row(Text(f"{key}:"), _cell(value))
    return grid


def _trial_rows(trials: list[hpo.TrialSummary], verbose: bool = False) -> tuple[list[str], list[list]]:
    columns = ["NAME", "STATUS", "REASON", "OBJECTIVE", "ATTEMPT", "RESUMED", "LAUNCH", "PARAMETERS", "METRICS",
               "CREATED (UTC)"]
    if verbose:
        columns += ["RETRY-OF", "RETRIED-BY", "LABELS"]
    rows = []
    for t in trials:
        resumed = f"step {t.resumed_from['step']}" if t.resumed_from else ""
        row = [t.name, t.phase, t.reason or "", format_number(t.objective_value), t.attempt, resumed,
               t.launch_reason or "",
               format_params(t.parameters), format_params({k: format_number(v) for k, v in t.metrics.items()}),
               format_when(t.created)]
        if verbose:
            row += [t.retry_of or "", t.retried_by or "", ",".join(f"{k}={v}" for k, v in t.labels.items())]
        rows.append(row)
    return columns, rows


@command("describe", "get")
def describe(
    experiment: ExperimentArg,
    namespace: NamespaceOpt = None, kubeconfig: KubeconfigOpt = None, context: ContextOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Show an experiment: spec summary, progress, conditions, status history, best trial and trials."""
    s = _session(kubeconfig, context)
    d = hpo.describe_experiment(s, experiment, namespace)
    if output != Output.table:
        _emit(d.to_dict(), output)
        return
    e, spec = d.summary, d.spec
    retry = spec.get("retryPolicy") or {}
    params = "; ".join(f"{p['name']} {p['range']}" for p in spec.get("parameters") or [])
    counts = e.trial_status
    progress = (f"{e.configurations}/{e.max_trial_count} configurations; {e.trials} trials: "
                + ", ".join(f"{v} {k.lower()}" for k, v in counts.items() if v))
    algorithm = spec.get("algorithm", "") + (f" (seed {spec['seed']})" if spec.get("seed") is not None else "")
    _print(_kv([
        ("Name", e.name), ("Namespace", e.namespace),
        ("Status", f"{e.phase}" + (f" ({e.reason})" if e.reason else "")),
        ("Creator", e.creator or "<none>"), ("Created", format_when(e.created) + " UTC"),
        ("Started", format_when(e.started)), ("Completed", format_when(e.completed)),
        ("Original", e.original), ("Bookmarked", "yes" if e.bookmarked else None),
        ("Labels", ",".join(f"{k}={v}" for k, v in e.labels.items())),
        ("Objective", spec.get("objective")), ("Algorithm", algorithm), ("Parameters", params),
        ("Budgets", f"maxTrialCount {spec.get('maxTrialCount')}, parallelTrialCount "
                    f"{spec.get('parallelTrialCount')}, maxFailedTrialCount "
                    f"{spec.get('maxFailedTrialCount', 'unlimited')}"),
        ("Retries", f"up to {retry.get('maxRetries')} on {', '.join(retry.get('retryOn') or []) or 'nothing'}"),
        ("Suspend", "true" if spec.get("suspend") else None), ("Warm start from", spec.get("warmStartFrom")),
        ("Early stopping", spec.get("earlyStopping")),
        ("Progress", progress),
    ]))
    if d.best:
        _print(Text(""), _kv([("Best trial", d.best["trialName"]), ("Objective value", format_number(d.best["objectiveValue"])),
                              ("Parameters", format_params(d.best["parameters"])),
                              ("Metrics", format_params({k: format_number(v) for k, v in d.best["metrics"].items()}))]))
    if d.conditions:
        _print(Text(""), _table(["TYPE", "STATUS", "REASON", "MESSAGE", "LAST TRANSITION (UTC)"],
                                [[c.type, c.status, c.reason, c.message, format_when(c.last_transition_time)]
                                 for c in d.conditions], title="Conditions"))
    if d.status_history:
        _print(Text(""), _table(["TIME (UTC)", "PHASE", "REASON"],
                                [[format_when(h.time), h.phase, h.reason] for h in d.status_history],
                                title="Status history"))
    if d.trials:
        _print(Text(""), _table(*_trial_rows(d.trials), title=f"Trials ({len(d.trials)})"))
    else:
        _print(Text(""), Text("No trials yet."))


@command("create")
def create(
    filename: Annotated[str, typer.Option("-f", "--filename", metavar="FILE", help="A YAML or JSON file of Experiments ('-' reads stdin).")],
    namespace: NamespaceOpt = None, kubeconfig: KubeconfigOpt = None, context: ContextOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Create the experiments in a file, recording you as their creator (annotation hpo.dev/creator)."""
    if filename == "-":
        text, source = sys.stdin.read(), "stdin"
    else:
        path = Path(filename)
        if not path.is_file():
            raise hpo.InvalidInput(f"cannot read {filename}: no such file")
        text, source = path.read_text(), filename
    docs = hpo.load_manifests(text, source)
    s = _session(kubeconfig, context)
    creator = hpo.whoami(s)
    if creator is None:
        _note("warning: the API server did not say who you are (SelfSubjectReview): no hpo.dev/creator recorded")
    created = hpo.create_experiments(s, docs, namespace, creator)
    if output != Output.table:
        _emit([e.to_dict() for e in created], output)
        return
    for e in created:
        _echo(f"experiment.hpo.dev/{e.name} created" + (f" in namespace {e.namespace}" if namespace is None else ""))


def _experiment_command(name: str, doc: str, act: Callable[[hpo.Session, str, str | None], Any], said: str,
                        with_output: bool = False) -> None:
    """Registers a command that makes one change to an experiment and says so: `said`, with {name}
    the experiment's. With `with_output`, -o json|yaml prints the experiment as changed instead."""
    if with_output:
        def run(
            experiment: ExperimentArg,
            namespace: NamespaceOpt = None, kubeconfig: KubeconfigOpt = None, context: ContextOpt = None,
            output: OutputOpt = Output.table,
        ) -> None:
            e = act(_session(kubeconfig, context), experiment, namespace)
            if output != Output.table:
                return _emit(e.to_dict(), output)
            _echo(said.format(name=e.name))
    else:
        def run(  # type: ignore[misc]  # the same command without -o
            experiment: ExperimentArg,
            namespace: NamespaceOpt = None, kubeconfig: KubeconfigOpt = None, context: ContextOpt = None,
        ) -> None:
            act(_session(kubeconfig, context), experiment, namespace)
            _echo(said.format(name=experiment))
    run.__doc__ = doc
    command(name)(run)


_experiment_command(
    "stop", "Stop an experiment (spec.suspend=true): running trials are stopped, nothing new is launched.",
    lambda s, experiment, namespace: hpo.set_suspend(s, experiment, True, namespace),
    "experiment {name} stopped (spec.suspend=true): its running trials are stopped and re-run on resume", with_output=True)
_experiment_command(
    "resume", "Resume a stopped experiment (spec.suspend=false): stopped configurations run again.",
    lambda s, experiment, namespace: hpo.set_suspend(s, experiment, False, namespace),
    "experiment {name} resumed (spec.suspend=false)", with_output=True)


def _clone(experiment: str, new_name: str | None, warm_start: bool, namespace: str | None,
           kubeconfig: str | None, context: str | None, output: Output, verb: str) -> None:
    s = _session(kubeconfig, context)
    creator = hpo.whoami(s)
    if creator is None:
        _note("warning: the API server did not say who you are (SelfSubjectReview): no hpo.dev/creator recorded")
    e = hpo.clone_experiment(s, experiment, namespace, new_name=new_name, warm_start=warm_start, creator=creator)
    if output != Output.table:
        return _emit(e.to_dict(), output)
    extra = f", warm-started from {experiment}" if warm_start else ""
    _echo(f"experiment.hpo.dev/{e.name} created ({verb} of {experiment}{extra})")


@command("restart")
def restart(
    experiment: ExperimentArg,
    new_name: Annotated[Optional[str], typer.Option("--name", metavar="NAME", help="The new experiment's name (default: <name>-xxxxx).")] = None,
    namespace: NamespaceOpt = None, kubeconfig: KubeconfigOpt = None, context: ContextOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Start a new experiment with this one's spec (annotation hpo.dev/original names this one)."""
    _clone(experiment, new_name, False, namespace, kubeconfig, context, output, "restart")


@command("copy")
def copy_experiment(
    experiment: ExperimentArg,
    new_name: Annotated[Optional[str], typer.Option("--name", metavar="NAME", help="The copy's name (default: <name>-xxxxx).")] = None,
    warm_start: Annotated[bool, typer.Option("--warm-start", help="The copy's search first learns from this experiment's finished trials (spec.warmStartFrom).")] = False,
    namespace: NamespaceOpt = None, kubeconfig: KubeconfigOpt = None, context: ContextOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Copy an experiment, optionally warm-starting the copy from this one's results."""
    _clone(experiment, new_name, warm_start, namespace, kubeconfig, context, output, "copy")


_experiment_command(
    "delete", "Delete an experiment with its trials and their pods.",
    hpo.delete_experiment, 'experiment.hpo.dev "{name}" deleted')
_experiment_command(
    "bookmark", "Bookmark an experiment (label hpo.dev/bookmarked=true; list --bookmarked shows these).",
    lambda s, experiment, namespace: hpo.set_bookmark(s, experiment, True, namespace),
    "experiment {name} bookmarked")
_experiment_command(
    "unbookmark", "Remove an experiment's bookmark.",
    lambda s, experiment, namespace: hpo.set_bookmark(s, experiment, False, namespace),
    "experiment {name} unbookmarked")


@command("watch")
def watch(
    experiment: ExperimentArg,
    timeout: Annotated[Optional[float], typer.Option("--timeout", metavar="SECONDS", help="Give up after this many seconds (exit 1).")] = None,
    interval: Annotated[float, typer.Option("--interval", metavar="SECONDS", help="Seconds between looks.")] = 1.0,
    namespace: NamespaceOpt = None, kubeconfig: KubeconfigOpt = None, context: ContextOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Follow an experiment with a progress bar until it Succeeds or Fails (exit 1 when it Fails)."""
    s = _session(kubeconfig, context)
    hpo.get_experiment(s, experiment, namespace)  # an unknown experiment fails before the bar shows
    last: hpo.ExperimentSummary | None = None
    if output != Output.table:
        for last in hpo.follow_experiment(s, experiment, namespace, timeout=timeout, interval=interval):
            pass
    else:
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[best]}"), TimeElapsedColumn(), console=_console())
        with progress:
            task = progress.add_task(experiment, total=None, best="")
            for last in hpo.follow_experiment(s, experiment, namespace, timeout=timeout, interval=interval):
                best = (f"best {format_number(last.best_value)} ({last.best_trial})"
                        if last.best_trial else "no result yet")
                total = max(last.max_trial_count or 1, last.configurations)
                progress.update(task, total=total, completed=last.configurations,
                                description=f"{experiment} {last.phase}", best=best)
    assert last is not None
    if output != Output.table:
        _emit(last.to_dict(), output)
    else:
        best = (f"; best {last.objective} {format_number(last.best_value)} in trial {last.best_trial}"
                if last.best_trial else "")
        _echo(f"experiment {last.name} {last.phase}" + (f" ({last.reason})" if last.reason else "")
              + f": {last.configurations}/{last.max_trial_count} configurations, {last.trials} trials{best}")
    if last.phase == "Failed":
        raise typer.Exit(1)


# --- trials ------------------------------------------------------------------------------------------------

@command("trials", "runs")
def trials(
    experiment: ExperimentArg,
    selector: Annotated[Optional[str], shared_option("selector", "Label selector (e.g. hpo.dev/launch-reason=Retry).")] = None,
    status: Annotated[Optional[str], shared_option("status", "Only these phases, comma-separated.")] = None,
    order_by: Annotated[Optional[str], typer.Option("--order-by", metavar="ORDER", help="'created asc' (default), 'name desc', 'GmtCreateTime DESC,Name ASC', ...")] = None,
    page_token: Annotated[Optional[str], typer.Option("--page-token", metavar="TOKEN", help="Where the page starts: the token a previous page printed (0 first).")] = None,
    max_results: Annotated[Optional[int], typer.Option("--max-results", metavar="N", help="Trials per page with tokens (default 10).")] = None,
    page: Annotated[Optional[int], shared_option("page", "Page number, from 1.")] = None,
    page_size: Annotated[Optional[int], shared_option("page_size", "Trials per numbered page (default 10).")] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Also labels, retries and each trial's per-step metric history.")] = False,
    namespace: NamespaceOpt = None, kubeconfig: KubeconfigOpt = None, context: ContextOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """List an experiment's trials (ListRuns): parameters, final metrics, labels; paged by token."""
    phases = hpo.parse_phases(status, hpo.TRIAL_PHASES)
    hpo.parse_order_by(order_by)  # bad input fails before the cluster is contacted
    s = _session(kubeconfig, context)
    result = hpo.list_trials(s, experiment, namespace, selector=selector, phases=phases, order_by=order_by,
                             page_token=page_token, max_results=max_results, page=page, page_size=page_size,
                             verbose=verbose)
    if output != Output.table:
        data: dict[str, Any] = {"totalCount": result.total, "runs": [t.to_dict() for t in result.items]}
        if result.next_token is not None:
            data["nextPageToken"] = result.next_token
        if result.page is not None:
            data.update(pageNumber=result.page, pageSize=result.page_size)
        return _emit(data, output)
    if not result.items:
        _note(f"No trials found for experiment {experiment}.")
    else:
        _print(_table(*_trial_rows(result.items, verbose)))
    if verbose:
        for t in result.items:
            if t.metric_history:
                _print(Text(""), _table(["METRIC", "STEP", "VALUE", "TIMESTAMP (UTC)"],
                                        [[p.name, "" if p.step is None else p.step, p.value, format_when(p.timestamp)]
                                         for p in t.metric_history], title=f"Metrics of {t.name}"))
    if result.page is not None and result.page_size:
        _note(f"Page {result.page} of {result.pages} ({result.total} trials)")
    elif result.next_token not in (None, "0"):
        _note(f"Next page token: {result.next_token} ({result.total} trials; "
              f"{PROG} trials {experiment} --page-token {result.next_token}"
              + (f" --max-results {result.page_size}" if result.page_size else "") + ")")


@command("metrics")
def metrics(
    trial: Annotated[Optional[str], typer.Argument(metavar="TRIAL", show_default=False, help="The trial's name.")] = None,
    experiment: Annotated[Optional[str], typer.Option("--experiment", "-e", metavar="EXPERIMENT", help="Every trial of this experiment instead.")] = None,
    metric: Annotated[Optional[list[str]], typer.Option("--name", metavar="METRIC", help="Only this metric (repeat for several).")] = None,
    namespace: NamespaceOpt = None, kubeconfig: KubeconfigOpt = None, context: ContextOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Show metric history (step, value, timestamp) of a trial, or of an experiment's trials."""
    if bool(trial) == bool(experiment):
        raise hpo.InvalidInput("name a TRIAL, or an experiment with --experiment (not both)")
    s = _session(kubeconfig, context)
    points = hpo.trial_metrics(s, trial=trial, experiment=experiment, namespace=namespace, names=metric or [])
    if output != Output.table:
        return _emit([p.to_dict() for p in points], output)
    if not points:
        _note("No metrics recorded yet.")
        return
    _print(_table(["TRIAL", "METRIC", "STEP", "VALUE", "TIMESTAMP (UTC)"],
                  [[p.trial, p.name, "" if p.step is None else p.step, p.value, format_when(p.timestamp)]
                   for p in points]))


@command("logs")
def logs(
    trial: Annotated[str, typer.Argument(metavar="TRIAL", show_default=False, help="The trial's name.")],
    container: Annotated[Optional[str], typer.Option("-c", "--container", metavar="NAME", help="Container (default: the primary one).")] = None,
    tail: Annotated[Optional[int], typer.Option("--tail", metavar="N", help="Only the last N lines.")] = None,
    timestamps: Annotated[bool, typer.Option("--timestamps", help="Prefix each line with its time.")] = False,
    namespace: NamespaceOpt = None, kubeconfig: KubeconfigOpt = None, context: ContextOpt = None,
) -> None:
    """Print the log of a trial's pod (read through the API server, as kubectl logs)."""
    text = hpo.trial_logs(_session(kubeconfig, context), trial, namespace, container=container, tail=tail,
                          timestamps=timestamps)
    sys.stdout.write(text)
    if text and not text.endswith("\n"):
        sys.stdout.write("\n")


@command("restart-trials")
def restart_trials(
    experiment: ExperimentArg,
    trial_names: Annotated[Optional[list[str]], typer.Option("--trials", metavar="NAMES", help="Trial names, comma-separated (or repeat the option).")] = None,
    params: Annotated[Optional[str], typer.Option("--params", metavar="JSON", help="""A configuration to run, as a JSON object: '{"lr": "0.01", "layers": 2}'.""")] = None,
    wait: Annotated[float, typer.Option("--wait", metavar="SECONDS", help="Seconds to wait for the operator's answer.")] = 5.0,
    namespace: NamespaceOpt = None, kubeconfig: KubeconfigOpt = None, context: ContextOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Restart trials (RestartHpoTrials) by name, or run a configuration given by --params.

    A configuration that already succeeded is never run again: such requests are refused with a
    reason. Trial names win when both are given; neither is a no-op.
    """
    names = hpo.parse_names(trial_names)
    values = hpo.parse_params_json(params)
    if names and values:
        _note("note: --trials and --params given: trial names win, --params is ignored")
        values = {}
    s = _session(kubeconfig, context)
    if not names and not values:
        hpo.get_experiment(s, experiment, namespace)  # still says so when the experiment does not exist
        if output != Output.table:
            return _emit({}, output)
        _echo("nothing to restart: give trial names with --trials or a configuration with --params")
        return
    creator = hpo.whoami(s) if values else None
    results = hpo.restart_trials(s, experiment, namespace, trials=names, params=values, wait=wait, creator=creator)
    if output != Output.table:
        return _emit({k: v.to_dict() for k, v in results.items()}, output)
    _print(_table(["TRIAL", "RESULT", "REASON", "MESSAGE", "NEW TRIAL", "DECIDED BY"],
                  [[r.trial, r.outcome, r.reason, r.message, r.new_trial or "", r.decided_by]
                   for r in results.values()]))


# --- dashboard ---------------------------------------------------------------------------------------------

@command("dashboard")
def dashboard(
    port: Annotated[int, typer.Option("--port", metavar="PORT", help="Port to serve on (0: any free port).")] = 8080,
    address: Annotated[str, typer.Option("--address", metavar="ADDRESS", help="Address to listen on. The default, loopback, lets only this machine in: anyone who reaches the dashboard reads the cluster with your credentials.")] = "127.0.0.1",
    all_namespaces: Annotated[bool, typer.Option("-A", "--all-namespaces", help="Experiments of every namespace (default: the namespace of -n, else the context's).")] = False,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Do not open a browser.")] = False,
    allow_write: Annotated[bool, typer.Option("--allow-write", help="Let the page stop and resume experiments and restart trials (the calls of stop, resume and restart-trials, with your RBAC). Read-only without it.")] = False,
    allowed_host: Annotated[Optional[list[str]], typer.Option("--allowed-host", metavar="HOST", help="A Host name the dashboard answers to, besides localhost (repeat for several; '*' for any). Needed behind a proxy or a name other than the address.")] = None,
    namespace: NamespaceOpt = None, kubeconfig: KubeconfigOpt = None, context: ContextOpt = None,
) -> None:
    """Serve a web dashboard: experiments, trials, plots and the recovery of failed trials, live.

    It reads the cluster with your kubeconfig and RBAC, like the other commands, and installs
    nothing in the cluster. Changes show within a second or two, without reloading the page.
    """
    import asyncio
    import threading
    import webbrowser

    from hpo_operator.dashboard import server
    from hpo_operator.dashboard.actions import Actions
    from hpo_operator.dashboard.cluster import ConnectError

    if all_namespaces and namespace:
        raise hpo.InvalidInput("use -n/--namespace or -A/--all-namespaces, not both")
    options = server.Options(address=address, port=port, allow_write=allow_write, context=context,
                             allowed_hosts=list(allowed_host) if allowed_host else None)
    if not server.is_loopback(address):
        _note(f"warning: listening on {address}: anyone who can reach it reads the cluster with your "
              "credentials" + (", and can stop experiments and restart trials (--allow-write)" if allow_write else ""))

    def ready(url: str) -> None:
        where = "all namespaces" if options.namespaces is None else f"namespace {', '.join(options.namespaces)}"
        mode = "read-write" if allow_write else "read-only"
        _echo(f"hpo dashboard ({where}, {mode}): {url}  (Ctrl-C to stop)")
        if not no_browser:
            threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()

    try:
        asyncio.run(server.start(options, kubeconfig, namespace, all_namespaces,
                                 actions=Actions(kubeconfig, context) if allow_write else None, ready=ready))
    except ConnectError as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"cannot listen on {address}:{port}: {e.strerror or e}")
    except KeyboardInterrupt:
        pass
    _note("dashboard stopped")


def main() -> None:
    app(prog_name=PROG)


if __name__ == "__main__":
    main()
