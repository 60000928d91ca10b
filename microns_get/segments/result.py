"""What a segment fetch did: per id what was written, what was read, and what was not there.

Owns: `Tally` (requests made and bytes received), `SegmentReport` (one id) and `SegmentsResult`
(the whole call, JSON-able). Reads are charged to the id they were made for; reads shared by
several ids (layer `info`, shard and minishard indexes, listings) are charged to
`SegmentsResult.shared`, so totals never count a byte twice. `bytes_read` counts object bytes;
a listing counts as one request per attempt (its pages and XML/JSON bytes are not seen here).
Must not do I/O or decide exit codes: the caller maps `missing` / `failed` to its exit status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FETCHED = "fetched"  # read from a mirror and written
PRESENT = "present"  # already complete locally: nothing read
MISSING = "missing"  # the remote has nothing for this id (not an error, not retried)
FAILED = "failed"  # every mirror failed (or sent corrupt bytes) for this id


@dataclass
class Tally:
    """Requests sent (every attempt, retries included) and bytes received."""

    requests: int = 0
    bytes_read: int = 0

    def add(self, other: Tally) -> None:
        self.requests += other.requests
        self.bytes_read += other.bytes_read


@dataclass
class SegmentReport:
    segment_id: int
    id_kind: str = "root"  # "root" (segment) id, or "nucleus" id (v661 skeletons)
    status: str = MISSING
    paths: list[str] = field(default_factory=list)  # local files written for this id
    bytes_written: int = 0
    tally: Tally = field(default_factory=Tally)
    mirror: str | None = None  # the mirror URL that served it
    detail: str = ""  # why it is missing or failed; what it matched

    @property
    def requests(self) -> int:
        return self.tally.requests

    @property
    def bytes_read(self) -> int:
        return self.tally.bytes_read

    def wrote(self, path: str, size: int) -> None:
        self.paths.append(path)
        self.bytes_written += size

    def to_json(self) -> dict[str, Any]:
        return {
            "segment_id": self.segment_id,
            "id_kind": self.id_kind,
            "status": self.status,
            "paths": list(self.paths),
            "bytes_written": self.bytes_written,
            "requests": self.requests,
            "bytes_read": self.bytes_read,
            "mirror": self.mirror,
            "detail": self.detail,
        }


@dataclass
class SegmentsResult:
    """The outcome of `fetch_segment_meshes` or `fetch_skeletons`."""

    kind: str  # "meshes" | "skeletons"
    segments: dict[int, SegmentReport] = field(default_factory=dict)
    shared: Tally = field(default_factory=Tally)  # reads not made for one id alone
    files: list[str] = field(default_factory=list)  # shared files written (info, shard files)
    errors: list[str] = field(default_factory=list)
    layout: str = ""  # what was written: "sharded-multires", "legacy", "swc", ...

    def report(self, segment_id: int) -> SegmentReport:
        if segment_id not in self.segments:
            self.segments[segment_id] = SegmentReport(segment_id)
        return self.segments[segment_id]

    def _with(self, status: str) -> list[int]:
        return [sid for sid, rep in self.segments.items() if rep.status == status]

    @property
    def fetched(self) -> list[int]:
        return self._with(FETCHED)

    @property
    def present(self) -> list[int]:
        return self._with(PRESENT)

    @property
    def missing(self) -> list[int]:
        return self._with(MISSING)

    @property
    def failed(self) -> list[int]:
        return self._with(FAILED)

    @property
    def requests(self) -> int:
        return self.shared.requests + sum(r.requests for r in self.segments.values())

    @property
    def bytes_read(self) -> int:
        return self.shared.bytes_read + sum(r.bytes_read for r in self.segments.values())

    @property
    def bytes_written(self) -> int:
        return sum(r.bytes_written for r in self.segments.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "layout": self.layout,
            "requests": self.requests,
            "bytes_read": self.bytes_read,
            "shared_requests": self.shared.requests,
            "shared_bytes_read": self.shared.bytes_read,
            "files": list(self.files),
            "errors": list(self.errors),
            "missing": self.missing,
            "failed": self.failed,
            "segments": [r.to_json() for r in self.segments.values()],
        }
