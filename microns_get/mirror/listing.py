"""Listing a job's parts and comparing them with DEST, one page at a time.

Owns: choosing the listing mirror (catalogue order or --mirror, failing over on errors; no
throughput probes, which would move bytes on every run), consuming the paginated
listing as a stream, turning each page into plan items (`plan_objects`), classifying each item
against the checkpoint and the local file (`sync.classify`; a hash only where the rules ask for
one) and writing the page into the run's `ListingIndex`. A listing that fails or stops part way
is reported as incomplete, which the delete rule respects.
Must not write data files or checkpoint records: the runner acts after the quota check.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import aiohttp

from microns_get.catalog import Dataset, Mirror, Part
from microns_get.checkpoint import CheckpointStore
from microns_get.errors import BadInput, RemoteError
from microns_get.fetch import FetchRequest, selected_parts
from microns_get.layout import canonical_path
from microns_get.mirror.index import PAGE, ListingIndex, Row
from microns_get.mirror.sync import Change, after_verify, classify
from microns_get.plan.discover import select_mirrors
from microns_get.plan.model import PlanItem
from microns_get.plan.objects import plan_objects
from microns_get.sources import CloudPath, ObjectInfo, open_source, source_url
from microns_get.transfer.engine import expected_info
from microns_get.transfer.retry import with_retries
from microns_get.verify.digests import verify_object

HASH_THREADS = 4  # local files hashed at once (--checksum, adoption): disks, not the network


@dataclass
class PartListing:
    """How the listing of one part went: where it lands under DEST and whether it is whole."""

    name: str
    local_root: PurePosixPath
    is_prefix: bool
    mirror: str = ""
    complete: bool = False
    listed: int = 0
    error: str | None = None


@dataclass
class JobListing:
    parts: list[PartListing] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return all(p.complete for p in self.parts)

    @property
    def errors(self) -> list[str]:
        return [f"{p.name or 'listing'}: {p.error}" for p in self.parts if p.error]


def local_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except (FileNotFoundError, NotADirectoryError):
        return None


class Lister:
    """Lists and compares the parts of whole-object jobs for one destination."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: Any,
        dest: Path,
        store: CheckpointStore | None,
        index: ListingIndex,
        checksum: bool,
    ) -> None:
        self.session = session
        self.settings = settings
        self.dest = dest
        self.store = store
        self.index = index
        self.checksum = checksum
        self.hashing = asyncio.Semaphore(HASH_THREADS)

    async def list_job(self, key: str, dataset: Dataset, request: FetchRequest) -> JobListing:
        result = JobListing()
        for part in selected_parts(dataset, request):
            root = canonical_path(CloudPath.parse(part.mirrors[0].url))
            listing = PartListing(part.name, root, part.is_prefix)
            result.parts.append(listing)
            await self._list_part(key, dataset, request, part, listing)
        return result

    async def _list_part(
        self, key: str, dataset: Dataset, request: FetchRequest, part: Part, out: PartListing
    ) -> None:
        # No throughput probes (unlike `fetch`): they read megabytes from every mirror, and a
        # run with nothing changed must move nothing. The catalogue's order (or --mirror) picks
        # the mirror, and keeping it run after run keeps the recorded identities comparable.
        mirrors = select_mirrors(part, self.settings.mirror, dataset.id)
        if not mirrors:
            raise BadInput(f"{dataset.id} has no downloadable mirror")
        errors: list[str] = []
        for index, mirror in enumerate(mirrors):
            ordered = [mirror, *mirrors[:index], *mirrors[index + 1 :]]
            try:
                out.listed = await with_retries(
                    lambda ordered=ordered: self._consume(key, request, part, ordered),
                    self.settings.retries,
                )
            except RemoteError as exc:
                errors.append(f"{mirror.url}: {exc}")
                continue
            out.mirror, out.complete = mirror.url, True
            return
        out.error = "; ".join(errors) or "no mirror could list it"

    async def _consume(
        self, key: str, request: FetchRequest, part: Part, mirrors: list[Mirror]
    ) -> int:
        """One pass over the listing, compared and stored page by page; the item count."""
        self.index.clear(key, part.name)
        listed = 0
        page: list[ObjectInfo] = []
        async for info in self._objects(part, mirrors[0]):
            page.append(info)
            if len(page) >= PAGE:
                listed += await self._compare(key, request, part, mirrors, page)
                page = []
        if page:
            listed += await self._compare(key, request, part, mirrors, page)
        if not listed and part.is_prefix:
            # An empty dataset is far likelier a broken listing than a deleted dataset.
            raise RemoteError(f"nothing listed under {mirrors[0].url}", status=404)
        return listed

    async def _objects(self, part: Part, mirror: Mirror) -> AsyncIterator[ObjectInfo]:
        path = CloudPath.parse(mirror.url)
        source = open_source(path, self.session, self.settings)
        if not part.is_prefix:
            info = await source.stat(path.key)
            if info is None:
                raise RemoteError(f"not found: {source_url(source, path.key)}", status=404)
            yield info
            return
        async for item in source.list(path.key.rstrip("/") + "/"):
            if isinstance(item, ObjectInfo):
                yield item

    async def _compare(
        self,
        key: str,
        request: FetchRequest,
        part: Part,
        mirrors: Sequence[Mirror],
        page: list[ObjectInfo],
    ) -> int:
        plan = plan_objects(
            request.to_json(),
            part.mirrors[0],
            mirrors,
            page,
            is_prefix=part.is_prefix,
            part_size=self.settings.part_size,
            include=request.include,
            exclude=request.exclude,
        )
        rows = await asyncio.gather(*(self._row(item) for item in plan.items))
        self.index.add(key, part.name, rows)
        return len(page)

    async def _row(self, item: PlanItem) -> Row:
        record = self.store.item(item.path) if self.store is not None else None
        final = self.dest / item.path
        change = classify(item, record, local_size(final), self.checksum)
        if change is Change.UNCHANGED:
            return Row(item.path, change.value, item.size)
        if change is not Change.VERIFY:
            return Row(item.path, change.value, item.size, item)
        expected = expected_info(item.primary, CloudPath.parse(item.primary.url).key)
        async with self.hashing:
            result = await asyncio.to_thread(verify_object, final, expected)
        recorded = record is not None and record.state == "done"
        change = after_verify(result.ok, result.method, recorded)
        if change is Change.UNCHANGED:
            action = None if recorded else "adopt"
            return Row(item.path, change.value, item.size, item, action, result.method)
        return Row(item.path, change.value, item.size, item, "invalidate" if recorded else None)
