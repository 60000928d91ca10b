"""The neuroglancer_uint64_sharded_v1 format as pure functions: where a chunk lives, and indexes.

Owns: compressed Morton chunk ids, the chunk-id hash, shard/minishard numbers and shard file
names, byte ranges of shard-index entries, decoding shard and minishard indexes (with absolute
byte offsets), coalescing byte ranges and the whole-shard-versus-ranges cost rule, and the
multi-resolution mesh manifest (whose fragments sit just before it in a shard).
Must not: do I/O (callers hand in the bytes they fetched) or decode chunk payloads (`codecs.py`).

Built from neuroglancer's sharded.md / volume.md / meshes.md and cross-checked in the tests
against cloud-volume's `ShardingSpecification`/`ShardReader` and TensorStore-written shards.
cloud-volume is not called here: it is a test-only dependency, its hash goes through a pure-Python
murmur3, and its numpy-uint64 arithmetic returns numpy scalars; the C `mmh3` does the hashing.
Corrupt or inconsistent bytes raise `CorruptIndex` naming what was wrong.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING, Generic, NamedTuple, Protocol, TypeVar

import mmh3

from microns_get.errors import VerificationFailed
from microns_get.precomputed import grid
from microns_get.precomputed.info import Scale, ShardingSpec

if TYPE_CHECKING:  # numpy is imported where arrays are made: cutouts plan without it
    import numpy as np

_U64 = (1 << 64) - 1
_ENTRY = struct.Struct("<QQ")
# Per-request overhead expressed in bytes: latency and per-request pricing make a ranged GET
# worth roughly this many bytes of bandwidth, so a few hundred small ranges cost as much as a
# large sequential read.
REQUEST_COST_BYTES = 256 * 1024


class CorruptIndex(VerificationFailed):
    """A shard index, minishard index or mesh manifest is malformed or points outside the shard."""


class ShardLocation(NamedTuple):
    shard: int
    minishard: int
    filename: str


class ChunkRange(NamedTuple):
    """A minishard-index entry: chunk id and its ABSOLUTE byte range `[start, end)` in the shard."""

    chunk_id: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


class _Ranged(Protocol):
    @property
    def start(self) -> int: ...

    @property
    def end(self) -> int: ...


R = TypeVar("R", bound=_Ranged)


@dataclass(frozen=True)
class Merged(Generic[R]):
    """A coalesced byte range `[start, end)` and the ranges it serves (in start order)."""

    start: int
    end: int
    members: tuple[R, ...]


# --- chunk ids --------------------------------------------------------------------------------


def compressed_morton(grid_pos: Sequence[int], grid_shape: Sequence[int]) -> int:
    """Neuroglancer's compressed Morton code of a chunk grid position (the sharded chunk id).

    Bits are interleaved x, y, z from the lowest up, skipping a dimension once `2**i` reaches
    its grid size (those bits are always zero there).
    """
    _check_grid(grid_pos, grid_shape)
    out = j = 0
    for i in range(max(grid_shape).bit_length()):
        for g, n in zip(grid_pos, grid_shape):
            if (1 << i) < n:
                out |= ((g >> i) & 1) << j
                j += 1
    return out


def compressed_morton_many(grid_pos: np.ndarray, grid_shape: Sequence[int]) -> np.ndarray:
    """Vectorised `compressed_morton` for an (N, 3) array of grid positions; returns uint64[N]."""
    import numpy as np

    pos = np.asarray(grid_pos, dtype=np.uint64).reshape(-1, 3)
    if morton_bits(grid_shape) > 64:
        raise ValueError(f"grid {tuple(grid_shape)} needs more than 64 bits of chunk id")
    if pos.size and (pos.max(axis=0) >= np.asarray(grid_shape, dtype=np.uint64)).any():
        raise ValueError(f"grid positions outside grid shape {tuple(grid_shape)}")
    out = np.zeros(len(pos), dtype=np.uint64)
    j = 0
    for i in range(max(grid_shape).bit_length()):
        for d, n in enumerate(grid_shape):
            if (1 << i) < n:
                out |= ((pos[:, d] >> np.uint64(i)) & np.uint64(1)) << np.uint64(j)
                j += 1
    return out


def volume_chunk_id(scale: Scale, grid_pos: Sequence[int]) -> int:
    """The sharded chunk id of a volume chunk: the compressed Morton code of its grid position."""
    return compressed_morton(grid_pos, grid.grid_shape(scale))


def morton_bits(grid_shape: Sequence[int]) -> int:
    """Bits used by compressed Morton codes for this grid (sum of ceil(log2(n)))."""
    return sum((n - 1).bit_length() for n in grid_shape)


def _check_grid(grid_pos: Sequence[int], grid_shape: Sequence[int]) -> None:
    if len(grid_pos) != 3 or len(grid_shape) != 3:
        raise ValueError("grid position and grid shape must have 3 elements")
    if morton_bits(grid_shape) > 64:
        raise ValueError(f"grid {tuple(grid_shape)} needs more than 64 bits of chunk id")
    if any(not 0 <= g < n for g, n in zip(grid_pos, grid_shape)):
        raise ValueError(f"grid position {tuple(grid_pos)} outside grid {tuple(grid_shape)}")


# --- hashing and shard location ------------------------------------------------------------------


def hash_chunk_id(spec: ShardingSpec, chunk_id: int) -> int:
    """`hash(chunk_id >> preshift_bits)` as an unsigned 64-bit int, per `spec.hash`."""
    shifted = (chunk_id & _U64) >> spec.preshift_bits
    if spec.hash == "identity":
        return shifted
    if spec.hash == "murmurhash3_x86_128":
        # The low 8 bytes of the 128-bit hash of the little-endian uint64, seed 0, read as
        # a little-endian uint64 (neuroglancer's murmurHash3_x86_128Hash64Bits).
        return mmh3.hash64(struct.pack("<Q", shifted), seed=0, x64arch=False, signed=False)[0]
    raise ValueError(f"unknown sharding hash {spec.hash!r}")


def shard_and_minishard(spec: ShardingSpec, chunk_id: int) -> tuple[int, int]:
    hashed = hash_chunk_id(spec, chunk_id)
    minishard = hashed & ((1 << spec.minishard_bits) - 1)
    shard = (hashed >> spec.minishard_bits) & ((1 << spec.shard_bits) - 1)
    return shard, minishard


def shard_filename(spec: ShardingSpec, shard: int) -> str:
    """`<shard>.shard`, lowercase hex zero-padded to ceil(shard_bits / 4) digits."""
    return f"{shard:0{-(-spec.shard_bits // 4)}x}.shard"


def locate_chunk(spec: ShardingSpec, chunk_id: int) -> ShardLocation:
    shard, minishard = shard_and_minishard(spec, chunk_id)
    return ShardLocation(shard, minishard, shard_filename(spec, shard))


def segment_shard_location(spec: ShardingSpec, segment_id: int) -> ShardLocation:
    """Where a mesh manifest or skeleton lives: for these the chunk id is the segment id."""
    return locate_chunk(spec, segment_id)


# --- shard index ------------------------------------------------------------------------------


def index_length(spec: ShardingSpec) -> int:
    """Size in bytes of the shard index at the start of every shard file."""
    return (1 << spec.minishard_bits) * 16


def shard_index_range(spec: ShardingSpec, minishard: int) -> tuple[int, int]:
    """Byte range `[start, end)` of one minishard's 16-byte entry in the shard index."""
    if not 0 <= minishard < (1 << spec.minishard_bits):
        raise ValueError(f"minishard {minishard} out of range for {spec.minishard_bits} bits")
    return minishard * 16, minishard * 16 + 16


