"""`fetch_skeletons`: the skeleton files of chosen root (or nucleus) ids, from each catalogue part.

Owns: how each skeletons version names its files, and finding them with the fewest requests:
* v1300 (`microns-static-links/skel/swc/{proofread,dendrite}/`): `{root_id}.swc`, one GET per id
  and part. A 404 means "not in this part" (proofread and dendrite hold different cells).
* v661 (BossDB `.../skeletons/v661/{skeletons,meshworks,metadata}/`): `{root_id}_{nucleus_id}.swc`
  / `.h5` / `.json`. A root id alone does not give the file name, so each part's prefix is listed
  ONCE per call and matched against every id asked (`{root}_` prefix, or `_{nucleus}.` for
  `nucleus_ids`); then one GET per matching file.
Files land at DEST's canonical path of the catalogue's first mirror, as stored (the same bytes the
whole-part download would write). A file already there (same size, for listed parts) is kept.
Must not decide exit codes: ids found nowhere are reported `missing`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from microns_get.catalog import Part
from microns_get.errors import BadInput, RemoteError, VerificationFailed
from microns_get.segments.remote import (
    MirrorDir,
    local_file,
    local_root,
    part_mirror_urls,
    write_atomic,
)
from microns_get.segments.result import (
    FAILED,
    FETCHED,
    MISSING,
    PRESENT,
    SegmentReport,
    SegmentsResult,
)
from microns_get.sources import ObjectInfo
from microns_get.transfer import events as ev

T = TypeVar("T")
DATASET = "skeletons"
BY_ROOT = "{root_id}.swc"
BY_ROOT_AND_NUCLEUS = "{root_id}_{nucleus_id}.*"
NAMING = {"1300": BY_ROOT, "661": BY_ROOT_AND_NUCLEUS}


async def fetch_skeletons(
    session: aiohttp.ClientSession,
    settings: Any,
    dataset_version: str,
    parts: Sequence[Part],
    segment_ids: Sequence[int],
    dest: Path,
    nucleus_ids: Sequence[int] | None = None,
    emit: ev.Emit | None = None,
) -> SegmentsResult:
    """Fetch the skeleton files of `segment_ids` (root ids) and `nucleus_ids` from `parts`
    (the catalogue parts of `skeletons` version `dataset_version`) into DEST `dest`."""
    naming = naming_of(dataset_version)
    if nucleus_ids and naming != BY_ROOT_AND_NUCLEUS:
        raise BadInput(f"skeletons v{dataset_version} files are named by root id only")
    run = _Run(session, settings, Path(dest), emit or ev.ignore)
    asked = [(int(s), "root") for s in segment_ids]
    wanted = list(dict.fromkeys(asked + [(int(n), "nucleus") for n in nucleus_ids or ()]))
    for sid, kind in wanted:
        run.result.report(sid).id_kind = kind
    ids = [sid for sid, _ in wanted]
    await asyncio.gather(
        *(run.by_root(p, ids) if naming == BY_ROOT else run.by_listing(p, wanted) for p in parts)
    )
    run.finish(ids, [p.name for p in parts])
    return run.result


def naming_of(dataset_version: str) -> str:
    version = str(dataset_version).removeprefix("v")
    if version not in NAMING:
        known = ", ".join(NAMING)
        raise BadInput(f"no skeleton file naming known for version {dataset_version!r} ({known})")
    return NAMING[version]


def matches(name: str, wanted_id: int, kind: str) -> bool:
    """Does a v661 file name (`{root}_{nucleus}.ext`) belong to this root or nucleus id?"""
    stem = name.rsplit("/", 1)[-1].split(".", 1)[0]
    root, sep, nucleus = stem.partition("_")
    if not sep:
        return False
    return (root if kind == "root" else nucleus) == str(wanted_id)


class _Run:
    def __init__(
        self, session: aiohttp.ClientSession, settings: Any, dest: Path, emit: ev.Emit
    ) -> None:
        self.session, self.settings, self.dest, self.emit = session, settings, dest, emit
        self.limit = asyncio.Semaphore(settings.jobs)
        self.result = SegmentsResult("skeletons", layout="swc")
        self.outcomes: dict[int, list[str]] = {}  # per id: one status per file or part
        self.details: dict[int, list[str]] = {}

    def mirrors(self, part: Part) -> list[MirrorDir]:
        urls = part_mirror_urls(part, self.settings, DATASET)
        if not urls:
            raise BadInput(f"{DATASET} part {part.name!r} has no downloadable mirror")
        return [MirrorDir(u, self.session, self.settings, self.limit, self.emit) for u in urls]

    async def by_root(self, part: Part, ids: list[int]) -> None:
        mirrors, root = self.mirrors(part), local_root(self.dest, part)
        await asyncio.gather(*(self._get(part, mirrors, root, f"{sid}.swc", sid) for sid in ids))

    async def by_listing(self, part: Part, wanted: list[tuple[int, str]]) -> None:
        mirrors, root = self.mirrors(part), local_root(self.dest, part)
        try:
            mirror, listing = await _on_mirrors(mirrors, self._list)
        except RemoteError as exc:
            for sid, _ in wanted:
                self._outcome(sid, FAILED, f"{part.name}: listing failed ({exc})")
            return
        prefix = mirror.key("").rstrip("/") + "/"
        jobs = []
        for sid, kind in wanted:
            hits = [o for o in listing if matches(o.key, sid, kind)]
            if not hits:
                self._outcome(sid, MISSING, f"not in {part.name}")
            for obj in hits:
                jobs.append(self._get(part, mirrors, root, obj.key[len(prefix) :], sid, obj))
        await asyncio.gather(*jobs)

    async def _list(self, mirror: MirrorDir) -> tuple[MirrorDir, list[ObjectInfo]]:
        return mirror, await mirror.list_dir(self.result.shared)

    async def _get(
        self,
        part: Part,
        mirrors: list[MirrorDir],
        root: Path,
        name: str,
        sid: int,
        listed: ObjectInfo | None = None,
    ) -> None:
        report = self.result.report(sid)
        path = local_file(root, name)
        if path.exists() and (listed is None or path.stat().st_size == listed.size):
            report.paths.append(str(path))
            self._outcome(sid, PRESENT, "")
            return
        try:
            data, mirror = await _on_mirrors(mirrors, lambda m: _read(m, name, report, listed))
        except RemoteError as exc:
            self._outcome(sid, FAILED, f"{part.name}/{name}: {exc}")
            return
        if data is None:
            self._outcome(sid, MISSING, f"not in {part.name}")
            return
        await asyncio.to_thread(write_atomic, path, data)
        report.wrote(str(path), len(data))
        report.mirror = mirror
        self.emit(ev.ItemDone(str(path), len(data), mirror, "size", f"segment {sid}"))
        self._outcome(sid, FETCHED, "")

    def _outcome(self, sid: int, status: str, detail: str) -> None:
        self.outcomes.setdefault(sid, []).append(status)
        if detail:
            self.details.setdefault(sid, []).append(detail)
        if status == FAILED:
            self.result.errors.append(f"{sid}: {detail}")

    def finish(self, ids: list[int], part_names: list[str]) -> None:
        """One status per id: failed if any part failed, else fetched / present / missing."""
        for sid in dict.fromkeys(ids):
            report, seen = self.result.report(sid), self.outcomes.get(sid, [])
            report.status = _overall(seen)
            details = self.details.get(sid, [])
            if report.status == MISSING:
                details = [f"no skeleton in {', '.join(part_names) or 'any part'}"]
            report.detail = "; ".join(details)
            _announce(report, self.emit)


def _overall(statuses: list[str]) -> str:
    for status in (FAILED, FETCHED, PRESENT):
        if status in statuses:
            return status
    return MISSING


def _announce(report: SegmentReport, emit: ev.Emit) -> None:
    if report.status == MISSING:
        emit(ev.ItemSkipped(f"segment {report.segment_id}", 0, report.detail))
    elif report.status == FAILED:
        emit(ev.ItemFailed(f"segment {report.segment_id}", report.detail))


async def _read(
    mirror: MirrorDir, name: str, report: SegmentReport, listed: ObjectInfo | None
) -> tuple[bytes | None, str]:
    data = await mirror.read(name, report.tally)
    if data is not None and listed is not None and len(data) != listed.size:
        raise VerificationFailed(f"{name}: got {len(data)} bytes, the listing said {listed.size}")
    return data, mirror.url


async def _on_mirrors(mirrors: list[MirrorDir], work: Callable[[MirrorDir], Awaitable[T]]) -> T:
    """`work` on each mirror in order until one succeeds (a 404 is an answer, not a failure)."""
    errors = []
    for mirror in mirrors:
        try:
            return await work(mirror)
        except (RemoteError, VerificationFailed) as exc:
            errors.append(f"{mirror.url}: {exc}")
    raise RemoteError("; ".join(errors))
