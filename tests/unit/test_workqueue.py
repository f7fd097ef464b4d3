"""The work queue of experiments (controller/workqueue.py): one place in the queue and one worker per
experiment at a time, served in the order they became due, timers where the earliest wins, a growing
delay after failures that an event cuts short, and the gap between one experiment's turns."""

from __future__ import annotations

import asyncio
import time

import pytest

from hpo_operator.controller import workqueue as workqueue_module
from hpo_operator.controller.cpu import Metered
from hpo_operator.controller.workqueue import MAX_SHARE, WorkQueue


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


def burn(seconds: float) -> None:
    """Spends `seconds` of this thread's CPU."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


def test_a_costly_turn_waits_its_cost_times_the_experiments_with_work_besides_it():
    """Three others in a turn: a turn that took 50 ms of CPU beyond the usual (none yet) waits 150 ms
    before the next, however soon it is added again; the others' turns (no cost) are not held back."""

    async def scenario():
        queue = WorkQueue()
        loop = asyncio.get_running_loop()
        for key in ("big", "s1", "s2", "s3"):
            queue.add(key)
        assert [await queue.get() for _ in range(4)] == ["big", "s1", "s2", "s3"]
        assert queue.others_with_work() == 4
        queue.done("big", after=0, cost=0.05)
        started = loop.time()
        assert queue.waiting() == 1 and len(queue) == 0
        for key in ("s1", "s2", "s3"):
            queue.done(key, after=0)
        assert await asyncio.wait_for(queue.get(), 0.05) == "s1"  # at once
        assert await queue.get() == "s2"
        assert await queue.get() == "s3"
        assert await queue.get() == "big"
        assert loop.time() - started >= 0.14

    run(scenario)


def test_alone_a_costly_turn_waits_only_its_gap():
    """Nothing else has work: its share is the whole loop, and its next turn comes at once."""

    async def scenario():
        queue = WorkQueue()
        queue.add("big")
        key = await queue.get()
        queue.add("s1", after=60)  # another experiment, waiting for its time: it has no work now
        queue.done(key, after=0, cost=0.5)
        assert await asyncio.wait_for(queue.get(), 0.1) == "big"

    run(scenario)


def test_a_turn_that_costs_the_usual_is_not_held_back():
    """Experiments of like size: only what a turn costs beyond the usual turn is a share to wait."""

    async def scenario():
        queue = WorkQueue()
        for key in ("a", "b", "c"):
            queue.add(key)
        for _ in range(3):
            await queue.get()
        queue.done("a", after=0, cost=0.3)  # beyond the usual (none yet): held back
        assert queue.waiting() == 1
        queue.done("b", after=0, cost=0.01)  # below the usual now (0.03): not held back
        assert len(queue) == 1 and queue.waiting() == 1

    run(scenario)


def test_the_cost_counts_at_most_max_share_others():
    async def scenario():
        queue = WorkQueue()
        for i in range(MAX_SHARE + 10):
            queue.add(f"s{i}")
        assert queue.others_with_work() == MAX_SHARE

    run(scenario)


def test_metered_counts_the_time_its_own_steps_hold_the_loop_not_the_tasks_that_run_while_it_waits():
    async def scenario():
        own = 0.0

        async def turn():
            nonlocal own
            for _ in range(3):
                started = time.perf_counter()
                burn(0.02)
                own += time.perf_counter() - started
                await asyncio.sleep(0.01)  # another task burns meanwhile
            return "done"

        async def other():
            for _ in range(3):
                burn(0.05)
                await asyncio.sleep(0)

        metered = Metered(turn())
        task = asyncio.get_running_loop().create_task(metered)
        await asyncio.gather(task, other())
        assert task.result() == "done"
        assert own <= metered.seconds < own + 0.05  # the other's 150 ms are not in it

    run(scenario)


