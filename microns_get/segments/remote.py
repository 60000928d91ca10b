"""Counted, retried reads below one mirror's directory, mirror order, and atomic local writes.

Owns: `MirrorDir` (one mirror URL of a layer or file set: ranged reads and one listing, each
attempt counted into a `Tally`, every call under `with_retries` and a per-run concurrency
limit), the mirror URLs of a catalogue part in `--mirror` order, and `write_atomic` (a file
appears under its final name only when complete and fsynced). Must not know mesh or skeleton
formats, or decide which mirror to fall back to (callers do, per unit of work).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from microns_get.catalog import Part
from microns_get.layout import canonical_path, safe_relative
from microns_get.plan.discover import select_mirrors
from microns_get.segments.result import Tally
from microns_get.sources import CloudPath, ObjectInfo, open_source, source_url
from microns_get.transfer import events as ev
from microns_get.transfer import files
from microns_get.transfer.retry import with_retries

T = TypeVar("T")


class MirrorDir:
    """One mirror's copy of a directory (`gs://bucket/prefix`, `s3://...`, `file:///...`)."""

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        settings: Any,
        limit: asyncio.Semaphore,
        emit: ev.Emit = ev.ignore,
    ) -> None:
        self.url = url.rstrip("/")
        self.root = CloudPath.parse(self.url)
        self.source = open_source(self.root, session, settings)
        self.attempts = settings.retries
        self.limit = limit
        self.emit = emit

    def key(self, rel: str) -> str:
        """The full key of `rel` (a `/`-separated path below this directory)."""
        return self.root.join(rel).key if rel else self.root.key

    def where(self, rel: str) -> str:
        return source_url(self.source, self.key(rel))

    async def read(
        self, rel: str, tally: Tally, start: int = 0, end: int | None = None
    ) -> bytes | None:
        """Bytes `[start, end)` of `rel` as stored; `None` when the object does not exist."""
        if end is not None and end <= start:
            return b""  # an empty range needs no request (and has no valid Range header)
        key = self.key(rel)
        data = await self._call(tally, self.where(rel), lambda: self.source.read(key, start, end))
        if data is not None:
            tally.bytes_read += len(data)
        return data

    async def list_dir(self, tally: Tally) -> list[ObjectInfo]:
        """Every object below this directory: one paginated listing, retried as a whole."""
        prefix = self.root.key.rstrip("/") + "/"

        async def listing() -> list[ObjectInfo]:
            return [i async for i in self.source.list(prefix) if isinstance(i, ObjectInfo)]

        return await self._call(tally, source_url(self.source, prefix), listing)

    async def _call(self, tally: Tally, url: str, call: Callable[[], Awaitable[T]]) -> T:
        async def attempt() -> T:
            tally.requests += 1
            async with self.limit:
                return await call()

        def on_retry(exc: BaseException) -> None:
            self.emit(ev.Retrying(url, str(exc)))

        return await with_retries(attempt, self.attempts, on_retry)


def part_mirror_urls(part: Part, settings: Any, dataset_id: str) -> list[str]:
    """The part's mirror URLs in the order `--mirror` asks for (the first is tried first)."""
    return [m.url for m in select_mirrors(part, settings.mirror, dataset_id)]


def local_root(dest: Path, part: Part) -> Path:
    """Where a part lands under DEST: the canonical path of the catalogue's first mirror, so the
    place does not depend on which mirror served it."""
    return Path(dest) / canonical_path(CloudPath.parse(part.mirrors[0].url))


def local_file(root: Path, rel: str) -> Path:
    """`root/rel` for a remote-supplied relative name; names that would escape raise."""
    return root / safe_relative(rel)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a hidden temp file beside `path`, fsync, then rename it into place."""
    fd = files.open_temp(path, len(data))
    try:
        files.write_at(fd, data, 0, path)
        files.sync(fd, path)
    except BaseException:
        os.close(fd)
        files.discard_temp(path)
        raise
    os.close(fd)
    files.finish(path)
