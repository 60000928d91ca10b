"""Large objects: ranged parts in parallel into one temp file, resumable part by part.

Owns: the part layout of an object (the upload's own part size when its S3 ETag is multipart,
so the MD5 of each part, taken while it streams, verifies the object without a second read),
writing and hashing each piece in a worker thread (hashlib, pwrite and fsync release the GIL,
so both cores work; the writes go past the page cache where `direct_io` can), fsync of each
part before it is recorded done, and the final check.
Must not choose mirrors or decide retries: `Engine` does, through `request`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from microns_get.errors import RemoteError, VerificationFailed
from microns_get.plan.model import PlanItem, RemoteCopy, part_ranges
from microns_get.sources import ObjectInfo, Source
from microns_get.sources.direct import call_on
from microns_get.transfer import events as ev
from microns_get.transfer import files
from microns_get.transfer.direct_io import AlignedWriter, open_direct
from microns_get.verify.digests import (
    EtagKind,
    StreamHasher,
    candidate_part_sizes,
    multipart_count,
    parse_etag,
    verify_crc32c_parts,
    verify_object,
)

if TYPE_CHECKING:
    from microns_get.transfer.engine import Engine

T = TypeVar("T")
MIN_UPLOAD_PART = 5 << 20  # S3's smallest multipart part (but the last)
CHANGED_STATUS = (404, 412)  # a pinned read of a replaced object: GCS generation gone / If-Match


class ObjectChanged(RemoteError):
    """The remote object changed under us: restart the item from its new version."""


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


def upload_part_size(copy: RemoteCopy) -> int | None:
    """The part size an S3 multipart upload most likely used (from its `-N` ETag)."""
    if copy.md5_base64 or parse_etag(copy.etag) is not EtagKind.MULTIPART or not copy.size:
        return None
    n_parts = multipart_count(copy.etag) or 0
    sizes = [p for p in candidate_part_sizes(copy.size, n_parts) if p >= MIN_UPLOAD_PART]
    return sizes[0] if sizes else None


def part_size_for(copy: RemoteCopy, default: int) -> tuple[int, bool]:
    """The download part size, and whether per-part MD5s can verify the object."""
    upload = upload_part_size(copy)
    return (upload, True) if upload else (default, False)


@dataclass(frozen=True)
class Target:
    """One item being written: where its bytes come from and where they go."""

    source: Source
    key: str
    copy: RemoteCopy
    fd: int
    final: Path
    path: str  # the item id: its path relative to DEST
    direct_fd: int | None = None  # the same temp file opened O_DIRECT (see `direct_io`)


class PartFetcher:
    """Fetches one large item for an engine (which owns the store, events and requests)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.suspects: dict[str, list[bytes | None]] = {}  # see `_accept_unverifiable`

    async def fetch(
        self,
        item: PlanItem,
        copy: RemoteCopy,
        source: Source,
        key: str,
        final: Path,
        default_part_size: int,
    ) -> tuple[str, str]:
        engine = self.engine
        size = copy.size or 0
        part_size, md5_parts = part_size_for(copy, default_part_size)
        check = part_check(copy, md5_parts, engine.verify)
        ranges = part_ranges(size, part_size)
        done = engine.begin_parts(item, copy, ranges, final)
        engine.emit(ev.ItemStarted(item.path, size, copy.provider, len(done), len(ranges)))
        fd = await asyncio.to_thread(files.open_temp, final, size)
        direct_fd = None
        try:
            if engine.settings.direct_io == "auto":
                direct_fd = await asyncio.to_thread(open_direct, files.temp_path_for(final))
        except BaseException:
            os.close(fd)
            raise
        target = Target(source, key, copy, fd, final, item.path, direct_fd)
        try:
            pending = [i for i in range(len(ranges)) if i not in done]
            await all_or_cancel([self._part(target, i, ranges[i], check) for i in pending])
            digests = engine.store.part_digests(item.path) if check else None
            return await asyncio.to_thread(self._verify, target, part_size, ranges, check, digests)
        finally:
            os.close(fd)
            if target.direct_fd is not None:
                os.close(target.direct_fd)

    async def _part(
        self, target: Target, index: int, byte_range: tuple[int, int], check: str | None
    ) -> None:
        engine, copy = self.engine, target.copy
        start, end = byte_range
        pin = expected_info(copy, target.key)

        get = target.source.http_get(target.key, pin)
        direct = engine.direct if engine.throttle is None else None

        async def attempt() -> bytes | None:
            hasher = part_hasher(check)
            writer = None
            try:
                async with engine.requests:
                    if direct is not None and get is not None:
                        if target.direct_fd is not None:
                            writer = AlignedWriter(target.direct_fd, target.fd, target.final, start)
                        sink = self._direct_sink(target, hasher, writer)
                        position = start + await direct.read(get[0], get[1], start, end, sink)
                    else:
                        position = await self._stream(target, start, end, pin, hasher)
                if position != end:
                    raise RemoteError(f"short body for {copy.url}", retryable=True)
                # durable before "done"; the thread owns the writer now, and a cancellation
                # waits for it: nothing may write to the file after `fetch` closes it
                landing, writer = writer, None
                await call_on(None, lambda: _land_part(target, landing))
            finally:
                if writer is not None:  # a failed attempt: its staged bytes are dropped
                    writer.close()
            return hasher.digest() if hasher else None

        digest = await self.request(copy, attempt)
        engine.store.part_done(target.path, index, digest)

    def _direct_sink(
        self, target: Target, hasher: Any, writer: AlignedWriter | None
    ) -> Callable[[memoryview, int], None]:
        """Runs on the reader's thread: write and hash each buffer there, report it to the loop."""
        loop = asyncio.get_running_loop()
        moved = self.engine.moved

        def sink(buffer: memoryview, position: int) -> None:
            if writer is None:
                _absorb(target, buffer, position, hasher)
            else:
                writer.write(buffer, position)
                if hasher is not None:
                    hasher.update(buffer)
            loop.call_soon_threadsafe(moved, target.path, len(buffer))

        return sink

    async def _stream(
        self, target: Target, start: int, end: int, pin: ObjectInfo, hasher: Any
    ) -> int:
        """The event-loop path: sources not over HTTP, and runs under a bandwidth cap."""
        engine, position = self.engine, start
        async for chunk in target.source.stream(target.key, start, end, pin=pin):
            if engine.throttle is not None:
                await engine.throttle(len(chunk))
            await call_on(None, lambda c=chunk, p=position: _absorb(target, c, p, hasher))
            position += len(chunk)
            engine.moved(target.path, len(chunk))
        return position

    async def request(self, copy: RemoteCopy, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await self.engine.requester(copy.provider, copy.url, call)
        except RemoteError as exc:
            if exc.status in CHANGED_STATUS and copy.listed:
                raise ObjectChanged(f"{copy.url} changed since it was planned", 412) from exc
            raise

    def _verify(
        self,
        target: Target,
        part_size: int,
        ranges: Sequence[tuple[int, int]],
        check: str | None,
        digests: list[bytes | None] | None,
    ) -> tuple[str, str]:
        """Check the temp file (runs in a worker thread); on success it is synced, not renamed."""
        copy, final = target.copy, target.final
        temp = files.temp_path_for(final)
        if not self.engine.verify:
            if os.path.getsize(temp) != copy.size:
                raise VerificationFailed(f"{final}: size differs from the remote's")
            return "size-only (--no-verify)", ""
        expected = expected_info(copy, target.key)
        result = None
        if check == "crc32c" and digests is not None and os.path.getsize(temp) == copy.size:
            result = verify_crc32c_parts(expected, digests, [b - a for a, b in ranges])
        if result is None:
            by_size = {part_size: digests} if check == "md5" and digests is not None else None
            result = verify_object(temp, expected, None, by_size)
        if result.ok and result.method == "size-only" and check == "md5" and digests:
            result = self._accept_unverifiable(target, digests, result)
        if not result.ok:
            files.discard_temp(final)  # the next attempt sees no temp file and starts over
            raise VerificationFailed(f"{copy.url}: {result.detail}")
        files.sync(target.fd, final)
        return result.method, result.detail

    def _accept_unverifiable(self, target: Target, digests: Sequence[bytes | None], result: Any):
        """A multipart ETag no candidate part size reproduces: a corrupted transfer, or an
        uploader with an unusual part size. Fetch it once more: the same parts twice means the
        content is what the server holds, and it is accepted as size-only; else fetch again."""
        previous = self.suspects.get(target.path)
        self.suspects[target.path] = list(digests)
        if previous is not None and previous == list(digests):
            return type(result)("size-only", True, f"{result.detail}; identical on two downloads")
        return type(result)("s3-multipart-etag", False, f"{result.detail}; fetching again")


def part_check(copy: RemoteCopy, upload_sized: bool, verify: bool) -> str | None:
    """What each part is hashed with as it streams, so the object is verified without reading
    it again: "md5" when parts are the upload's own (S3 multipart ETag), "crc32c" when the
    remote declares one (GCS: part CRC32Cs combine into the object's), else nothing."""
    if not verify:
        return None
    if upload_sized:
        return "md5"
    return "crc32c" if copy.crc32c_base64 else None


class _Crc32cHasher:
    """A part's CRC32C with hashlib's interface (the 4-byte digest is what is recorded)."""

    def __init__(self) -> None:
        self._hasher = StreamHasher(md5=False, crc32c=True)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._hasher.update(data)

    def digest(self) -> bytes:
        return self._hasher.crc32c_digest()


def part_hasher(check: str | None) -> Any:
    if check == "md5":
        return hashlib.md5()
    return _Crc32cHasher() if check == "crc32c" else None


def _land_part(target: Target, writer: AlignedWriter | None) -> None:
    """A part's last staged bytes written, then the file fsynced (in a worker thread)."""
    if writer is not None:
        writer.finish()
    files.sync(target.fd, target.final)


def _absorb(target: Target, chunk: bytes | memoryview, position: int, hasher: Any) -> None:
    """Write a piece at its offset and hash it (in a worker thread)."""
    files.write_at(target.fd, chunk, position, target.final)
    if hasher is not None:
        hasher.update(chunk)


async def all_or_cancel(coroutines: Sequence[Awaitable[T]]) -> list[T]:
    """Run concurrently; on the first error cancel the rest (and wait for them) and raise it."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
