"""What `kubectl hpo` prints: tables and key-value grids (rich), JSON and YAML documents, notes on
stderr, and the one-line error. Tables, documents and plain lines go to stdout; hints, page
footers and errors to stderr, so that stdout stays something a script can parse.

rich and yaml are imported by the functions that use them, when a command prints: --help, a bad
option and the commands that print a line or two never load them.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text


class Output(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    tty = bool(getattr(stream, "isatty", lambda: False)())
    # Not a terminal (a pipe, a file, a test): wide enough that tables do not wrap.
    return Console(file=stream, highlight=False, width=None if tty else 250)


def echo(text: str) -> None:
    typer.echo(text)


def note(text: str) -> None:
    """Hints and page footers go to stderr, so that stdout stays the table or the document."""
    typer.echo(text, err=True)


def emit(data: Any, output: Output) -> None:
    if output == Output.json:
        echo(json.dumps(data, indent=2, default=str))
    else:
        import yaml

        echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True).rstrip("\n"))


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def cell(value: Any) -> Text:
    from rich.text import Text

    from hpo_operator.client.views import format_number

    if value is None:
        return Text("")
    if isinstance(value, float):
        return Text(format_number(value))
    return Text(str(value))


def text(value: str = "") -> Text:
    """A line of plain text (no markup) for show(); text() is an empty line between two blocks."""
    from rich.text import Text

    return Text(value)


def table(columns: list[str], rows: list[list[Any]], title: str | None = None) -> Table:
    from rich.table import Table

    grid = Table(
        box=None,
        show_header=True,
        header_style="bold",
        pad_edge=False,
        show_edge=False,
        padding=(0, 3, 0, 0),
        title=title,
        title_justify="left",
        title_style="bold",
    )
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*(cell(v) for v in row))
    return grid


def kv(rows: list[tuple[str, Any]]) -> Table:
    """`Key: value` lines, leaving out the keys that have no value."""
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in rows:
        if value not in (None, "", [], {}):
            grid.add_row(Text(f"{key}:"), cell(value))
    return grid


def show(*renderables: Any) -> None:
    """Prints tables and grids on stdout."""
    out = console()
    if out.is_terminal:
        for r in renderables:
            out.print(r)
        return
    with out.capture() as captured:
        for r in renderables:
            out.print(r)
    # Rich pads every cell to its column's width: no trailing blanks in a pipe or a file.
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
