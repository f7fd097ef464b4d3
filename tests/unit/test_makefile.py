"""The Makefile's help is made from its targets' own `## ` comments: every target a user can run is
listed, with what it does."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def targets() -> list[str]:
    """The Makefile's own targets (rules named by a plain word, not files like .venv/.installed)."""
    text = (REPO / "Makefile").read_text()
    return re.findall(r"^([a-z][a-z0-9-]*):(?!=)", text, re.MULTILINE)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_help_lists_every_target_with_what_it_does():
    out = subprocess.run(["make", "--no-print-directory", "help"], cwd=REPO, capture_output=True, text=True, check=True)
    listed = {}
    for line in out.stdout.splitlines():
        name, _, what = line.removeprefix("make ").partition(" ")
        listed[name] = what.strip()
    assert len(targets()) > 30
    missing = [t for t in targets() if not listed.get(t)]
    assert missing == [], "targets without a ## comment (make help leaves them out)"
    assert "$" not in out.stdout  # a description that names a variable as `$$X` prints it doubled
