"""The work queue of experiments (controller/workqueue.py): one place in the queue and one worker per
experiment at a time, served in the order they became due, timers where the earliest wins, a growing
delay after failures that an event cuts short, and the gap between one experiment's turns."""

from __future__ import annotations

import asyncio

import pytest

from hpo_operator.controller.workqueue import WorkQueue


def run(scenario):
    return asyncio.run(scenario())


async def drain(queue: WorkQueue, timeout: float = 0.05) -> list:
    """The keys a worker would take now, each done at once."""
    taken = []
    while True:
        try:
            key = await asyncio.wait_for(queue.get(), timeout)
        except TimeoutError:
            return taken
        taken.append(key)
        queue.done(key)


def test_a_key_added_many_times_is_queued_once():
    async def scenario():
        queue = WorkQueue()
        for _ in range(5):
            queue.add("a")
        queue.add("b")
        queue.add("a")
        assert len(queue) == 2
        assert await drain(queue) == ["a", "b"]

    run(scenario)


def test_keys_are_served_in_the_order_they_became_due_so_a_busy_one_waits_its_turn():
    """An experiment woken again and again while others wait goes to the back each time."""

    async def scenario():
        queue = WorkQueue()
        for key in ("busy", "b", "c"):
            queue.add(key)
        order = []
        for _ in range(6):
            key = await queue.get()
            order.append(key)
            queue.add("busy")  # its events keep coming
            queue.done(key)
        assert order == ["busy", "b", "c", "busy", "busy", "busy"]

    run(scenario)


def test_a_key_added_while_processed_runs_again_once_done_never_twice_at_once():
    async def scenario():
        queue = WorkQueue()
        queue.add("a")
        key = await queue.get()
        queue.add("a")
        queue.add("a")
        assert len(queue) == 0  # not handed to a second worker meanwhile
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(queue.get(), 0.05)
        queue.done(key)
        assert await drain(queue) == ["a"]

    run(scenario)


def test_the_gap_delays_the_next_turn_even_when_added_at_once():
    async def scenario():
        queue = WorkQueue()
        loop = asyncio.get_running_loop()
        queue.add("a")
        key = await queue.get()
        queue.add("a")  # an event during the turn
        queue.done(key, gap=0.2)
        started = loop.time()
        await queue.get()
        assert loop.time() - started >= 0.19
        queue.done("a", gap=0.2)
        queue.add("a")  # an event after the turn, within its gap
        started = loop.time()
        await queue.get()
        assert loop.time() - started >= 0.19

    run(scenario)


def test_the_earliest_time_asked_for_wins():
    async def scenario():
        queue = WorkQueue()
        queue.add("a", 5)
        queue.add("a", 0.05)
        queue.add("a", 10)  # does not postpone it
        assert queue.waiting() == 1
        assert await drain(queue, timeout=0.3) == ["a"]
        assert queue.waiting() == 0

    run(scenario)


def test_a_turn_taken_early_cancels_the_timer_it_served():
    """done(after) replaces the next turn: a key woken by an event does not also get the turn it
    had asked for earlier, on top of the one it asks for now."""

    async def scenario():
        queue = WorkQueue()
        queue.add("a", 0.1)
        queue.add("a")  # an event: now
        key = await queue.get()
        queue.done(key, after=5)
        assert await drain(queue, timeout=0.3) == []

    run(scenario)


def test_failures_back_off_more_each_time_an_event_cuts_it_short_and_a_success_resets_it():
    async def scenario():
        delays = []
        queue = WorkQueue(backoff=lambda n: delays.append(n) or 0.05 * 2 ** (n - 1))
        loop = asyncio.get_running_loop()
        queue.add("a")
        key = await queue.get()
        for n in (1, 2, 3):
            started = loop.time()
            queue.done(key, failed=True)
            assert queue.failures("a") == n
            key = await queue.get()
            assert loop.time() - started >= 0.05 * 2 ** (n - 1) - 0.01
        assert delays == [1, 2, 3]
        queue.done("a", failed=True)  # 4th failure: 0.4 s
        queue.add("a")  # an event: at once
        assert await drain(queue, timeout=0.1) == ["a"]  # done() without failure: reset
        assert queue.failures("a") == 0

    run(scenario)


def test_a_forgotten_key_is_dropped_from_the_queue_its_timers_and_its_turn():
    async def scenario():
        queue = WorkQueue()
        queue.add("a")
        queue.add("b", 0.05)
        queue.add("c")
        queue.forget("a")
        queue.forget("b")
        key = await queue.get()
        assert key == "c"
        queue.add("c")
        queue.forget("c")  # while processed
        queue.done(key, after=0)
        assert await drain(queue, timeout=0.2) == []
        queue.add("a")  # a new experiment of the same name
        assert await drain(queue) == ["a"]

    run(scenario)


def test_workers_share_the_keys_and_each_key_has_at_most_one():
    async def scenario():
        queue = WorkQueue()
        running: set[str] = set()
        peak, turns = 0, []

        async def worker():
            nonlocal peak
            while True:
                key = await queue.get()
                assert key not in running
                running.add(key)
                peak = max(peak, len(running))
                turns.append(key)
                await asyncio.sleep(0.01)
                if len(turns) < 40:
                    queue.add(key)  # woken again during its turn
                running.discard(key)
                queue.done(key)

        workers = [asyncio.create_task(worker()) for _ in range(3)]
        for key in "abcde":
            queue.add(key)
        await asyncio.sleep(0.4)
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        assert peak == 3  # the bound: three workers, five keys due
        counts = [turns.count(k) for k in "abcde"]
        assert max(counts) - min(counts) <= 1, counts  # each in its turn

    run(scenario)
