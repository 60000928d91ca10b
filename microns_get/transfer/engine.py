"""The transfer engine: executes a plan with parallel ranged reads, resume, verification, failover.

Owns: per item, the sequence fetch parts -> temp file -> verify -> fsync + rename -> mark done,
with every finished part recorded in the checkpoint so a rerun after kill -9 fetches only what
was not finished. Consults the retry policy (`retry`) and mirror health (`health`); writes
through `files`; reports progress as events. Must not plan, print, or choose what to fetch.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from microns_get.checkpoint import CheckpointStore
from microns_get.errors import MicronsGetError, RemoteError, VerificationFailed
from microns_get.plan.model import Plan, PlanItem, RemoteCopy, part_ranges
from microns_get.plan.objects import copy_from_listing
from microns_get.sources import CloudPath, ObjectInfo, Source, open_source
from microns_get.transfer import events as ev
from microns_get.transfer import files
from microns_get.transfer.health import MirrorHealth
from microns_get.transfer.requests import Requester
from microns_get.verify.digests import StreamHasher, verify_object

T = TypeVar("T")
ATTEMPTS_PER_MIRROR = 3  # whole-item attempts (after a checksum mismatch or a changed object)
CHANGED_STATUS = (404, 412)  # a pinned read of a replaced object: GCS generation gone / If-Match


def content_identity(copy: RemoteCopy) -> str:
    """Equal on two mirrors only when the content is proven equal (same size and MD5), so parts
    from one mirror are reused for another only then; otherwise the mirror's own version id."""
    if copy.md5_base64:
        return f"{copy.size}:md5={copy.md5_base64}"
    return f"{copy.size}:{copy.provider}={copy.generation or copy.etag or ''}"


def expected_info(copy: RemoteCopy, key: str) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=copy.size or 0,
        etag=copy.etag,
        md5_base64=copy.md5_base64,
        crc32c_base64=copy.crc32c_base64,
        generation=copy.generation,
        content_encoding=copy.content_encoding,
    )


@dataclass(frozen=True)
class _Target:
    """One item being written: where its bytes come from and where they go."""

    source: Source
    key: str
    copy: RemoteCopy
    fd: int
    final: Path
    path: str  # the item id: its path relative to DEST


class ObjectChanged(MicronsGetError):
    """The remote object changed under us: restart the item from its new version."""


