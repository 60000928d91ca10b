"""The fetch job: a request becomes a plan (after discovery and mirror probes), then runs.

Owns: the order of steps for `fetch`, `plan` and `mirrors` (find dataset -> choose mirrors ->
probe -> list -> plan -> engine) and where state lives. Planning itself is pure (`plan.objects`);
moving bytes is the engine's job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from microns_get.catalog import Catalog, Dataset, Mirror, Part
from microns_get.checkpoint import CheckpointStore
from microns_get.errors import BadInput, RemoteError
from microns_get.plan.discover import probe_part, select_mirrors
from microns_get.plan.model import Plan
from microns_get.plan.objects import plan_objects
from microns_get.sources import CloudPath, ObjectInfo, make_session, open_source, source_url
from microns_get.transfer import events as ev
from microns_get.transfer.engine import Engine
from microns_get.transfer.health import MirrorHealth
from microns_get.transfer.probe import Probe
from microns_get.transfer.retry import with_retries

STATE_FILE = "state.sqlite"


@dataclass(frozen=True)
class FetchRequest:
    dataset: str
    volume: str | None = None
    version: str | None = None
    parts: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PlannedFetch:
    plan: Plan
    probes: list[Probe] = field(default_factory=list)
    dataset: Dataset | None = None

    def egress(self) -> dict[str, Any]:
        """Bytes and requests by mirror for the plan as it stands (primary copies)."""
        by_mirror: dict[str, dict[str, int]] = {}
        for item in self.plan.items:
            entry = by_mirror.setdefault(item.primary.provider, {"objects": 0, "bytes": 0})
            entry["objects"] += 1
            entry["bytes"] += item.size
        return by_mirror


def state_dir(settings: Any) -> Path:
    return Path(settings.state_dir) if settings.state_dir else Path(settings.dest) / ".microns-get"


def selected_parts(dataset: Dataset, request: FetchRequest) -> list[Part]:
    if dataset.kind == "graphene":
        nearest = f"; its nearest static snapshot is seg version {dataset.nearest_static}"
        raise BadInput(
            f"{dataset.id} is a dynamic (graphene) segmentation: reach it with CAVEclient or "
            f"cloud-volume{nearest if dataset.nearest_static else ''}"
        )
    version = dataset.version(request.version)
    if not request.parts:
        return list(version.parts)
    return [version.part(name) for name in request.parts]


class Planner:
    """Discovery for whole-object fetches: probes, listings, then the pure planner."""

    def __init__(self, session: aiohttp.ClientSession, settings: Any) -> None:
        self.session = session
        self.settings = settings

    async def call(self, fn):  # noqa: ANN001 - a zero-argument coroutine factory
        return await with_retries(fn, self.settings.retries)

    async def plan(self, catalog: Catalog, request: FetchRequest) -> PlannedFetch:
        dataset = catalog.find(request.dataset, request.volume)
        parts = selected_parts(dataset, request)
        items, probes, mirror = [], [], ""
        for part in parts:
            mirrors = select_mirrors(part, self.settings.mirror, dataset.id)
            if not mirrors:
                raise BadInput(f"{dataset.id} has no downloadable mirror")
            part_plan, part_probes = await self._plan_part(request, part, mirrors)
            items.extend(part_plan.items)
            probes.extend(part_probes)
            mirror = mirror or part_plan.mirror
        plan = Plan(
            request=request.to_json(),
            items=tuple(items),
            part_size=self.settings.part_size,
            mirror=mirror,
        )
        return PlannedFetch(plan=plan, probes=probes, dataset=dataset)

    async def _plan_part(
        self, request: FetchRequest, part: Part, mirrors: list[Mirror]
    ) -> tuple[Plan, list[Probe]]:
        probes: list[Probe] = []
        errors: list[str] = []
        listing: list[ObjectInfo] | None = None
        if self.settings.mirror == "auto" and len(mirrors) > 1:
            probes = await self.probe_part(part, mirrors)
            order = {p.url: i for i, p in enumerate(probes)}
            mirrors = sorted(mirrors, key=lambda m: order.get(m.url, 99))
        for index, mirror in enumerate(mirrors):
            try:
                listing = await self._list(part, mirror)
            except RemoteError as exc:
                errors.append(f"{mirror.url}: {exc}")
                continue
            mirrors = [mirror, *mirrors[:index], *mirrors[index + 1 :]]
            break
        if listing is None:
            raise RemoteError(f"no mirror could list {part.mirrors[0].url}: {'; '.join(errors)}")
        plan = plan_objects(
            request.to_json(),
            part.mirrors[0],
            mirrors,
            listing,
            is_prefix=part.is_prefix,
            part_size=self.settings.part_size,
            include=request.include,
            exclude=request.exclude,
        )
        return plan, probes

    async def _list(self, part: Part, mirror: Mirror) -> list[ObjectInfo]:
        path = CloudPath.parse(mirror.url)
        source = open_source(path, self.session, self.settings)
        if not part.is_prefix:
            info = await self.call(lambda: source.stat(path.key))
            if info is None:
                raise RemoteError(f"not found: {source_url(source, path.key)}", status=404)
            return [info]

        async def collect() -> list[ObjectInfo]:
            prefix = path.key.rstrip("/") + "/"
            return [i async for i in source.list(prefix) if isinstance(i, ObjectInfo)]

        listing = await self.call(collect)
        if not listing:
            raise RemoteError(f"nothing listed under {mirror.url}", status=404)
        return listing

    async def probe_part(self, part: Part, mirrors: Sequence[Mirror]) -> list[Probe]:
        return await probe_part(self.session, self.settings, part, mirrors)


async def plan_fetch(settings: Any, catalog: Catalog, request: FetchRequest) -> PlannedFetch:
    async with make_session(settings.jobs, settings.timeout) as session:
        return await Planner(session, settings).plan(catalog, request)


async def run_fetch(
    settings: Any,
    catalog: Catalog,
    request: FetchRequest,
    emit: ev.Emit = ev.ignore,
    verify: bool = True,
) -> tuple[PlannedFetch, ev.RunFinished]:
    async with make_session(settings.jobs, settings.timeout) as session:
        planned = await Planner(session, settings).plan(catalog, request)
        health = MirrorHealth(rank=_provider_rank(planned))
        with CheckpointStore.open(state_dir(settings) / STATE_FILE) as store:
            engine = Engine(
                dest=Path(settings.dest),
                store=store,
                session=session,
                settings=settings,
                emit=emit,
                verify=verify,
                health=health,
            )
            return planned, await engine.run(planned.plan)


def _provider_rank(planned: PlannedFetch) -> list[str]:
    ranked = [p.provider for p in planned.probes if p.ok]
    for item in planned.plan.items[:1]:
        ranked += [c.provider for c in item.copies if c.provider not in ranked]
    return ranked
