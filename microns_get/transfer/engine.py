"""The transfer engine: executes a plan with parallel ranged reads, resume, verification, failover.

Owns: per item, fetch -> temp file -> verify -> fsync + rename -> mark done, and the run's
bookkeeping. Small objects come into memory and land in one worker-thread step (write, check,
fsync, rename); large ones go part by part through `parts.PartFetcher`, every finished part
recorded so a rerun after kill -9 fetches only what was not finished. A complete file already
under its final name but not recorded (a run killed before its records were flushed, another
tool) is checked against the remote's digests and adopted, not fetched again. Consults the
retry policy and mirror health through `Requester`; reports progress as events. Must not plan,
print, or choose what to fetch.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from microns_get.checkpoint import CheckpointStore, FinishedItem
from microns_get.errors import RemoteError, VerificationFailed
from microns_get.plan.model import Plan, PlanItem, RemoteCopy
from microns_get.plan.objects import copy_from_listing
from microns_get.sources import CloudPath, Source, open_source
from microns_get.transfer import events as ev
from microns_get.transfer import files
from microns_get.transfer.health import MirrorHealth
from microns_get.transfer.parts import ObjectChanged, PartFetcher, all_or_cancel, expected_info
from microns_get.transfer.requests import Requester
from microns_get.verify.digests import StreamHasher, verify_object

ATTEMPTS_PER_MIRROR = 3  # whole-item attempts (after a checksum mismatch or a changed object)
SMALL_OBJECT = 8 << 20  # objects up to this size are fetched into memory and land in one step
FLUSH_EVERY = 64  # finished small items recorded per store transaction


def content_identity(copy: RemoteCopy) -> str:
    """Equal on two mirrors only when the content is proven equal (same size and MD5), so parts
    from one mirror are reused for another only then; otherwise the mirror's own version id."""
    if copy.md5_base64:
        return f"{copy.size}:md5={copy.md5_base64}"
    return f"{copy.size}:{copy.provider}={copy.generation or copy.etag or ''}"


@dataclass
class Tally:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_moved: int = 0
    retries: int = 0
    mirrors: Counter[str] = field(default_factory=Counter)
    verified_by: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)


