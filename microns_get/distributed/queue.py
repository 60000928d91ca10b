"""A thin wrapper over python-task-queue's `TaskQueue` for `fq://` and `sqs://` queues.

Owns: checking the queue URL (fq paths made absolute, so every node means the same folder),
quiet construction (no progress bars, no thread pool: inserts and deletes are cheap here), the
"nothing to lease" answer as `None` instead of an exception, counts for `queue status`, and a
record of tasks given up after repeated failures (fq only: SQS has no place for it).
Must not know what a task does: `distributed.tasks` does.
taskqueue (and boto3 behind it) is imported on first use: other commands do not pay for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microns_get.errors import BadInput

SCHEMES = ("fq", "sqs")
FAILED_DIR = "microns-get-failed"


def normalize_queue_url(url: str) -> str:
    """`fq://relative/dir` becomes `fq:///absolute/dir`; other schemes are refused."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES or not rest:
        raise BadInput(f"queue must be fq:///path/on/shared/fs or sqs://queue-name: {url!r}")
    if scheme == "fq":
        return f"fq://{Path(rest).expanduser().absolute()}"
    return url


@dataclass(frozen=True)
class QueueCounts:
    enqueued: int  # tasks in the queue, leased or not
    leased: int
    inserted: int | None  # None where the queue does not count (SQS)
    completed: int | None
    failed: int | None  # given up after repeated failures (fq only)

    def to_json(self) -> dict[str, Any]:
        return {
            "enqueued": self.enqueued,
            "leased": self.leased,
            "available": max(0, self.enqueued - self.leased),
            "inserted": self.inserted,
            "completed": self.completed,
            "failed": self.failed,
        }


def _count(value: Any) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else int(number)  # SQS answers NaN for unknown counts


class Queue:
    def __init__(self, url: str) -> None:
        try:
            from taskqueue import TaskQueue
        except ImportError:
            raise BadInput(
                "task queues need python-task-queue: pip install 'microns-get[cluster]'"
            ) from None
        self.url = normalize_queue_url(url)
        self.scheme = self.url.split("://", 1)[0]
        self.tq = TaskQueue(self.url, n_threads=0, progress=False)

    @property
    def path(self) -> Path | None:
        return Path(self.url.split("://", 1)[1]) if self.scheme == "fq" else None

    def insert(self, tasks: Iterable[Any]) -> int:
        tasks = list(tasks)
        return int(self.tq.insert(tasks, total=len(tasks)))

    def lease(self, seconds: float) -> Any | None:
        from taskqueue import QueueEmptyError

        try:
            return self.tq.lease(seconds=max(1, int(round(seconds))), num_tasks=1)
        except QueueEmptyError:
            return None

    def renew(self, task: Any, seconds: float) -> None:
        self.tq.renew(task, max(1, int(round(seconds))))

    def release(self, task: Any) -> None:
        """Give the task back now (an interrupted worker), instead of after its lease."""
        self.tq.cancel(task)

    def delete(self, task: Any) -> None:
        self.tq.delete(task, tally=True)

    def is_empty(self) -> bool:
        return bool(self.tq.is_empty())

    def counts(self) -> QueueCounts:
        return QueueCounts(
            enqueued=int(self.tq.enqueued),
            leased=int(self.tq.leased),
            inserted=_count(self.tq.inserted),
            completed=_count(self.tq.completed),
            failed=self._failed_count(),
        )

    def _failed_count(self) -> int | None:
        if self.path is None:
            return None
        directory = self._failed_dir()
        return len(os.listdir(directory)) if directory.is_dir() else 0

    def record_failed(self, key: str, detail: dict[str, Any]) -> None:
        if self.path is None:
            return
        directory = self._failed_dir()
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{key}.json").write_text(json.dumps(detail, indent=2) + "\n")

    def _failed_dir(self) -> Path:
        return (self.path or Path("/nonexistent")) / FAILED_DIR