def decode_shard_index_entry(data: bytes) -> tuple[int, int]:
    """One shard-index entry -> `(start, end)` of the minishard index, relative to the index end."""
    if len(data) != 16:
        raise CorruptIndex(f"shard index entry: expected 16 bytes, got {len(data)}")
    start, end = _ENTRY.unpack(data)
    if end < start:
        raise CorruptIndex(f"shard index entry: end {end} before start {start}")
    return start, end


def decode_shard_index(data: bytes, spec: ShardingSpec) -> list[tuple[int, int]]:
    """The whole shard index -> one `(start, end)` per minishard, relative to the index end."""
    if len(data) != index_length(spec):
        raise CorruptIndex(f"shard index: expected {index_length(spec)} bytes, got {len(data)}")
    values = struct.unpack(f"<{len(data) // 8}Q", data)
    pairs = list(zip(values[::2], values[1::2]))
    for m, (start, end) in enumerate(pairs):
        if end < start:
            raise CorruptIndex(f"shard index: minishard {m} ends before it starts {start, end}")
    return pairs


def minishard_index_range(
    spec: ShardingSpec, entry: tuple[int, int], shard_size: int | None = None
) -> tuple[int, int]:
    """Absolute byte range of a minishard index from its shard-index entry."""
    start, end = (v + index_length(spec) for v in entry)
    if shard_size is not None and end > shard_size:
        raise CorruptIndex(f"minishard index [{start}, {end}) past the shard end ({shard_size})")
    return start, end


