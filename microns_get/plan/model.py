"""The plan: what a request will move, as plain serialisable data.

Owns: `Plan` and `PlanItem`, their canonical JSON, and `plan_id` (a hash of that JSON, so the same
request against the same remote state gives the same id and resumes the same checkpoint).
Pure: no I/O. The engine executes a plan; `microns-get plan --json` prints one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)  # slots: one or two per planned object
class RemoteCopy:
    """One mirror's copy of an item: where it is and what that mirror says about it."""

    url: str  # s3://bucket/key, gs://bucket/key, https://host/path
    provider: str
    size: int | None = None
    etag: str | None = None
    md5_base64: str | None = None
    crc32c_base64: str | None = None
    generation: str | None = None
    content_encoding: str | None = None

    @property
    def identity(self) -> str:
        """Changes when this mirror's object changes (resume and sync compare it)."""
        return f"{self.size}:{self.generation or self.etag or self.md5_base64 or ''}"

    @property
    def listed(self) -> bool:
        return self.size is not None


@dataclass(frozen=True, slots=True)
class PlanItem:
    """One local file to produce: its path under DEST and its copies on each mirror."""

    path: str  # relative to DEST, canonical (see layout.canonical_path)
    size: int
    copies: tuple[RemoteCopy, ...]  # the planned mirror's copy first

    @property
    def primary(self) -> RemoteCopy:
        return self.copies[0]


@dataclass(frozen=True, repr=False)
class Plan:
    request: Mapping[str, Any]
    items: tuple[PlanItem, ...]
    part_size: int
    mirror: str  # the mirror chosen for planning (URL of the part root)
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __repr__(self) -> str:
        # not every item: asyncio.run formats its task's result on the way out (Python 3.11),
        # and a mirror's plan has millions of items
        return f"Plan({len(self.items)} items, {self.total_bytes} bytes from {self.mirror})"

    @property
    def total_bytes(self) -> int:
        return sum(item.size for item in self.items)

    def to_json(self) -> dict[str, Any]:
        """The canonical JSON (computed once: for a large plan it is most of the memory)."""
        cached = self.__dict__.get("_json")
        if cached is None:
            body = {
                "request": dict(self.request),
                "mirror": self.mirror,
                "part_size": self.part_size,
                "items": [asdict(item) for item in self.items],
                "notes": list(self.notes),
            }
            cached = {"plan_id": plan_id(body), **body}
            object.__setattr__(self, "_json", cached)
        return cached

    @property
    def plan_id(self) -> str:
        return self.to_json()["plan_id"]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        items = tuple(
            PlanItem(
                path=i["path"],
                size=i["size"],
                copies=tuple(RemoteCopy(**c) for c in i["copies"]),
            )
            for i in data["items"]
        )
        return cls(
            request=data["request"],
            items=items,
            part_size=data["part_size"],
            mirror=data["mirror"],
            notes=tuple(data.get("notes", ())),
        )


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def plan_id(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()[:16]


def part_ranges(size: int, part_size: int) -> list[tuple[int, int]]:
    """`[start, end)` byte ranges covering an object; one range for small (or empty) objects."""
    if size <= part_size:
        return [(0, size)]
    return [(start, min(start + part_size, size)) for start in range(0, size, part_size)]


def summarize(items: Sequence[PlanItem]) -> dict[str, int]:
    return {"objects": len(items), "bytes": sum(i.size for i in items)}
