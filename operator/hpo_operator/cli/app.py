"""The typer application of `kubectl hpo`: its name in help and usage, the options every command
shares (kubectl's names), and the error translation each command is wrapped in. The commands
themselves live in the modules named after what they act on; cli/main.py registers them here.

Errors (the client's HpoError, the API server's ApiException) end in one line on stderr and exit
code 1, never in a traceback (HPO_DEBUG=1 shows one); usage errors exit with 2.

No `from __future__ import annotations` here: typer reads the options' annotations, and building
the command tree from string annotations costs about ten times as long.
"""

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

try:  # typer vendors click from 0.2x on; its usage errors derive from TyperException
    from typer.exceptions import TyperException as _UsageError
except ImportError:  # pragma: no cover
    from click import ClickException as _UsageError

from hpo_operator import client as hpo
from hpo_operator.cli.output import Output, fail
from hpo_operator.client.errors import translate

PROG = "kubectl hpo"


class _Group(TyperGroup):
    """Help and usage say `kubectl hpo ...`, however the program was started."""

    def make_context(self, info_name, args, parent=None, **extra):  # type: ignore[override]
        return super().make_context(PROG if parent is None else info_name, args, parent, **extra)


app = typer.Typer(
    cls=_Group,
    name=PROG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    help="Hyperparameter-optimisation experiments of hpo-operator: list, inspect, restart trials, "
    "stop, resume, copy. Experiments applied with plain kubectl have no creator unless they "
    "carry the annotation hpo.dev/creator; create, restart and copy set it to the user the API "
    "server authenticates.",
)


# Options every command takes (kubectl's names).
KubeconfigOpt = Annotated[
    str | None,
    typer.Option(
        "--kubeconfig", metavar="PATH", help="Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)."
    ),
]
ContextOpt = Annotated[str | None, typer.Option("--context", metavar="NAME", help="The kubeconfig context to use.")]
NamespaceOpt = Annotated[
    str | None,
    typer.Option(
        "-n", "--namespace", metavar="NAMESPACE", help="The namespace (default: the context's namespace, else default)."
    ),
]
OutputOpt = Annotated[
    Output,
    typer.Option(
        "-o", "--output", case_sensitive=False, metavar="table|json|yaml", help="Output format: table, json or yaml."
    ),
]
ExperimentArg = Annotated[str, typer.Argument(metavar="EXPERIMENT", show_default=False, help="The experiment's name.")]

# Filters and paging that both list and trials take: each flag spelled once, with its metavar; each
# command says in its own help what it selects.
SHARED_FLAGS: dict[str, tuple[str, ...]] = {
    "selector": ("-l", "--selector", "SELECTOR"),
    "status": ("--status", "PHASES"),
    "page": ("--page", "N"),
    "page_size": ("--page-size", "N"),
}


def read_input(filename: str) -> tuple[str, str]:
    """The text of `-f FILE` (`-` reads stdin), and how to name it in messages."""
    if filename == "-":
        return sys.stdin.read(), "stdin"
    path = Path(filename)
    if not path.is_file():
        raise hpo.InvalidInput(f"cannot read {filename}: no such file")
    return path.read_text(), filename


def shared_option(flag: str, help: str) -> Any:
    *names, metavar = SHARED_FLAGS[flag]
    return typer.Option(*names, metavar=metavar, help=help)


def handle_errors(fn: Callable) -> Callable:
    """Turns the client's and the API server's errors into one line and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, _UsageError):
            raise
        except hpo.HpoError as e:
            fail(str(e))
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except Exception as e:  # never a traceback, unless asked for
            if _is_api_error(e):
                fail(str(translate(e)))
            if os.environ.get("HPO_DEBUG"):
                raise
            fail(_unexpected(e))

    return wrapper


def _is_api_error(e: Exception) -> bool:
    """Whether `e` is the API server's ApiException. The kubernetes client takes longer to import
    than all the rest of the plugin, and --help or a bad option must not wait for it: it is only
    asked once loaded, which it is whenever it raised."""
    if "kubernetes" not in sys.modules:
        return False
    from kubernetes.client import ApiException

    return isinstance(e, ApiException)


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
        wrapped = handle_errors(fn)
        app.command(names[0], **kwargs)(wrapped)
        for alias in names[1:]:
            app.command(alias, help=f"Same as {names[0]}.", **kwargs)(wrapped)
        return fn

    return decorate
