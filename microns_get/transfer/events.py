"""Progress events: the engine emits them; the CLI renders them (bars, plain lines or JSON).

Owns: the typed event records and their JSON form. Must not print anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    def to_json(self) -> dict[str, Any]:
        return {"event": type(self).__name__, "time": round(time.time(), 3), **asdict(self)}


@dataclass(frozen=True)
class RunStarted(Event):
    plan_id: str
    objects: int
    bytes: int
    mirror: str
    already_done: int


@dataclass(frozen=True)
class ItemStarted(Event):
    path: str
    size: int
    mirror: str
    resumed_parts: int
    parts: int


@dataclass(frozen=True)
class BytesMoved(Event):
    path: str
    bytes: int


@dataclass(frozen=True)
class ItemSkipped(Event):
    path: str
    size: int
    reason: str


@dataclass(frozen=True)
class ItemDone(Event):
    path: str
    size: int
    mirror: str
    verified_by: str
    detail: str = ""


@dataclass(frozen=True)
class ItemFailed(Event):
    path: str
    error: str


@dataclass(frozen=True)
class Retrying(Event):
    url: str
    error: str


@dataclass(frozen=True)
class MirrorDown(Event):
    mirror: str
    reason: str


@dataclass(frozen=True)
class RunFinished(Event):
    plan_id: str
    objects_done: int
    objects_skipped: int
    objects_failed: int
    bytes_moved: int
    seconds: float
    retries: int
    mirrors_used: dict[str, int] = field(default_factory=dict)
    verified_by: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def mb_per_s(self) -> float:
        return self.bytes_moved / 1e6 / self.seconds if self.seconds > 0 else 0.0


Emit = Callable[[Event], None]


def ignore(_: Event) -> None:
    """An event sink that drops everything (library use without a UI)."""