# --- minishard index --------------------------------------------------------------------------


def decode_minishard_index(
    data: bytes, spec: ShardingSpec, shard_size: int | None = None, what: str = "minishard index"
) -> list[ChunkRange]:
    """Decode a minishard index to `ChunkRange`s with absolute byte offsets in the shard file.

    The index is a C-order [3, n] uint64le array (after `minishard_index_encoding`): delta-coded
    chunk ids, data starts delta-coded from the previous chunk's end, and sizes.
    `shard_size`, when known, lets ranges past the end of the file be rejected.
    """
    raw = _gunzip(data, what) if spec.minishard_index_encoding == "gzip" else bytes(data)
    if len(raw) % 24:
        raise CorruptIndex(f"{what}: {len(raw)} bytes is not a multiple of 24")
    n = len(raw) // 24
    values = struct.unpack(f"<{3 * n}Q", raw)
    rows = [values[:n], values[n : 2 * n], values[2 * n :]]
    ids = [v & _U64 for v in accumulate(rows[0])]  # ids wrap like neuroglancer's uint64 sum
    ends = list(accumulate(zip(rows[1], rows[2]), lambda end, ds: end + ds[0] + ds[1], initial=0))
    base = index_length(spec)
    out = [
        ChunkRange(cid, base + end - size, base + end)
        for cid, end, size in zip(ids, ends[1:], rows[2])
    ]
    _check_ranges(out, shard_size, what)
    return out


def _gunzip(data: bytes, what: str) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise CorruptIndex(f"{what}: gzip decoding failed ({exc})") from None


def _check_ranges(ranges: list[ChunkRange], shard_size: int | None, what: str) -> None:
    limit = _U64 if shard_size is None else shard_size
    last = ranges[-1].end if ranges else 0  # ends only grow, so the last one is the largest
    if last > limit:
        where = "the 64-bit range" if shard_size is None else f"the shard end ({shard_size})"
        raise CorruptIndex(f"{what}: chunk data ends at byte {last}, past {where}")


def find_chunk(ranges: Iterable[ChunkRange], chunk_id: int) -> ChunkRange | None:
    return next((r for r in ranges if r.chunk_id == chunk_id), None)


# --- planning helpers -------------------------------------------------------------------------


def coalesce(ranges: Iterable[R], max_gap: int) -> list[Merged[R]]:
    """Merge byte ranges (sorted here by start) whose gap is at most `max_gap` bytes.

    Overlapping and touching ranges always merge; each result carries the ranges it serves.
    """
    if max_gap < 0:
        raise ValueError("max_gap must be >= 0")
    merged: list[Merged[R]] = []
    for r in sorted(ranges, key=lambda r: (r.start, r.end)):
        if merged and r.start - merged[-1].end <= max_gap:
            last = merged[-1]
            merged[-1] = Merged(last.start, max(last.end, r.end), (*last.members, r))
        else:
            merged.append(Merged(r.start, r.end, (r,)))
    return merged


