"""The cutout job: `fetch LAYER --bbox ...` reads exactly the chunks a box needs.

Owns: discovery for cutouts (the layer `info`, then per shard its index and the minishard
indexes of the needed chunks, so the plan knows exact byte ranges before any chunk data moves),
and running the plan: each read through the shared retry/mirror policy, each chunk checked by
decoding it, written under its final name only when complete, and recorded in the checkpoint so
a rerun moves nothing already done. Planning rules themselves live in `plan.cutout` (pure).
Reads stay on the mirror whose indexes were read: shard layouts of two mirrors may differ.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import zlib
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from microns_get.catalog import Catalog, Mirror
from microns_get.checkpoint import CheckpointStore
from microns_get.errors import BadInput, MicronsGetError, RemoteError
from microns_get.layout import canonical_path
from microns_get.plan.cutout import (
    CutoutPlan,
    CutoutRequest,
    Read,
    ScalePlan,
    incompatible_reason,
    local_info,
    sharded_reads,
    unsharded_reads,
)
from microns_get.plan.discover import PRECOMPUTED_KINDS, select_mirrors
from microns_get.precomputed.codecs import CorruptChunk, decode_chunk, maybe_gunzip
from microns_get.precomputed.grid import (
    Box,
    chunk_key,
    chunks_for,
    clip_to_scale,
    select_scales,
    to_scale,
)
from microns_get.precomputed.info import Scale, VolumeInfo, load_json, parse_volume_info
from microns_get.precomputed.sharding import (
    ChunkRange,
    decode_minishard_index,
    decode_shard_index,
    index_length,
    locate_chunk,
    minishard_index_range,
    volume_chunk_id,
)
from microns_get.sources import CloudPath, Source, open_source, source_url
from microns_get.transfer import events as ev
from microns_get.transfer import files
from microns_get.transfer.health import MirrorHealth
from microns_get.transfer.requests import Requester

T = TypeVar("T")
DECODE_ATTEMPTS = 2  # a chunk that does not decode is read once more before it counts as failed


@dataclass
class Layer:
    """The remote layer a plan reads from: its mirror, source and parsed info."""

    mirror: Mirror
    source: Source
    root: CloudPath
    info: VolumeInfo
    info_json: dict[str, Any]

    def key(self, relative: str) -> str:
        return self.root.join(relative).key

    def url(self, relative: str) -> str:
        return source_url(self.source, self.key(relative))


class CutoutPlanner:
    def __init__(self, session: aiohttp.ClientSession, settings: Any) -> None:
        self.session = session
        self.settings = settings
        self.requester = Requester(settings, MirrorHealth())
        self.limit = asyncio.Semaphore(settings.jobs)

    async def call(self, layer: Layer, relative: str, fn: Callable[[], Awaitable[T]]) -> T:
        async with self.limit:
            return await self.requester(layer.mirror.provider, layer.url(relative), fn)

    async def plan(self, catalog: Catalog, request: CutoutRequest) -> tuple[CutoutPlan, Layer]:
        dataset = catalog.find(request.dataset, request.volume)
        if dataset.kind not in PRECOMPUTED_KINDS:
            raise BadInput(f"--bbox needs a precomputed layer; {dataset.id} is a {dataset.kind}")
        part = dataset.version(request.version).part(None)
        box = Box.parse(request.bbox)
        mirrors = select_mirrors(part, self.settings.mirror, dataset.id)
        layer = await self._open_layer(mirrors)
        scales = select_scales(layer.info, request.mip, request.resolution)
        local = str(canonical_path(CloudPath.parse(part.mirrors[0].url)))
        plan = CutoutPlan(request.to_json(), layer.mirror.url, local, layer.info_json, [])
        for index, scale in scales:
            plan.scales.append(await self._plan_scale(layer, index, scale, box, request, plan))
        return plan, layer

    async def _open_layer(self, mirrors: list[Mirror]) -> Layer:
        errors = []
        for mirror in mirrors:
            root = CloudPath.parse(mirror.url)
            source = open_source(root, self.session, self.settings)
            url = source_url(source, root.join("info").key)
            try:
                data = await self.requester(
                    mirror.provider, url, lambda s=source, r=root: s.read(r.join("info").key)
                )
            except RemoteError as exc:
                errors.append(f"{mirror.url}: {exc}")
                continue
            if data is None:
                errors.append(f"{mirror.url}: no info file")
                continue
            raw = dict(load_json(maybe_gunzip(data)))
            return Layer(mirror, source, root, parse_volume_info(raw), raw)
        raise RemoteError(f"no mirror served the layer info ({'; '.join(errors)})")

    async def _plan_scale(
        self,
        layer: Layer,
        index: int,
        scale: Scale,
        box: Box,
        request: CutoutRequest,
        plan: CutoutPlan,
    ) -> ScalePlan:
        wanted = to_scale(box, scale, request.bbox_resolution)
        clipped, was_clipped = clip_to_scale(wanted, scale, request.bbox_resolution)
        if was_clipped:
            plan.warnings.append(
                f"bbox clipped to the volume at scale {scale.key}: {clipped} ({scale.key} voxels)"
            )
        chunks = chunks_for(scale, clipped)
        scale_plan = ScalePlan(
            index=index,
            key=scale.key,
            resolution=scale.resolution,
            box=clipped.to_json(),
            clipped=was_clipped,
            sharded=scale.sharding is not None,
            chunks=len(chunks),
        )
        names = [chunk_key(scale, c) for c in chunks]
        if scale.sharding is None:
            scale_plan.reads = unsharded_reads(names)
            return scale_plan
        by_shard: dict[str, dict[int, list[tuple[str, int]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for chunk, name in zip(chunks, names):
            chunk_id = volume_chunk_id(scale, chunk.grid)
            where = locate_chunk(scale.sharding, chunk_id)
            by_shard[f"{scale.key}/{where.filename}"][where.minishard].append((name, chunk_id))
        await asyncio.gather(
            *(
                self._plan_shard(layer, scale, key, minishards, scale_plan)
                for key, minishards in sorted(by_shard.items())
            )
        )
        scale_plan.reads.sort(key=lambda r: (r.key, r.start or 0))
        scale_plan.shards.sort(key=lambda c: c.key)
        scale_plan.absent.sort()
        return scale_plan

    async def _plan_shard(
        self,
        layer: Layer,
        scale: Scale,
        key: str,
        minishards: dict[int, list[tuple[str, int]]],
        out: ScalePlan,
    ) -> None:
        spec = scale.sharding
        assert spec is not None
        members = [name for group in minishards.values() for name, _ in group]
        stat = await self.call(layer, key, lambda: layer.source.stat(layer.key(key)))
        out.index_requests += 1
        if stat is None:  # a missing shard is empty space
            out.absent.extend(members)
            return
        out.identity[key] = stat.generation or stat.etag or ""
        index = await self._read(layer, key, 0, index_length(spec), out)
        entries = decode_shard_index(index, spec)
        located: dict[str, ChunkRange] = {}
        for minishard, group in sorted(minishards.items()):
            if entries[minishard][0] == entries[minishard][1]:
                out.absent.extend(name for name, _ in group)
                continue
            start, end = minishard_index_range(spec, entries[minishard], stat.size)
            ranges = decode_minishard_index(
                await self._read(layer, key, start, end, out), spec, stat.size
            )
            by_id = {r.chunk_id: r for r in ranges}
            for name, chunk_id in group:
                if chunk_id in by_id:
                    located[name] = by_id[chunk_id]
                else:
                    out.absent.append(name)
        if located:
            gzip_data = spec.data_encoding == "gzip"
            cost = self.settings.request_cost
            reads, choice = sharded_reads(key, located, stat.size, gzip_data, cost)
            out.reads.extend(reads)
            out.shards.append(choice)

    async def _read(self, layer: Layer, key: str, start: int, end: int, out: ScalePlan) -> bytes:
        data = await self.call(layer, key, lambda: layer.source.read(layer.key(key), start, end))
        if data is None:
            raise RemoteError(f"{layer.url(key)} vanished while its index was read", status=404)
        out.index_requests += 1
        out.index_bytes += len(data)
        return data


def chunk_shape(name: str) -> tuple[int, int, int]:
    spans = name.rsplit("/", 1)[-1].split("_")
    lo_hi = [tuple(int(v) for v in span.split("-")) for span in spans]
    return tuple(hi - lo for lo, hi in lo_hi)  # type: ignore[return-value]


class CutoutRunner:
    """Moves the plan's chunk bytes into a local unsharded layer under DEST."""

    def __init__(
        self,
        dest: Path,
        store: CheckpointStore,
        settings: Any,
        emit: ev.Emit = ev.ignore,
    ) -> None:
        self.dest = dest
        self.store = store
        self.settings = settings
        self.emit = emit
        self.requester = Requester(settings, MirrorHealth(), emit)
        self.limit = asyncio.Semaphore(settings.jobs)
        self.done = self.skipped = self.failed = self.absent = self.bytes_moved = 0
        self.failures: list[str] = []

    async def run(self, plan: CutoutPlan, layer: Layer) -> ev.RunFinished:
        started = time.monotonic()
        plan_json = plan.to_json()
        self.store.save_plan(plan_json["plan_id"], dict(plan.request), plan_json)
        local = self.dest / plan.local_layer
        self._write_info(local, plan, layer)
        totals = plan.totals()
        self.emit(ev.RunStarted(plan_json["plan_id"], totals["chunks"], 0, plan.layer_url, 0))
        scales = {s.key: s for s in layer.info.scales}
        for scale_plan in plan.scales:
            for name in scale_plan.absent:
                self._record_absent(plan, name)
        await asyncio.gather(
            *(
                self._run_read(plan, layer, scales[s.key], s, read)
                for s in plan.scales
                for read in s.reads
            )
        )
        return self._finished(plan_json["plan_id"], started)

    def _finished(self, plan_id: str, started: float) -> ev.RunFinished:
        event = ev.RunFinished(
            plan_id=plan_id,
            objects_done=self.done,
            objects_skipped=self.skipped,
            objects_failed=self.failed,
            bytes_moved=self.bytes_moved,
            seconds=round(time.monotonic() - started, 3),
            retries=self.requester.retries,
            mirrors_used={},
            verified_by={"decoded": self.done, "absent (never written remotely)": self.absent},
            failures=self.failures[:50],
        )
        self.emit(event)
        return event

    def _write_info(self, local: Path, plan: CutoutPlan, layer: Layer) -> None:
        info_path = local / "info"
        existing = None
        if info_path.exists():
            existing = json.loads(info_path.read_text())
            reason = incompatible_reason(layer.info_json, existing)
            if reason:
                raise BadInput(f"{local} holds another layer ({reason}); use another --dest")
        fetched = [s for s in layer.info.scales if s.key in {p.key for p in plan.scales}]
        info = local_info(layer.info_json, fetched, existing)
        if info != existing:
            files.write_file_atomic(info_path, json.dumps(info, indent=2).encode())

    def _item(self, plan: CutoutPlan, name: str) -> str:
        return f"{plan.local_layer}/{name}"

    def _record_absent(self, plan: CutoutPlan, name: str) -> None:
        item = self._item(plan, name)
        if not self.store.is_done(item, "absent"):
            self.store.begin_item(
                item,
                plan_id="",
                local_path=item,
                remote_url="",
                size=0,
                identity="absent",
                parts=[(0, 0)],
            )
            self.store.item_absent(item)
        self.absent += 1

    def _is_done(self, item: str, identity: str) -> bool:
        return self.store.is_done(item, identity) and (self.dest / item).exists()

    async def _run_read(
        self, plan: CutoutPlan, layer: Layer, scale: Scale, scale_plan: ScalePlan, read: Read
    ) -> None:
        identity = f"{read.key}:{scale_plan.identity.get(read.key, '')}"
        todo = [c for c in read.chunks if not self._is_done(self._item(plan, c.name), identity)]
        self.skipped += len(read.chunks) - len(todo)
        if not todo:
            return
        try:
            payloads = await self._fetch_payloads(layer, scale, scale_plan.sharded, read, todo)
        except (MicronsGetError, OSError) as exc:
            if isinstance(exc, files.DiskFull):
                raise
            self.failed += len(todo)
            self.failures.append(f"{layer.url(read.key)}: {exc}")
            self.emit(ev.ItemFailed(read.key, str(exc)))
            return
        if payloads is None:  # an unsharded chunk that was never written: background
            for chunk in todo:
                self._record_absent(plan, chunk.name)
            return
        for chunk, payload in payloads:
            item = self._item(plan, chunk.name)
            files.write_file_atomic(self.dest / item, payload)
            self.store.begin_item(
                item,
                plan_id="",
                local_path=item,
                remote_url=layer.url(read.key),
                size=len(payload),
                identity=identity,
                parts=[(0, len(payload))],
            )
            self.store.item_done(item, "decoded", layer.mirror.provider)
            self.done += 1
            self.emit(ev.ItemDone(item, len(payload), layer.mirror.provider, "decoded"))

    async def _fetch_payloads(
        self, layer: Layer, scale: Scale, sharded: bool, read: Read, todo: list
    ) -> list[tuple[Any, bytes]] | None:
        for attempt in range(DECODE_ATTEMPTS):
            async with self.limit:
                data = await self.requester(
                    layer.mirror.provider,
                    layer.url(read.key),
                    lambda: layer.source.read(layer.key(read.key), read.start or 0, read.end),
                )
            if data is None:
                if not sharded:
                    return None
                raise RemoteError(f"{layer.url(read.key)} disappeared since it was planned")
            self.bytes_moved += len(data)
            self.emit(ev.BytesMoved(read.key, len(data)))
            try:
                return [(c, self._payload(data, c, read, scale, layer.info)) for c in todo]
            except CorruptChunk:
                if attempt == DECODE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _payload(data: bytes, chunk: Any, read: Read, scale: Scale, info: VolumeInfo) -> bytes:
        body = data if chunk.length is None else data[chunk.offset : chunk.offset + chunk.length]
        if chunk.length is not None and len(body) != chunk.length:
            raise CorruptChunk(f"{chunk.name}: short read ({len(body)} of {chunk.length} bytes)")
        if read.gzip:
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError, zlib.error) as exc:
                raise CorruptChunk(f"{chunk.name}: gzip data does not inflate ({exc})") from None
        else:
            body = maybe_gunzip(body)  # an unsharded chunk stored with Content-Encoding: gzip
        decode_chunk(body, scale, info.data_type, info.num_channels, chunk_shape(chunk.name))
        return body


async def plan_cutout(
    session: aiohttp.ClientSession, settings: Any, catalog: Catalog, request: CutoutRequest
) -> tuple[CutoutPlan, Layer]:
    return await CutoutPlanner(session, settings).plan(catalog, request)


async def run_cutout(
    settings: Any,
    catalog: Catalog,
    request: CutoutRequest,
    emit: ev.Emit = ev.ignore,
    dry_run: bool = False,
) -> tuple[CutoutPlan, ev.RunFinished | None]:
    from microns_get.fetch import STATE_FILE, state_dir
    from microns_get.sources import make_session

    async with make_session(settings.jobs, settings.timeout) as session:
        plan, layer = await plan_cutout(session, settings, catalog, request)
        if dry_run:
            return plan, None
        with CheckpointStore.open(state_dir(settings) / STATE_FILE) as store:
            runner = CutoutRunner(Path(settings.dest), store, settings, emit)
            return plan, await runner.run(plan, layer)
