"""Tasks: a plan split for many machines, and one task run on this machine.

Owns: splitting a plan into tasks (batches of whole items, by count and bytes; pure), the task
payload (versioned JSON inside a python-task-queue function task), and running one task with the
ordinary engine. A task is idempotent across workers: each worker appends the items it finished
to its own journal in `STATE/tasks/<task>/<host>-<pid>.jsonl` (one writer per file, so appends
never interleave on NFS), and an item whose final file has the planned size and whose journal
entry carries the planned identity is not fetched again. A finished task leaves a `done` mark.
Items are not split across machines: an item's temp file, part records and verification belong
to one process.
Must not lease or delete queue entries: the worker loop (`distributed.worker`) does.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from microns_get.checkpoint import CheckpointStore
from microns_get.errors import BadInput
from microns_get.plan.model import Plan, PlanItem, RemoteCopy
from microns_get.sources import make_session
from microns_get.transfer import events as ev
from microns_get.transfer.engine import Engine, content_identity

try:
    from taskqueue import queueable
except ImportError:  # no `cluster` extra: tasks can still be built and run, not queued

    def queueable(fn: Any) -> Any:
        return fn


TASK_FORMAT = 1
TASKS_DIR = "tasks"
WORKERS_DIR = "workers"
DONE_MARK = "done"
DEFAULT_TASK_ITEMS = 200
DEFAULT_TASK_BYTES = 4 << 30


@dataclass(frozen=True)
class TaskSpec:
    """One batch of a plan. `key` names it everywhere (journals, marks, failure records)."""

    plan_id: str
    index: int
    count: int
    request: dict[str, Any]
    part_size: int
    mirror: str
    items: tuple[PlanItem, ...]
    dest: str | None = None

    @property
    def key(self) -> str:
        return f"{self.plan_id}-{self.index:06d}"

    def plan(self, items: tuple[PlanItem, ...] | None = None) -> Plan:
        return Plan(
            request=self.request,
            items=self.items if items is None else items,
            part_size=self.part_size,
            mirror=self.mirror,
        )

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["items"] = [asdict(item) for item in self.items]
        return {"format": TASK_FORMAT, **body}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskSpec:
        if data.get("format") != TASK_FORMAT:
            raise BadInput(f"task format {data.get('format')!r} is not {TASK_FORMAT}: upgrade")
        items = tuple(
            PlanItem(i["path"], i["size"], tuple(RemoteCopy(**c) for c in i["copies"]))
            for i in data["items"]
        )
        fields = {k: data[k] for k in ("plan_id", "index", "count", "request", "part_size")}
        return cls(**fields, mirror=data["mirror"], items=items, dest=data.get("dest"))


def split_plan(
    plan: Plan,
    dest: str | None = None,
    max_items: int = DEFAULT_TASK_ITEMS,
    max_bytes: int = DEFAULT_TASK_BYTES,
) -> list[TaskSpec]:
    """Consecutive batches of at most `max_items` items and `max_bytes` bytes (an item larger
    than `max_bytes` is a task of its own). Pure; the same plan always splits the same way."""
    batches: list[list[PlanItem]] = []
    size = 0
    for item in plan.items:
        if not batches or len(batches[-1]) >= max_items or size + item.size > max_bytes:
            batches.append([])
            size = 0
        batches[-1].append(item)
        size += item.size
    plan_id = plan.plan_id
    return [
        TaskSpec(plan_id, i, len(batches), dict(plan.request), plan.part_size, plan.mirror,
                 tuple(batch), dest)
        for i, batch in enumerate(batches)
    ]  # fmt: skip


# -- the queue form --------------------------------------------------------------------------


@queueable
def mirror_task(task: dict[str, Any]) -> None:
    """The registered function task-queue stores; also runnable by task-queue's own `poll`
    (default settings, DEST from the task)."""
    from microns_get.config import resolve_settings

    spec = TaskSpec.from_json(task)
    if spec.dest is None:
        raise BadInput(f"task {spec.key} names no destination: run it with `microns-get worker`")
    settings = resolve_settings({})
    dest = Path(spec.dest)
    with CheckpointStore.open(worker_state_path(dest / ".microns-get")) as store:
        asyncio.run(run_task(spec, dest, settings, store))


def queue_form(spec: TaskSpec) -> partial[None]:
    return partial(mirror_task, task=spec.to_json())


def spec_of(leased: Any) -> TaskSpec:
    """The TaskSpec inside a leased task-queue task; refuses tasks of other programs."""
    key = tuple(getattr(leased, "key", ()) or ())
    if key != (mirror_task.__module__, mirror_task.__name__):
        raise BadInput(f"not a microns-get task: {key or type(leased).__name__}")
    return TaskSpec.from_json(leased.kwargs["task"])


# -- journals: what is already done, across workers ------------------------------------------


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def worker_state_path(state: Path) -> Path:
    """Each worker its own checkpoint: SQLite must never be shared over NFS."""
    return state / WORKERS_DIR / f"{worker_name()}.sqlite"


@dataclass
class Journal:
    """What the workers that ran one task recorded, read from its folder."""

    done: dict[str, str] = field(default_factory=dict)  # path -> identity
    failures: int = 0
    complete: bool = False


def read_journal(task_dir: Path) -> Journal:
    journal = Journal(complete=(task_dir / DONE_MARK).exists())
    if not task_dir.is_dir():
        return journal
    for path in sorted(task_dir.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a torn last line of a killed worker
            if "path" in entry:
                journal.done[entry["path"]] = entry["identity"]
            elif "failed" in entry:
                journal.failures += 1
    return journal


def append_journal(task_dir: Path, entry: dict[str, Any]) -> None:
    task_dir.mkdir(parents=True, exist_ok=True)
    with open(task_dir / f"{worker_name()}.jsonl", "a") as out:
        out.write(json.dumps(entry, separators=(",", ":")) + "\n")
        out.flush()
        os.fsync(out.fileno())


def complete_on_disk(item: PlanItem, dest: Path, journal: Journal) -> bool:
    if journal.done.get(item.path) != content_identity(item.primary):
        return False
    try:
        return (dest / item.path).stat().st_size == item.size
    except FileNotFoundError:
        return False


# -- running one task ------------------------------------------------------------------------


@dataclass
class TaskOutcome:
    key: str
    items: int
    fetched: int = 0
    already_done: int = 0
    failed: int = 0
    bytes_moved: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0


async def run_task(
    spec: TaskSpec,
    dest: Path,
    settings: Any,
    store: CheckpointStore,
    emit: ev.Emit = ev.ignore,
    throttle: Callable[[int], Awaitable[None]] | None = None,
) -> TaskOutcome:
    """Fetch what the task's journal does not prove done; journal each finished item."""
    task_dir = dest / ".microns-get" / TASKS_DIR / spec.key
    journal = read_journal(task_dir)
    todo = tuple(i for i in spec.items if not complete_on_disk(i, dest, journal))
    outcome = TaskOutcome(spec.key, len(spec.items), already_done=len(spec.items) - len(todo))
    if todo:
        identities = {i.path: content_identity(i.primary) for i in todo}

        def record(event: ev.Event) -> None:
            if isinstance(event, ev.ItemDone | ev.ItemSkipped):
                entry = {"path": event.path, "identity": identities[event.path]}
                append_journal(task_dir, entry)
            emit(event)

        async with make_session(settings.jobs, settings.timeout) as session:
            engine = Engine(
                dest=dest,
                store=store,
                session=session,
                settings=settings,
                emit=record,
                throttle=throttle,
            )
            finished = await engine.run(spec.plan(todo))
        outcome.fetched = finished.objects_done
        outcome.already_done += finished.objects_skipped
        outcome.failed = finished.objects_failed
        outcome.bytes_moved = finished.bytes_moved
        outcome.failures = list(finished.failures)
    if outcome.ok:
        append_journal(task_dir, {"complete": True})
        (task_dir / DONE_MARK).touch()
    else:
        append_journal(task_dir, {"failed": outcome.failed, "errors": outcome.failures[:5]})
    return outcome
