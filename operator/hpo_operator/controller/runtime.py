"""The operator's registry: one loop per Experiment (loop.py), the work queue and workers that run
their rounds, the informers of every namespace that has one (namespace.py), and a monitor of their
watches.

kopf hands each Experiment event to Runtime.on_experiment() (handlers.py), which makes, wakes or
drops that experiment's loop; a namespace's informers start with its first experiment and stop with
its last. Watch events queue their experiment (workqueue.py); ROUND_WORKERS workers take the
experiments in the order they became due and run one turn each (ExperimentLoop.turn), so at most that
many rounds run at once and none experiment waits behind another's burst for longer than its turn.
The monitor logs a watch outage and its end, and unhealthy() serves the liveness probe:
both count the operator's own watches only (its Trials and trial pods). A trial kind's watch, or
the checkpoint claims', is down when the platform's RBAC refuses it, which a restart cannot mend:
the experiments that need it say so (loop.py), and the others go on.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import time

from hpo_operator.api.trial_kinds import GroupKind
from hpo_operator.kube.client import KubeClient
from hpo_operator.kube.informer import WatchHealth

from . import telemetry
from .authority import Authority, Tenancy
from .cpu import Metered
from .executor import PostEvent
from .loop import ExperimentLoop, error_delay
from .namespace import Key, Namespace
from .pending import Pacing, same_but_status
from .slim import slim_custom_object
from .workqueue import WorkQueue

# A watch down this long is logged as a Warning (and its return as well).
UNREACHABLE_WARN_SECONDS = float(os.environ.get("HPO_UNREACHABLE_WARN_SECONDS", "30"))
# A watch down this long makes the liveness probe fail, so that the kubelet restarts the operator:
# whatever keeps it down (a client state gone bad, a task that ended) goes with the process.
WATCH_DOWN_LIVENESS_SECONDS = float(os.environ.get("HPO_WATCH_DOWN_LIVENESS_SECONDS", "300"))
# Rounds (or flushes) running at once, across every experiment. A round spends most of its time
# waiting for its writes, which the API's fair share (kube/fair.py) orders: this many keep it fed
# when hundreds of experiments start at once, and no more hold plans in memory.
ROUND_WORKERS = int(os.environ.get("HPO_MAX_CONCURRENT_ROUNDS", "128"))

log = logging.getLogger(__name__)


class Runtime:
    """Every experiment's loop, and the informers they read the Trials and pods from: one set per
    namespace that has an experiment."""

    def __init__(
        self,
        api: KubeClient,
        post_event: PostEvent,
        allowed_kinds: frozenset[GroupKind] | None = None,
        tenancy: Tenancy | None = None,
    ):
        self.api = api
        self.post_event = post_event
        # The trial kinds the platform enabled (api/trial_kinds.py; None: every kind).
        self.allowed_kinds = allowed_kinds
        # With tenancy on, trials' workloads are checked against their author's rights and written
        # as the namespace's trial ServiceAccount (authority.py).
        self.authority = Authority(api, tenancy) if tenancy is not None and tenancy.on else None
        self.namespaces: dict[str, Namespace] = {}
        self.loops: dict[Key, ExperimentLoop] = {}
        self.queue: WorkQueue[Key] = WorkQueue(backoff=error_delay)
        # The context kopf hands its handlers (its Event poster lives in it: kopf.event needs it),
        # for the turns the workers run; taken from the latest Experiment event.
        self.context: contextvars.Context | None = None
        # The turns of the writes that wait, across every experiment (coalesce.py).
        self.pacing = Pacing()
        # Set once the operator stops: kopf may still hand over an Experiment event after its cleanup
        # ran, which must not start a loop (and informers) on the closed API client.
        self.stopped = False
        tasks = asyncio.get_running_loop()
        self.monitor = tasks.create_task(self.watch_health(), name="watch health")
        self.workers = [tasks.create_task(self.work(), name=f"round worker {i}") for i in range(ROUND_WORKERS)]
        telemetry.watch_source(self.watches)
        telemetry.queue_source(lambda: len(self.queue))

    def watches(self) -> list[tuple[str, WatchHealth]]:
        """Every informer's health, with its namespace (for the metrics)."""
        return [(ns.name, i.health) for ns in self.namespaces.values() for i in ns.informers()]

    def own_watches(self) -> list[WatchHealth]:
        """The health of the watches of the operator's own objects (Namespace.own_informers), and
        of any whose loop ended (a bug: only a restart lists it again)."""
        return [
            i.health
            for ns in self.namespaces.values()
            for i in ns.informers()
            if i.health.ended or i in ns.own_informers()
        ]

    def longest_down(self, now: float) -> tuple[WatchHealth | None, int]:
        """The own watch down the longest (None: all are up), and how many are down."""
        down = [h for h in self.own_watches() if h.down_since is not None]
        return max(down, key=lambda h: h.down_for(now), default=None), len(down)

    def unhealthy(self, now: float | None = None) -> str | None:
        """Why the liveness probe should fail, if it should: an own informer down for too long."""
        now = now or time.monotonic()
        worst, _ = self.longest_down(now)
        if worst is not None and worst.down_for(now) >= WATCH_DOWN_LIVENESS_SECONDS:
            return f"{worst.where} has been down for {worst.down_for(now):.0f} s: {worst.error}"
        return None

    async def watch_health(self) -> None:
        """Says when the watches have been down for UNREACHABLE_WARN_SECONDS (the API server restarting,
        unreachable, or refusing us), and when they are all back: a user who sees experiments stand
        still finds why in the log, not only in kopf's retries."""
        outage: float | None = None  # monotonic start of the outage that was reported
        while True:
            await asyncio.sleep(1)
            now = time.monotonic()
            longest, down = self.longest_down(now)
            if longest is not None and outage is None:
                if longest.down_for(now) >= UNREACHABLE_WARN_SECONDS:
                    outage = longest.down_since
                    log.warning(
                        "cannot watch the API server for %.0f s (%d of %d watches down; %s: %s); "
                        "experiments wait, and go on once it answers",
                        longest.down_for(now),
                        down,
                        len(self.own_watches()),
                        longest.where,
                        longest.error,
                    )
            elif longest is None and outage is not None:
                log.warning(
                    "the API server answers again after %.0f s: every watch listed again, experiments go on",
                    now - outage,
                )
                outage = None

    async def work(self) -> None:
        """A worker: takes the next experiment due and runs its turn, for as long as it runs."""
        while True:
            key = await self.queue.get()
            loop = self.loops.get(key)
            if loop is None:
                self.queue.done(key)
                continue
            # A task of its own, so that the experiment's deletion can cancel its turn (not the
            # worker), in a copy of kopf's context (turns set their own FLOW in it).
            # Its CPU measured (cpu.py), for its share of the event loop (the queue's cost).
            turn = Metered(loop.turn())
            loop.task = task = asyncio.get_running_loop().create_task(
                turn, name=f"experiment {key[0]}/{key[1]}", context=self.context.copy() if self.context else None
            )
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:
                task.cancel()
                raise
            finally:
                loop.task = None
            if task.cancelled():
                self.queue.done(key)  # it was dropped (stop())
                continue
            if task.exception() is not None:  # a bug: turn() reports every failure of a round itself
                log.error("%s/%s: the turn failed", *key, exc_info=task.exception())
                self.queue.done(key, failed=True)
                continue
            after, failed, gap = task.result()
            self.queue.done(key, after, failed=failed, gap=gap, cost=turn.seconds + loop.take_thread_seconds())

    def namespace(self, name: str) -> Namespace:
        ns = self.namespaces.get(name)
        if ns is None:
            ns = self.namespaces[name] = Namespace(self.api, name, self.wake, self.wake_namespace, self.echo)
        return ns

    def wake(self, key: Key) -> None:
        loop = self.loops.get(key)
        if loop is not None:
            loop.event = True
            self.queue.add(key)

    def echo(self, key: Key, name: str, before: dict | None, now: dict) -> bool:
        """Whether a Trial's change only brings back what its experiment's loop wrote (PendingWrites.echo)."""
        loop = self.loops.get(key)
        return loop is not None and loop.written.echo(name, before, now)

    def wake_namespace(self, namespace: str) -> None:
        for key in [k for k in self.loops if k[0] == namespace]:
            self.wake(key)

    def on_experiment(self, deleted: bool, namespace: str, name: str, uid: str, body: dict) -> None:
        if self.stopped:
            return
        self.context = contextvars.copy_context()
        key = (namespace, name)
        loop = self.loops.get(key)
        if deleted or (body.get("metadata") or {}).get("deletionTimestamp"):
            # Nothing to do on deletion: ownerReferences let the garbage collector remove the
            # trials and pods.
            if loop is not None:
                self.stop(key)
            return
        if loop is not None and loop.uid != uid:
            self.stop(key)  # an experiment deleted and created again under the same name
            loop = None
        slim = slim_custom_object(body)
        if loop is None:
            self.namespace(namespace)
            self.loops[key] = ExperimentLoop(self, key, uid, slim)
            self.queue.add(key, new=True)  # its first turn before the others' next ones
            return
        if not news(loop.body, slim, loop.written.experiment_status):
            loop.body = slim  # our own status write coming back: nothing for a round to see
            return
        loop.body = slim
        self.wake(key)

    def stop(self, key: Key) -> None:
        loop = self.loops.pop(key, None)
        self.queue.forget(key)
        if loop is not None:
            if loop.task is not None:
                loop.task.cancel()
            telemetry.experiment_phase(loop.uid, None)
        if not any(k[0] == key[0] for k in self.loops):
            # No experiment left in the namespace: nothing there to watch for.
            for task in self.namespaces.pop(key[0]).tasks if key[0] in self.namespaces else ():
                task.cancel()

    async def stop_all(self) -> None:
        self.stopped = True
        tasks = [loop.task for loop in self.loops.values() if loop.task is not None]
        tasks += [t for ns in self.namespaces.values() for t in ns.tasks]
        tasks += self.workers
        self.loops.clear()
        self.namespaces.clear()
        tasks.append(self.monitor)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.api.close()

    def size(self) -> int:
        return len(self.loops)


def news(old: dict, new: dict, written: dict | None) -> bool:
    """Whether an Experiment's new version says anything a round has not seen: a change other than
    its status (its spec, labels, annotations, deletion), or a status other than the one the
    operator wrote last. Every status write of ours comes back as an event, which must not cost a
    round of its own."""
    status = new.get("status") or {}
    if status != (old.get("status") or {}) and status != written:
        return True
    return not same_but_status(old, new)
