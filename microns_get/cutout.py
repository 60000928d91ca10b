"""The cutout job: `fetch LAYER --bbox ...` reads exactly the chunks a box needs.

Owns: the order of steps (discover -> plan -> run) and where state lives. Discovery is
`plan.cutout_discover`, the rules are `plan.cutout` (pure), moving bytes is `transfer.chunks`.
Imports only the cutout path: not the whole-object engine (`microns_get.fetch`), which a cutout
never runs and every cutout would otherwise pay for at start-up, nor aiohttp: its HTTP is the
thread-based `sources.direct` transport.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from microns_get.catalog import Catalog
from microns_get.checkpoint import CheckpointStore
from microns_get.plan.cutout import CutoutPlan, CutoutRequest
from microns_get.plan.cutout_discover import CutoutPlanner, Layer
from microns_get.transfer import events as ev
from microns_get.transfer.chunks import CutoutRunner

if TYPE_CHECKING:
    from microns_get.sources.http import Session

STATE_NAME = "state.sqlite"  # as `fetch.STATE_FILE`: one resume state per destination


def state_file(settings: Any) -> Path:
    """The resume state a cutout shares with `fetch` (`fetch.state_dir(settings) / STATE_FILE`)."""
    state_dir = settings.state_dir or Path(settings.dest) / ".microns-get"
    return Path(state_dir) / STATE_NAME


async def plan_cutout(
    session: Session, settings: Any, catalog: Catalog, request: CutoutRequest
) -> tuple[CutoutPlan, Layer]:
    return await CutoutPlanner(session, settings).plan(catalog, request)


async def run_cutout(
    settings: Any,
    catalog: Catalog,
    request: CutoutRequest,
    emit: ev.Emit = ev.ignore,
    dry_run: bool = False,
) -> tuple[CutoutPlan, ev.RunFinished | None]:
    from microns_get.sources.direct import make_direct_session

    async with make_direct_session(settings.jobs, settings.timeout) as session:
        plan, layer = await plan_cutout(session, settings, catalog, request)
        if dry_run:
            return plan, None
        with CheckpointStore.open(state_file(settings)) as store:
            runner = CutoutRunner(Path(settings.dest), store, settings, emit)
            return plan, await runner.run(plan, layer)
