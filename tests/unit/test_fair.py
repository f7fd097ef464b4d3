"""The fair share of requests in flight (kube/fair.py): a bound overall and per experiment, and
waiting requests served by fair queuing, so that one experiment's thousand writes do not go ahead
of another's one."""

from __future__ import annotations

import asyncio

from hpo_operator.kube.fair import FLOW, FairLimiter


class Server:
    """Requests that take `seconds` each, through the limiter; records who was served when."""

    def __init__(self, limiter: FairLimiter, seconds: float = 0.005):
        self.limiter, self.seconds = limiter, seconds
        self.served: list[str] = []
        self.in_flight: dict[str, int] = {}
        self.peak = 0
        self.peak_of: dict[str, int] = {}

    async def request(self, flow: str) -> None:
        async with self.limiter.slot(flow):
            self.in_flight[flow] = self.in_flight.get(flow, 0) + 1
            self.peak = max(self.peak, sum(self.in_flight.values()))
            self.peak_of[flow] = max(self.peak_of.get(flow, 0), self.in_flight[flow])
            await asyncio.sleep(self.seconds)
            self.in_flight[flow] -= 1
            self.served.append(flow)


def test_a_burst_does_not_go_ahead_of_anothers_single_request():
    """Experiment a asks for 300 writes at once; b asks for one a moment later: b is served after at
    most a few of a's, not after all of them (a plain semaphore serves them in arrival order)."""

    async def scenario():
        server = Server(FairLimiter(4, 3))
        burst = [asyncio.create_task(server.request("a")) for _ in range(300)]
        await asyncio.sleep(0.02)  # a's first few are served
        served_before = len(server.served)
        await server.request("b")
        await asyncio.gather(*burst)
        return server.served.index("b") - served_before

    # b waits for the requests in flight and one or two more, whatever the burst's size.
    assert asyncio.run(scenario()) <= 4


def test_busy_flows_take_turns():
    async def scenario():
        server = Server(FairLimiter(1))
        tasks = [asyncio.create_task(server.request(flow)) for flow in ["a"] * 10 + ["b"] * 10]
        await asyncio.gather(*tasks)
        return server.served

    served = asyncio.run(scenario())
    # a had the slot first; from then on the two alternate.
    assert served[1:19] == ["b", "a"] * 9 or served[1:19] == ["a", "b"] * 9


def test_the_bounds_hold_overall_and_per_flow_and_a_lone_flow_gets_its_whole_share():
    async def scenario():
        server = Server(FairLimiter(8, 5))
        await asyncio.gather(*(server.request("a") for _ in range(50)))
        alone = server.peak
        await asyncio.gather(*(server.request(f) for f in ["a", "b", "c"] * 30))
        return alone, server.peak, server.peak_of

    alone, peak, peak_of = asyncio.run(scenario())
    assert alone == 5  # no slot kept back from a flow that is alone, up to its bound
    assert peak == 8
    assert max(peak_of.values()) == 5


def test_requests_without_a_flow_take_the_context_ones():
    """The executor's writes name no experiment: the round sets FLOW, and the tasks it starts
    (every write of a stage is one) inherit it."""

    async def scenario():
        limiter = FairLimiter(1)
        seen = []

        async def write():
            await limiter.acquire(FLOW.get())
            seen.append(FLOW.get())
            limiter.release(FLOW.get())

        async def round_of(key):
            FLOW.set(key)
            await asyncio.gather(write(), write())

        await asyncio.gather(asyncio.create_task(round_of(("ns", "a"))), asyncio.create_task(round_of(("ns", "b"))))
        return sorted(seen)

    assert asyncio.run(scenario()) == [("ns", "a"), ("ns", "a"), ("ns", "b"), ("ns", "b")]


def test_a_cancelled_wait_leaves_no_slot_taken_and_no_turn_lost():
    async def scenario():
        limiter = FairLimiter(1)
        await limiter.acquire("a")
        waiting_b = asyncio.create_task(limiter.acquire("b"))
        waiting_c = asyncio.create_task(limiter.acquire("c"))
        await asyncio.sleep(0.01)
        waiting_b.cancel()
        await asyncio.gather(waiting_b, return_exceptions=True)
        limiter.release("a")
        await asyncio.wait_for(waiting_c, 1)  # c got the slot b gave up
        assert limiter.in_flight == 1
        # Granted, but cancelled before it ran: the slot goes on.
        waiting_d = asyncio.create_task(limiter.acquire("d"))
        await asyncio.sleep(0.01)
        limiter.release("c")
        waiting_d.cancel()
        await asyncio.gather(waiting_d, return_exceptions=True)
        assert limiter.in_flight == 0 and limiter.waiters() == 0
        await asyncio.wait_for(limiter.acquire("e"), 1)

    asyncio.run(scenario())


def test_a_flow_that_went_quiet_is_forgotten():
    async def scenario():
        limiter = FairLimiter(2)
        for i in range(100):
            async with limiter.slot(("ns", f"exp{i}")):
                pass
        return len(limiter._last_tag), len(limiter._flow_in_flight)

    assert asyncio.run(scenario()) == (0, 0)
