"""Many small objects: threads that each fetch and land one object after another.

Why: with thousands of small objects the cost per object is Python on the event loop (an
aiohttp request, futures, a thread hop to land the file), not the network. Here each of `jobs`
threads takes objects from a shared queue and does the whole object itself: a GET over its
keep-alive connection (`sources.direct`), hash, temp file, fsync, rename (`Engine.land`). The
event loop only records what finished.

Owns: the fast path's loop and when to leave it. An object that fails here for any reason (a
retryable error, a checksum mismatch, a changed object, a full disk) is handed back untouched
to the engine's ordinary path, which owns retries, failover, refetching and error reports. After
a few failures in a row the fast path stops taking objects: a sick mirror or a full disk is the
ordinary path's business. Must not retry, choose mirrors or write records itself.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from microns_get.plan.model import PlanItem, RemoteCopy
from microns_get.sources.direct import DirectReader, call_on

FAILURES_IN_A_ROW = 3  # then the fast path stops: the ordinary path deals with what is wrong


@dataclass(frozen=True)
class SmallJob:
    item: PlanItem
    copy: RemoteCopy  # the mirror chosen for it
    key: str
    url: str
    headers: Mapping[str, str] | None
    final: Path


# (job) -> (verification method, detail); runs on a fast-path thread
Land = Callable[[SmallJob, bytearray], tuple[str, str]]
# (job, method, detail) -> None; runs on the event loop
Done = Callable[[SmallJob, str, str], None]


class SmallObjects:
    """One batch of small objects through `jobs` threads; `run` returns those handed back."""

    def __init__(self, reader: DirectReader, jobs: int, land: Land, done: Done) -> None:
        self.reader = reader
        self.jobs = jobs
        self.land = land
        self.done = done
        self._queue: deque[SmallJob] = deque()
        self._handed_back: deque[tuple[SmallJob, str]] = deque()
        self._stop = threading.Event()
        self._failures_in_a_row = 0
        self._results: deque[tuple[SmallJob, str, str]] = deque()
        self._wake_pending = False
        self._lock = threading.Lock()

    async def run(self, jobs: list[SmallJob]) -> list[tuple[SmallJob, str]]:
        """Every job, done (reported through `done`) or handed back with why it failed
        ("" when the fast path stopped before taking it)."""
        if not jobs:
            return []
        self._queue.extend(jobs)
        loop = asyncio.get_running_loop()
        threads = min(self.jobs, len(jobs))
        try:
            with ThreadPoolExecutor(threads, thread_name_prefix="small") as executor:
                await asyncio.gather(
                    *(
                        call_on(executor, lambda: self._loop(loop), self._stop.set)
                        for _ in range(threads)
                    )
                )
        finally:
            # results queued after the last wake-up, also when cancelled (Ctrl-C): what landed
            # gets its record now instead of being checked again by the next run
            self._deliver()
        # stopped early: what nobody took goes back too
        self._handed_back.extend((job, "") for job in self._queue)
        self._queue.clear()
        return list(self._handed_back)

    def _loop(self, loop: asyncio.AbstractEventLoop) -> None:
        while not self._stop.is_set():
            try:
                job = self._queue.popleft()  # deque.popleft is atomic: no lock needed
            except IndexError:
                return
            try:
                data = self.reader.get_bytes(job.url, job.headers, job.copy.size or 0)
                method, detail = self.land(job, data)
            except Exception as exc:  # noqa: BLE001 - the ordinary path reports failures
                self._handed_back.append((job, str(exc) or type(exc).__name__))
                self._failed()
                continue
            self._finished(loop, job, method, detail)

    def _finished(
        self, loop: asyncio.AbstractEventLoop, job: SmallJob, method: str, detail: str
    ) -> None:
        """Queue the result for the loop; wake it only if no wake-up is pending already (one
        wake-up per object would cost a syscall and a GIL handover each)."""
        self._results.append((job, method, detail))
        with self._lock:
            self._failures_in_a_row = 0
            if self._wake_pending:
                return
            self._wake_pending = True
        loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            self._wake_pending = False
        while self._results:
            self.done(*self._results.popleft())

    def _failed(self) -> None:
        with self._lock:
            self._failures_in_a_row += 1
            if self._failures_in_a_row >= FAILURES_IN_A_ROW:
                self._stop.set()
