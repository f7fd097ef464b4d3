"""metricsCollector.metricsFormat regexes, compiled with RE2.

A trial's output is one tenant's input to an operator that many share, and its metricsFormat is
that tenant's too: a backtracking engine (Python's re) takes exponential time on `(\\d+)*x` and
quadratic time on Katib's default format over one long line. RE2 matches in time linear in the text
(times the size of the compiled program), has no backreferences or lookaround, and releases the
GIL while it matches. A pattern RE2 refuses, or one it compiles to a program larger than
MAX_PROGRAM_SIZE, is refused with RE2's reason (the spec's validation: InvalidSpec).

RE2's syntax is the one Go's regexp takes, as Katib's own collector reads these patterns: `\\w`,
`\\d` and `\\s` are ASCII classes.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import re2

# The size of the compiled program bounds the cost of matching one byte when RE2 falls back from
# its DFA to its NFA (each step of the NFA visits at most every instruction): Katib's default format
# compiles to 40 instructions, `(\pL+)=(\pN+)` (Unicode classes) to 1,440.
MAX_PROGRAM_SIZE = 2000
# RE2's memory for one regex (its program and DFA cache; RE2's default is 8 MiB): an operator holds
# those of every experiment. A DFA that outgrows it falls back to the NFA, still linear.
MAX_MEMORY = 256 << 10


def _options() -> Any:
    options = re2.Options()
    options.max_mem = MAX_MEMORY
    # RE2 writes to stderr when its DFA runs out of memory: once per search, which a tenant's
    # pattern can make happen at will.
    options.log_errors = False
    return options


def _reason(error: Exception) -> str:
    said = error.args[0] if error.args else ""
    return said.decode("utf-8", "replace") if isinstance(said, bytes) else str(said)


@lru_cache(maxsize=256)
def compile_format(pattern: str) -> Any:
    """The compiled regex (an RE2 object: `programsize`, `groups`, `finditer` over bytes); raises
    ValueError with RE2's reason when it is not one the operator runs."""
    try:
        compiled = re2.compile(pattern, _options())
    except re2.error as e:
        raise ValueError(f"not a regular expression RE2 accepts: {_reason(e)}") from None
    if compiled.programsize > MAX_PROGRAM_SIZE:
        raise ValueError(
            f"RE2 compiles it to {compiled.programsize} instructions, more than {MAX_PROGRAM_SIZE}: "
            "use fewer or smaller repetitions and Unicode classes"
        )
    return compiled


def format_problem(pattern: str) -> str | None:
    """Why a metricsFormat regex cannot be used, or None: RE2 must compile it (within
    MAX_PROGRAM_SIZE) and it needs two groups, the metric's name and its value."""
    try:
        groups = compile_format(pattern).groups
    except ValueError as e:
        return str(e)
    if groups < 2:
        return f"has {groups} group{'' if groups == 1 else 's'}; it needs two, the metric's name and its value"
    return None
