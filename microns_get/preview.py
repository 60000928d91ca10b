"""A PNG of one z section of a fetched image layer: `microns-get preview`.

Owns: choosing the scale (`--scale`/`--mip`, else the finest with local data), the region shown
(the extent of the chunk files present, or the whole scale when it is kept as shards), reading
one section from local chunks with the tool's own codecs (gzip-wrapped chunks included, missing
chunks as 0), the label overlay of a local segmentation (a colour per id, label 0 transparent,
resampled nearest-neighbour when no seg scale matches the image's resolution), and the PNG.
Must not: touch the network, or write anything unless every input is good (bad input raises
`BadInput` before the image exists; the PNG lands under its name only when complete).
Pillow writes the PNG (imported lazily, so the rest of the tool works without it).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from microns_get.errors import BadInput, InfoError
from microns_get.precomputed import sharding as sh
from microns_get.precomputed.codecs import decode_chunk, maybe_gunzip
from microns_get.precomputed.grid import Box, iter_chunks, scale_bounds
from microns_get.precomputed.info import Scale, VolumeInfo, parse_volume_info
from microns_get.verify.local import Vec3, files_in, parse_chunk_name, read_range

ALPHA = 0.4  # label colour weight: the EM stays readable under the overlay
ARTICLE = {"image": "an image", "segmentation": "a segmentation"}


@dataclass(frozen=True)
class Preview:
    """What was drawn: the image file, its layer scale and the region (scale voxels)."""

    out: Path
    scale: str
    lo: tuple[int, int]  # x, y
    hi: tuple[int, int]
    z: int
    seg_scale: str | None

    def describe(self) -> str:
        (x0, y0), (x1, y1) = self.lo, self.hi
        seg = f", labels from seg scale {self.seg_scale}" if self.seg_scale else ""
        return (
            f"wrote {self.out}: scale {self.scale}, x {x0}..{x1}, y {y0}..{y1}, z {self.z} "
            f"({x1 - x0}x{y1 - y0} px){seg}"
        )


@dataclass(frozen=True)
class Layer:
    path: Path
    info: VolumeInfo


def open_layer(path: Path, kind: str) -> Layer:
    """A local layer of `kind` ("image" or "segmentation"); anything else is `BadInput`."""
    try:
        info = parse_volume_info(maybe_gunzip((path / "info").read_bytes()))
    except OSError:
        raise BadInput(f"{path}: not a precomputed layer (no readable info file)") from None
    except InfoError as exc:
        raise BadInput(f"{path}: {exc}") from None
    if info.type != kind:
        raise BadInput(f"{path} is {ARTICLE[info.type]} layer, not {ARTICLE[kind]} layer")
    return Layer(path, info)


def extent(layer: Layer, scale: Scale) -> Box | None:
    """The box the local files of `scale` cover; None when there are none."""
    folder = layer.path / scale.key
    if not folder.is_dir():
        return None
    if scale.sharding is not None:  # kept as shards: a whole-layer fetch holds the whole scale
        has_shards = any(e.name.endswith(".shard") for e in files_in(folder))
        return scale_bounds(scale) if has_shards else None
    lo, hi = [math.inf] * 3, [-math.inf] * 3
    for entry in files_in(folder):
        box = parse_chunk_name(entry.name)
        if box is not None:
            lo = [min(a, b) for a, b in zip(lo, box[0])]
            hi = [max(a, b) for a, b in zip(hi, box[1])]
    if lo[0] == math.inf:
        return None
    return Box(tuple(int(v) for v in lo), tuple(int(v) for v in hi))  # type: ignore[arg-type]


def pick_scale(layer: Layer, key: str | None, mip: int | None) -> Scale:
    scales = layer.info.scales
    if key is not None and mip is not None:
        raise BadInput("give --scale or --mip, not both")
    if key is not None:
        found = [s for s in scales if s.key == key]
        if not found:
            raise BadInput(f"no scale {key!r}; the layer has {', '.join(s.key for s in scales)}")
        return found[0]
    if mip is not None:
        if not 0 <= mip < len(scales):
            raise BadInput(f"no mip {mip}; the layer has mips 0..{len(scales) - 1}")
        return scales[mip]
    fetched = [s for s in scales if extent(layer, s) is not None]
    if not fetched:
        raise BadInput(f"{layer.path}: no chunk files in any scale")
    return fetched[0]


def read_section(
    layer: Layer, scale: Scale, lo: tuple[int, int], hi: tuple[int, int], z: int
) -> np.ndarray:
    """The (x, y, channel) section [lo, hi) at z, from local chunks; missing chunks stay 0."""
    info = layer.info
    dtype = np.dtype(info.data_type)
    out = np.zeros((hi[0] - lo[0], hi[1] - lo[1], info.num_channels), dtype=dtype)
    for (clo, chi), data in chunks_at(layer, scale, Box((*lo, z), (*hi, z + 1))):
        array = decode_chunk(data, scale, info.data_type, info.num_channels, _shape(clo, chi))
        x0, y0 = max(lo[0], clo[0]), max(lo[1], clo[1])
        x1, y1 = min(hi[0], chi[0]), min(hi[1], chi[1])
        part = array[x0 - clo[0] : x1 - clo[0], y0 - clo[1] : y1 - clo[1], z - clo[2]]
        out[x0 - lo[0] : x1 - lo[0], y0 - lo[1] : y1 - lo[1]] = part
    return out


def _shape(lo: Vec3, hi: Vec3) -> Vec3:
    return tuple(b - a for a, b in zip(lo, hi))  # type: ignore[return-value]


def _overlaps(lo: Vec3, hi: Vec3, box: Box) -> bool:
    return all(a < bh and b > bl for a, b, bl, bh in zip(lo, hi, box.lo, box.hi))


def chunks_at(layer: Layer, scale: Scale, box: Box) -> Iterator[tuple[tuple[Vec3, Vec3], bytes]]:
    """((lo, hi), payload) of every local chunk of `scale` that overlaps `box`."""
    folder = layer.path / scale.key
    if scale.sharding is None:
        for entry in files_in(folder) if folder.is_dir() else []:
            named = parse_chunk_name(entry.name)
            if named is not None and _overlaps(*named, box):
                yield named, Path(entry.path).read_bytes()
        return
    for chunk in iter_chunks(scale, box.intersect(scale_bounds(scale))):
        data = shard_chunk(folder, scale, chunk.grid)
        if data is not None:
            yield (chunk.lo, chunk.hi), data


def shard_chunk(folder: Path, scale: Scale, grid_pos: Vec3) -> bytes | None:
    """One chunk's payload out of a local shard file; None when the shard does not hold it."""
    spec = scale.sharding
    assert spec is not None
    chunk_id = sh.volume_chunk_id(scale, grid_pos)
    where = sh.locate_chunk(spec, chunk_id)
    path = folder / where.filename
    if not path.is_file():
        return None
    size = path.stat().st_size
    with path.open("rb") as f:
        entry_range = sh.shard_index_range(spec, where.minishard)
        entry = sh.decode_shard_index_entry(read_range(f, *entry_range))
        if entry[0] == entry[1]:
            return None
        index = read_range(f, *sh.minishard_index_range(spec, entry, size))
        found = sh.find_chunk(sh.decode_minishard_index(index, spec, size), chunk_id)
        return None if found is None else maybe_gunzip(read_range(f, found.start, found.end))


