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
from microns_get.sources.direct import DirectReader
from microns_get.transfer import events as ev
from microns_get.transfer import files
from microns_get.transfer.health import MirrorHealth
from microns_get.transfer.parts import ObjectChanged, PartFetcher, all_or_cancel, expected_info
from microns_get.transfer.requests import Requester
from microns_get.transfer.small import SmallJob, SmallObjects
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


def new_hasher(copy: RemoteCopy) -> StreamHasher:
    """Only the digests the remote declared (an S3 ETag may be an MD5): hashing costs."""
    want_md5 = bool(copy.md5_base64 or (copy.etag and not copy.crc32c_base64))
    return StreamHasher(md5=want_md5, crc32c=bool(copy.crc32c_base64))


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
        # large objects over HTTP are read on threads of their own (see sources.direct)
        self.direct = DirectReader(settings.jobs, settings.timeout)
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
        fast, rest = self._split_small(plan)
        small = SmallObjects(self.direct, self.settings.jobs, self._land_job, self._small_done)
        try:
            handed_back, _ = await all_or_cancel([small.run(fast), self._work_through(rest, plan)])
            for job, error in handed_back:
                if error:  # it is tried again on the ordinary path: that is a retry
                    self.tally.retries += 1
                    self.emit(ev.Retrying(job.copy.url, error))
            await self._work_through([job.item for job, _ in handed_back], plan)
        finally:
            self._flush()
            await asyncio.to_thread(files.sync_dirs, sorted(self._dirs))
            await asyncio.to_thread(self.direct.close)
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

    async def _work_through(self, items: list[PlanItem], plan: Plan) -> None:
        """The ordinary path: every item with retries, failover and refetching."""
        queue: asyncio.Queue[PlanItem] = asyncio.Queue()
        for item in items:
            queue.put_nowait(item)
        workers = min(self.settings.jobs, len(items))
        await all_or_cancel([self._worker(queue, plan) for _ in range(workers)])

    async def _worker(self, queue: asyncio.Queue[PlanItem], plan: Plan) -> None:
        while not queue.empty():
            item = queue.get_nowait()
            await self._process(item, plan.part_size)

    def moved(self, path: str, n: int) -> None:
        self.tally.bytes_moved += n
        self.emit(ev.BytesMoved(path, n))

    # -- small objects on the fast path (see transfer.small) ----------------------------------
    def _split_small(self, plan: Plan) -> tuple[list[SmallJob], list[PlanItem]]:
        if self.throttle is not None:  # a bandwidth cap is enforced on the event loop
            return [], list(plan.items)
        limit = min(plan.part_size, SMALL_OBJECT)
        fast: list[SmallJob] = []
        rest: list[PlanItem] = []
        for item in plan.items:
            job = self._small_job(item, limit)
            if job is None:
                rest.append(item)
            else:
                fast.append(job)
        return fast, rest

    def _small_job(self, item: PlanItem, limit: int) -> SmallJob | None:
        """A job for the fast path, or None when the item needs the ordinary path: size not
        listed, large, over a source not on HTTP, or something already under its name."""
        copy = self.health.order(item.copies)[0]
        if not copy.listed or not 0 < (copy.size or 0) <= limit:
            return None
        if self.health.is_down(copy.provider):
            return None
        final = self.dest / item.path
        if self._local_size(final) is not None:
            return None
        source, key = self._source(copy.url)
        get = source.http_get(key, expected_info(copy, key))
        if get is None:
            return None
        return SmallJob(item, copy, key, get[0], get[1], final)

    def _land_job(self, job: SmallJob, data: bytes | bytearray) -> tuple[str, str]:
        return self._land(job.final, data, job.copy, job.key, new_hasher(job.copy))

    def _small_done(self, job: SmallJob, method: str, detail: str) -> None:
        size = job.copy.size or 0
        self.health.success(job.copy.provider)
        self.emit(ev.ItemStarted(job.item.path, size, job.copy.provider, 0, 1))
        self.moved(job.item.path, size)
        self._finished_ok(job.item, job.copy, job.final, method, detail)

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
        self._finished_ok(item, copy, final, method, detail)

    def _finished_ok(
        self, item: PlanItem, copy: RemoteCopy, final: Path, method: str, detail: str
    ) -> None:
        self._dirs.add(final.parent)
        self._record(item, copy, method)
        self.tally.done += 1
        self.tally.mirrors[copy.provider] += 1
        self.tally.verified_by[method] += 1
        self.emit(ev.ItemDone(item.path, copy.size or 0, copy.provider, method, detail))

    async def _fetch_small(
        self, item: PlanItem, copy: RemoteCopy, source: Source, key: str, final: Path
    ) -> tuple[str, str]:
        size = copy.size or 0
        self.emit(ev.ItemStarted(item.path, size, copy.provider, 0, 1))
        pin = expected_info(copy, key)

        get = source.http_get(key, pin) if self.throttle is None else None
        if get is not None and size:
            # Fetched and landed in one step on a reader thread: no event-loop HTTP machinery
            # and one thread hop per object (see sources.direct).
            def fetch_and_land() -> tuple[str, str]:
                data = self.direct.get_bytes(get[0], get[1], size)
                return self._land(final, data, copy, key, new_hasher(copy))

            result = await self.parts.request(copy, lambda: self.direct.call(fetch_and_land))
            self.moved(item.path, size)
            return result

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
        return await asyncio.to_thread(self._land, final, data, copy, key, new_hasher(copy))

    def _land(
        self, final: Path, data: bytes | bytearray, copy: RemoteCopy, key: str, hasher: StreamHasher
    ) -> tuple[str, str]:
        """Hash, write, check and fsync a small object's temp file, and move it to its final
        name (in a worker thread: hashlib and the file calls release the GIL)."""
        hasher.update(data)
        fd = files.open_temp(final, len(data), whole=True)
        try:
            files.write_at(fd, data, 0, final)
            if self.verify:
                result = verify_object(
                    files.temp_path_for(final),
                    expected_info(copy, key),
                    hasher.md5_base64() if hasher.has_md5 else None,
                    None,
                    hasher.crc32c_base64() if hasher.has_crc32c else None,
                    known_size=len(data),  # all of `data` was written: no stat needed
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
