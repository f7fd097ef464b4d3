"""What a turn costs: the time one experiment's turn holds the event loop, and the CPU of the
threads it hands its large plans to.

Every experiment's turns share one event loop, which runs each turn's steps (the code between two
awaits) one at a time: an experiment of a thousand trials whose rounds walk them all holds it for
milliseconds at each step while the others' small rounds wait. The work queue (workqueue.py) takes
each turn's cost to bound one experiment's share of the loop; this module measures it. A turn's
whole wall time would not do (it waits for the API server most of that time, and other turns run
meanwhile): only its own steps count.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


class Metered(Coroutine[Any, Any, T]):
    """A coroutine that counts the time its own steps hold the event loop (`seconds`), and only
    theirs: the clock is read around each step the loop runs, so the other tasks that run while it
    awaits are not counted, nor is the time it waits. Wall time, not this thread's CPU: a step the
    machine preempts holds the loop as long, and the monotonic clock costs a twelfth of the CPU
    clock's system call, read twice a step. A task runs it as it would the coroutine."""

    def __init__(self, coroutine: Coroutine[Any, Any, T]):
        self._coroutine = coroutine
        self.seconds = 0.0

    def send(self, value: Any) -> Any:
        started = time.perf_counter()
        try:
            return self._coroutine.send(value)
        finally:
            self.seconds += time.perf_counter() - started

    def throw(self, *args: Any) -> Any:  # type: ignore[override]
        started = time.perf_counter()
        try:
            return self._coroutine.throw(*args)
        finally:
            self.seconds += time.perf_counter() - started

    def close(self) -> None:
        self._coroutine.close()

    def __await__(self) -> Generator[Any, None, T]:
        return self._coroutine.__await__()


def timed(fn: Callable[..., T], *args: Any) -> tuple[T, float]:
    """fn(*args), and the CPU it took in the thread that ran it (for work handed to a thread)."""
    started = time.thread_time()
    result = fn(*args)
    return result, time.thread_time() - started