def choose_whole_shard(
    needed_bytes: int,
    n_requests: int,
    shard_size: int,
    request_cost_bytes: int = REQUEST_COST_BYTES,
    whole_requests: int = 1,
) -> bool:
    """True when reading the whole shard (`shard_size` bytes in `whole_requests` GETs) is
    cheaper than `n_requests` ranged GETs of `needed_bytes`.

    Cost model: cost = bytes transferred + requests * `request_cost_bytes` (the bandwidth a
    request's latency and fee are worth). Ranged: `needed_bytes + n_requests * c`; whole shard:
    `shard_size + whole_requests * c`. Ties go to ranges, which move fewer bytes.
    """
    ranged = needed_bytes + n_requests * request_cost_bytes
    whole = shard_size + whole_requests * request_cost_bytes
    return whole < ranged


# --- multi-resolution meshes ------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """A `neuroglancer_multilod_draco` manifest (meshes.md). Positions are (n, 3) per lod."""

    chunk_shape: tuple[float, float, float]
    grid_origin: tuple[float, float, float]
    num_lods: int
    lod_scales: tuple[float, ...]
    vertex_offsets: tuple[tuple[float, float, float], ...]
    fragment_positions: tuple[np.ndarray, ...]
    fragment_sizes: tuple[tuple[int, ...], ...]

    @property
    def total_fragment_bytes(self) -> int:
        return sum(sum(sizes) for sizes in self.fragment_sizes)


def decode_multires_manifest(data: bytes) -> Manifest:
    """Parse a multi-resolution mesh manifest; the caller has already undone `data_encoding`."""
    if len(data) < 28:
        raise CorruptIndex(f"mesh manifest: {len(data)} bytes is shorter than its 28-byte header")
    chunk_shape, grid_origin = (
        struct.unpack_from("<3f", data, 0),
        struct.unpack_from("<3f", data, 12),
    )
    (num_lods,) = struct.unpack_from("<I", data, 24)
    head = 28 + num_lods * 4 * 5  # lod_scales, vertex_offsets (3 each), num_fragments_per_lod
    if len(data) < head:
        raise CorruptIndex(f"mesh manifest: {len(data)} bytes, too short for {num_lods} lods")
    import numpy as np

    lod_scales = struct.unpack_from(f"<{num_lods}f", data, 28)
    offsets = np.frombuffer(data, "<f4", num_lods * 3, 28 + num_lods * 4).reshape(-1, 3)
    counts = struct.unpack_from(f"<{num_lods}I", data, 28 + num_lods * 16)
    expected = head + 16 * sum(counts)
    if len(data) != expected:
        raise CorruptIndex(f"mesh manifest: {len(data)} bytes, its header implies {expected}")
    positions, sizes, pos = [], [], head
    for n in counts:
        positions.append(np.frombuffer(data, "<u4", 3 * n, pos).reshape(3, n).T.copy())
        sizes.append(tuple(struct.unpack_from(f"<{n}I", data, pos + 12 * n)))
        pos += 16 * n
    return Manifest(
        chunk_shape=chunk_shape,
        grid_origin=grid_origin,
        num_lods=num_lods,
        lod_scales=lod_scales,
        vertex_offsets=tuple(tuple(map(float, row)) for row in offsets.tolist()),
        fragment_positions=tuple(positions),
        fragment_sizes=tuple(sizes),
    )


def manifest_fragment_range(
    manifest_start: int, manifest: Manifest, data_start: int = 0
) -> tuple[int, int]:
    """Byte range of a sharded mesh's fragment data, which directly precedes its manifest.

    Pass `data_start=index_length(spec)` to reject ranges that would reach into the shard index.
    """
    start = manifest_start - manifest.total_fragment_bytes
    if start < data_start:
        raise CorruptIndex(
            f"mesh manifest at byte {manifest_start} claims {manifest.total_fragment_bytes} "
            f"fragment bytes, which would start before byte {data_start}"
        )
    return start, manifest_start
