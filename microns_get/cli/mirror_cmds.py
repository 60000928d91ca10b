"""`mirror`, `sync`, `worker`, `queue status` and `plan --queue`: thin commands over
`microns_get.mirror` and `microns_get.distributed`.

Owns: their flags and how a flag, the jobs file and the settings combine (flag > jobs file >
settings > default), rendering of mirror events next to the engine's (timestamped plain lines
off a TTY, bars on one, JSON lines with --json, an appended --log-file), and the exit code of a
mirror run: the worst of its jobs. Commands do no work of their own, and import what they run
inside themselves (start-up stays cheap for every other command).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from microns_get.cli.fetch_cmds import (
    BboxOpt,
    BboxRes,
    BboxUnits,
    Exclude,
    Include,
    MipOpt,
    PartOpt,
    PartSize,
    ResOpt,
    Version,
    Volume,
)
from microns_get.errors import BadInput, MicronsGetError

if TYPE_CHECKING:
    from microns_get.catalog import Catalog
    from microns_get.config import Settings
    from microns_get.mirror import report as rp
    from microns_get.mirror.jobs import Job
    from microns_get.mirror.options import MirrorOptions
    from microns_get.mirror.runner import DestOutcome
    from microns_get.transfer import events as ev

# The parameter is `mirror_` (the command `mirror` owns the name); the flag stays `--mirror`.
MirrorFlag = Annotated[
    str | None, typer.Option("--mirror", help="auto, s3, gcs, https or a mirror URL.")
]
JobsOpt = Annotated[int | None, typer.Option("--jobs", help="Concurrent requests.")]
DeleteOpt = Annotated[
    bool | None,
    typer.Option(
        "--delete/--no-delete",
        help="Remove local files the remote no longer has (never after a failed listing).",
    ),
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Delete even more than delete_max_fraction of the tree.")
]
ChecksumOpt = Annotated[
    bool | None,
    typer.Option("--checksum", help="Re-hash local files against the remote's MD5/CRC32C."),
]
BwOpt = Annotated[
    str | None,
    typer.Option(help='Bandwidth cap in bytes/s (50M), or a schedule "08:00,10M 20:00,off".'),
]
QuotaOpt = Annotated[bool, typer.Option(help="Skip the free space / inode check.")]
FractionOpt = Annotated[
    float | None, typer.Option(help="Largest share of the tree --delete may remove (0.1).")
]
QuietOpt = Annotated[bool, typer.Option(help="Only warnings, failures and the summary.")]
LogOpt = Annotated[Path | None, typer.Option(help="Append timestamped lines to this file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON lines on stdout.")]


def _settings(ctx: typer.Context, **flags: Any) -> Settings:
    from microns_get.cli.app import _state

    return _state(ctx).settings(**flags)


# -- mirror / sync ---------------------------------------------------------------------------


def mirror(
    ctx: typer.Context,
    jobs_file: Annotated[Path, typer.Argument(metavar="JOBS.yaml", help="The jobs file.")],
    dest: Annotated[str | None, typer.Option(help="Replaces the jobs file's `dest`.")] = None,
    delete: DeleteOpt = None,
    force: ForceOpt = False,
    checksum: ChecksumOpt = None,
    bwlimit: BwOpt = None,
    ignore_quota: QuotaOpt = False,
    delete_max_fraction: FractionOpt = None,
    jobs: JobsOpt = None,
    part_size: PartSize = None,
    mirror_: MirrorFlag = None,
    quiet: QuietOpt = False,
    log_file: LogOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Bring every job of a jobs file up to date (for cron): list, fetch what is new or changed,
    optionally delete what the remote dropped; a JSON report per run in DEST/.microns-get/reports.
    Exit: 0 ok, 1 items failed or a delete refused, 2 bad jobs file or no space (nothing
    written), 3 DEST locked by another run, 5 a listing failed (nothing deleted)."""
    from microns_get.catalog import load_catalog
    from microns_get.mirror.jobs import load_jobs
    from microns_get.mirror.options import mirror_options

    settings = _settings(ctx, jobs=jobs, part_size=part_size, mirror=mirror_)
    catalog = load_catalog()
    parsed = load_jobs(jobs_file, catalog, dest)
    options = mirror_options(
        settings, parsed, delete=delete, force=force, checksum=checksum, bwlimit=bwlimit,
        ignore_quota=ignore_quota, delete_max_fraction=delete_max_fraction,
    )  # fmt: skip
    _run(settings, parsed.jobs, options, catalog, as_json, quiet, log_file)


