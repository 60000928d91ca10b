"""`fetch`, `plan` and `mirrors`: thin commands over `microns_get.fetch`.

Owns: their flags and output. Bad input is reported before anything is written: the state
directory and DEST are only touched once a plan exists. What a command runs is imported inside
it, so each loads only its own libraries (a cutout: neither the segments code nor rich).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from microns_get.errors import BadInput, ExitCode

if TYPE_CHECKING:
    from microns_get.config import Settings
    from microns_get.fetch import FetchRequest, PlannedFetch
    from microns_get.plan.cutout import CutoutRequest

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
BboxOpt = Annotated[
    str | None, typer.Option("--bbox", help="X0,Y0,Z0,X1,Y1,Z1 (end-exclusive): a cutout.")
]
BboxRes = Annotated[
    str | None,
    typer.Option(help="Units of --bbox as voxel size X,Y,Z in nm (default 4,4,40, as tables)."),
]
BboxUnits = Annotated[str | None, typer.Option(help="'nm' to give --bbox in nanometres.")]
MipOpt = Annotated[str | None, typer.Option("--mip", help="Scale index, or 'all'.")]
ResOpt = Annotated[str | None, typer.Option("--resolution", help="Scale by resolution X,Y,Z.")]
SegmentsOpt = Annotated[
    list[str] | None, typer.Option("--segments", help="Segment (root) ids, comma-separated.")
]
MeshesOpt = Annotated[bool, typer.Option("--meshes", help="With --segments: their meshes.")]
NucleiOpt = Annotated[
    list[str] | None, typer.Option("--nuclei", help="Skeletons v661: find files by nucleus id.")
]


def _cutout_request(
    dataset: str, volume, version, bbox: str, bbox_resolution, bbox_units, mip, resolution
) -> CutoutRequest:  # noqa: ANN001
    from microns_get.plan.cutout import CutoutRequest
    from microns_get.precomputed.grid import NM, TABLE_RESOLUTION, parse_resolution

    if bbox_units is not None and bbox_units.strip().lower() != "nm":
        raise BadInput(f"--bbox-units takes only 'nm' (got {bbox_units!r})")
    if bbox_units and bbox_resolution:
        raise BadInput("give --bbox-resolution or --bbox-units, not both")
    box_res = NM if bbox_units else TABLE_RESOLUTION
    if bbox_resolution:
        box_res = parse_resolution(bbox_resolution)
    return CutoutRequest(
        dataset=dataset,
        bbox=bbox,
        bbox_resolution=tuple(box_res),
        volume=volume,
        version=version,
        mip=mip,
        resolution=tuple(parse_resolution(resolution)) if resolution else None,
    )


def _cutout(
    settings: Settings, request: CutoutRequest, dry_run: bool, as_json: bool, quiet: bool
) -> None:
    import asyncio

    from microns_get.catalog import load_catalog
    from microns_get.cli.progress import renderer_for, summary_lines
    from microns_get.cutout import run_cutout

    catalog = load_catalog()
    if dry_run:
        plan, _ = asyncio.run(run_cutout(settings, catalog, request, dry_run=True))
        _print_cutout_plan(plan, as_json)
        return
    with renderer_for(as_json, quiet) as emit:
        plan, finished = asyncio.run(run_cutout(settings, catalog, request, emit))
    for warning in plan.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if not as_json:
        for line in summary_lines(finished):
            typer.echo(line, err=True)
        typer.echo(f"output: {Path(settings.dest) / plan.local_layer}", err=True)
    if finished.objects_failed:
        raise typer.Exit(ExitCode.SOME_FAILED)


def _print_cutout_plan(plan: Any, as_json: bool) -> None:
    from microns_get.cli import render

    data = plan.to_json()
    if as_json:
        render.print_json(data)
        return
    for warning in plan.warnings:
        typer.echo(f"warning: {warning}", err=True)
    totals = data["totals"]
    render.console.print(
        f"cutout plan {data['plan_id']} from {plan.layer_url} into {plan.local_layer}: "
        f"{totals['chunks']} chunks ({totals['absent_chunks']} absent), "
        f"{totals['requests']} requests, {totals['ranged_bytes']} bytes in ranges, "
        f"index reads: {totals['index_requests']} requests / {totals['index_bytes']} bytes"
    )
    for scale in plan.scales:
        kind = "sharded" if scale.sharded else "unsharded"
        render.console.print(
            f"  {scale.key} ({kind}): box {scale.box['lo']}..{scale.box['hi']}, "
            f"{scale.chunks} chunks, {len(scale.reads)} reads"
        )
        for choice in scale.shards:
            how = "whole shard" if choice.whole else f"{choice.ranged_requests} ranges"
            render.console.print(
                f"    {choice.key}: {choice.chunks} chunks, {choice.needed_bytes} of "
                f"{choice.shard_size} bytes -> {how}"
            )


def _request(dataset: str, volume, version, part, include, exclude) -> FetchRequest:  # noqa: ANN001
    from microns_get.fetch import FetchRequest

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
    from microns_get.cli import render

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
    bbox: BboxOpt = None,
    bbox_resolution: BboxRes = None,
    bbox_units: BboxUnits = None,
    mip: MipOpt = None,
    resolution: ResOpt = None,
    segments: SegmentsOpt = None,
    meshes: MeshesOpt = False,
    nuclei: NucleiOpt = None,
) -> None:
    """Fetch whole objects (a file, an object set, a whole layer byte for byte); with --bbox
    exactly the chunks of a precomputed layer that a box needs; with --segments the meshes or
    skeletons of chosen segments."""
    settings = _settings(ctx, dest=dest, jobs=jobs, part_size=part_size, mirror=mirror)
    if segments is not None or nuclei is not None:
        from microns_get.cli.segment_cmds import parse_ids, run_segments

        request = {
            "dataset": dataset,
            "volume": volume,
            "version": version,
            "parts": list(part or ()),
            "ids": parse_ids(segments, "--segments"),
            "nuclei": parse_ids(nuclei, "--nuclei"),
            "meshes": meshes,
        }
        run_segments(settings, request, as_json)
        return
    if bbox is not None:
        cutout = _cutout_request(
            dataset, volume, version, bbox, bbox_resolution, bbox_units, mip, resolution
        )
        _cutout(settings, cutout, dry_run, as_json, quiet)
        return
    request = _request(dataset, volume, version, part, include, exclude)
    _fetch_objects(settings, request, dry_run, as_json, quiet, verify=not no_verify)


def _fetch_objects(
    settings: Settings,
    request: FetchRequest,
    dry_run: bool,
    as_json: bool,
    quiet: bool,
    verify: bool,
) -> None:
    import asyncio

    from microns_get.catalog import load_catalog
    from microns_get.cli import render
    from microns_get.cli.progress import renderer_for, summary_lines
    from microns_get.fetch import plan_fetch, run_fetch

    catalog = load_catalog()
    if dry_run:
        planned = asyncio.run(plan_fetch(settings, catalog, request))
        summary = plan_summary(planned, settings)
        render.print_json(summary) if as_json else print_plan_summary(summary)
        return
    with renderer_for(as_json, quiet) as emit:
        _, finished = asyncio.run(run_fetch(settings, catalog, request, emit, verify))
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
    bbox: BboxOpt = None,
    bbox_resolution: BboxRes = None,
    bbox_units: BboxUnits = None,
    mip: MipOpt = None,
    resolution: ResOpt = None,
) -> None:
    """Print the plan a fetch would run (objects or chunks, requests, bytes, mirror); moves
    nothing."""
    import asyncio

    from microns_get.catalog import load_catalog
    from microns_get.cli import render

    settings = _settings(ctx, dest=dest, part_size=part_size, mirror=mirror)
    if bbox is not None:
        from microns_get.cutout import run_cutout

        cutout = _cutout_request(
            dataset, volume, version, bbox, bbox_resolution, bbox_units, mip, resolution
        )
        plan_, _ = asyncio.run(run_cutout(settings, load_catalog(), cutout, dry_run=True))
        _print_cutout_plan(plan_, as_json)
        return
    from microns_get.fetch import plan_fetch

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
    import asyncio

    from rich.table import Table

    from microns_get.cli import render

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
    from microns_get.catalog import load_catalog
    from microns_get.fetch import Planner, selected_parts
    from microns_get.plan.discover import select_mirrors
    from microns_get.sources import make_session

    dataset = load_catalog().find(request.dataset, request.volume)
    async with make_session(settings.jobs, settings.timeout) as session:
        planner = Planner(session, settings)
        probes = []
        for part in selected_parts(dataset, request):
            candidates = select_mirrors(part, "auto", dataset.id)
            probes.extend(await planner.probe_part(part, candidates))
        return probes
