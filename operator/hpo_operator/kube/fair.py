"""A fair share of the API server's requests in flight, across the experiments that ask for them.

One bound on the requests in flight protects the API server (answered by hundreds of concurrent
writers it starts timing out instead of going faster), but a plain semaphore serves its waiters in
the order they came: an experiment that starts a thousand trials at once puts three thousand writes
ahead of every other experiment's next one. Here each request belongs to a flow (the experiment whose
round makes it: FLOW, set for each round), and waiting requests are served by start-time fair queuing:
a flow's requests are tagged one after the other from the virtual time at which it asked, and the
smallest tag goes next, so a flow with a thousand waiting gets every n-th turn among n busy flows,
and a flow that asks once gets the next turn or nearly. No flow has more than `per_flow` in flight,
so a burst never holds every slot: another experiment's write waits at most for one of the others.
Fair queuing wastes nothing: alone, a flow gets every slot up to `per_flow`. Requests marked FIRST
(a new experiment's first round: its first pods) go before every other waiting one, so that a
thousand experiments created at once each get a pod before any of them gets its next.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
from collections import deque
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager

# Subtracted from a FIRST request's tag (tags are counts of requests: far below any real one).
FIRST_OFFSET = 1e15

# The flow of the requests made from here on in this context (and the tasks it starts): an
# experiment's key, set by the loop for its round. None: the operator's own, one flow of their own.
FLOW: contextvars.ContextVar[Hashable] = contextvars.ContextVar("hpo_api_flow", default=None)
# Requests that go before all others waiting (in their fair order among themselves): a new
# experiment's first round, its first pods, set by the loop.
FIRST: contextvars.ContextVar[bool] = contextvars.ContextVar("hpo_api_first", default=False)


class FairLimiter:
    """At most `capacity` requests in flight, at most `per_flow` of them of one flow; waiting
    requests go in the order of their fair-queuing tags."""

    def __init__(self, capacity: int, per_flow: int | None = None):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.per_flow = max(1, min(per_flow or capacity, capacity))
        self.in_flight = 0
        self._flow_in_flight: dict[Hashable, int] = {}
        # Per flow, its waiting requests in order: (tag, future).
        self._waiting: dict[Hashable, deque[tuple[float, asyncio.Future[None]]]] = {}
        # Flows with a waiting request and room under per_flow: (their first request's tag, seq, flow).
        self._eligible: list[tuple[float, int, Hashable]] = []
        self._last_tag: dict[Hashable, float] = {}
        self._vtime = 0.0
        self._seq = itertools.count()

    def waiters(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    @asynccontextmanager
    async def slot(self, flow: Hashable = None, first: bool = False) -> AsyncIterator[None]:
        await self.acquire(flow, first)
        try:
            yield
        finally:
            self.release(flow)

    async def acquire(self, flow: Hashable = None, first: bool = False) -> None:
        tag = max(self._vtime, self._last_tag.get(flow, 0.0))
        self._last_tag[flow] = tag + 1
        if self.in_flight < self.capacity and self._flow_in_flight.get(flow, 0) < self.per_flow:
            # A free slot means nothing eligible waits (release() hands slots on at once).
            self._grant(flow, tag)
            return
        # A first request's tag goes below every other's: the smallest goes next.
        order = tag - FIRST_OFFSET if first else tag
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiting.setdefault(flow, deque())
        queue.append((order, future))
        if len(queue) == 1 and self._flow_in_flight.get(flow, 0) < self.per_flow:
            heapq.heappush(self._eligible, (order, next(self._seq), flow))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(flow)  # granted, but its caller is gone: hand the slot on
            else:
                self._withdraw(flow, future)
            raise

    def release(self, flow: Hashable = None) -> None:
        self.in_flight -= 1
        left = self._flow_in_flight[flow] - 1
        if left:
            self._flow_in_flight[flow] = left
        else:
            del self._flow_in_flight[flow]
        queue = self._waiting.get(flow)
        if queue and left == self.per_flow - 1:
            # It was held at its bound: its first waiting request may go again.
            heapq.heappush(self._eligible, (queue[0][0], next(self._seq), flow))
        self._dispatch()
        if not left and not queue:
            # Nothing in flight or waiting: its tags are at most one ahead of the others', which it
            # may as well start from again; forgotten, so that a process serving many experiments
            # keeps no entry per experiment it ever saw.
            self._last_tag.pop(flow, None)

    def _grant(self, flow: Hashable, order: float) -> None:
        self.in_flight += 1
        self._flow_in_flight[flow] = self._flow_in_flight.get(flow, 0) + 1
        self._vtime = max(self._vtime, order + FIRST_OFFSET if order < 0 else order)

    def _dispatch(self) -> None:
        while self.in_flight < self.capacity and self._eligible:
            tag, _, flow = heapq.heappop(self._eligible)
            queue = self._waiting.get(flow)
            if not queue or queue[0][0] != tag or self._flow_in_flight.get(flow, 0) >= self.per_flow:
                continue  # a stale entry: that request was withdrawn, or the flow is at its bound
            _, future = queue.popleft()
            if not queue:
                del self._waiting[flow]
            self._grant(flow, tag)
            future.set_result(None)
            if queue and self._flow_in_flight[flow] < self.per_flow:
                heapq.heappush(self._eligible, (queue[0][0], next(self._seq), flow))

    def _withdraw(self, flow: Hashable, future: asyncio.Future[None]) -> None:
        queue = self._waiting.get(flow)
        if not queue:
            return
        first = queue[0][1] is future
        for i, (_, f) in enumerate(queue):
            if f is future:
                del queue[i]
                break
        if not queue:
            del self._waiting[flow]
        elif first and self._flow_in_flight.get(flow, 0) < self.per_flow:
            heapq.heappush(self._eligible, (queue[0][0], next(self._seq), flow))
