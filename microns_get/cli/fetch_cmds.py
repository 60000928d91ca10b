"""`fetch`, `plan` and `mirrors`: thin commands over `microns_get.fetch`.

Owns: their flags and output. Bad input is reported before anything is written: the state
directory and DEST are only touched once a plan exists.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.table import Table

from microns_get.catalog import load_catalog
from microns_get.cli import render
from microns_get.cli.progress import renderer_for, summary_lines
from microns_get.config import Settings
from microns_get.errors import ExitCode
from microns_get.fetch import FetchRequest, PlannedFetch, Planner, plan_fetch, run_fetch
from microns_get.plan.discover import select_mirrors
from microns_get.sources import make_session

Volume = Annotated[str | None, typer.Option(help="minnie65 (default) or minnie35.")]
Version = Annotated[str | None, typer.Option(help="Version (default: newest).")]
PartOpt = Annotated[list[str] | None, typer.Option("--part", help="Part(s) of the version.")]
Include = Annotated[list[str] | None, typer.Option(help="Only keys matching this glob.")]
Exclude = Annotated[list[str] | None, typer.Option(help="Skip keys matching this glob.")]
Dest = Annotated[str | None, typer.Option(help="Destination directory.")]
Jobs = Annotated[int | None, typer.Option(help="Concurrent requests.")]
PartSize = Annotated[str | None, typer.Option(help="Ranged part size, e.g. 64M.")]
MirrorOpt = Annotated[str | None, typer.Option(help="auto, s3, gcs, https or a mirror URL.")]
Json = Annotated[bool, typer.Option("--json", help="JSON output.")]


def _request(dataset: str, volume, version, part, include, exclude) -> FetchRequest:  # noqa: ANN001
    return FetchRequest(
        dataset=dataset,
        volume=volume,
        version=version,
        parts=tuple(part or ()),
        include=tuple(include or ()),
        exclude=tuple(exclude or ()),
    )


def _settings(ctx: typer.Context, **flags: Any) -> Settings:
    from microns_get.cli.app import _state

    return _state(ctx).settings(**flags)


def plan_summary(planned: PlannedFetch, settings: Settings) -> dict[str, Any]:
    plan = planned.plan
    return {
        "plan_id": plan.plan_id,
        "dataset": planned.dataset.id if planned.dataset else None,
        "objects": len(plan.items),
        "bytes": plan.total_bytes,
        "mirror": plan.mirror,
        "dest": str(settings.dest),
        "part_size": plan.part_size,
        "egress": planned.egress(),
        "probes": [p.to_json() for p in planned.probes],
    }


def print_plan_summary(summary: dict[str, Any]) -> None:
    render.console.print(
        f"plan {summary['plan_id']}: {summary['objects']} objects, "
        f"{summary['bytes']} bytes ({render.human_bytes(summary['bytes'])}) "
        f"from {summary['mirror']} into {summary['dest']}"
    )
    for provider, entry in summary["egress"].items():
        render.console.print(
            f"  egress from {provider}: {entry['objects']} objects, "
            f"{render.human_bytes(entry['bytes'])}"
        )


def fetch(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(metavar="DATASET")],
    volume: Volume = None,
    version: Version = None,
    part: PartOpt = None,
    include: Include = None,
    exclude: Exclude = None,
    dest: Dest = None,
    jobs: Jobs = None,
    part_size: PartSize = None,
    mirror: MirrorOpt = None,
    dry_run: Annotated[bool, typer.Option(help="Plan and print; move nothing.")] = False,
    as_json: Json = False,
    no_verify: Annotated[bool, typer.Option(help="Check sizes only, not checksums.")] = False,
    quiet: Annotated[bool, typer.Option(help="Only failures and the summary.")] = False,
) -> None:
    """Fetch whole objects: one file, an object set, or a whole layer byte for byte."""
    settings = _settings(ctx, dest=dest, jobs=jobs, part_size=part_size, mirror=mirror)
    request = _request(dataset, volume, version, part, include, exclude)
    catalog = load_catalog()
    if dry_run:
        planned = asyncio.run(plan_fetch(settings, catalog, request))
        summary = plan_summary(planned, settings)
        render.print_json(summary) if as_json else print_plan_summary(summary)
        return
    with renderer_for(as_json, quiet) as emit:
        _, finished = asyncio.run(run_fetch(settings, catalog, request, emit, not no_verify))
    if not as_json:
        for line in summary_lines(finished):
            typer.echo(line, err=True)
        typer.echo(f"output: {settings.dest}", err=True)
    if finished.objects_failed:
        raise typer.Exit(ExitCode.SOME_FAILED)


def plan(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(metavar="DATASET")],
    volume: Volume = None,
    version: Version = None,
    part: PartOpt = None,
    include: Include = None,
    exclude: Exclude = None,
    dest: Dest = None,
    part_size: PartSize = None,
    mirror: MirrorOpt = None,
    as_json: Json = False,
) -> None:
    """Print the plan a fetch would run (every object, bytes, mirror); moves nothing."""
    settings = _settings(ctx, dest=dest, part_size=part_size, mirror=mirror)
    request = _request(dataset, volume, version, part, include, exclude)
    planned = asyncio.run(plan_fetch(settings, load_catalog(), request))
    if as_json:
        render.print_json({**planned.plan.to_json(), "summary": plan_summary(planned, settings)})
        return
    print_plan_summary(plan_summary(planned, settings))
    for item in planned.plan.items:
        render.console.print(f"  {item.size:>12}  {item.path}")


def mirrors(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(metavar="DATASET")],
    volume: Volume = None,
    version: Version = None,
    part: PartOpt = None,
    as_json: Json = False,
) -> None:
    """Probe each mirror of a dataset (latency, throughput) and rank them."""
    settings = _settings(ctx)
    request = _request(dataset, volume, version, part, None, None)
    probes = asyncio.run(_probe_all(settings, request))
    if as_json:
        render.print_json([p.to_json() for p in probes])
        return
    table = Table(title=f"mirrors of {dataset} (best first)")
    for name in ("rank", "mirror", "url", "latency", "throughput", "error"):
        table.add_column(name, overflow="fold")
    for i, p in enumerate(probes, 1):
        latency = f"{p.latency_s * 1000:.1f} ms" if p.latency_s is not None else "-"
        rate = f"{p.throughput_bps / 1e6:.1f} MB/s" if p.throughput_bps else "-"
        table.add_row(str(i), p.provider, p.url, latency, rate, p.error or "")
    render.console.print(table)


async def _probe_all(settings: Settings, request: FetchRequest) -> list[Any]:
    from microns_get.fetch import selected_parts

    dataset = load_catalog().find(request.dataset, request.volume)
    async with make_session(settings.jobs, settings.timeout) as session:
        planner = Planner(session, settings)
        probes = []
        for part in selected_parts(dataset, request):
            candidates = select_mirrors(part, "auto", dataset.id)
            probes.extend(await planner.probe_part(part, candidates))
        return probes