class Engine:
    def __init__(
        self,
        *,
        dest: Path,
        store: CheckpointStore,
        session: aiohttp.ClientSession,
        settings: Any,
        emit: ev.Emit = ev.ignore,
        verify: bool = True,
        health: MirrorHealth | None = None,
        throttle: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.dest = dest
        self.store = store
        self.session = session
        self.settings = settings
        self.emit = emit
        self.verify = verify
        self.health = health or MirrorHealth()
        self.throttle = throttle  # awaited per chunk received: a bandwidth cap shared by all parts
        self.requester = Requester(settings, self.health, emit)
        self.requests = asyncio.Semaphore(settings.jobs)
        self.parts = PartFetcher(self)
        self.tally = Tally()
        self.plan_id = ""
        self._sources: dict[tuple[str, str], Source] = {}
        self._finished: list[FinishedItem] = []
        self._dirs: set[Path] = set()
        self._listed_dirs: dict[Path, dict[str, int]] = {}

    # -- run -------------------------------------------------------------------------------
    async def run(self, plan: Plan) -> ev.RunFinished:
        started = time.monotonic()
        plan_json = plan.to_json()
        self.plan_id = plan_json["plan_id"]
        self.store.save_plan(self.plan_id, dict(plan.request), plan_json)
        self.emit(ev.RunStarted(self.plan_id, len(plan.items), plan.total_bytes, plan.mirror, 0))
        queue: asyncio.Queue[PlanItem] = asyncio.Queue()
        for item in plan.items:
            queue.put_nowait(item)
        workers = max(1, min(self.settings.jobs, len(plan.items)))
        try:
            await all_or_cancel([self._worker(queue, plan) for _ in range(workers)])
        finally:
            self._flush()
            await asyncio.to_thread(files.sync_dirs, sorted(self._dirs))
        return self._report(started)

    def _report(self, started: float) -> ev.RunFinished:
        t = self.tally
        event = ev.RunFinished(
            plan_id=self.plan_id,
            objects_done=t.done,
            objects_skipped=t.skipped,
            objects_failed=t.failed,
            bytes_moved=t.bytes_moved,
            seconds=round(time.monotonic() - started, 3),
            retries=t.retries + self.requester.retries,
            mirrors_used=dict(t.mirrors),
            verified_by=dict(t.verified_by),
            failures=t.failures[:50],
        )
        self.emit(event)
        return event

    async def _worker(self, queue: asyncio.Queue[PlanItem], plan: Plan) -> None:
        while not queue.empty():
            item = queue.get_nowait()
            await self._process(item, plan.part_size)

    def moved(self, path: str, n: int) -> None:
        self.tally.bytes_moved += n
        self.emit(ev.BytesMoved(path, n))

    # -- one item --------------------------------------------------------------------------
    async def _process(self, item: PlanItem, part_size: int) -> None:
        final = self.dest / item.path
        if await self._already_done(item, final):
            return
        errors: list[str] = []
        for copy in self.health.order(item.copies):
            if self.health.is_down(copy.provider) and not self._all_down(item):
                continue
            try:
                await self._fetch_with_refetch(item, copy, final, part_size, errors)
                return
            except RemoteError as exc:
                errors.append(f"{copy.provider}: {exc}")
        self.tally.failed += 1
        message = "; ".join(errors[-3:]) or "no mirror could serve it"
        self.tally.failures.append(f"{item.path}: {message}")
        self._flush()  # the failure record must not be overwritten by a later batch
        if self.store.item(item.path) is None:  # small items are recorded only when done
            self.begin_parts(item, item.primary, [(0, item.size)], final)
        self.store.item_failed(item.path, message)
        self.emit(ev.ItemFailed(item.path, message))

    def _all_down(self, item: PlanItem) -> bool:
        return self.health.all_down([c.provider for c in item.copies])

    def _local_size(self, final: Path) -> int | None:
        """Size of a file already under DEST before this run, from one directory scan per
        directory (a stat per item costs more than the fetch of a small object)."""
        sizes = self._listed_dirs.get(final.parent)
        if sizes is None:
            sizes = {}
            try:
                with os.scandir(final.parent) as entries:
                    for entry in entries:
                        if entry.is_file(follow_symlinks=False):
                            sizes[entry.name] = entry.stat(follow_symlinks=False).st_size
            except (FileNotFoundError, NotADirectoryError):
                pass
            self._listed_dirs[final.parent] = sizes
        return sizes.get(final.name)

    async def _already_done(self, item: PlanItem, final: Path) -> bool:
        if self._local_size(final) != item.size:
            return False
        record = self.store.item(item.path)
        identity = content_identity(item.primary)
        if record is not None and record.state == "done":
            if record.identity == identity or not item.primary.listed:
                self._skipped(item, "already downloaded and verified")
                return True
            return False
        # Complete under its final name but not recorded: check it against the remote instead
        # of fetching it again (a run killed before its records were flushed, another tool).
        key = CloudPath.parse(item.primary.url).key
        result = await asyncio.to_thread(verify_object, final, expected_info(item.primary, key))
        if not result.ok or result.method == "size-only":
            return False
        self._record(item, item.primary, f"adopted ({result.method})")
        self._skipped(item, f"already there, {result.method} matched")
        return True

    def _skipped(self, item: PlanItem, reason: str) -> None:
        self.tally.skipped += 1
        self.emit(ev.ItemSkipped(item.path, item.size, reason))

    async def _fetch_with_refetch(
        self, item: PlanItem, copy: RemoteCopy, final: Path, part_size: int, errors: list[str]
    ) -> None:
        """A checksum mismatch or a replaced object refetches from this mirror (a few times)."""
        for _ in range(ATTEMPTS_PER_MIRROR):
            try:
                await self._fetch(item, copy, final, part_size)
                return
            except VerificationFailed as exc:
                errors.append(f"{copy.provider}: {exc}")
                self.emit(ev.Retrying(copy.url, str(exc)))
                self.tally.retries += 1
            except ObjectChanged as exc:
                self.emit(ev.Retrying(copy.url, str(exc)))
                self.tally.retries += 1
                copy = RemoteCopy(url=copy.url, provider=copy.provider)  # stat it again
        raise RemoteError(f"{item.path}: still failing after {ATTEMPTS_PER_MIRROR} attempts")

    async def _fetch(self, item: PlanItem, copy: RemoteCopy, final: Path, part_size: int) -> None:
        source, key = self._source(copy.url)
        if not copy.listed:
            copy = await self._stat(source, key, copy)
        size = copy.size or 0
        if size <= min(part_size, SMALL_OBJECT):
            method, detail = await self._fetch_small(item, copy, source, key, final)
        else:
            method, detail = await self.parts.fetch(item, copy, source, key, final, part_size)
            await asyncio.to_thread(files.finish, final, False)
        self._dirs.add(final.parent)
        self._record(item, copy, method)
        self.tally.done += 1
        self.tally.mirrors[copy.provider] += 1
        self.tally.verified_by[method] += 1
        self.emit(ev.ItemDone(item.path, size, copy.provider, method, detail))

    async def _fetch_small(
        self, item: PlanItem, copy: RemoteCopy, source: Source, key: str, final: Path
    ) -> tuple[str, str]:
        size = copy.size or 0
        self.emit(ev.ItemStarted(item.path, size, copy.provider, 0, 1))
        want_md5 = bool(copy.md5_base64 or (copy.etag and not copy.crc32c_base64))
        pin = expected_info(copy, key)

        async def attempt() -> bytes:
            pieces: list[bytes] = []
            if size:
                async with self.requests:
                    async for chunk in source.stream(key, 0, size, pin=pin):
                        if self.throttle is not None:
                            await self.throttle(len(chunk))
                        pieces.append(chunk)
            data = b"".join(pieces)
            if len(data) != size:
                raise RemoteError(f"short body for {copy.url}", retryable=True)
            return data

        data = await self.parts.request(copy, attempt)
        self.moved(item.path, len(data))
        hasher = StreamHasher(md5=want_md5, crc32c=bool(copy.crc32c_base64))
        return await asyncio.to_thread(self._land, final, data, copy, key, hasher)

    def _land(
        self, final: Path, data: bytes, copy: RemoteCopy, key: str, hasher: StreamHasher
    ) -> tuple[str, str]:
        """Hash, write, check and fsync a small object's temp file, and move it to its final
        name (in a worker thread: hashlib and the file calls release the GIL)."""
        hasher.update(data)
        fd = files.open_temp(final, len(data))
        try:
            files.write_at(fd, data, 0, final)
            if self.verify:
                result = verify_object(
                    files.temp_path_for(final),
                    expected_info(copy, key),
                    hasher.md5_base64() if hasher.has_md5 else None,
                    None,
                    hasher.crc32c_base64() if hasher.has_crc32c else None,
                )
                if not result.ok:
                    files.discard_temp(final)
                    raise VerificationFailed(f"{copy.url}: {result.detail}")
                method, detail = result.method, result.detail
            else:
                method, detail = "size-only (--no-verify)", ""
            files.sync(fd, final)
        finally:
            os.close(fd)
        files.finish(final, sync_dir=False)
        return method, detail

    # -- checkpoint ------------------------------------------------------------------------
    def begin_parts(
        self, item: PlanItem, copy: RemoteCopy, ranges: list[tuple[int, int]], final: Path
    ) -> set[int]:
        def begin(restart: bool = False) -> set[int]:
            return self.store.begin_item(
                item.path,
                plan_id=self.plan_id,
                local_path=item.path,
                remote_url=copy.url,
                size=copy.size or 0,
                identity=content_identity(copy),
                parts=ranges,
                restart=restart,
            )

        done = begin()
        if done and not files.temp_path_for(final).exists():
            # The recorded parts lived in a temp file that is gone (or failed verification and
            # was discarded): start the item again.
            done = begin(restart=True)
        return done

    def _record(self, item: PlanItem, copy: RemoteCopy, method: str) -> None:
        """Queue the item's "done" record; records are written in batches (see `_flush`)."""
        self._finished.append(
            FinishedItem(
                item.path,
                self.plan_id,
                item.path,
                copy.url,
                copy.size or 0,
                content_identity(copy),
                "done",
                method,
                copy.provider,
            )
        )
        if len(self._finished) >= FLUSH_EVERY:
            self._flush()

    def _flush(self) -> None:
        """One transaction for many records. A crash before it only leaves complete files
        without records, which the next run adopts after checking them (`_already_done`)."""
        batch, self._finished = self._finished, []
        self.store.items_finished(batch)

    async def _stat(self, source: Source, key: str, copy: RemoteCopy) -> RemoteCopy:
        info = await self.parts.request(copy, lambda: source.stat(key))
        if info is None:
            raise RemoteError(f"not found on {copy.provider}: {copy.url}", status=404)
        return copy_from_listing(copy.url, copy.provider, info)

    def _source(self, url: str) -> tuple[Source, str]:
        path = CloudPath.parse(url)
        cache_key = (path.scheme, path.bucket)
        if cache_key not in self._sources:
            self._sources[cache_key] = open_source(path, self.session, self.settings)
        return self._sources[cache_key], path.key
