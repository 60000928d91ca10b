"""Fetch sharded multi-resolution meshes of chosen segments into a local sharded mesh directory.

Owns: the reads for one shard file's worth of segments (one shard-index span, one read per
needed minishard index, then per segment its manifest and its fragment bytes: never the whole
shard), and merging what arrived into the local shard file of the same name (rebuilt from the
segments already in it plus the new ones, written atomically). Format math lives in
`shardfile.py`; mirror order and failover in `layer.py`.

"No mesh for this id" (a missing shard file, an empty minishard, an id absent from its minishard)
is an answer, not a failure: it is reported and not retried on another mirror. The local shard
is read-modify-written, so two runs must not add to the same destination at once (the caller
holds DEST's lock).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from microns_get.errors import RemoteError, VerificationFailed
from microns_get.precomputed.info import ShardingSpec
from microns_get.precomputed.sharding import ChunkRange, decode_minishard_index, find_chunk
from microns_get.segments import shardfile as sf
from microns_get.segments.layer import LayerCopies, RemoteLayer
from microns_get.segments.remote import write_atomic
from microns_get.segments.result import FAILED, FETCHED, MISSING, PRESENT, SegmentsResult, Tally
from microns_get.transfer import events as ev

Found = dict[int, sf.MeshBlob]


async def fetch_sharded(
    copies: LayerCopies, mesh_dir: Path, ids: list[int], result: SegmentsResult, emit: ev.Emit
) -> None:
    """Fetch `ids` shard by shard (shards in parallel) into `mesh_dir`."""
    spec = copies.reference.spec if copies.reference else (await copies.first()).spec
    groups = sf.group_by_shard(spec, ids)
    await asyncio.gather(
        *(
            _one_shard(copies, mesh_dir / name, groups[name], result, emit)
            for name in sorted(groups)
        )
    )


async def _one_shard(
    copies: LayerCopies,
    path: Path,
    minishards: dict[int, list[int]],
    result: SegmentsResult,
    emit: ev.Emit,
) -> None:
    assert copies.reference is not None
    spec = copies.reference.spec
    try:
        here = await asyncio.to_thread(_ids_in_local_shard, path, spec, minishards)
    except (OSError, VerificationFailed) as exc:
        _fail_all(minishards, result, f"local {path} is unreadable ({exc}); move it away")
        return
    wanted = _skip_present(minishards, here, path, result)
    if not wanted:
        return
    try:
        found = await copies.run(
            lambda layer: _read_remote(layer, path.name, wanted, result), f"shard {path.name}"
        )
    except RemoteError as exc:
        _fail_all(wanted, result, str(exc))
        return
    if found:
        size = await asyncio.to_thread(_merge_into, path, spec, found)
        result.files.append(str(path))
        mirror = result.report(next(iter(found))).mirror or ""
        emit(ev.ItemDone(str(path), size, mirror, "decoded", f"{len(found)} new segments"))
    for sid, blob in found.items():
        report = result.report(sid)
        report.status = FETCHED
        report.wrote(str(path), blob.size)


def _ids_in_local_shard(
    path: Path, spec: ShardingSpec, minishards: dict[int, list[int]]
) -> set[int]:
    """Which of the ids the local shard already holds, from its indexes alone: the local shard
    may be a whole mirrored one, too big to parse just to learn that nothing is missing."""
    if not path.exists():
        return set()
    wanted = {sid for ids in minishards.values() for sid in ids}
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size

        def read(start: int, end: int) -> bytes:
            handle.seek(start)
            return handle.read(end - start)

        start, end = sf.index_span(spec, sorted(minishards))
        entries = sf.entries_in_span(spec, read(start, end), start, sorted(minishards))
        here = set()
        for begin, finish in (entries[m] for m in minishards):
            if begin != finish:
                chunks = decode_minishard_index(read(begin, finish), spec, size)
                here |= {c.chunk_id for c in chunks} & wanted
    return here


def _merge_into(path: Path, spec: ShardingSpec, found: Found) -> int:
    """Rewrite the local shard with its segments plus `found`; returns the new file size."""
    local = sf.parse_shard(spec, path.read_bytes()) if path.exists() else {}
    data = sf.build_shard(spec, {**local, **found})
    write_atomic(path, data)
    return len(data)


def _skip_present(
    minishards: dict[int, list[int]], here: set[int], path: Path, result: SegmentsResult
) -> dict[int, list[int]]:
    """Ids already in the local shard need no bytes; returns the minishards still to read."""
    wanted: dict[int, list[int]] = {}
    for mini, ids in minishards.items():
        for sid in ids:
            if sid in here:
                report = result.report(sid)
                report.status, report.paths = PRESENT, [str(path)]
            else:
                wanted.setdefault(mini, []).append(sid)
    return wanted


def _fail_all(minishards: dict[int, list[int]], result: SegmentsResult, why: str) -> None:
    for sid in (sid for ids in minishards.values() for sid in ids):
        report = result.report(sid)
        report.status, report.detail = FAILED, why
    result.errors.append(why)


async def _read_remote(
    layer: RemoteLayer, name: str, minishards: dict[int, list[int]], result: SegmentsResult
) -> Found:
    """Index span -> minishard indexes -> manifests and fragments, for one shard's segments."""
    spec, key = layer.spec, layer.mesh_key(name)
    start, end = sf.index_span(spec, sorted(minishards))
    span = await layer.mirror.read(key, result.shared, start, end)
    if span is None:
        _missing(minishards, result, f"no shard file {name} on {layer.mirror.url}")
        return {}
    entries = sf.entries_in_span(spec, span, start, sorted(minishards))
    parts = await asyncio.gather(
        *(_read_minishard(layer, key, entries[m], ids, result) for m, ids in minishards.items())
    )
    return {sid: blob for part in parts for sid, blob in part.items()}


async def _read_minishard(
    layer: RemoteLayer, key: str, entry: tuple[int, int], ids: list[int], result: SegmentsResult
) -> Found:
    if entry[0] == entry[1]:
        _missing({0: ids}, result, "its minishard in the shard is empty")
        return {}
    data = await _must_read(layer, key, result.shared, *entry)
    chunks = decode_minishard_index(data, layer.spec)
    located = {sid: find_chunk(chunks, sid) for sid in ids}
    _missing({0: [s for s, c in located.items() if c is None]}, result, "not in its minishard")
    blobs = await asyncio.gather(
        *(_read_segment(layer, key, sid, c, result) for sid, c in located.items() if c)
    )
    return dict(blobs)


async def _read_segment(
    layer: RemoteLayer, key: str, sid: int, chunk: ChunkRange, result: SegmentsResult
) -> tuple[int, sf.MeshBlob]:
    report = result.report(sid)
    report.mirror = layer.mirror.url
    stored = await _must_read(layer, key, report.tally, chunk.start, chunk.end)
    manifest = sf.decode_stored_manifest(layer.spec, stored)
    frag_start, frag_end = sf.fragment_range(layer.spec, chunk.start, manifest)
    fragments = await _must_read(layer, key, report.tally, frag_start, frag_end)
    return sid, sf.MeshBlob(fragments, stored)


async def _must_read(layer: RemoteLayer, key: str, tally: Tally, start: int, end: int) -> bytes:
    data = await layer.mirror.read(key, tally, start, end)
    if data is None:
        raise RemoteError(f"{layer.mirror.where(key)} disappeared while being read", status=404)
    return data


def _missing(minishards: dict[int, list[int]], result: SegmentsResult, why: str) -> None:
    for sid in (sid for ids in minishards.values() for sid in ids):
        report = result.report(sid)
        report.status, report.detail = MISSING, f"no mesh: {why}"
