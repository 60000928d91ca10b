"""Running a cutout plan: each read through the shared retry / mirror policy, its chunks cut
out, checked by decoding, written under their final names only when complete, and recorded in
the checkpoint so a rerun moves nothing already done.

Owns: the local unsharded layer (its `info` and chunk files). Reads stay on the mirror whose
indexes were read: shard layouts of two mirrors may differ.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import time
import zlib
from pathlib import Path
from typing import Any

from microns_get.checkpoint import CheckpointStore, FinishedItem
from microns_get.errors import BadInput, MicronsGetError, RemoteError
from microns_get.plan.cutout import CutoutPlan, Read, ScalePlan, incompatible_reason, local_info
from microns_get.plan.cutout_discover import Layer
from microns_get.precomputed.codecs import CorruptChunk, decode_chunk, maybe_gunzip
from microns_get.precomputed.info import Scale, VolumeInfo
from microns_get.transfer import events as ev
from microns_get.transfer import files
from microns_get.transfer.health import MirrorHealth
from microns_get.transfer.requests import Requester

DECODE_ATTEMPTS = 2  # a chunk that does not decode is read once more before it counts as failed
THREAD_BATCH = 32  # chunks per worker-thread task: zlib, decoders and fsync release the GIL


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
        self._record_absent(plan, [name for s in plan.scales for name in s.absent])
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
            self._record_absent(plan, [chunk.name for chunk in todo])
            return
        url, provider = layer.url(read.key), layer.mirror.provider
        groups = [payloads[i : i + THREAD_BATCH] for i in range(0, len(payloads), THREAD_BATCH)]
        batches = await asyncio.gather(
            *(asyncio.to_thread(self._write_chunks, plan, group) for group in groups)
        )
        written = [entry for batch in batches for entry in batch]
        self.store.items_finished(
            FinishedItem(item, None, item, url, size, identity, "done", "decoded", provider, md5)
            for item, size, md5 in written
        )
        for item, size, _ in written:
            self.done += 1
            self.emit(ev.ItemDone(item, size, provider, "decoded"))

    def _write_chunks(
        self, plan: CutoutPlan, payloads: list[tuple[Any, bytes]]
    ) -> list[tuple[str, int, str]]:
        """Each chunk under its final name only when complete (runs in a worker thread)."""
        written = []
        for chunk, payload in payloads:
            item = self._item(plan, chunk.name)
            files.write_file_atomic(self.dest / item, payload)
            written.append((item, len(payload), "md5:" + hashlib.md5(payload).hexdigest()))
        return written

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
                # gunzip + decode checks release the GIL: off the event loop, several threads
                groups = [todo[i : i + THREAD_BATCH] for i in range(0, len(todo), THREAD_BATCH)]
                checked = await asyncio.gather(
                    *(
                        asyncio.to_thread(self._payloads, data, group, read, scale, layer.info)
                        for group in groups
                    )
                )
                return [pair for group in checked for pair in group]
            except CorruptChunk:
                if attempt == DECODE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _payloads(
        self, data: bytes, chunks: list, read: Read, scale: Scale, info: VolumeInfo
    ) -> list[tuple[Any, bytes]]:
        return [(c, self._payload(data, c, read, scale, info)) for c in chunks]

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
