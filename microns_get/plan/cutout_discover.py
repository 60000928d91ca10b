"""Discovery for cutouts: the layer `info`, then per needed shard its index and the minishard
indexes of the needed chunks, so the plan knows exact byte ranges before any chunk data moves.

Owns: the I/O that feeds `plan.cutout` (pure). Reads go through the shared retry / mirror-health
policy; the layer is read from the first mirror (in `--mirror` order) that serves its `info`.
Must not fetch chunk data or write files.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from microns_get.catalog import Catalog, Mirror
from microns_get.errors import BadInput, RemoteError
from microns_get.layout import canonical_path
from microns_get.plan.cutout import (
    CutoutPlan,
    CutoutRequest,
    ScalePlan,
    sharded_reads,
    unsharded_reads,
)
from microns_get.plan.discover import PRECOMPUTED_KINDS, probe_part, select_mirrors
from microns_get.precomputed.grid import (
    Box,
    chunk_key,
    chunks_for,
    clip_to_scale,
    select_scales,
    to_scale,
)
from microns_get.precomputed.info import (
    Scale,
    ShardingSpec,
    VolumeInfo,
    load_json,
    parse_volume_info,
)
from microns_get.precomputed.payload import maybe_gunzip
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
from microns_get.transfer.health import MirrorHealth
from microns_get.transfer.requests import Requester

if TYPE_CHECKING:
    from microns_get.sources.http import Session

T = TypeVar("T")


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
    def __init__(self, session: Session, settings: Any) -> None:
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
        if self.settings.mirror == "auto" and len(mirrors) > 1:
            mirrors = await self._ranked(part, mirrors)
        layer = await self._open_layer(mirrors)
        scales = select_scales(layer.info, request.mip, request.resolution)
        local = str(canonical_path(CloudPath.parse(part.mirrors[0].url)))
        plan = CutoutPlan(request.to_json(), layer.mirror.url, local, layer.info_json, [])
        for index, scale in scales:
            plan.scales.append(await self._plan_scale(layer, index, scale, box, request, plan))
        return plan, layer

    async def _ranked(self, part: Any, mirrors: list[Mirror]) -> list[Mirror]:
        """The fastest mirror first, measured on the same object of each (as `fetch` does)."""
        probes = await probe_part(self.session, self.settings, part, mirrors)
        order = {p.url: i for i, p in enumerate(probes)}
        return sorted(mirrors, key=lambda m: order.get(m.url, len(order)))

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
        # The HEAD and the shard index together: one round trip, not two, before the
        # minishard indexes (a missing shard answers both with "missing").
        stat, index = await asyncio.gather(
            self.call(layer, key, lambda: layer.source.stat(layer.key(key))),
            self.call(layer, key, lambda: layer.source.read(layer.key(key), 0, index_length(spec))),
        )
        out.index_requests += 2
        if stat is None:  # a missing shard is empty space
            out.absent.extend(members)
            return
        if index is None:
            raise RemoteError(f"{layer.url(key)} vanished while its index was read", status=404)
        out.index_bytes += len(index)
        out.identity[key] = stat.generation or stat.etag or ""
        entries = decode_shard_index(index, spec)
        located = await self._locate(layer, spec, key, stat.size, entries, minishards, out)
        if located:
            gzip_data = spec.data_encoding == "gzip"
            cost = self.settings.request_cost
            reads, choice = sharded_reads(key, located, stat.size, gzip_data, cost)
            out.reads.extend(reads)
            out.shards.append(choice)

    async def _locate(
        self,
        layer: Layer,
        spec: ShardingSpec,
        key: str,
        shard_size: int,
        entries: list[tuple[int, int]],
        minishards: dict[int, list[tuple[str, int]]],
        out: ScalePlan,
    ) -> dict[str, ChunkRange]:
        """Where each wanted chunk sits in the shard, from its minishard indexes (read at once);
        chunks no index lists are absent."""
        wanted = sorted(m for m in minishards if entries[m][0] != entries[m][1])
        for m in sorted(set(minishards) - set(wanted)):
            out.absent.extend(name for name, _ in minishards[m])
        ranges = [minishard_index_range(spec, entries[m], shard_size) for m in wanted]
        indexes = await asyncio.gather(
            *(self._read(layer, key, start, end, out) for start, end in ranges)
        )
        located: dict[str, ChunkRange] = {}
        for m, data in zip(wanted, indexes):
            by_id = {r.chunk_id: r for r in decode_minishard_index(data, spec, shard_size)}
            for name, chunk_id in minishards[m]:
                if chunk_id in by_id:
                    located[name] = by_id[chunk_id]
                else:
                    out.absent.append(name)
        return located

    async def _read(self, layer: Layer, key: str, start: int, end: int, out: ScalePlan) -> bytes:
        data = await self.call(layer, key, lambda: layer.source.read(layer.key(key), start, end))
        if data is None:
            raise RemoteError(f"{layer.url(key)} vanished while its index was read", status=404)
        out.index_requests += 1
        out.index_bytes += len(data)
        return data
