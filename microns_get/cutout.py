"""The cutout job: `fetch LAYER --bbox ...` reads exactly the chunks a box needs.

Owns: the order of steps (discover -> plan -> run) and where state lives. Discovery is
`plan.cutout_discover`, the rules are `plan.cutout` (pure), moving bytes is `transfer.chunks`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from microns_get.catalog import Catalog
from microns_get.checkpoint import CheckpointStore
from microns_get.plan.cutout import CutoutPlan, CutoutRequest
from microns_get.plan.cutout_discover import CutoutPlanner, Layer
from microns_get.transfer import events as ev
from microns_get.transfer.chunks import CutoutRunner


async def plan_cutout(
    session: aiohttp.ClientSession, settings: Any, catalog: Catalog, request: CutoutRequest
) -> tuple[CutoutPlan, Layer]:
    return await CutoutPlanner(session, settings).plan(catalog, request)


async def run_cutout(
    settings: Any,
    catalog: Catalog,
    request: CutoutRequest,
    emit: ev.Emit = ev.ignore,
    dry_run: bool = False,
) -> tuple[CutoutPlan, ev.RunFinished | None]:
    from microns_get.fetch import STATE_FILE, state_dir
    from microns_get.sources import make_session

    async with make_session(settings.jobs, settings.timeout) as session:
        plan, layer = await plan_cutout(session, settings, catalog, request)
        if dry_run:
            return plan, None
        with CheckpointStore.open(state_dir(settings) / STATE_FILE) as store:
            runner = CutoutRunner(Path(settings.dest), store, settings, emit)
            return plan, await runner.run(plan, layer)
