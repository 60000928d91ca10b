"""Sharded multi-resolution meshes as pure functions: what to read, and local shard files.

Owns: grouping segment ids by shard and minishard, the one shard-index span to read per shard,
undoing `data_encoding` on a manifest, and writing / re-reading a local shard file that holds a
subset of a layer's segments under the remote's own sharding spec. Must not do I/O.

Index reads: per shard, ONE ranged read of the shard-index entries from the lowest to the highest
needed minishard (16 bytes when one minishard is needed, at most the whole index), then one read
per needed minishard index. A shard file written here has the layout cloud-volume's shard writer
uses: `[shard index][data: per minishard, per segment (ascending id): fragments, manifest]
[minishard indexes]`, the minishard index pointing at each manifest (its fragments directly
precede it, per meshes.md). Manifests and Draco fragments are kept exactly as the remote stored
them, so a local shard is byte-for-byte the remote's data, only fewer segments.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from microns_get.precomputed.info import ShardingSpec
from microns_get.precomputed.sharding import (
    CorruptIndex,
    Manifest,
    decode_minishard_index,
    decode_multires_manifest,
    decode_shard_index,
    index_length,
    manifest_fragment_range,
    minishard_index_range,
    segment_shard_location,
    shard_index_range,
)

_ENTRY = struct.Struct("<QQ")


@dataclass(frozen=True)
class MeshBlob:
    """One segment in a shard: its Draco fragments and its manifest, both as stored."""

    fragments: bytes
    manifest: bytes

    @property
    def size(self) -> int:
        return len(self.fragments) + len(self.manifest)


ShardGroups = dict[str, dict[int, list[int]]]  # shard file name -> minishard -> segment ids


def group_by_shard(spec: ShardingSpec, segment_ids: list[int]) -> ShardGroups:
    """Segment ids by shard file and minishard (ids keep their order; duplicates dropped)."""
    groups: ShardGroups = defaultdict(lambda: defaultdict(list))
    for sid in dict.fromkeys(segment_ids):
        loc = segment_shard_location(spec, sid)
        groups[loc.filename][loc.minishard].append(sid)
    return {name: dict(by_mini) for name, by_mini in groups.items()}


def index_span(spec: ShardingSpec, minishards: list[int]) -> tuple[int, int]:
    """The byte range of the shard index that holds the entries of all `minishards`."""
    return shard_index_range(spec, min(minishards))[0], shard_index_range(spec, max(minishards))[1]


def entries_in_span(
    spec: ShardingSpec, span: bytes, span_start: int, minishards: list[int]
) -> dict[int, tuple[int, int]]:
    """Absolute byte ranges of the minishard indexes of `minishards`, from a read index span."""
    out = {}
    for m in minishards:
        start = shard_index_range(spec, m)[0] - span_start
        if start < 0 or start + 16 > len(span):
            raise CorruptIndex(f"shard index: entry of minishard {m} is not in the bytes read")
        begin, end = _ENTRY.unpack_from(span, start)
        if end < begin:
            raise CorruptIndex(f"shard index: minishard {m} ends before it starts")
        out[m] = minishard_index_range(spec, (begin, end))
    return out


def decode_stored_manifest(spec: ShardingSpec, stored: bytes) -> Manifest:
    """A manifest as stored in a shard -> `Manifest` (`data_encoding` covers manifests only)."""
    if spec.data_encoding == "gzip":
        try:
            stored = gzip.decompress(stored)
        except (OSError, EOFError, zlib.error) as exc:
            raise CorruptIndex(f"mesh manifest: gzip decoding failed ({exc})") from None
    return decode_multires_manifest(stored)


def fragment_range(spec: ShardingSpec, manifest_start: int, manifest: Manifest) -> tuple[int, int]:
    """Absolute byte range of a segment's fragments (just before its manifest, after the index)."""
    return manifest_fragment_range(manifest_start, manifest, index_length(spec))


def build_shard(spec: ShardingSpec, blobs: dict[int, MeshBlob]) -> bytes:
    """A complete shard file holding `blobs` (which must all belong to this one shard)."""
    by_mini: dict[int, list[int]] = defaultdict(list)
    for sid in sorted(blobs):
        by_mini[segment_shard_location(spec, sid).minishard].append(sid)
    data, indexes = bytearray(), []
    for mini in sorted(by_mini):
        ids, starts, sizes = [], [], []
        for sid in by_mini[mini]:
            blob = blobs[sid]
            data += blob.fragments
            ids.append(sid)
            starts.append(len(data))  # the manifest's offset from the end of the shard index
            sizes.append(len(blob.manifest))
            data += blob.manifest
        indexes.append((mini, _encode_minishard_index(spec, ids, starts, sizes)))
    table = np.zeros((1 << spec.minishard_bits, 2), dtype="<u8")
    position = len(data)
    for mini, encoded in indexes:
        table[mini] = (position, position + len(encoded))
        position += len(encoded)
    return table.tobytes() + bytes(data) + b"".join(encoded for _, encoded in indexes)


def _encode_minishard_index(
    spec: ShardingSpec, ids: list[int], starts: list[int], sizes: list[int]
) -> bytes:
    """C-order [3, n] uint64le: delta ids, starts delta-coded from the previous chunk's end."""
    prev_ids = [0, *ids[:-1]]
    prev_ends = [0, *(s + n for s, n in zip(starts[:-1], sizes[:-1]))]
    rows = [
        [i - p for i, p in zip(ids, prev_ids)],
        [s - e for s, e in zip(starts, prev_ends)],
        sizes,
    ]
    raw = np.array(rows, dtype="<u8").tobytes(order="C")
    if spec.minishard_index_encoding == "gzip":
        return gzip.compress(raw, mtime=0)
    return raw


def parse_shard(spec: ShardingSpec, data: bytes) -> dict[int, MeshBlob]:
    """Every segment of a whole shard file (a local one, written here or mirrored whole)."""
    head = index_length(spec)
    if len(data) < head:
        raise CorruptIndex(f"shard file: {len(data)} bytes, shorter than its {head}-byte index")
    blobs: dict[int, MeshBlob] = {}
    for entry in decode_shard_index(data[:head], spec):
        if entry[0] == entry[1]:
            continue
        start, end = minishard_index_range(spec, entry, len(data))
        for chunk in decode_minishard_index(data[start:end], spec, len(data)):
            manifest = decode_stored_manifest(spec, data[chunk.start : chunk.end])
            frag_start, _ = fragment_range(spec, chunk.start, manifest)
            blobs[chunk.chunk_id] = MeshBlob(
                data[frag_start : chunk.start], data[chunk.start : chunk.end]
            )
    return blobs
