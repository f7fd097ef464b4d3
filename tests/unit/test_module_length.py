"""Modules short enough to read in one sitting: a module of the package over MAX_LINES lines says
why it is one piece, in a line `# One piece: <why>` at its top, or it is split. The rule is read from
the files, so a module that grows past the limit fails here, and the split (or its reason) is
decided when it grows rather than found later."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "hpo_operator"
MAX_LINES = 400
MARKER = "# One piece:"
# The marker stands among a module's first lines (above its docstring).
TOP_LINES = 5
# Modules over the limit that another change is rewriting: each says which. An entry fails
# test_an_exemption_is_dropped_once_its_module_is_short_or_says_why as soon as it is not needed.
PENDING: dict[str, str] = {}


def reason(path: Path) -> str | None:
    """The module's reason for being one piece, or None (no marker, or a marker with no reason)."""
    for line in path.read_text(encoding="utf-8").splitlines()[:TOP_LINES]:
        if line.startswith(MARKER):
            return line[len(MARKER) :].strip() or None
    return None


def length(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def unexplained(paths: list[Path], root: Path) -> list[str]:
    """The modules over MAX_LINES lines without a reason, as "path (N lines)"."""
    return [f"{p.relative_to(root)} ({length(p)} lines)" for p in paths if length(p) > MAX_LINES and reason(p) is None]


def test_a_module_over_400_lines_says_why_it_is_one_piece():
    modules = sorted(p for p in PACKAGE.rglob("*.py") if str(p.relative_to(PACKAGE)) not in PENDING)
    assert unexplained(modules, PACKAGE) == [], (
        f"split these modules, or put a line `{MARKER} <why>` among their first {TOP_LINES} lines"
    )


def test_an_exemption_is_dropped_once_its_module_is_short_or_says_why():
    needless = [name for name in PENDING if length(PACKAGE / name) <= MAX_LINES or reason(PACKAGE / name)]
    assert needless == [], "remove these from PENDING: the rule holds for them now"


def test_the_rule_counts_lines_and_reads_the_reason(tmp_path: Path):
    body = "x = 1\n" * MAX_LINES
    short = tmp_path / "short.py"
    short.write_text(body)
    long = tmp_path / "long.py"
    long.write_text('"""A module."""\n' + body)
    said = tmp_path / "said.py"
    said.write_text(f"{MARKER} one table, row after row.\n" + body)
    empty = tmp_path / "empty.py"
    empty.write_text(f"{MARKER}   \n" + body)
    late = tmp_path / "late.py"
    late.write_text(body + f"{MARKER} said too late to be seen.\n")
    found = unexplained([short, long, said, empty, late], tmp_path)
    assert found == [f"long.py ({MAX_LINES + 1} lines)", f"empty.py ({MAX_LINES + 1} lines)", "late.py (401 lines)"]
