"""`fetch ... --segments ID[,ID] [--meshes]`: meshes of chosen segments, or their skeletons.

Owns: parsing the id lists, choosing between meshes (a precomputed segmentation layer) and
skeletons (the `skeletons` dataset), and turning the result into output and an exit status
(any id that could not be delivered, missing or failed, makes it 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from microns_get.errors import BadInput, ExitCode

if TYPE_CHECKING:
    from microns_get.segments import SegmentsResult


def parse_ids(values: list[str] | None, flag: str) -> list[int]:
    ids: list[int] = []
    for value in values or []:
        for item in value.replace(" ", "").split(","):
            if not item:
                continue
            if not item.isdigit():
                raise BadInput(f"{flag} takes whole-number ids separated by commas (got {item!r})")
            ids.append(int(item))
    return list(dict.fromkeys(ids))


async def _fetch(settings: Any, request: dict[str, Any]) -> SegmentsResult:
    from microns_get.catalog import load_catalog
    from microns_get.plan.discover import PRECOMPUTED_KINDS
    from microns_get.segments import (
        fetch_segment_meshes,
        fetch_skeletons,
        layer_mirror_urls,
        local_root,
    )
    from microns_get.sources import make_session

    dataset = load_catalog().find(request["dataset"], request["volume"])
    version = dataset.version(request["version"])
    dest = Path(settings.dest)
    if dataset.id == "skeletons":
        parts = [version.part(p) for p in request["parts"]] if request["parts"] else version.parts
        async with make_session(settings.jobs, settings.timeout) as session:
            return await fetch_skeletons(
                session,
                settings,
                version.name,
                list(parts),
                request["ids"],
                dest,
                request["nuclei"] or None,
            )
    if dataset.kind not in PRECOMPUTED_KINDS or not request["meshes"]:
        raise BadInput(
            f"--segments works with --meshes on a segmentation layer, or with the skeletons "
            f"dataset ({dataset.id} is a {dataset.kind})"
        )
    part = version.part(None)
    async with make_session(settings.jobs, settings.timeout) as session:
        return await fetch_segment_meshes(
            session,
            settings,
            layer_mirror_urls(part, settings, dataset.id),
            local_root(dest, part),
            request["ids"],
        )


def run_segments(settings: Any, request: dict[str, Any], as_json: bool) -> None:
    import asyncio

    from microns_get.cli import render

    if not request["ids"] and not request["nuclei"]:
        raise BadInput("--segments needs at least one id")
    result = asyncio.run(_fetch(settings, request))
    if as_json:
        render.print_json(result.to_json())
    else:
        for report in result.segments.values():
            paths = ", ".join(report.paths) or "-"
            typer.echo(f"{report.segment_id}: {report.status} ({report.detail or paths})", err=True)
        typer.echo(
            f"{result.kind}: {len(result.fetched)} fetched, {len(result.present)} already there, "
            f"{len(result.missing)} missing, {len(result.failed)} failed; "
            f"{result.requests} requests, {result.bytes_read} bytes read",
            err=True,
        )
        typer.echo(f"output: {settings.dest}", err=True)
    if result.missing or result.failed:
        raise typer.Exit(ExitCode.SOME_FAILED)
