"""The queue of experiments waiting for a round, served by a fixed number of workers.

Built as controller-runtime's rate-limited work queue is: an experiment is in the queue at most once,
however many watch events name it; a worker takes it, and events that arrive while its round runs
mark it to be queued again once the round is done, so one experiment never has two rounds at once
and never holds more than one place in the queue. Experiments are served in the order they became
due, so a busy one (a thousand pods finishing, a restart rebuilding a large study) takes its turn
like the others instead of starving them. An experiment can also be queued for later: its next
periodic round, a retry after failures (a per-experiment delay that grows with each failure in a
row, reset by a success; an event still queues it at once, as a watch event woke a failed loop
before), and the gap rounds of one experiment keep between them.

A turn also says what it cost: the time its steps held the one event loop that every experiment's
turns share (cpu.py). One experiment's turns take about their share of it while n others have work
(queued, or in a turn): after a turn that took u seconds more than the usual turn (a moving mean
over every experiment's), its next one waits n * u (n at most MAX_SHARE, the wait at most
MAX_SHARE_DELAY). A thousand-trial experiment whose rounds walk every trial then plans less often,
each round serving more of its events, instead of holding the loop while fifty small experiments
wait; experiments of like size, or one alone, wait nothing more than their gaps, and a wait for the
others ends as soon as none of them has work left (the loop would idle).

A new experiment's first turn goes before the others' next ones (a lane of its own, in the order
they came): a thousand experiments created at once each get their first pods before any of them
its next round.

Pure asyncio, no I/O: tests drive it with short delays.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

# A turn's cost is multiplied by the experiments with work besides it, up to this many: a share of
# at most 1/(MAX_SHARE + 1) for the costly one under any crowd, so that it still moves.
MAX_SHARE = 16
# And the wait a share adds is at most this (seconds): a round that took seconds of the loop (a thousand
# Trials and pods created) is not followed by a minute's stall.
MAX_SHARE_DELAY = 2.0
# The weight of each turn in the moving mean of turns' costs (the usual cost).
COST_WEIGHT = 0.1


class WorkQueue(Generic[K]):
    """Keys (experiments) due for processing, each handed to one worker at a time.

    `add(key, after)` wants the key processed in `after` seconds (0: now): the earliest of all the
    times asked for wins. `get()` waits for the next due key; `done(key, ...)` ends its processing,
    with when it wants its next turn. `forget(key)` drops it (the experiment is gone)."""

    def __init__(self, backoff: Callable[[int], float] | None = None):
        self._loop = asyncio.get_running_loop()
        self._ready: deque[K] = deque()
        self._first: deque[K] = deque()  # keys whose first turn is due: served before _ready
        self._new: set[K] = set()  # keys added as new that have not had their first turn
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        # Keys asked for while being processed: the time they were wanted, queued once done().
        self._dirty: dict[K, float] = {}
        # Keys waiting for a time: when, and the timer that queues them then.
        self._due: dict[K, float] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        # A key's next turn never starts before this (the gap between one experiment's rounds).
        self._not_before: dict[K, float] = {}
        self._failures: dict[K, int] = {}
        # Keys held back by their cost share alone (see done()): when their own gap ends, and the
        # earliest time a turn was asked for meanwhile (None: none was).
        self._held: dict[K, tuple[float, float | None]] = {}
        self._usual_cost = 0.0  # the mean cost of recent turns, of every key (moving, COST_WEIGHT)
        self._forgotten: set[K] = set()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._backoff = backoff or (lambda failures: min(0.5 * 2 ** (failures - 1), 60.0))

    def __len__(self) -> int:
        """Keys due now and not yet taken by a worker."""
        return len(self._ready) + len(self._first)

    def waiting(self) -> int:
        """Keys waiting for a time (their next periodic round, a retry, a gap)."""
        return len(self._due)

    def others_with_work(self) -> int:
        """Keys due or in a turn (the one ending its turn is no longer counted), at most MAX_SHARE."""
        return min(len(self._ready) + len(self._first) + len(self._processing), MAX_SHARE)

    def failures(self, key: K) -> int:
        return self._failures.get(key, 0)

    def add(self, key: K, after: float = 0.0, *, new: bool = False) -> None:
        """`new`: the key's first turn, which goes before the others' (until it is taken)."""
        now = self._loop.time()
        at = now + max(after, 0.0)
        self._forgotten.discard(key)
        if new:
            self._new.add(key)
        if key in self._queued:
            return
        if key in self._processing:
            self._dirty[key] = min(self._dirty.get(key, math.inf), at)
            return
        held = self._held.get(key)
        if held is not None:  # remembered, in case the others' work ends before its share does
            self._held[key] = (held[0], at if held[1] is None else min(held[1], at))
            if not (self._ready or self._first or self._processing):
                self._release_if_idle()  # nothing else to do: it need not wait its share
                return
        at = max(at, self._not_before.get(key, 0.0))
        due = self._due.get(key)
        if due is not None and due <= at:
            return  # already wanted as soon or sooner
        self._cancel_timer(key)
        if at <= now:
            self._enqueue(key)
        else:
            self._due[key] = at
            self._timers[key] = self._loop.call_at(at, self._fire, key)

    async def get(self) -> K:
        while not self._ready and not self._first:
            waiter = self._loop.create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and (self._ready or self._first):
                    self._wake_getter()  # handed a key it will not take: pass the turn on
                raise
        key = self._first.popleft() if self._first else self._ready.popleft()
        self._new.discard(key)
        self._queued.discard(key)
        self._held.pop(key, None)
        self._processing.add(key)
        self._cancel_timer(key)  # this turn serves whatever it was waiting for
        return key

    def done(
        self, key: K, after: float | None = None, *, failed: bool = False, gap: float = 0.0, cost: float = 0.0
    ) -> None:
        """Ends the key's processing. `after`: when it wants its next turn (None: only when added
        again); `failed`: the turn failed, and it is retried after the backoff of its failures in a
        row instead (unless added sooner); `gap`: seconds from now before any next turn starts;
        `cost`: the time the turn held the loop, which the experiments with work besides it get before its
        next turn (see the module's docstring)."""
        self._processing.discard(key)
        # Only what it costs beyond the usual turn: experiments of like size are served in turn, as
        # before; a turn that costs more than the others' lets them have as much before its next.
        share = min(max(cost - self._usual_cost, 0.0) * self.others_with_work(), MAX_SHARE_DELAY)
        self._usual_cost += COST_WEIGHT * (cost - self._usual_cost)
        dirty = self._dirty.pop(key, None)
        if key in self._forgotten:
            self._forgotten.discard(key)
            self._not_before.pop(key, None)
            self._failures.pop(key, None)
            self._release_if_idle()
            return
        now = self._loop.time()
        if share > gap:
            self._held[key] = (now + gap, None)
            gap = share
        else:
            self._held.pop(key, None)
        if gap > 0:
            self._not_before[key] = now + gap
        else:
            self._not_before.pop(key, None)
        if failed:
            self._failures[key] = self._failures.get(key, 0) + 1
            after = self._backoff(self._failures[key])
        else:
            self._failures.pop(key, None)
        if after is not None:
            self.add(key, after)
        if dirty is not None:
            self.add(key, dirty - now)
        self._release_if_idle()

    def _release_if_idle(self) -> None:
        """No key is due or in a turn: of the keys held back by their share alone that want a turn,
        the one whose share ends first goes now (after its own gap) rather than leave the loop
        idle; the others keep waiting their shares, so the order stays the fair one."""
        if not self._held or self._ready or self._first or self._processing:
            return
        wanting = [k for k, (_, wanted) in self._held.items() if wanted is not None]
        if not wanting:
            return
        key = min(wanting, key=lambda k: self._not_before.get(k, 0.0))
        own, wanted = self._held.pop(key)
        now = self._loop.time()
        if own > now:
            self._not_before[key] = own
        else:
            self._not_before.pop(key, None)
        self._cancel_timer(key)
        assert wanted is not None
        self.add(key, max(wanted, own) - now)

    def forget(self, key: K) -> None:
        """Drops the key: no turn is queued for it any more (one being processed ends without a next)."""
        self._cancel_timer(key)
        self._dirty.pop(key, None)
        self._not_before.pop(key, None)
        self._failures.pop(key, None)
        self._held.pop(key, None)
        self._new.discard(key)
        if key in self._queued:
            self._queued.discard(key)
            (self._first if key in self._first else self._ready).remove(key)
        if key in self._processing:
            self._forgotten.add(key)
        self._release_if_idle()

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self._due.pop(key, None)
        if key not in self._processing:
            self._enqueue(key)

    def _enqueue(self, key: K) -> None:
        self._due.pop(key, None)
        if key in self._queued:
            return
        self._queued.add(key)
        (self._first if key in self._new else self._ready).append(key)
        self._wake_getter()

    def _wake_getter(self) -> None:
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _cancel_timer(self, key: K) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._due.pop(key, None)
