"""`fetch_segment_meshes`: the meshes of chosen segment ids, reading only the bytes they need.

Owns: the entry point (layer `info` -> mesh format -> the right reader -> local files), and the
two unsharded formats, one segment at a time:
* legacy (`<id>:0` JSON manifest naming fragment files; the nuclei layer): fragments and manifest
  are written under their remote names, DECOMPRESSED (remotes store them with
  `Content-Encoding: gzip`; a plain file is what cloud-volume's `file://` reader and any static
  web server in front of neuroglancer read back). The manifest is written last, so a local
  `<id>:0` means the segment is complete. Names keep their `:` (cloud-volume looks for `<id>:0`);
  an escaping policy for file systems that forbid `:` is future work.
* unsharded multi-resolution (`<id>.index` manifest + `<id>` fragment data): copied as is.
Sharded multi-resolution meshes (seg_m1300) go to `sharded.py`. Must not decide exit codes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from microns_get.errors import RemoteError, VerificationFailed
from microns_get.layout import safe_relative
from microns_get.precomputed.payload import maybe_gunzip
from microns_get.precomputed.sharding import decode_multires_manifest
from microns_get.segments.layer import LEGACY, SHARDED, LayerCopies, RemoteLayer
from microns_get.segments.layer import write_local_infos as _write_infos
from microns_get.segments.remote import MirrorDir, write_atomic
from microns_get.segments.result import (
    FAILED,
    FETCHED,
    MISSING,
    PRESENT,
    SegmentReport,
    SegmentsResult,
)
from microns_get.segments.sharded import fetch_sharded
from microns_get.transfer import events as ev


async def fetch_segment_meshes(
    session: aiohttp.ClientSession,
    settings: Any,
    layer_url: str | Sequence[str],
    local_layer: Path,
    segment_ids: list[int],
    emit: ev.Emit | None = None,
) -> SegmentsResult:
    """Fetch the meshes of `segment_ids` from the layer at `layer_url` into `local_layer`.

    `layer_url` is the layer root (`gs://iarpa_microns/minnie/minnie65/seg_m1300`), or several
    mirror URLs of the same layer in the order to try them. Ids already complete locally are
    reported `present` and cost no request; a later call with more ids adds to the local layer.
    """
    emit = emit or ev.ignore
    urls = [layer_url] if isinstance(layer_url, str) else list(layer_url)
    limit = asyncio.Semaphore(settings.jobs)
    mirrors = [MirrorDir(url, session, settings, limit, emit) for url in urls]
    result = SegmentsResult("meshes")
    ids = [int(sid) for sid in dict.fromkeys(segment_ids)]
    for sid in ids:
        result.report(sid)  # reports keep the order the ids were asked in
    copies = LayerCopies(mirrors, result)
    layer = await copies.first()
    result.layout = layer.layout
    mesh_dir = await asyncio.to_thread(_write_infos, layer, Path(local_layer), result)
    if layer.layout == SHARDED:
        await fetch_sharded(copies, mesh_dir, ids, result, emit)
    else:
        await asyncio.gather(*(_one_unsharded(copies, mesh_dir, sid, result, emit) for sid in ids))
    _emit_outcomes(result, emit)
    return result


async def _one_unsharded(
    copies: LayerCopies, mesh_dir: Path, sid: int, result: SegmentsResult, emit: ev.Emit
) -> None:
    report = result.report(sid)
    legacy = result.layout == LEGACY
    if await asyncio.to_thread(_complete_locally, mesh_dir, sid, legacy):
        report.status, report.paths = PRESENT, [str(mesh_dir / _manifest_name(sid, legacy))]
        return
    read = _read_legacy if legacy else _read_multires
    try:
        files = await copies.run(lambda layer: read(layer, sid, report), f"segment {sid}")
    except RemoteError as exc:
        report.status, report.detail = FAILED, str(exc)
        result.errors.append(f"segment {sid}: {exc}")
        return
    if files is None:
        return  # reported missing
    for name, data in files:  # manifest last: its presence means "complete"
        path = mesh_dir / safe_relative(name)
        await asyncio.to_thread(write_atomic, path, data)
        report.wrote(str(path), len(data))
        emit(ev.ItemDone(str(path), len(data), report.mirror or "", "decoded", f"segment {sid}"))
    report.status = FETCHED


Files = list[tuple[str, bytes]]


async def _read_legacy(layer: RemoteLayer, sid: int, report: SegmentReport) -> Files | None:
    """`<id>:0` and every fragment it names, decompressed; None when there is no manifest."""
    report.mirror = layer.mirror.url
    raw = await layer.mirror.read(layer.mesh_key(f"{sid}:0"), report.tally)
    if raw is None:
        report.status, report.detail = MISSING, f"no mesh: no {sid}:0 on {layer.mirror.url}"
        return None
    manifest = maybe_gunzip(raw)
    names = legacy_fragment_names(manifest, sid)
    datas = await asyncio.gather(*(_legacy_fragment(layer, n, report) for n in names))
    return [*zip(names, datas), (f"{sid}:0", manifest)]


async def _legacy_fragment(layer: RemoteLayer, name: str, report: SegmentReport) -> bytes:
    data = await layer.mirror.read(layer.mesh_key(name), report.tally)
    if data is None:
        raise RemoteError(f"the manifest names {name}, which {layer.mirror.url} lacks", status=404)
    data = maybe_gunzip(data)
    check_legacy_fragment(data, name)
    return data


def legacy_fragment_names(manifest: bytes, sid: int) -> list[str]:
    """The fragment names of a legacy `<id>:0` manifest (checked to stay inside the mesh dir)."""
    try:
        doc = json.loads(manifest)
        names = doc["fragments"]
    except (ValueError, KeyError, TypeError):
        raise VerificationFailed(f"{sid}:0 is not a legacy mesh manifest") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise VerificationFailed(f"{sid}:0: 'fragments' must be a list of names")
    for name in names:
        safe_relative(name)
    return list(dict.fromkeys(names))


def check_legacy_fragment(data: bytes, name: str) -> None:
    """uint32 vertex count, 3 float32 per vertex, then whole uint32 triangles (meshes.md)."""
    if not data:
        return  # an empty fragment is legal (a chunk where the object has no surface)
    if len(data) < 4:
        raise VerificationFailed(f"mesh fragment {name}: {len(data)} bytes")
    vertices = int.from_bytes(data[:4], "little")
    rest = len(data) - 4 - 12 * vertices
    if rest < 0 or rest % 12:
        raise VerificationFailed(
            f"mesh fragment {name}: {len(data)} bytes do not hold {vertices} vertices + triangles"
        )


async def _read_multires(layer: RemoteLayer, sid: int, report: SegmentReport) -> Files | None:
    """`<id>` fragment data and `<id>.index` manifest; None when there is no manifest."""
    report.mirror = layer.mirror.url
    raw = await layer.mirror.read(layer.mesh_key(f"{sid}.index"), report.tally)
    if raw is None:
        report.status, report.detail = MISSING, f"no mesh: no {sid}.index on {layer.mirror.url}"
        return None
    manifest = maybe_gunzip(raw)
    total = decode_multires_manifest(manifest).total_fragment_bytes
    data = await layer.mirror.read(layer.mesh_key(str(sid)), report.tally, 0, total)
    if data is None or len(data) != total:
        raise RemoteError(f"{sid}.index promises {total} fragment bytes that are not there")
    return [(str(sid), data), (f"{sid}.index", manifest)]


def _manifest_name(sid: int, legacy: bool) -> str:
    return f"{sid}:0" if legacy else f"{sid}.index"


def _complete_locally(mesh_dir: Path, sid: int, legacy: bool) -> bool:
    manifest = mesh_dir / _manifest_name(sid, legacy)
    if not legacy:
        return manifest.exists() and (mesh_dir / str(sid)).exists()
    if not manifest.exists():
        return False
    try:
        names = legacy_fragment_names(manifest.read_bytes(), sid)
    except VerificationFailed:
        return False
    return all((mesh_dir / n).exists() for n in names)


def _emit_outcomes(result: SegmentsResult, emit: ev.Emit) -> None:
    """One event per id that was not fetched (fetched files were announced as written)."""
    for sid, report in result.segments.items():
        if report.status == MISSING:
            emit(ev.ItemSkipped(f"segment {sid}", 0, report.detail or "no mesh"))
        elif report.status == PRESENT:
            emit(ev.ItemSkipped(f"segment {sid}", 0, "already here"))
        elif report.status == FAILED:
            emit(ev.ItemFailed(f"segment {sid}", report.detail))