def sync(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(metavar="DATASET")],
    dest: Annotated[str, typer.Option(help="Destination directory.")],
    volume: Volume = None,
    version: Version = None,
    part: PartOpt = None,
    include: Include = None,
    exclude: Exclude = None,
    mirror_: MirrorFlag = None,
    jobs: JobsOpt = None,
    part_size: PartSize = None,
    delete: DeleteOpt = None,
    force: ForceOpt = False,
    checksum: ChecksumOpt = None,
    bwlimit: BwOpt = None,
    ignore_quota: QuotaOpt = False,
    delete_max_fraction: FractionOpt = None,
    quiet: QuietOpt = False,
    log_file: LogOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Bring one dataset in DEST up to date: fetch what is new or changed since the last run."""
    from microns_get.catalog import load_catalog
    from microns_get.fetch import selected_parts
    from microns_get.mirror.jobs import Job
    from microns_get.mirror.options import mirror_options

    settings = _settings(ctx, dest=dest, jobs=jobs, part_size=part_size, mirror=mirror_)
    catalog = load_catalog()
    job = Job(
        name=dataset,
        dataset=dataset,
        dest=Path(dest).expanduser().absolute(),
        volume=volume,
        version=version,
        parts=tuple(part or ()),
        include=tuple(include or ()),
        exclude=tuple(exclude or ()),
    )
    selected_parts(catalog.find(dataset, volume), job.fetch_request())  # bad input: fail now
    options = mirror_options(
        settings, None, delete=delete, force=force, checksum=checksum, bwlimit=bwlimit,
        ignore_quota=ignore_quota, delete_max_fraction=delete_max_fraction,
    )  # fmt: skip
    _run(settings, [job], options, catalog, as_json, quiet, log_file)


def _run(
    settings: Settings,
    jobs: Sequence[Job],
    options: MirrorOptions,
    catalog: Catalog,
    as_json: bool,
    quiet: bool,
    log_file: Path | None,
) -> None:
    import asyncio

    from microns_get.cli.progress import renderer_for
    from microns_get.mirror.runner import run_mirror

    with _log(log_file) as log, renderer_for(as_json, quiet) as screen:
        emit = MirrorEvents(screen, log, as_json, quiet)
        try:
            outcomes = asyncio.run(run_mirror(jobs, settings, options, catalog, emit))
        except MicronsGetError as exc:
            emit.log_line(f"error: {exc}")
            raise
        code = _finish(outcomes, as_json, log)
    if code:
        raise typer.Exit(code)


def _finish(outcomes: list[DestOutcome], as_json: bool, log: TextIO | None) -> int:
    results = [r for o in outcomes for r in o.results]
    code = max((r.exit_code for r in results), default=0)
    if as_json:
        summary = {
            "event": "MirrorSummary",
            "exit_code": code,
            "reports": [str(o.report_path) for o in outcomes if o.report_path],
            "jobs": [r.to_json() for r in results],
        }
        sys.stdout.write(json.dumps(summary, default=str) + "\n")
        return code
    lines = [job_line(r) for r in results]
    lines += [f"{r.name}: error: {e}" for r in results for e in r.errors[:10]]
    lines += [f"report: {o.report_path}" for o in outcomes if o.report_path]
    for line in lines:
        typer.echo(line, err=True)
        if log is not None:
            _stamp(log, line)
    return code


def job_line(r: rp.JobResult) -> str:
    return (
        f"{r.name}: {r.added} added, {r.changed} changed, {r.deleted} deleted, "
        f"{r.unchanged} unchanged, {r.bytes} bytes moved, {r.failed} failed"
    )


# -- rendering -------------------------------------------------------------------------------


def mirror_text(event: ev.Event) -> str | None:
    from microns_get.mirror import report as rp

    if isinstance(event, rp.JobListed):
        state = "" if event.complete else " (listing incomplete: nothing fetched or deleted)"
        return (
            f"{event.job}: {event.added} new, {event.changed} changed, {event.unchanged} "
            f"unchanged; {event.bytes_to_fetch} bytes to fetch{state}"
        )
    if isinstance(event, rp.FileDeleted):
        return f"{event.job}: deleted {event.path}"
    if isinstance(event, rp.MirrorNote):
        return f"{event.job or 'mirror'}: warning: {event.message}"
    return None


def _stamp(out: TextIO, text: str) -> None:
    out.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}\n")
    out.flush()


class MirrorEvents:
    """Engine events go to the usual renderer; mirror events become lines of their own."""

    def __init__(self, screen: Any, log: TextIO | None, as_json: bool, quiet: bool) -> None:
        from microns_get.cli.progress import PlainLines

        self.screen = screen
        self.log = log
        self.log_events = PlainLines(out=log) if log is not None else None
        self.as_json = as_json
        self.quiet = quiet

    def log_line(self, text: str) -> None:
        if self.log is not None:
            _stamp(self.log, text)

    def __call__(self, event: ev.Event) -> None:
        from microns_get.cli.progress import RichBars
        from microns_get.mirror import report as rp

        text = mirror_text(event)
        if self.log_events is not None:
            self.log_events(event) if text is None else self.log_line(text)
        if self.as_json or text is None:
            if not isinstance(event, rp.JobFinished) or self.as_json:
                self.screen(event)
            return
        if self.quiet and not isinstance(event, rp.MirrorNote):
            return
        if isinstance(self.screen, RichBars):
            self.screen.console.print(text, markup=False, highlight=False)
        else:
            _stamp(sys.stderr, text)


@contextmanager
def _log(path: Path | None) -> Iterator[TextIO | None]:
    if path is None:
        yield None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as out:
        yield out


# -- distributed -----------------------------------------------------------------------------


def plan(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(metavar="DATASET")],
    volume: Volume = None,
    version: Version = None,
    part: PartOpt = None,
    include: Include = None,
    exclude: Exclude = None,
    dest: Annotated[str | None, typer.Option(help="Destination directory.")] = None,
    part_size: PartSize = None,
    mirror_: MirrorFlag = None,
    as_json: JsonOpt = False,
    bbox: BboxOpt = None,
    bbox_resolution: BboxRes = None,
    bbox_units: BboxUnits = None,
    mip: MipOpt = None,
    resolution: ResOpt = None,
    queue: Annotated[
        str | None,
        typer.Option(help="Enqueue the plan as tasks on fq:///shared/dir or sqs://name."),
    ] = None,
    task_items: Annotated[int, typer.Option(min=1, help="Items per task (with --queue).")] = 200,
    task_bytes: Annotated[str, typer.Option(help="Bytes per task (with --queue).")] = "4G",
) -> None:
    """Print the plan a fetch would run (objects or chunks, requests, bytes, mirror); moves
    nothing. With --queue, split it into tasks for `microns-get worker` on many machines."""
    if queue is None:
        from microns_get.cli import fetch_cmds

        fetch_cmds.plan(
            ctx, dataset, volume=volume, version=version, part=part, include=include,
            exclude=exclude, dest=dest, part_size=part_size, mirror=mirror_, as_json=as_json,
            bbox=bbox, bbox_resolution=bbox_resolution, bbox_units=bbox_units, mip=mip,
            resolution=resolution,
        )  # fmt: skip
        return
    if bbox is not None:
        raise BadInput("--queue splits whole-object plans; run a --bbox cutout on one machine")
    import asyncio

    from microns_get.catalog import load_catalog
    from microns_get.config import parse_size
    from microns_get.distributed.queue import Queue
    from microns_get.distributed.tasks import queue_form, split_plan
    from microns_get.fetch import FetchRequest, plan_fetch

    settings = _settings(ctx, dest=dest, part_size=part_size, mirror=mirror_)
    request = FetchRequest(
        dataset, volume, version, tuple(part or ()), tuple(include or ()), tuple(exclude or ())
    )
    target = Queue(queue)  # a bad queue URL fails before any listing
    planned = asyncio.run(plan_fetch(settings, load_catalog(), request))
    task_dest = str(Path(dest).expanduser().absolute()) if dest else None
    specs = split_plan(planned.plan, task_dest, task_items, parse_size(task_bytes))
    inserted = target.insert(queue_form(spec) for spec in specs)
    plan_ = planned.plan
    summary = dict(plan_id=plan_.plan_id, objects=len(plan_.items), bytes=plan_.total_bytes)
    summary.update(tasks=inserted, queue=target.url, dest=task_dest)
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    typer.echo(
        f"plan {summary['plan_id']}: {summary['objects']} objects, {summary['bytes']} bytes "
        f"-> {inserted} tasks on {target.url}" + ("" if task_dest else " (workers need --dest)")
    )


def worker(
    ctx: typer.Context,
    queue: Annotated[str, typer.Argument(metavar="QUEUE", help="fq:///shared/dir or sqs://name")],
    dest: Annotated[str | None, typer.Option(help="Replaces the tasks' destination.")] = None,
    lease_seconds: Annotated[
        float, typer.Option(min=1, help="Lease per task; renewed while it runs.")
    ] = 600,
    jobs: JobsOpt = None,
    bwlimit: BwOpt = None,
    quiet: QuietOpt = False,
    log_file: LogOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Lease tasks from a queue and run them until the queue is empty (one per node / job)."""
    import signal

    from microns_get.cli.progress import renderer_for
    from microns_get.distributed.queue import Queue
    from microns_get.distributed.worker import Worker, WorkerConfig
    from microns_get.mirror.bandwidth import TokenBucket
    from microns_get.mirror.options import bandwidth

    settings = _settings(ctx, jobs=jobs)
    bucket = TokenBucket.for_schedule(bandwidth(settings, None, bwlimit))
    config = WorkerConfig(
        settings=settings,
        dest=Path(dest).expanduser().absolute() if dest else None,
        lease_seconds=lease_seconds,
        throttle=bucket.consume if bucket is not None else None,
    )
    # SLURM and most schedulers stop a job with SIGTERM: give the task back on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with _log(log_file) as log, renderer_for(as_json, quiet) as screen:
        emit = MirrorEvents(screen, log, as_json, quiet)
        summary = Worker(Queue(queue), config, emit).run()
        line = (
            f"worker: {summary.tasks_done} tasks done, {summary.tasks_failed} failed; "
            f"{summary.items_fetched} items fetched, {summary.items_already_done} already done, "
            f"{summary.bytes_moved} bytes"
        )
        emit.log_line(line)
    if as_json:
        sys.stdout.write(json.dumps({"event": "WorkerSummary", **vars(summary)}) + "\n")
    else:
        typer.echo(line, err=True)
    if summary.tasks_failed:
        raise typer.Exit(1)


def queue_status(
    queue: Annotated[str, typer.Argument(metavar="QUEUE", help="fq:///shared/dir or sqs://name")],
    as_json: JsonOpt = False,
) -> None:
    """Tasks enqueued, leased, completed (and failed, for fq) on a queue."""
    from microns_get.distributed.queue import Queue

    counts = Queue(queue).counts().to_json()
    if as_json:
        sys.stdout.write(json.dumps(counts) + "\n")
        return
    typer.echo(" ".join(f"{k}={'-' if v is None else v}" for k, v in counts.items()))


queue_app = typer.Typer(help="Inspect a task queue.", no_args_is_help=True)
queue_app.command("status")(queue_status)
