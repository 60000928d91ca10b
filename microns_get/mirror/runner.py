"""Running mirror jobs: per destination, lock -> list and compare -> quota -> fetch -> delete.

Owns: the order of those steps and every side effect of a mirror run: the destination lock, the
scratch listing index, checkpoint records for adopted or invalidated local copies, engine runs
in batches (sharing one bandwidth bucket), deletions, and the run report. The rules themselves
are pure and live in `mirror.sync`; listing and comparing in `mirror.listing`.
A run that does not fit (quota) writes nothing; deletions never follow a failed listing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiohttp import ClientSession as Session

from microns_get.catalog import Catalog
from microns_get.checkpoint import CheckpointStore
from microns_get.config import Resolved, Settings
from microns_get.cutout import run_cutout
from microns_get.errors import BadInput, ExitCode, LockHeld, MicronsGetError
from microns_get.fetch import STATE_FILE
from microns_get.mirror import report as rp
from microns_get.mirror.bandwidth import TokenBucket
from microns_get.mirror.index import ListingIndex
from microns_get.mirror.jobs import Job
from microns_get.mirror.listing import JobListing, Lister
from microns_get.mirror.lock import DestLock
from microns_get.mirror.options import MirrorOptions
from microns_get.mirror.sync import (
    TO_FETCH,
    Change,
    delete_decision,
    in_scope,
    quota_problem,
    space_from_statvfs,
)
from microns_get.mirror.tree import (
    STATE_NAME,
    nearest_existing,
    nested_roots,
    remove_file,
    walk_files,
)
from microns_get.plan.model import Plan, PlanItem
from microns_get.sources import make_session
from microns_get.transfer import events as ev
from microns_get.transfer.engine import Engine, content_identity

BATCH_ITEMS = 2000  # items per engine run: bounds memory for huge listings; one plan id each


class NotEnoughSpace(BadInput):
    """DEST cannot hold what the run would write (bytes or inodes); nothing was written."""


@dataclass
class DestOutcome:
    dest: Path
    results: list[rp.JobResult]
    report_path: Path | None = None


def with_values(settings: Settings, origin: str, **values: Any) -> Settings:
    """`settings` with some values replaced (a job's destination, its state directory)."""
    merged = {**settings.values, **{k: Resolved(v, origin) for k, v in values.items()}}
    return replace(settings, values=merged)


def state_dir_for(settings: Settings, dest: Path) -> Path:
    return Path(settings.state_dir) if settings.state_dir else dest / STATE_NAME


async def run_mirror(
    jobs: Sequence[Job],
    settings: Settings,
    options: MirrorOptions,
    catalog: Catalog,
    emit: ev.Emit = ev.ignore,
) -> list[DestOutcome]:
    """Every job, destination by destination (each under its own lock)."""
    dests = list(dict.fromkeys(job.dest for job in jobs))
    if settings.state_dir and len(dests) > 1:
        raise BadInput("state_dir is set, but the jobs write to several destinations: unset it")
    bucket = TokenBucket.for_schedule(options.bwlimit)
    outcomes = []
    for dest in dests:
        group = [job for job in jobs if job.dest == dest]
        run = DestRun(dest, group, settings, options, catalog, emit, bucket)
        try:
            outcomes.append(await run.run())
        except (LockHeld, NotEnoughSpace) as exc:
            if len(dests) == 1:
                raise  # one destination: one line and the exit code says it all
            for result in run.results.values():
                result.fail(str(exc), exc.exit_code)
            outcomes.append(DestOutcome(dest, list(run.results.values())))
    return outcomes


class DestRun:
    def __init__(
        self,
        dest: Path,
        jobs: list[Job],
        settings: Settings,
        options: MirrorOptions,
        catalog: Catalog,
        emit: ev.Emit,
        bucket: TokenBucket | None,
    ) -> None:
        self.dest = dest
        self.jobs = jobs
        self.options = options
        self.catalog = catalog
        self.emit = emit
        self.bucket = bucket
        self.state = state_dir_for(settings, dest)
        self.settings = with_values(settings, "jobs file", dest=dest, state_dir=self.state)
        self.results = {j.name: rp.JobResult(j.name, j.dataset, str(dest)) for j in jobs}
        self.listings: dict[str, JobListing] = {}
        self.cutout_need = (0, 0)
        self.index: ListingIndex | None = None

    async def run(self) -> DestOutcome:
        started = time.time()
        outcome = DestOutcome(self.dest, list(self.results.values()))
        lock = DestLock(self.dest / STATE_NAME, self.options.lock_ttl)
        lock.acquire()  # LockHeld: the holder's tree is not ours to write in, not even a report
        try:
            for warning in lock.warnings:
                self._note("", warning)
                for result in outcome.results:
                    result.warnings.append(warning)
            await self._locked()
            report = rp.run_report(self.dest, outcome.results, started, time.time())
            outcome.report_path = rp.write_report(self.state, report, started)
        finally:
            lock.release()
        return outcome

    async def _locked(self) -> None:
        """Raises `NotEnoughSpace` before anything is written when the run cannot fit."""
        self.index = ListingIndex(self.state / f"listing-{os.getpid()}.sqlite")
        store_path = self.state / STATE_FILE
        # Opened only if it exists: creating it would be a write before the quota check.
        store = CheckpointStore(store_path) if store_path.exists() else None
        try:
            async with make_session(self.settings.jobs, self.settings.timeout) as session:
                await self._list_all(session, store)
                self._check_space()
                store = store or CheckpointStore.open(store_path)
                for job in self.jobs:
                    await self._apply(job, session, store)
        finally:
            if store is not None:
                store.close()
            self.index.close()

    # -- list and compare ----------------------------------------------------------------------
    async def _list_all(self, session: Session, store: CheckpointStore | None) -> None:
        assert self.index is not None
        lister = Lister(session, self.settings, self.dest, store, self.index, self.options.checksum)
        for job in self.jobs:
            started = time.monotonic()
            try:
                if job.bbox is not None:
                    await self._plan_cutout(job)
                else:
                    await self._list_job(job, lister)
            except MicronsGetError as exc:
                self.results[job.name].fail(str(exc), exc.exit_code)
            self.results[job.name].seconds += time.monotonic() - started

    async def _list_job(self, job: Job, lister: Lister) -> None:
        assert self.index is not None
        result = self.results[job.name]
        dataset = self.catalog.find(job.dataset, job.volume)
        listing = await lister.list_job(job.name, dataset, job.fetch_request())
        self.listings[job.name] = listing
        result.listing_complete = listing.complete
        for error in listing.errors:
            result.fail(error, ExitCode.REMOTE_FAILED)
        counts = self.index.counts(job.name)
        result.added = counts.get(Change.ADDED.value, (0, 0))[0]
        result.changed = counts.get(Change.CHANGED.value, (0, 0))[0]
        result.unchanged = counts.get(Change.UNCHANGED.value, (0, 0))[0]
        to_fetch = sum(counts.get(c.value, (0, 0))[1] for c in TO_FETCH)
        self.emit(
            rp.JobListed(
                job.name, result.added, result.changed, result.unchanged, to_fetch, listing.complete
            )
        )

    async def _plan_cutout(self, job: Job) -> None:
        plan, _ = await run_cutout(self.settings, self.catalog, job.cutout_request(), dry_run=True)
        totals = plan.totals()
        need_bytes, need_files = self.cutout_need
        self.cutout_need = (need_bytes + totals["ranged_bytes"], need_files + totals["chunks"])
        self.results[job.name].listing_complete = True

    def _fetchable(self) -> list[str]:
        """Jobs whose listing is whole: a partial listing fetches nothing (and deletes nothing)."""
        return [name for name, listing in self.listings.items() if listing.complete]

    # -- quota ---------------------------------------------------------------------------------
    def _check_space(self) -> None:
        assert self.index is not None
        need_bytes, need_files = self.index.to_fetch(self._fetchable(), [c.value for c in TO_FETCH])
        need_bytes += self.cutout_need[0]
        need_files += self.cutout_need[1]
        if self.options.ignore_quota or need_files == 0:
            return
        space = space_from_statvfs(os.statvfs(nearest_existing(self.dest)))
        problem = quota_problem(str(self.dest), need_bytes, need_files, space)
        if problem is not None:
            raise NotEnoughSpace(problem)

    # -- fetch ---------------------------------------------------------------------------------
    async def _apply(self, job: Job, session: Session, store: CheckpointStore) -> None:
        result = self.results[job.name]
        started = time.monotonic()
        try:
            if job.bbox is not None and result.listing_complete:
                await self._run_cutout(job)
            elif job.name in self._fetchable():
                self._record_local_copies(job, store)
                await self._fetch(job, session, store)
                if self._deletes(job):
                    self._delete(job)
        except MicronsGetError as exc:
            result.fail(str(exc), exc.exit_code)
        result.seconds = round(result.seconds + time.monotonic() - started, 3)
        self.emit(rp.JobFinished(result.to_json()))

    def _record_local_copies(self, job: Job, store: CheckpointStore) -> None:
        """Local copies a hash proved current become records (so the next run needs no hash);
        recorded copies a hash disproved lose their "done" mark (so the engine refetches)."""
        assert self.index is not None
        for row in self.index.rows(job.name, action="adopt"):
            item = row.item
            assert item is not None
            store.begin_item(
                item.path,
                plan_id=None,
                local_path=item.path,
                remote_url=item.primary.url,
                size=item.size,
                identity=content_identity(item.primary),
                parts=[(0, item.size)],
            )
            store.item_done(item.path, f"local copy, {row.method}", item.primary.provider)
        for row in self.index.rows(job.name, action="invalidate"):
            store.item_failed(row.path, "the local copy does not match the remote's checksum")

    async def _fetch(self, job: Job, session: Session, store: CheckpointStore) -> None:
        assert self.index is not None
        batch: list[PlanItem] = []
        for row in self.index.rows(job.name, changes=[c.value for c in TO_FETCH]):
            assert row.item is not None
            batch.append(row.item)
            if len(batch) >= BATCH_ITEMS:
                await self._run_batch(job, batch, session, store)
                batch = []
        if batch:
            await self._run_batch(job, batch, session, store)

    async def _run_batch(
        self,
        job: Job,
        items: list[PlanItem],
        session: Session,
        store: CheckpointStore,
    ) -> None:
        listing = self.listings[job.name]
        plan = Plan(
            request=job.fetch_request().to_json(),
            items=tuple(items),
            part_size=self.settings.part_size,
            mirror=listing.parts[0].mirror if listing.parts else "",
        )
        engine = Engine(
            dest=self.dest,
            store=store,
            session=session,
            settings=self.settings,
            emit=self.emit,
            verify=self.options.verify,
            throttle=self.bucket.consume if self.bucket is not None else None,
        )
        self._count(job, await engine.run(plan))

    async def _run_cutout(self, job: Job) -> None:
        request = job.cutout_request()
        _, finished = await run_cutout(self.settings, self.catalog, request, self.emit)
        if finished is not None:
            self._count(job, finished)

    def _count(self, job: Job, finished: ev.RunFinished) -> None:
        result = self.results[job.name]
        result.plan_ids.append(finished.plan_id)
        result.bytes += finished.bytes_moved
        result.failed += finished.objects_failed
        if finished.objects_failed:
            for failure in finished.failures:
                result.fail(failure, ExitCode.SOME_FAILED)

    # -- delete --------------------------------------------------------------------------------
    def _deletes(self, job: Job) -> bool:
        return self.options.delete if job.delete is None else job.delete

    def _delete(self, job: Job) -> None:
        assert self.index is not None
        listing, result = self.listings[job.name], self.results[job.name]
        candidates: list[str] = []
        scope = 0
        roots = [self.dest / p.local_root for p in listing.parts if p.is_prefix]
        for root in roots:
            for path in walk_files(root, nested_roots(self.catalog, self.dest, root)):
                if not in_scope(path.relative_to(root).as_posix(), job.include, job.exclude):
                    continue
                scope += 1
                rel = path.relative_to(self.dest).as_posix()
                if not self.index.has(job.name, rel):
                    candidates.append(rel)
        decision = delete_decision(
            candidates,
            scope,
            listing_complete=listing.complete,
            max_fraction=self.options.delete_max_fraction,
            force=self.options.force,
        )
        if not decision.allowed:
            result.fail(decision.reason, ExitCode.SOME_FAILED)
            self._note(job.name, decision.reason)
            return
        for rel in decision.paths:
            path = self.dest / rel
            remove_file(path, next(r for r in roots if r in path.parents))
            result.deleted += 1
            self.emit(rp.FileDeleted(job.name, rel))

    def _note(self, job: str, message: str) -> None:
        self.emit(rp.MirrorNote(job, message))
