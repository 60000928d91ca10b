"""A segmentation layer's mesh setup on each of its mirrors, failover, and the local `info` files.

Owns: reading a layer's `info` and `mesh/info` (once per mirror, lazily: a second mirror is only
asked when the first fails), naming its mesh format (`sharded-multires`, `unsharded-multires`,
`legacy`), running one unit of work on the mirrors in order until one succeeds, and writing the
local layer `info` / `mesh/info` (the remote's, decoded) unless compatible ones are already there.
Must not know how meshes are stored inside the mesh directory (`sharded.py`, `meshes.py`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from microns_get.errors import BadInput, InfoError, RemoteError, VerificationFailed
from microns_get.precomputed.info import AuxInfo, ShardingSpec, parse_aux_info, parse_volume_info
from microns_get.precomputed.payload import maybe_gunzip
from microns_get.segments.remote import MirrorDir, local_file, write_atomic
from microns_get.segments.result import SegmentsResult, Tally

T = TypeVar("T")
SHARDED, UNSHARDED, LEGACY = "sharded-multires", "unsharded-multires", "legacy"
# What makes us try the next mirror: it failed, or it sent bytes that do not decode.
MIRROR_FAULTS = (RemoteError, VerificationFailed, InfoError)


@dataclass(frozen=True)
class RemoteLayer:
    """What one mirror says about a layer's meshes."""

    mirror: MirrorDir
    info: bytes  # the layer `info`, decoded
    mesh_dir: str
    mesh_info: bytes | None  # `mesh/info` decoded, None for legacy meshes without one
    mesh: AuxInfo | None

    @property
    def layout(self) -> str:
        if self.mesh is None or self.mesh.type == "neuroglancer_legacy_mesh":
            return LEGACY
        return SHARDED if self.mesh.sharding is not None else UNSHARDED

    @property
    def spec(self) -> ShardingSpec:
        if self.mesh is None or self.mesh.sharding is None:
            raise AssertionError("only sharded layers have a sharding spec")
        return self.mesh.sharding

    def mesh_key(self, name: str) -> str:
        return f"{self.mesh_dir}/{name}"


async def open_layer(mirror: MirrorDir, tally: Tally) -> RemoteLayer:
    """Read `info` and `mesh/info` from one mirror; a layer without meshes is bad input."""
    info = await mirror.read("info", tally)
    if info is None:
        raise RemoteError(f"no layer info at {mirror.where('info')}", status=404)
    info = maybe_gunzip(info)
    volume = parse_volume_info(info)
    if not volume.mesh:
        raise BadInput(f"the layer at {mirror.url} has no meshes (its info has no 'mesh' key)")
    mesh_info = await mirror.read(f"{volume.mesh}/info", tally)
    mesh_info = None if mesh_info is None else maybe_gunzip(mesh_info)
    mesh = None if mesh_info is None else parse_aux_info(mesh_info, "mesh")
    return RemoteLayer(mirror, info, volume.mesh, mesh_info, mesh)


class LayerCopies:
    """The layer on each mirror (opened on first use) and failover across them."""

    def __init__(self, mirrors: list[MirrorDir], result: SegmentsResult) -> None:
        self.mirrors = mirrors
        self.result = result
        self._opened: dict[int, asyncio.Task[RemoteLayer]] = {}
        self.reference: RemoteLayer | None = None  # the first mirror that answered

    async def layer(self, i: int) -> RemoteLayer:
        if i not in self._opened:
            self._opened[i] = asyncio.ensure_future(open_layer(self.mirrors[i], self.result.shared))
        return await self._opened[i]

    async def first(self) -> RemoteLayer:
        """The first mirror that serves the layer (its format decides how the rest is read)."""
        self.reference = await self.run(_same, "reading the layer info")
        return self.reference

    async def run(self, work: Callable[[RemoteLayer], Awaitable[T]], what: str) -> T:
        """`work` on each mirror in order until one succeeds; all failing raises `RemoteError`."""
        errors = []
        for i, mirror in enumerate(self.mirrors):
            try:
                layer = await self.layer(i)
                self._check_like_reference(layer)
                return await work(layer)
            except MIRROR_FAULTS as exc:
                errors.append(f"{mirror.url}: {exc}")
        raise RemoteError(f"{what} failed on every mirror ({'; '.join(errors)})")

    def _check_like_reference(self, layer: RemoteLayer) -> None:
        """Mirrors are copies; one whose mesh format differs cannot fill in for the first."""
        ref = self.reference
        if ref is None or layer is ref:
            return
        if (layer.layout, layer.mesh_dir, layer.mesh) != (ref.layout, ref.mesh_dir, ref.mesh):
            raise RemoteError(f"{layer.mirror.url} stores meshes differently from {ref.mirror.url}")


async def _same(layer: RemoteLayer) -> RemoteLayer:
    return layer


def write_local_infos(layer: RemoteLayer, local_layer: Path, result: SegmentsResult) -> Path:
    """Write the layer `info` and `mesh/info` unless present (checked compatible); return the
    local mesh directory. cloud-volume needs the layer `info` to open the layer at all."""
    mesh_dir = local_file(local_layer, layer.mesh_dir)
    _ensure(local_layer / "info", layer.info, result, _check_layer_info(layer))
    if layer.mesh_info is not None:
        _ensure(mesh_dir / "info", layer.mesh_info, result, _check_mesh_info(layer))
    return mesh_dir


def _ensure(path: Path, data: bytes, result: SegmentsResult, check: Callable[[bytes], None]):
    if path.exists():
        check(path.read_bytes())
        return
    write_atomic(path, data)
    result.files.append(str(path))


def _check_layer_info(layer: RemoteLayer) -> Callable[[bytes], None]:
    def check(local: bytes) -> None:
        mesh = parse_volume_info(maybe_gunzip(local)).mesh
        if mesh != layer.mesh_dir:
            raise BadInput(
                f"the local layer info names mesh dir {mesh!r}, the remote {layer.mesh_dir!r}: "
                "refusing to mix them (use another destination)"
            )

    return check


def _check_mesh_info(layer: RemoteLayer) -> Callable[[bytes], None]:
    def check(local: bytes) -> None:
        mine = parse_aux_info(maybe_gunzip(local), "mesh")
        theirs = layer.mesh
        assert theirs is not None
        same = mine.type == theirs.type and mine.sharding == theirs.sharding
        keys = ("vertex_quantization_bits", "transform", "lod_scale_multiplier")
        if not same or any(mine.raw.get(k) != theirs.raw.get(k) for k in keys):
            raise BadInput(
                f"the local mesh/info under {layer.mesh_dir!r} differs from the remote one "
                f"({json.dumps(mine.to_json())} vs {json.dumps(theirs.to_json())}): "
                "refusing to mix them (use another destination)"
            )

    return check