def test_a_costly_experiment_takes_a_share_of_the_loop_not_the_most_of_it():
    """Workers as the runtime's: one experiment's turns each burn 20 ms of CPU on the loop, eight
    others' burn 1 ms then wait 10 ms for the API server, each woken again at once. With each turn's
    measured cost given to the queue, the costly one takes about a ninth of the loop's time, well
    under 40% of the CPU of all turns; the loop's round-robin alone would give it most of it."""

    async def scenario():
        queue = WorkQueue()
        spent: dict[str, float] = {}
        keys = ["big", *(f"s{i}" for i in range(8))]

        async def turn(key):
            if key == "big":
                burn(0.02)
                await asyncio.sleep(0)
            else:
                burn(0.001)
                await asyncio.sleep(0.01)

        async def worker():
            while True:
                key = await queue.get()
                metered = Metered(turn(key))
                await asyncio.get_running_loop().create_task(metered)
                spent[key] = spent.get(key, 0.0) + metered.seconds
                queue.done(key, after=0, cost=metered.seconds)

        workers = [asyncio.create_task(worker()) for _ in range(16)]
        for key in keys:
            queue.add(key)
        await asyncio.sleep(1.0)
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        share = spent["big"] / sum(spent.values())
        assert share < 0.4, spent

    run(scenario)


def test_a_metered_turn_that_is_cancelled_ends_cancelled_with_its_steps_counted():
    async def scenario():
        async def turn():
            burn(0.01)
            await asyncio.sleep(10)

        metered = Metered(turn())
        task = asyncio.get_running_loop().create_task(metered)
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert metered.seconds >= 0.01

    run(scenario)


def test_a_turn_held_back_by_its_share_goes_at_once_when_the_others_have_no_work_left():
    """Its share waits for the others' work; once they have none, waiting would only idle the loop."""

    async def scenario():
        queue = WorkQueue()
        for key in ("big", "s1", "s2", "s3"):
            queue.add(key)
        for _ in range(4):
            await queue.get()
        queue.done("big", after=0, cost=0.5)  # a share of 1.5 s (at most MAX_SHARE_DELAY)
        assert queue.waiting() == 1
        for key in ("s1", "s2", "s3"):
            queue.done(key)  # nothing more to do
        assert await asyncio.wait_for(queue.get(), 0.1) == "big"

    run(scenario)


def test_an_event_for_a_held_back_key_when_nothing_else_has_work_takes_its_turn_at_once():
    async def scenario():
        queue = WorkQueue()
        for key in ("big", "s1"):
            queue.add(key)
        await queue.get()
        await queue.get()
        queue.done("big", cost=0.5)  # wants no turn yet: held back, without a timer
        queue.done("s1")
        assert queue.waiting() == 0 and len(queue) == 0
        queue.add("big")  # its watch event: nobody else has work
        assert await asyncio.wait_for(queue.get(), 0.1) == "big"

    run(scenario)


def test_held_back_keys_go_in_the_order_their_shares_end():
    async def scenario():
        queue = WorkQueue()
        for key in ("big", "small", "other"):
            queue.add(key)
        for _ in range(3):
            await queue.get()
        queue.done("big", after=0, cost=0.5)  # held back 1 s (0.5 beyond the usual 0, two others)
        queue.done("small", after=0, cost=0.2)  # 0.15 s (0.15 beyond the usual 0.05, one other)
        assert queue.waiting() == 2
        queue.done("other")  # the last with work: the share that ends first goes
        assert await asyncio.wait_for(queue.get(), 0.1) == "small"
        assert queue.waiting() == 1  # big still waits: small has work now
        queue.done("small")
        assert await asyncio.wait_for(queue.get(), 0.1) == "big"

    run(scenario)


def test_the_wait_of_a_share_is_bounded(monkeypatch):
    monkeypatch.setattr(workqueue_module, "MAX_SHARE_DELAY", 0.1)

    async def scenario():
        queue = WorkQueue()
        for key in ("big", "s1", "s2"):
            queue.add(key)
        for _ in range(3):
            await queue.get()
        queue.done("big", after=0, cost=60.0)  # the others stay in their turns
        assert await asyncio.wait_for(queue.get(), 1.0) == "big"

    run(scenario)
