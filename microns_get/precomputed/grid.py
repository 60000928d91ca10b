"""Bounding boxes, unit conversion and the chunk grid of one precomputed scale.

Owns: the `Box` type (end-exclusive voxel boxes) and its text form, converting boxes between
resolutions (MICrONS tables use 4,4,40 nm voxels; volumes use their scale's resolution),
clipping to a scale's bounds, enumerating the chunk grid cells a box touches, the unsharded
chunk file name, and choosing scales by mip index or resolution.
Must not: do I/O, know about sharding (see `sharding.py`) or decode chunk bytes (`codecs.py`).
User mistakes raise `BadInput` with one line naming the valid values.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from microns_get.errors import BadInput
from microns_get.precomputed.info import Scale, VolumeInfo

Vec3 = tuple[int, int, int]
Resolution = tuple[float, float, float]

# Every MICrONS CAVE table (synapses, nuclei, cell types) reports points in 4,4,40 nm voxels.
TABLE_RESOLUTION: Resolution = (4, 4, 40)
NM: Resolution = (1, 1, 1)


@dataclass(frozen=True)
class Box:
    """An end-exclusive box `[lo, hi)` in integer voxel coordinates of some resolution."""

    lo: Vec3
    hi: Vec3

    @classmethod
    def parse(cls, text: str) -> Box:
        """Parse "X0,Y0,Z0,X1,Y1,Z1" (integers); reject malformed, inverted or empty boxes."""
        parts = [p.strip() for p in text.strip().split(",")]
        if len(parts) != 6:
            raise BadInput(
                f"bbox {text!r}: expected 6 integers X0,Y0,Z0,X1,Y1,Z1, got {len(parts)}"
            )
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise BadInput(f"bbox {text!r}: every value must be an integer") from None
        box = cls(_vec(values[:3]), _vec(values[3:]))
        bad = [axis for axis, lo, hi in zip("xyz", box.lo, box.hi) if hi <= lo]
        if bad:
            raise BadInput(f"bbox {text!r}: empty or inverted along {','.join(bad)} (need lo < hi)")
        return box

    @property
    def shape(self) -> Vec3:
        return _vec(max(0, h - lo) for lo, h in zip(self.lo, self.hi))

    def is_empty(self) -> bool:
        return any(h <= lo for lo, h in zip(self.lo, self.hi))

    def intersect(self, other: Box) -> Box:
        """The common part; an empty result has `hi == lo` along the empty axes."""
        lo = _vec(max(a, b) for a, b in zip(self.lo, other.lo))
        hi = _vec(min(a, b) for a, b in zip(self.hi, other.hi))
        return Box(lo, _vec(max(lo_, hi_) for lo_, hi_ in zip(lo, hi)))

    def to_json(self) -> dict[str, Any]:
        return {"lo": list(self.lo), "hi": list(self.hi)}

    def __str__(self) -> str:
        return ",".join(str(v) for v in (*self.lo, *self.hi))


@dataclass(frozen=True)
class Chunk:
    """One chunk grid cell: its grid position and its voxel bounds (clipped at the volume edge)."""

    grid: Vec3
    lo: Vec3
    hi: Vec3

    @property
    def shape(self) -> Vec3:
        return _vec(h - lo for lo, h in zip(self.lo, self.hi))

    @property
    def box(self) -> Box:
        return Box(self.lo, self.hi)


def _vec(values: Any) -> Vec3:
    x, y, z = values
    return (int(x), int(y), int(z))


def _exact(value: float) -> Fraction:
    # str() gives the shortest decimal of a float (8.0 -> "8.0", 3.6 -> "3.6"), so ratios such as
    # 4/8 or 40/40 stay exact and floor/ceil never suffer from binary rounding.
    return Fraction(value) if isinstance(value, int) else Fraction(str(value))


def format_resolution(res: Sequence[float]) -> str:
    return ",".join(f"{v:g}" for v in res)


def parse_resolution(text: str) -> Resolution:
    """Parse "nm" or "X,Y,Z" (positive numbers, nm per voxel) as a box resolution."""
    if text.strip().lower() == "nm":
        return NM
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or any(not v > 0 or math.isinf(v) for v in values):
        raise BadInput(f"resolution {text!r}: expected 'nm' or three positive numbers X,Y,Z")
    return tuple(int(v) if v.is_integer() else v for v in values)  # type: ignore[return-value]


def convert(box: Box, res_in: Sequence[float], res_out: Sequence[float]) -> Box:
    """Re-express `box` in another voxel size, growing it to whole voxels (floor lo, ceil hi)."""
    ratios = [_exact(a) / _exact(b) for a, b in zip(res_in, res_out)]
    lo = _vec(math.floor(v * r) for v, r in zip(box.lo, ratios))
    hi = _vec(math.ceil(v * r) for v, r in zip(box.hi, ratios))
    return Box(lo, hi)


def to_scale(box: Box, scale: Scale, box_resolution: Sequence[float] = TABLE_RESOLUTION) -> Box:
    """Convert a box given in `box_resolution` voxels (default 4,4,40; NM for nm) to `scale`."""
    return convert(box, box_resolution, scale.resolution)


def scale_bounds(scale: Scale) -> Box:
    """The scale's voxel bounds `[voxel_offset, voxel_offset + size)`."""
    hi = _vec(o + s for o, s in zip(scale.voxel_offset, scale.size))
    return Box(scale.voxel_offset, hi)


