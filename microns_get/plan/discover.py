"""Discovery: the I/O step that reads what the mirrors say before anything is planned or moved.

Owns: choosing which mirrors to ask (the `--mirror` preference), probing them on one sample
object (shared by `fetch` and cutouts), asking them in order with retries and failover, and
returning live facts: a precomputed layer's `info` (and its mesh /
skeleton `info`), an object set's count and bytes, one object's size and checksums.
Must not write files or decide what to transfer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from microns_get.catalog import Dataset, Mirror, Part
from microns_get.errors import BadInput, MicronsGetError, RemoteError
from microns_get.layout import canonical_path
from microns_get.precomputed.info import AuxInfo, VolumeInfo, parse_aux_info, parse_volume_info
from microns_get.sources import CloudPath, ObjectInfo, Source, open_source, source_url
from microns_get.transfer.probe import Probe, probe, rank
from microns_get.transfer.retry import with_retries

if TYPE_CHECKING:
    from microns_get.sources.http import Session

T = TypeVar("T")
PRECOMPUTED_KINDS = ("precomputed-image", "precomputed-segmentation")
PROVIDERS = ("s3", "gcs", "https")


def select_mirrors(part: Part, preference: str, dataset_id: str) -> list[Mirror]:
    """The mirrors to try, in order. `auto` keeps the catalogue's order; a provider name keeps
    only that provider; a URL is a site mirror laid out like DEST (a static server over it)."""
    mirrors = [m for m in part.mirrors if m.provider in PROVIDERS]
    if preference == "auto":
        return mirrors
    if preference in PROVIDERS:
        chosen = [m for m in mirrors if m.provider == preference]
        if not chosen:
            have = ", ".join(sorted({m.provider for m in mirrors})) or "none"
            raise BadInput(f"{dataset_id} has no {preference} mirror (it has: {have})")
        return chosen
    base = preference.rstrip("/")
    scheme = urlsplit(base).scheme
    return [
        Mirror(
            provider="https",
            url=f"{base}/{canonical_path(CloudPath.parse(m.url))}",
            catalogue_url=m.catalogue_url,
            https_url=None,
        )
        for m in mirrors[:1]
        if scheme in ("http", "https")
    ]


async def probe_part(
    session: Session, settings: Any, part: Part, mirrors: Sequence[Mirror]
) -> list[Probe]:
    """Probe each mirror on the same object (the part itself, or the first listed object),
    fastest first. Here, not in `fetch`, so a cutout can probe without loading the engine."""
    sample = await sample_key(session, settings, part, mirrors)
    size = sample[1] if sample else 0
    probes = []
    for mirror in mirrors:
        path = CloudPath.parse(mirror.url)
        source = open_source(path, session, settings)
        key = path.key if sample is None else path.join(sample[0]).key
        probes.append(await probe(source, mirror.provider, mirror.url, key, size))
    return rank(probes, requests=1, total_bytes=max(1, size), jobs=1)


async def sample_key(
    session: Session, settings: Any, part: Part, mirrors: Sequence[Mirror]
) -> tuple[str, int] | None:
    """The probes' object: its key under each mirror's path (`""` for a single-object part) and
    its size, from the first mirror that has it; `None` when none does."""
    for mirror in mirrors:
        path = CloudPath.parse(mirror.url)
        source = open_source(path, session, settings)
        try:
            if not part.is_prefix:
                info = await source.stat(path.key)
                return None if info is None else ("", info.size)
            prefix = path.key.rstrip("/") + "/"
            async for item in source.list(prefix):
                if isinstance(item, ObjectInfo):
                    return item.key[len(prefix) :], item.size
        except RemoteError:
            continue
    return None


@dataclass
class Attempt:
    mirror: str
    error: str


@dataclass
class RemoteFacts:
    """What one mirror said about one part of a dataset."""

    mirror: Mirror
    fetched_from: str
    volume: VolumeInfo | None = None
    mesh: AuxInfo | None = None
    mesh_dir: str | None = None
    skeletons: AuxInfo | None = None
    object: ObjectInfo | None = None
    object_count: int | None = None
    total_bytes: int | None = None
    failed_mirrors: list[Attempt] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mirror": self.mirror.url, "fetched_from": self.fetched_from}
        if self.volume is not None:
            out["info"] = self.volume.to_json()
        if self.mesh_dir is not None:
            out["mesh"] = {"dir": self.mesh_dir, **(self.mesh.to_json() if self.mesh else {})}
            if self.mesh is None:
                out["mesh"]["@type"] = "neuroglancer_legacy_mesh"
        if self.skeletons is not None:
            out["skeletons"] = self.skeletons.to_json()
        if self.object is not None:
            out["object"] = self.object.to_json()
        if self.object_count is not None:
            out["object_count"] = self.object_count
            out["total_bytes"] = self.total_bytes
        if self.failed_mirrors:
            out["failed_mirrors"] = [a.__dict__ for a in self.failed_mirrors]
        return out


class Discoverer:
    """Asks mirrors about datasets, one shared HTTP session, retries per request."""

    def __init__(self, session: Session, settings: Any) -> None:
        self.session = session
        self.settings = settings

    def source(self, path: CloudPath) -> Source:
        return open_source(path, self.session, self.settings)

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        return await with_retries(fn, self.settings.retries)

    async def describe(self, dataset: Dataset, part: Part) -> RemoteFacts:
        """Live facts from the first mirror (in preference order) that answers."""
        mirrors = select_mirrors(part, self.settings.mirror, dataset.id)
        if not mirrors:
            raise BadInput(f"{dataset.id} has no downloadable mirror ({dataset.kind})")
        failures: list[Attempt] = []
        for mirror in mirrors:
            try:
                facts = await self._describe_on(dataset, part, mirror)
            except (RemoteError, _NotThere) as exc:
                failures.append(Attempt(mirror.url, str(exc)))
                continue
            facts.failed_mirrors = failures
            return facts
        tried = "; ".join(f"{a.mirror}: {a.error}" for a in failures)
        raise RemoteError(f"no mirror of {dataset.id} answered ({tried})")

    async def _describe_on(self, dataset: Dataset, part: Part, mirror: Mirror) -> RemoteFacts:
        path = CloudPath.parse(mirror.url)
        source = self.source(path)
        facts = RemoteFacts(mirror=mirror, fetched_from=source_url(source, path.key))
        if dataset.kind in PRECOMPUTED_KINDS:
            await self._describe_layer(source, path, facts)
        elif part.is_prefix:
            await self._describe_prefix(source, path, facts)
        else:
            facts.object = await self.call(lambda: source.stat(path.key))
            if facts.object is None:
                raise _NotThere(f"no object at {facts.fetched_from}")
        return facts

    async def read_json_object(self, source: Source, key: str) -> bytes | None:
        return await self.call(lambda: source.read(key))

    async def _describe_layer(self, source: Source, path: CloudPath, facts: RemoteFacts) -> None:
        info_key = path.join("info").key
        data = await self.read_json_object(source, info_key)
        if data is None:
            raise _NotThere(f"no info at {source_url(source, info_key)}")
        facts.volume = parse_volume_info(_maybe_gunzip(data))
        if facts.volume.mesh:
            facts.mesh_dir = facts.volume.mesh
            mesh_info = await self.read_json_object(
                source, path.join(facts.volume.mesh, "info").key
            )
            if mesh_info is not None:
                facts.mesh = parse_aux_info(_maybe_gunzip(mesh_info), "mesh")
        if facts.volume.skeletons:
            skel_key = path.join(facts.volume.skeletons, "info").key
            skel_info = await self.read_json_object(source, skel_key)
            if skel_info is not None:
                facts.skeletons = parse_aux_info(_maybe_gunzip(skel_info), "skeletons")

    async def _describe_prefix(self, source: Source, path: CloudPath, facts: RemoteFacts) -> None:
        count = total = 0
        prefix = path.key.rstrip("/") + "/"
        async for item in source.list(prefix):
            if isinstance(item, ObjectInfo):
                count += 1
                total += item.size
        if count == 0:
            raise _NotThere(f"nothing listed under {source_url(source, prefix)}")
        facts.object_count, facts.total_bytes = count, total


class _NotThere(MicronsGetError):
    """This mirror does not hold the dataset: try the next one."""


def _maybe_gunzip(data: bytes) -> bytes:
    """`info` files are sometimes stored gzip-compressed (Content-Encoding: gzip); we fetch
    stored bytes, so undo it here for parsing."""
    if data[:2] == b"\x1f\x8b":
        import gzip

        return gzip.decompress(data)
    return data
