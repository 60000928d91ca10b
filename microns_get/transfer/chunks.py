"""Running a cutout plan: each read through the shared retry / mirror policy, its chunks cut
out, checked by decoding, written under their final names only when complete, and recorded in
the checkpoint so a rerun moves nothing already done.

Owns: the local unsharded layer (its `info` and chunk files). Reads stay on the mirror whose
indexes were read: shard layouts of two mirrors may differ.

Where the time goes: a cutout is many small files. Each chunk is inflated, checked, written to a
temp name, fsynced, renamed and hashed in one step on a worker thread of the runner's own pool
(all of these release the GIL, and several fsyncs wait on the disk together); the directory
fsync that makes the renames durable is done once per directory at the end, not per chunk. A chunk
whose bytes do not decode is read again (only the chunks still missing), never written.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from microns_get.checkpoint import CheckpointStore, FinishedItem
from microns_get.errors import BadInput, MicronsGetError, RemoteError
from microns_get.plan.cutout import (
    ChunkSlice,
    CutoutPlan,
    Read,
    ScalePlan,
    incompatible_reason,
    local_info,
)
from microns_get.plan.cutout_discover import Layer
from microns_get.precomputed.info import Scale, VolumeInfo
from microns_get.precomputed.payload import CorruptChunk, check_chunk, maybe_gunzip
from microns_get.transfer import events as ev
from microns_get.transfer import files
from microns_get.transfer.health import MirrorHealth
from microns_get.transfer.requests import Requester
from microns_get.verify.digests import written_checksum

T = TypeVar("T")

DECODE_ATTEMPTS = 2  # a chunk that does not decode is read once more before it counts as failed
WRITERS = 4  # threads that check and write chunks: enough to overlap fsyncs with inflating
# and hashing on a few cores; more only contend for the GIL between those calls
MAX_BATCH = 32  # chunks per worker-thread task at most: fewer hops, still spread over WRITERS


def chunk_shape(name: str) -> tuple[int, int, int]:
    spans = name.rsplit("/", 1)[-1].split("_")
    lo_hi = [tuple(int(v) for v in span.split("-")) for span in spans]
    return tuple(hi - lo for lo, hi in lo_hi)  # type: ignore[return-value]


@dataclass(frozen=True)
class Landed:
    """A chunk written under its final name: its item id, size and checksum."""

    item: str
    size: int
    checksum: str


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
        self.pool: ThreadPoolExecutor | None = None
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
        self._record_absent(plan, [name for s in plan.scales for name in s.absent])
        directories = _make_directories(local, plan)
        with ThreadPoolExecutor(WRITERS, thread_name_prefix="cutout") as self.pool:
            _start_threads(self.pool, WRITERS)
            await asyncio.gather(
                *(
                    self._run_read(plan, layer, scales[s.key], s, read)
                    for s in plan.scales
                    for read in s.reads
                )
            )
            # the renames of this run, durable once per directory (a rename lost in a crash
            # only means that chunk is fetched again: done also needs the file to exist)
            await self._in_pool(files.sync_dirs, directories)
        return self._finished(plan_json["plan_id"], started)

    def _in_pool(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

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

    def _record_absent(self, plan: CutoutPlan, names: list[str]) -> None:
        """Chunks the remote never wrote (all background): recorded, not fetched, not errors."""
        items = [self._item(plan, name) for name in names]
        self.store.items_finished(
            FinishedItem(item, None, item, "", 0, "absent", "absent")
            for item in items
            if not self.store.is_done(item, "absent")
        )
        self.absent += len(items)

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
        landing = _Landing(plan, layer, scale, read, identity, todo)
        try:
            await self._land(landing, scale_plan.sharded)
        except (MicronsGetError, OSError) as exc:
            if isinstance(exc, files.DiskFull):
                raise
            self.failed += len(landing.remaining)
            self.failures.append(f"{layer.url(read.key)}: {exc}")
            self.emit(ev.ItemFailed(read.key, str(exc)))

    async def _land(self, landing: _Landing, sharded: bool) -> None:
        """Read, then check and write every chunk still to do; a chunk that does not decode is
        read again (with the rest of its read) until DECODE_ATTEMPTS run out."""
        for _ in range(DECODE_ATTEMPTS):
            data = await self._read(landing.layer, landing.read, sharded)
            if data is None:  # an unsharded chunk that was never written: background
                self._record_absent(landing.plan, [chunk.name for chunk in landing.remaining])
                landing.remaining = []
                return
            corrupt = await self._write_chunks(landing, data)
            landing.remaining = [chunk for chunk, _ in corrupt]
            if not corrupt:
                return
        raise CorruptChunk(corrupt[0][1])

    async def _read(self, layer: Layer, read: Read, sharded: bool) -> bytes | None:
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
        return data

    async def _write_chunks(self, landing: _Landing, data: bytes) -> list[tuple[ChunkSlice, str]]:
        """The chunks still to do, checked and written on the pool's threads, and recorded;
        returns those that did not decode, with why."""
        todo = landing.remaining
        size = min(MAX_BATCH, -(-len(todo) // WRITERS))
        batches = await asyncio.gather(
            *(
                self._in_pool(self._write_batch, landing, data, todo[i : i + size])
                for i in range(0, len(todo), size)
            )
        )
        self._record_done(landing, [chunk for landed, _ in batches for chunk in landed])
        return [bad for _, corrupt in batches for bad in corrupt]

    def _write_batch(
        self, landing: _Landing, data: bytes, chunks: Sequence[ChunkSlice]
    ) -> tuple[list[Landed], list[tuple[ChunkSlice, str]]]:
        """Each chunk checked, then under its final name only when complete (a worker thread)."""
        landed, corrupt = [], []
        info = landing.layer.info
        for chunk in chunks:
            try:
                body = chunk_payload(data, chunk, landing.read, landing.scale, info)
            except CorruptChunk as exc:
                corrupt.append((chunk, str(exc)))
                continue
            item = self._item(landing.plan, chunk.name)
            # the renames are made durable once per directory at the end (`run`)
            files.write_file_atomic(self.dest / item, body, sync_dir=False)
            landed.append(Landed(item, len(body), written_checksum(body)))
        return landed, corrupt

    def _record_done(self, landing: _Landing, landed: list[Landed]) -> None:
        url, provider = landing.layer.url(landing.read.key), landing.layer.mirror.provider
        self.store.items_finished(
            FinishedItem(
                c.item, None, c.item, url, c.size, landing.identity, "done", "decoded", provider,
                c.checksum,
            )
            for c in landed
        )  # fmt: skip
        for c in landed:
            self.done += 1
            self.emit(ev.ItemDone(c.item, c.size, provider, "decoded"))


@dataclass
class _Landing:
    """One read's chunks on their way to disk; `remaining` shrinks as they land."""

    plan: CutoutPlan
    layer: Layer
    scale: Scale
    read: Read
    identity: str
    remaining: list[ChunkSlice]


def _start_threads(pool: ThreadPoolExecutor, count: int) -> None:
    """Start the pool's threads now, while the first reads are in flight. Started on demand
    they would start while the others inflate and hash, and each start waits for the GIL."""
    barrier = threading.Barrier(count)

    def arrive() -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=5)

    for _ in range(count):  # each waits for the others, so every submit needs a new thread
        pool.submit(arrive)


def _make_directories(local: Path, plan: CutoutPlan) -> list[Path]:
    """The scale directories the chunks land in, made now: the final `files.sync_dirs` then
    finds each one even when none of its chunks could be written."""
    directories = sorted({local / s.key for s in plan.scales if s.reads})
    for directory in directories:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise files.wrap_os_error(exc, directory) from exc
    return directories


def chunk_payload(
    data: bytes, chunk: ChunkSlice, read: Read, scale: Scale, info: VolumeInfo
) -> bytes:
    """A chunk's bytes as stored locally (gzip undone), checked to decode; else `CorruptChunk`."""
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
    check_chunk(body, scale, info.data_type, info.num_channels, chunk_shape(chunk.name))
    return body
