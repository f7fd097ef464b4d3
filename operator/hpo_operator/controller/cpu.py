"""What a turn costs: the CPU one experiment's turn takes on the event loop, and in the threads it
hands its large plans to.

Every experiment's turns share one event loop, which runs each turn's steps (the code between two
awaits) one at a time: an experiment of a thousand trials whose rounds walk them all holds it for
milliseconds at each step while the others' small rounds wait. The work queue (workqueue.py) takes
each turn's CPU to bound one experiment's share of it; this module measures it. Wall time would not
do: a turn waits for the API server most of its time, and other turns run meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


class Metered(Coroutine[Any, Any, T]):
    """A coroutine that counts the CPU its own steps take (`seconds`), and only theirs: the clock is
    this thread's, read around each step the event loop runs, so the other tasks that run while it
    awaits are not counted, nor is the time it waits. A task runs it as it would the coroutine."""

    def __init__(self, coroutine: Coroutine[Any, Any, T]):
        self._coroutine = coroutine
        self.seconds = 0.0

    def send(self, value: Any) -> Any:
        started = time.thread_time()
        try:
            return self._coroutine.send(value)
        finally:
            self.seconds += time.thread_time() - started

    def throw(self, *args: Any) -> Any:  # type: ignore[override]
        started = time.thread_time()
        try:
            return self._coroutine.throw(*args)
        finally:
            self.seconds += time.thread_time() - started

    def close(self) -> None:
        self._coroutine.close()

    def __await__(self) -> Generator[Any, None, T]:
        return self._coroutine.__await__()


def timed(fn: Callable[..., T], *args: Any) -> tuple[T, float]:
    """fn(*args), and the CPU it took in the thread that ran it (for work handed to a thread)."""
    started = time.thread_time()
    result = fn(*args)
    return result, time.thread_time() - started
