"""`microns-get worker`: lease a task, run it, delete it; until the queue is empty.

Owns: the worker loop and its lease discipline: the lease is renewed from a background thread
while the task runs (a long task is not handed to a second worker), a task is deleted only once
all its items are done, a failed task comes back after its lease (up to `max_attempts` tries,
then it is recorded as failed and removed), and an interrupted worker gives its task back at
once. A worker that dies simply stops renewing: its task returns after the lease runs out.
While other workers still hold leases the loop waits, since a dead worker's task may come back.
Must not plan: tasks arrive complete.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from microns_get.checkpoint import CheckpointStore
from microns_get.distributed.queue import Queue
from microns_get.distributed.tasks import (
    TASKS_DIR,
    TaskOutcome,
    TaskSpec,
    read_journal,
    run_task,
    spec_of,
    worker_state_path,
)
from microns_get.errors import BadInput, MicronsGetError
from microns_get.transfer import events as ev

DEFAULT_LEASE_SECONDS = 600
MAX_ATTEMPTS = 3


@dataclass
class WorkerSummary:
    tasks_done: int = 0
    tasks_failed: int = 0
    items_fetched: int = 0
    items_already_done: int = 0
    bytes_moved: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, outcome: TaskOutcome) -> None:
        self.items_fetched += outcome.fetched
        self.items_already_done += outcome.already_done
        self.bytes_moved += outcome.bytes_moved
        if outcome.ok:
            self.tasks_done += 1
        else:
            self.tasks_failed += 1
            self.errors.extend(outcome.failures[:5])


class LeaseKeeper:
    """Renews one lease every third of its length until stopped."""

    def __init__(self, queue: Queue, task: Any, seconds: float) -> None:
        self.queue, self.task, self.seconds = queue, task, seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(max(0.5, self.seconds / 3)):
            try:
                self.queue.renew(self.task, self.seconds)
            except Exception:  # noqa: BLE001 - the task is gone (deleted elsewhere): stop
                return


@dataclass
class WorkerConfig:
    settings: Any
    dest: Path | None = None  # overrides the task's own destination
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    poll_seconds: float | None = None  # default: a third of the lease, at most 10 s
    max_attempts: int = MAX_ATTEMPTS
    throttle: Callable[[int], Any] | None = None


class Worker:
    def __init__(self, queue: Queue, config: WorkerConfig, emit: ev.Emit = ev.ignore) -> None:
        self.queue = queue
        self.config = config
        self.emit = emit
        self.summary = WorkerSummary()
        self._stores: dict[Path, CheckpointStore] = {}

    def run(self) -> WorkerSummary:
        try:
            while True:
                task = self.queue.lease(self.config.lease_seconds)
                if task is None:
                    if self.queue.is_empty():
                        return self.summary
                    time.sleep(self._poll_seconds())  # only leased tasks left: they may return
                    continue
                self._run_leased(task)
        finally:
            for store in self._stores.values():
                store.close()

    def _poll_seconds(self) -> float:
        if self.config.poll_seconds is not None:
            return self.config.poll_seconds
        return min(10.0, max(0.5, self.config.lease_seconds / 3))

    def _run_leased(self, task: Any) -> None:
        spec = spec_of(task)
        dest = self._dest(spec)
        try:
            with LeaseKeeper(self.queue, task, self.config.lease_seconds):
                outcome = asyncio.run(self._run_spec(spec, dest))
        except (KeyboardInterrupt, SystemExit):
            self.queue.release(task)  # back to the queue now, not after the lease
            raise
        except MicronsGetError as exc:
            outcome = TaskOutcome(spec.key, len(spec.items), failed=1, failures=[str(exc)])
        self.summary.add(outcome)
        if outcome.ok:
            self.queue.delete(task)
        else:
            self._failed(task, spec, dest, outcome)

    async def _run_spec(self, spec: TaskSpec, dest: Path) -> TaskOutcome:
        store = self._store(dest)
        return await run_task(
            spec, dest, self.config.settings, store, self.emit, self.config.throttle
        )

    def _failed(self, task: Any, spec: TaskSpec, dest: Path, outcome: TaskOutcome) -> None:
        attempts = read_journal(dest / ".microns-get" / TASKS_DIR / spec.key).failures
        if attempts < self.config.max_attempts:
            return  # leave it leased: it comes back when the lease runs out
        self.queue.record_failed(
            spec.key, {"attempts": attempts, "dest": str(dest), "errors": outcome.failures[:20]}
        )
        self.queue.delete(task)

    def _dest(self, spec: TaskSpec) -> Path:
        dest = self.config.dest or (Path(spec.dest) if spec.dest else None)
        if dest is None:
            raise BadInput(f"task {spec.key} names no destination: give the worker --dest")
        return dest

    def _store(self, dest: Path) -> CheckpointStore:
        if dest not in self._stores:
            state = Path(self.config.settings.state_dir or dest / ".microns-get")
            self._stores[dest] = CheckpointStore.open(worker_state_path(state))
        return self._stores[dest]