@dataclass
class Tally:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_moved: int = 0
    retries: int = 0

    def __post_init__(self) -> None:
        self.mirrors: Counter[str] = Counter()
        self.verified_by: Counter[str] = Counter()
        self.failures: list[str] = []


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
        self.tally = Tally()
        self._sources: dict[tuple[str, str], Source] = {}
        self.plan_id = ""

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
        await _all_or_cancel([self._worker(queue, plan) for _ in range(workers)])
        return self._finished(started)

    def _finished(self, started: float) -> ev.RunFinished:
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

    # -- one item --------------------------------------------------------------------------
    async def _process(self, item: PlanItem, part_size: int) -> None:
        final = self.dest / item.path
        if self._already_done(item, final):
            self.tally.skipped += 1
            self.emit(ev.ItemSkipped(item.path, item.size, "already downloaded and verified"))
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
        self.store.item_failed(item.path, message)
        self.emit(ev.ItemFailed(item.path, message))

    def _all_down(self, item: PlanItem) -> bool:
        return self.health.all_down([c.provider for c in item.copies])

    def _already_done(self, item: PlanItem, final: Path) -> bool:
        record = self.store.item(item.path)
        if record is None or record.state != "done":
            return False
        if record.identity != content_identity(item.primary) and item.primary.listed:
            return False
        try:
            return final.stat().st_size == record.size
        except FileNotFoundError:
            return False

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
        ranges = part_ranges(size, part_size)
        done = self._begin(item, copy, ranges, final)
        self.emit(ev.ItemStarted(item.path, size, copy.provider, len(done), len(ranges)))
        fd = files.open_temp(final, size)
        target = _Target(source, key, copy, fd, final, item.path)
        try:
            whole = await self._fetch_parts(target, ranges, done)
            method, detail = await self._verify(target, ranges, part_size, whole)
            await asyncio.to_thread(files.sync, fd, final)
        finally:
            os.close(fd)
        files.finish(final)
        self.store.item_done(item.path, method, copy.provider)
        self.tally.done += 1
        self.tally.mirrors[copy.provider] += 1
        self.tally.verified_by[method] += 1
        self.emit(ev.ItemDone(item.path, size, copy.provider, method, detail))

    def _begin(
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

    async def _stat(self, source: Source, key: str, copy: RemoteCopy) -> RemoteCopy:
        info = await self._request(copy, lambda: source.stat(key))
        if info is None:
            raise RemoteError(f"not found on {copy.provider}: {copy.url}", status=404)
        return copy_from_listing(copy.url, copy.provider, info)

    # -- parts -----------------------------------------------------------------------------
    async def _fetch_parts(
        self, target: _Target, ranges: Sequence[tuple[int, int]], done: set[int]
    ) -> StreamHasher | None:
        """Fetch every unfinished part; for a one-part object, return its streamed hashes."""
        pending = [i for i in range(len(ranges)) if i not in done]
        results = await _all_or_cancel([self._fetch_part(target, i, ranges[i]) for i in pending])
        return results[0] if len(ranges) == 1 and pending else None

    async def _fetch_part(
        self, target: _Target, index: int, byte_range: tuple[int, int]
    ) -> StreamHasher:
        start, end = byte_range
        copy = target.copy
        pin = expected_info(copy, target.key)

        async def attempt() -> StreamHasher:
            hasher = StreamHasher()
            position = start
            async with self.requests:
                async for chunk in target.source.stream(target.key, start, end, pin=pin):
                    if self.throttle is not None:
                        await self.throttle(len(chunk))
                    files.write_at(target.fd, chunk, position, target.final)
                    position += len(chunk)
                    hasher.update(chunk)
                    self.tally.bytes_moved += len(chunk)
                    self.emit(ev.BytesMoved(target.path, len(chunk)))
            if position != end:
                raise RemoteError(f"short body for {copy.url}", retryable=True)
            return hasher

        try:
            hasher = await self._request(copy, attempt)
        except RemoteError as exc:
            if exc.status in CHANGED_STATUS and copy.listed:
                raise ObjectChanged(f"{copy.url} changed since it was planned") from exc
            raise
        if end - start > 0:
            await asyncio.to_thread(files.sync, target.fd, target.final)
        self.store.part_done(target.path, index, hasher.md5_digest())
        return hasher

    async def _request(self, copy: RemoteCopy, call: Callable[[], Awaitable[T]]) -> T:
        """One request with retries; failures count against the mirror's health."""
        return await self.requester(copy.provider, copy.url, call)

    # -- verification ----------------------------------------------------------------------
    async def _verify(
        self,
        target: _Target,
        ranges: Sequence[tuple[int, int]],
        part_size: int,
        whole: StreamHasher | None,
    ) -> tuple[str, str]:
        copy, final = target.copy, target.final
        temp = files.temp_path_for(final)
        if not self.verify:
            if temp.stat().st_size != copy.size:
                raise VerificationFailed(f"{final}: size differs from the remote's")
            return "size-only (--no-verify)", ""
        known_md5 = whole.md5_base64() if whole is not None else None
        known_crc = whole.crc32c_base64() if whole is not None else None
        part_digests: dict[int, list[bytes | None]] | None = None
        if len(ranges) > 1:
            part_digests = {part_size: self.store.part_digests(target.path)}
        result = await asyncio.to_thread(
            verify_object,
            temp,
            expected_info(copy, target.key),
            known_md5,
            part_digests,
            known_crc,
        )
        if not result.ok:
            files.discard_temp(final)  # the next attempt sees no temp file and starts over
            raise VerificationFailed(f"{copy.url}: {result.detail}")
        return result.method, result.detail

    def _source(self, url: str) -> tuple[Source, str]:
        path = CloudPath.parse(url)
        cache_key = (path.scheme, path.bucket)
        if cache_key not in self._sources:
            self._sources[cache_key] = open_source(path, self.session, self.settings)
        return self._sources[cache_key], path.key


async def _all_or_cancel(coroutines: Sequence[Awaitable[T]]) -> list[T]:
    """Run concurrently; on the first error cancel the rest (and wait for them) and raise it."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