def clip_to_scale(
    box: Box, scale: Scale, box_resolution: Sequence[float] | None = None
) -> tuple[Box, bool]:
    """Clip a box (in the scale's voxels) to the volume; return it and whether it was clipped.

    A box entirely outside raises `BadInput` naming the bounds in the scale's voxels and, when
    `box_resolution` is given, also in the caller's units.
    """
    bounds = scale_bounds(scale)
    clipped = box.intersect(bounds)
    if clipped.is_empty():
        where = f"{bounds} in {scale.key} voxels"
        if box_resolution is not None and tuple(box_resolution) != tuple(scale.resolution):
            theirs = convert(bounds, scale.resolution, box_resolution)
            where += f", {theirs} in {format_resolution(box_resolution)} units"
        raise BadInput(f"bbox is outside the volume: bounds are {where}")
    return clipped, clipped != box


def grid_shape(scale: Scale) -> Vec3:
    """Number of chunks along each axis: ceil(size / chunk_size)."""
    return _vec(-(-s // c) for s, c in zip(scale.size, scale.chunk_size))


def grid_range(scale: Scale, box: Box) -> Box:
    """The grid cells a box (in the scale's voxels) touches, as a box in grid coordinates."""
    off, chunk, shape = scale.voxel_offset, scale.chunk_size, grid_shape(scale)
    lo = _vec(max(0, (b - o) // c) for b, o, c in zip(box.lo, off, chunk))
    hi = _vec(min(n, -(-(b - o) // c)) for b, o, c, n in zip(box.hi, off, chunk, shape))
    return Box(lo, _vec(max(a, b) for a, b in zip(lo, hi)))


def chunk_at(scale: Scale, grid: Sequence[int]) -> Chunk:
    """The chunk at grid position `grid`, its upper bound clipped at the volume edge."""
    off, chunk, size = scale.voxel_offset, scale.chunk_size, scale.size
    lo = _vec(o + g * c for o, g, c in zip(off, grid, chunk))
    hi = _vec(min(o + (g + 1) * c, o + s) for o, g, c, s in zip(off, grid, chunk, size))
    return Chunk(_vec(grid), lo, hi)


def iter_chunks(scale: Scale, box: Box) -> Iterator[Chunk]:
    """Chunks intersecting `box`, x fastest. Lazy, since a whole MICrONS scale has ~10^9."""
    cells = grid_range(scale, box)
    for gz in range(cells.lo[2], cells.hi[2]):
        for gy in range(cells.lo[1], cells.hi[1]):
            for gx in range(cells.lo[0], cells.hi[0]):
                yield chunk_at(scale, (gx, gy, gz))


def chunks_for(scale: Scale, box: Box) -> list[Chunk]:
    """The chunk grid cells that intersect `box` (in the scale's voxels)."""
    return list(iter_chunks(scale, box))


def count_chunks(scale: Scale, box: Box) -> int:
    return math.prod(grid_range(scale, box).shape)


def chunk_key(scale: Scale, chunk: Chunk) -> str:
    """The unsharded chunk file name `<key>/<x0>-<x1>_<y0>-<y1>_<z0>-<z1>` (absolute voxels)."""
    spans = "_".join(f"{lo}-{hi}" for lo, hi in zip(chunk.lo, chunk.hi))
    return f"{scale.key}/{spans}"


def _same_resolution(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9) for x, y in zip(a, b))


def _available(info: VolumeInfo) -> str:
    return " ".join(f"{i}:{format_resolution(s.resolution)}" for i, s in enumerate(info.scales))


def select_scales(
    info: VolumeInfo,
    mip: int | str | None = None,
    resolution: Sequence[float] | None = None,
) -> list[tuple[int, Scale]]:
    """Choose scales: by `mip` index, "all", or by `resolution`; neither means mip 0."""
    indexed = list(enumerate(info.scales))
    if mip is not None and resolution is not None:
        raise BadInput("give a mip or a resolution, not both")
    if resolution is not None:
        found = [(i, s) for i, s in indexed if _same_resolution(s.resolution, resolution)]
        if not found:
            wanted = format_resolution(resolution)
            raise BadInput(
                f"no scale with resolution {wanted}; available (mip:res): {_available(info)}"
            )
        return found
    if mip is None:
        return indexed[:1]
    if isinstance(mip, str) and mip.strip().lower() == "all":
        return indexed
    index = _mip_index(mip)
    if index is None or not 0 <= index < len(indexed):
        raise BadInput(f"no mip {mip}; available (mip:res): {_available(info)}")
    return [indexed[index]]


def _mip_index(mip: int | str) -> int | None:
    if isinstance(mip, bool):
        return None
    if isinstance(mip, int):
        return mip
    text = mip.strip()
    return int(text) if text.isdigit() else None