def label_colours(labels: np.ndarray) -> np.ndarray:
    """A deterministic colour per label id (splitmix64 of the id), bright enough to see."""
    z = labels.astype(np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    channels = [(z >> np.uint64(s)) & np.uint64(0xFF) for s in (0, 8, 16)]
    return np.stack([64 + c.astype(np.uint16) * 3 // 4 for c in channels], axis=-1)


def overlay(rgb: np.ndarray, labels: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Blend label colours over an (..., 3) uint8 image where labels are non-zero."""
    out = rgb.astype(np.float32)
    mask = labels != 0
    out[mask] = (1 - alpha) * out[mask] + alpha * label_colours(labels[mask])
    return np.rint(out).astype(np.uint8)


def seg_labels(
    seg: Layer, image: Scale, lo: tuple[int, int], hi: tuple[int, int], z: int
) -> tuple[np.ndarray, str]:
    """Labels of `seg` on the image's (x, y) grid at z, and the seg scale they came from."""
    fetched = [s for s in seg.info.scales if extent(seg, s) is not None]
    if not fetched:
        raise BadInput(f"{seg.path}: no chunk files in any scale")
    scale = min(fetched, key=lambda s: _distance(image.resolution, s.resolution))
    # Nearest neighbour: the seg voxel holding each image voxel's centre.
    axes = [
        np.floor((np.arange(a, b) + 0.5) * ri / rs).astype(np.int64)
        for a, b, ri, rs in zip((*lo, z), (*hi, z + 1), image.resolution, scale.resolution)
    ]
    xs, ys, zs = axes
    section = read_section(seg, scale, (xs[0], ys[0]), (xs[-1] + 1, ys[-1] + 1), int(zs[0]))
    return section[xs - xs[0]][:, ys - ys[0], 0], scale.key


def _distance(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """0 for equal resolutions, growing with the zoom factor between them along any axis."""
    return sum(abs(math.log(x / y)) if x > 0 and y > 0 else math.inf for x, y in zip(a, b))


def to_rgb8(section: np.ndarray) -> np.ndarray:
    """(x, y, channel) samples -> (row=y, col=x, 3) uint8; non-uint8 data stretched min..max."""
    pixels = section[..., :3] if section.shape[-1] >= 3 else section[..., :1]
    if pixels.dtype != np.uint8:
        lo, hi = float(pixels.min()), float(pixels.max())
        pixels = ((pixels - lo) * (255 / (hi - lo or 1))).astype(np.uint8)
    pixels = np.broadcast_to(pixels, (*pixels.shape[:2], 3))
    return np.ascontiguousarray(pixels.transpose(1, 0, 2))


def write_png(pixels: np.ndarray, out: Path, colour: bool) -> None:
    """Write (rows, cols, 3) uint8 pixels as an RGB PNG, or a greyscale one from channel 0."""
    try:
        from PIL import Image
    except ImportError:
        raise BadInput("preview needs Pillow (pip install Pillow)") from None
    image = Image.fromarray(np.ascontiguousarray(pixels if colour else pixels[..., 0]))
    temp = out.with_name(f".{out.name}.partial")
    try:
        image.save(temp, format="PNG")
        os.replace(temp, out)
    finally:
        temp.unlink(missing_ok=True)


def render_preview(
    path: Path,
    out: Path,
    z: int | None = None,
    scale_key: str | None = None,
    mip: int | None = None,
    seg_path: Path | None = None,
) -> Preview:
    """Write a PNG of one z section of the image layer at `path`; bad input raises BadInput."""
    image = open_layer(Path(path), "image")
    seg = open_layer(Path(seg_path), "segmentation") if seg_path is not None else None
    scale = pick_scale(image, scale_key, mip)
    box = extent(image, scale)
    if box is None:
        raise BadInput(f"{path}: no chunk files for scale {scale.key}")
    z = (box.lo[2] + box.hi[2]) // 2 if z is None else z
    if not box.lo[2] <= z < box.hi[2]:
        raise BadInput(f"--z {z} is outside the fetched z range {box.lo[2]}..{box.hi[2] - 1}")
    if not out.parent.is_dir():
        raise BadInput(f"--out {out}: no such directory {out.parent}")
    lo, hi = box.lo[:2], box.hi[:2]
    pixels = to_rgb8(read_section(image, scale, lo, hi, z))
    seg_key = None
    if seg is not None:
        labels, seg_key = seg_labels(seg, scale, lo, hi, z)
        pixels = overlay(pixels, labels.T)
    write_png(pixels, out, colour=seg is not None or image.info.num_channels >= 3)
    return Preview(out, scale.key, lo, hi, z, seg_key)
