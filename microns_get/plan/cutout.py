"""Planning a bbox cutout of a precomputed layer: which bytes to read, as plain data. Pure.

Owns: the cutout request, the plan records (per scale: chunks, absent chunks, reads with the
chunk slices they carry, per-shard whole-or-ranges choices), and the rules that turn located
chunks into reads (one GET per unsharded chunk; coalesced byte ranges out of a shard, or the
shard's whole span of needed chunks when the cost model says so; reads of at most `MAX_READ`
bytes). Discovery supplies the located chunks; no I/O here.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from microns_get.precomputed.info import Scale
from microns_get.precomputed.sharding import ChunkRange, Merged, choose_whole_shard, coalesce

MAX_GAP = 32 * 1024  # merge chunk ranges closer than this: a few KiB extra beats a request
MAX_READ = 8 << 20  # split longer merged ranges: several connections, and chunks are written
# while later ranges still arrive


@dataclass(frozen=True)
class CutoutRequest:
    dataset: str
    bbox: str  # "X0,Y0,Z0,X1,Y1,Z1", end-exclusive
    bbox_resolution: tuple[float, float, float] = (4, 4, 40)
    volume: str | None = None
    version: str | None = None
    mip: str | None = None  # an index or "all"
    resolution: tuple[float, float, float] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ChunkSlice:
    """A chunk inside a read: its local name and where its bytes sit in the read."""

    name: str  # "<scale key>/<x0>-<x1>_<y0>-<y1>_<z0>-<z1>"
    offset: int = 0
    length: int | None = None  # None: the whole body


@dataclass(frozen=True)
class Read:
    """One GET: a whole object (`start` None) or a byte range of a shard file."""

    key: str  # relative to the layer root
    start: int | None
    end: int | None
    chunks: tuple[ChunkSlice, ...]
    gzip: bool  # the chunk bytes carry the shard's gzip data_encoding

    @property
    def size(self) -> int | None:
        return None if self.start is None or self.end is None else self.end - self.start


@dataclass(frozen=True)
class ShardChoice:
    """How one shard is read: `whole` (its span from the first needed chunk to the last, gaps
    included) or `ranged_requests` coalesced ranges of `needed_bytes`."""

    key: str
    chunks: int
    needed_bytes: int
    ranged_requests: int
    shard_size: int
    whole: bool


@dataclass
class ScalePlan:
    index: int
    key: str
    resolution: tuple[float, float, float]
    box: dict[str, Any]
    clipped: bool
    sharded: bool
    chunks: int = 0
    absent: list[str] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    shards: list[ShardChoice] = field(default_factory=list)
    index_requests: int = 0
    index_bytes: int = 0
    identity: dict[str, str] = field(default_factory=dict)  # read key -> remote ETag/generation

    @property
    def data_bytes(self) -> int | None:
        sizes = [r.size for r in self.reads]
        return None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)


@dataclass(repr=False)
class CutoutPlan:
    request: Mapping[str, Any]
    layer_url: str
    local_layer: str  # relative to DEST
    info: Mapping[str, Any]  # the remote info as read
    scales: list[ScalePlan]
    warnings: list[str] = field(default_factory=list)

    def __repr__(self) -> str:  # short: see `Plan.__repr__`
        chunks = sum(s.chunks for s in self.scales)
        return f"CutoutPlan({chunks} chunks of {len(self.scales)} scales from {self.layer_url})"

    def to_json(self) -> dict[str, Any]:
        body = {
            "request": dict(self.request),
            "layer_url": self.layer_url,
            "local_layer": self.local_layer,
            "scales": [_scale_json(s) for s in self.scales],
            "warnings": list(self.warnings),
        }
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode())
        return {"plan_id": digest.hexdigest()[:16], **body, "totals": self.totals()}

    def totals(self) -> dict[str, Any]:
        reads = [r for s in self.scales for r in s.reads]
        known = [r.size for r in reads if r.size is not None]
        return {
            "chunks": sum(s.chunks for s in self.scales),
            "absent_chunks": sum(len(s.absent) for s in self.scales),
            "requests": len(reads),
            "ranged_bytes": sum(known),
            "whole_object_requests": len(reads) - len(known),
            "index_requests": sum(s.index_requests for s in self.scales),
            "index_bytes": sum(s.index_bytes for s in self.scales),
            "whole_shards": sum(1 for s in self.scales for c in s.shards if c.whole),
        }


def _scale_json(scale: ScalePlan) -> dict[str, Any]:
    out = asdict(scale)
    out["data_bytes"] = scale.data_bytes
    return out


def unsharded_reads(names: Sequence[str]) -> list[Read]:
    """One GET per chunk; a 404 later means an all-background chunk that was never written."""
    return [Read(name, None, None, (ChunkSlice(name),), gzip=False) for name in names]


def sharded_reads(
    shard_key: str,
    located: Mapping[str, ChunkRange],
    shard_size: int,
    data_gzip: bool,
    request_cost: int,
    max_gap: int = MAX_GAP,
    max_read: int = MAX_READ,
) -> tuple[list[Read], ShardChoice]:
    """Reads for the located chunks of one shard: coalesced ranges, or the shard's whole span
    of needed chunks (gaps included) when the cost model says so. Either way a read is at most
    `max_read` bytes, cut at chunk boundaries: a single stream is slow on cloud storage, a
    shard can be GBs (held in memory while its chunks are cut out), and the chunks of the
    first pieces are written while later ones still arrive."""
    named = sorted(
        (_Named(name, r.start, r.end) for name, r in located.items()),
        key=lambda n: (n.start, n.name),
    )
    ranged = _pieces(coalesce(named, max_gap), max_read)
    span = _pieces(coalesce(named, shard_size), max_read)  # no gap too wide: one span
    needed = sum(m.end - m.start for m in ranged)
    span_bytes = sum(m.end - m.start for m in span)
    whole = choose_whole_shard(needed, len(ranged), span_bytes, request_cost, len(span))
    choice = ShardChoice(shard_key, len(named), needed, len(ranged), shard_size, whole)
    reads = [
        Read(
            shard_key,
            m.start,
            m.end,
            tuple(ChunkSlice(n.name, n.start - m.start, n.end - n.start) for n in m.members),
            data_gzip,
        )
        for m in (span if whole else ranged)
    ]
    return reads, choice


def _pieces(merged: Sequence[Merged[_Named]], max_read: int) -> list[Merged[_Named]]:
    return [piece for m in merged for piece in _split(m.members, max_read)]


def _split(members: Sequence[_Named], max_read: int) -> list[Merged[_Named]]:
    """Cut one merged range at chunk boundaries into pieces of at most `max_read` bytes (a
    single larger chunk stays whole)."""
    pieces: list[list[_Named]] = [[]]
    for member in members:
        current = pieces[-1]
        if current and member.end - current[0].start > max_read:
            pieces.append([])
        pieces[-1].append(member)
    return [Merged(p[0].start, max(m.end for m in p), tuple(p)) for p in pieces]


@dataclass(frozen=True)
class _Named:
    name: str
    start: int
    end: int


def local_info(
    remote: Mapping[str, Any], fetched: Sequence[Scale], existing: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The local layer's info: the remote one (or what is already there), with every fetched
    scale written unsharded, so it loses its sharding spec.

    Scales coarser than every scale fetched (now or before) are left out: a viewer zoomed out
    past them would switch to one of them and draw nothing, where without them it draws the
    coarsest fetched one. Those left in keep their places, so a mip number means the same
    scale as on the remote (cloud-volume, tensorstore); a later fetch of a coarser scale adds
    the scales up to it."""
    info = copy.deepcopy(dict(existing or remote))
    keys = {s.key for s in fetched}
    remote_scales = list(remote.get("scales", []))
    had = {s.get("key"): s for s in (existing or {}).get("scales", [])}
    fetched_places = [i for i, s in enumerate(remote_scales) if s.get("key") in keys]
    keep = max([len(had)] + [i + 1 for i in fetched_places])
    scales = []
    for scale in remote_scales[:keep]:
        local = copy.deepcopy(dict(had.get(scale.get("key"), scale)))
        if local.get("key") in keys:
            local.pop("sharding", None)
        scales.append(local)
    info["scales"] = scales
    return info


def incompatible_reason(remote: Mapping[str, Any], existing: Mapping[str, Any]) -> str | None:
    """Why a local layer cannot take chunks from this remote layer (None: it can)."""
    geometry = ("key", "size", "voxel_offset", "resolution", "chunk_sizes", "encoding")
    theirs = {s["key"]: s for s in remote.get("scales", [])}
    for ours in existing.get("scales", []):
        other = theirs.get(ours.get("key"))
        if other is None:
            return f"the local layer has scale {ours.get('key')!r} that the remote lacks"
        for name in geometry:
            if ours.get(name) != other.get(name):
                return f"scale {ours['key']}: local {name} differs from the remote's"
    if existing.get("data_type") != remote.get("data_type"):
        return "the local layer has another data_type"
    return None
