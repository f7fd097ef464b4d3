"""The experiment page's data, computed once per version of the experiment: its trial rows (and
their JSON, row by row, reused while a trial is unchanged), its recovery view, the study its plots
share and the plots themselves (with several objectives, each plot for each objective the page
asked for). The store bumps an experiment's version on every change to it or one of its trials
(cluster.py), so an answer is rebuilt only when there is something new in it.

The figures are keyed by what the request asks for (the objective, the trials chosen for the
curves: any text), so they share one LRU bounded in entries and bytes (lru.py): distinct query
strings evict older figures instead of growing the server's memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread

from . import data, figures
from .cluster import Key, Store
from .lru import Lru
from .study import TrialStudy, build_study

log = logging.getLogger(__name__)

# A study for the plots is rebuilt at most this often while an experiment changes: at least every
# STUDY_MIN_AGE seconds, and no more often than twice the time the last one took to build.
STUDY_MIN_AGE = 1.0
# Every figure kept, of every experiment: at most this many, and this many bytes of JSON in all
# (a 10,000-trial parallel-coordinates figure is a few MB; a larger one is built, sent, not kept).
FIGURE_ENTRIES = 256
FIGURE_BYTES = 64 * 1024 * 1024


@dataclass
class _Entry:
    # Three locks: the table is not kept waiting for the plots, nor the metric curves (a few
    # trials) for the study of all of them.
    rows_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    plot_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    curves_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    rows_version: int = -1
    rows: list[dict] = field(default_factory=list)
    rows_json: bytes = b"[]"
    row_cache: dict[str, tuple[Any, dict, str]] = field(default_factory=dict)
    recovery_version: int = -1
    recovery_json: bytes = b"{}"
    study_version: int = -1
    study: TrialStudy | None = None
    study_built: float = 0.0
    study_seconds: float = 0.0
    study_spec: dict = field(default_factory=dict)
    study_trials: list[dict] = field(default_factory=list)


def _versioned(figure_json: str, version: int) -> bytes:
    """The figure with the experiment version it shows (the page skips redrawing the same one)."""
    return (f'{{"version":{version},' + figure_json.lstrip()[1:]).encode()


def _compact(row: dict) -> dict:
    return {k: v for k, v in row.items() if v is not None and v != {}}


class PageCache:
    """The experiment page's data for each experiment, cached by its version. The work runs in a
    worker thread, so the event loop goes on serving (and watching) meanwhile."""

    def __init__(self, store: Store, figure_entries: int = FIGURE_ENTRIES, figure_bytes: int = FIGURE_BYTES):
        self.store = store
        self.entries: dict[Key, _Entry] = {}
        # (experiment, kind, what was asked) -> (the experiment's version, the figure's JSON)
        self.figures: Lru[tuple, tuple[int, bytes]] = Lru(
            figure_entries, max_bytes=figure_bytes, size=lambda item: len(item[1])
        )

    def _entry(self, key: Key) -> _Entry:
        if key not in self.entries and len(self.entries) >= 64:
            self.forget()
        return self.entries.setdefault(key, _Entry())

    @staticmethod
    def _build_rows(entry: _Entry, trials: list[dict]) -> None:
        rows, parts, cache = [], [], {}
        for t in data.creation_order(trials):
            meta = t.get("metadata") or {}
            name, version = meta.get("name", ""), meta.get("resourceVersion")
            hit = entry.row_cache.get(name)
            if hit is None or version is None or hit[0] != version:
                row = data.trial_row(t)
                hit = (version, row, json.dumps(_compact(row), separators=(",", ":")))
            cache[name] = hit
            rows.append(hit[1])
            parts.append(hit[2])
        entry.row_cache, entry.rows = cache, rows
        entry.rows_json = ("[" + ",".join(parts) + "]").encode()

    async def rows(self, key: Key) -> tuple[_Entry, int]:
        entry = self._entry(key)
        async with entry.rows_lock:
            version = self.store.version(key)
            if entry.rows_version != version:
                await anyio.to_thread.run_sync(self._build_rows, entry, self.store.trials_of(key))
                entry.rows_version = version
        return entry, version

    async def trials_json(self, key: Key) -> bytes:
        entry, _ = await self.rows(key)
        return entry.rows_json

    async def recovery_json(self, key: Key) -> bytes:
        entry, _ = await self.rows(key)
        async with entry.rows_lock:
            if entry.recovery_version != entry.rows_version:
                rows = entry.rows
                result = await anyio.to_thread.run_sync(lambda: data.recovery(rows))
                entry.recovery_json = json.dumps(result, separators=(",", ":")).encode()
                entry.recovery_version = entry.rows_version
        return entry.recovery_json

    async def figure_json(self, key: Key, kind: str, metric: str | None, chosen: tuple[str, ...]) -> bytes:
        entry = self._entry(key)
        if kind == "curves":  # a few trials: no study to share, built for each version
            async with entry.curves_lock:
                version, trials = self.store.version(key), self.store.trials_of(key)
                spec = (self.store.experiments.get(key) or {}).get("spec") or {}  # deleted meanwhile: 422
                cached = self.figures.get((key, kind, metric, chosen))
                if cached is None or cached[0] != version:
                    fig = await anyio.to_thread.run_sync(
                        lambda: figures.to_json(figures.curves(spec, trials, metric, chosen))
                    )
                    cached = (version, _versioned(fig, version))
                    self.figures.put((key, kind, metric, chosen), cached)
                return cached[1]
        async with entry.plot_lock:
            if entry.study is None or entry.study_version != self.store.version(key):
                # While the experiment keeps changing, rebuild at most every STUDY_MIN_AGE seconds
                # (or twice the last build's time): the answer waits, and is never older than the
                # experiment was when it was asked for.
                wait = entry.study_built + max(STUDY_MIN_AGE, 2 * entry.study_seconds) - time.monotonic()
                if entry.study is not None and wait > 0:
                    await asyncio.sleep(wait)
                version, trials = self.store.version(key), self.store.trials_of(key)
                spec = (self.store.experiments.get(key) or {}).get("spec") or {}  # deleted meanwhile: 422
                started = time.monotonic()
                entry.study = await anyio.to_thread.run_sync(build_study, spec, trials)
                entry.study_built = time.monotonic()
                entry.study_seconds = entry.study_built - started
                entry.study_version = version
                entry.study_spec, entry.study_trials = spec, trials
            # Per objective shown (several objectives): one figure for each the page chose. An
            # unknown objective raises ValueError here, before anything is cached for it.
            study = entry.study
            objective = study.objectives[study.objective(metric)] if study.multi and kind != "pareto" else None
            cached = self.figures.get((key, kind, objective))
            if cached is None or cached[0] != entry.study_version:
                spec, trials = entry.study_spec, entry.study_trials
                fig = await anyio.to_thread.run_sync(
                    lambda: figures.to_json(figures.figure(kind, spec, trials, study=study, metric=objective))
                )
                cached = (entry.study_version, _versioned(fig, entry.study_version))
                self.figures.put((key, kind, objective), cached)
            return cached[1]

    async def warm(self, key: Key) -> None:
        """Starts on what the experiment page asks for, while the browser loads the page: its
        rows and recovery view first, then the study its plots share (the page asks for the plots
        once its table is drawn and plotly.js runs)."""
        try:
            await self.recovery_json(key)
            await self.figure_json(key, "history", None, ())
        except Exception:  # noqa: BLE001  the page's own requests will say what is wrong
            log.debug("warming %s failed", key, exc_info=True)

    async def warm_all(self) -> None:
        """Once the first listing is in: the rows and recovery view of every experiment, the
        largest first, so that even an experiment's first view finds its table ready."""
        await self.store.synced.wait()
        for key in sorted(self.store.experiments, key=lambda k: -len(self.store.trials.get(k, {}))):
            if key in self.store.experiments:
                try:
                    await self.recovery_json(key)
                except Exception:  # noqa: BLE001  its page's own requests will say what is wrong
                    log.debug("preparing %s failed", key, exc_info=True)

    def forget(self) -> None:
        """Drops what was computed for experiments that no longer exist."""
        for key in [k for k in self.entries if k not in self.store.experiments]:
            del self.entries[key]
        self.figures.drop_if(lambda k: k[0] not in self.store.experiments)
