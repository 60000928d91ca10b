"""Precomputed layers of the mini-MICrONS: synthetic volumes written by independent writers.

Sharded scales are written by TensorStore (`neuroglancer_precomputed` over a `file` kvstore),
unsharded scales by CloudVolume (`compress='gzip'`, so chunks land as `name.gz` on disk). Nothing
here encodes a chunk, a shard or a mesh by hand. Arrays are indexed `[x, y, z]` in voxels of the
scale, relative to the scale's `voxel_offset` (the same convention as the expected `.npy` files).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Vec3 = tuple[int, int, int]


@dataclass(frozen=True)
class Scale:
    """One scale of a precomputed layer; `sharding` None means unsharded."""

    resolution: Vec3
    size: Vec3
    voxel_offset: Vec3
    chunk: Vec3
    encoding: str = "raw"
    sharding: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return "_".join(str(r) for r in self.resolution)


@dataclass(frozen=True)
class LayerSpec:
    """A precomputed layer: `image` or `segmentation`, with its scales (finest first)."""

    layer_type: str
    data_type: str
    scales: tuple[Scale, ...]
    extra_info: dict[str, Any] = field(default_factory=dict)


def sharding(hash_: str, preshift: int, minishard: int, shard: int) -> dict[str, Any]:
    """A `neuroglancer_uint64_sharded_v1` spec with gzip indices and gzip data."""
    return {
        "@type": "neuroglancer_uint64_sharded_v1",
        "hash": hash_,
        "preshift_bits": preshift,
        "minishard_bits": minishard,
        "shard_bits": shard,
        "minishard_index_encoding": "gzip",
        "data_encoding": "gzip",
    }


def _ident(p: int, m: int, s: int) -> dict[str, Any]:
    return sharding("identity", p, m, s)


def _murmur(p: int, m: int, s: int) -> dict[str, Any]:
    return sharding("murmurhash3_x86_128", p, m, s)


def _halve(v: Vec3) -> Vec3:
    return (v[0] // 2, v[1] // 2, v[2])


def _ceil_halve(v: Vec3) -> Vec3:
    return (-(-v[0] // 2), -(-v[1] // 2), v[2])


def pyramid(
    size: Vec3, offset: Vec3, plans: list[tuple[Vec3, str, dict[str, Any] | None]]
) -> tuple[Scale, ...]:
    """Scales 8_8_40, 16_16_40, ... halving x/y per step; `plans` = (chunk, encoding, sharding)."""
    scales = []
    for i, (chunk, encoding, shard_spec) in enumerate(plans):
        res = (8 << i, 8 << i, 40)
        scales.append(Scale(res, size, offset, chunk, encoding, shard_spec))
        size, offset = _ceil_halve(size), _halve(offset)
    return tuple(scales)


# Geometry of the mini volumes, in 8,8,40 nm voxels (offsets divisible by 4 so they halve exactly).
EM65_OFFSET: Vec3 = (13824, 13824, 14816)
EM65_SIZE: Vec3 = (200, 168, 40)
SEG65_LOCAL: Vec3 = (24, 16, 4)  # seg region start inside the EM65 region
SEG65_SIZE: Vec3 = (160, 144, 32)
EM35_OFFSET: Vec3 = (14080, 13952, 14824)
EM35_SIZE: Vec3 = (128, 96, 36)
SEG35_LOCAL: Vec3 = (16, 16, 4)
SEG35_SIZE: Vec3 = (96, 64, 32)
CSEG = "compressed_segmentation"


def _add(a: Vec3, b: Vec3) -> Vec3:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def em65_spec() -> LayerSpec:
    plans = [
        ((32, 32, 16), "raw", _ident(1, 2, 5)),
        ((32, 32, 8), "raw", _ident(0, 2, 2)),
        ((16, 16, 16), "raw", _ident(0, 1, 1)),
    ]
    return LayerSpec("image", "uint8", pyramid(EM65_SIZE, EM65_OFFSET, plans))


def seg65_spec(mesh: str | None = None) -> LayerSpec:
    plans = [
        ((64, 64, 16), CSEG, _ident(0, 2, 2)),
        ((32, 32, 16), CSEG, _murmur(0, 1, 2)),
        ((32, 32, 32), "raw", _ident(0, 1, 1)),
    ]
    extra = {"mesh": mesh} if mesh else {}
    offset = _add(EM65_OFFSET, SEG65_LOCAL)
    return LayerSpec("segmentation", "uint64", pyramid(SEG65_SIZE, offset, plans), extra)


def seg_m1300_spec() -> LayerSpec:
    plans = [((64, 64, 16), CSEG, _murmur(0, 2, 2)), ((32, 32, 16), CSEG, _murmur(0, 1, 1))]
    offset = _add(EM65_OFFSET, SEG65_LOCAL)
    scales = pyramid(SEG65_SIZE, offset, plans)
    return LayerSpec("segmentation", "uint64", scales, {"mesh": "mesh"})


def nuclei_spec() -> LayerSpec:
    plans = [((64, 64, 16), CSEG, None), ((64, 64, 16), CSEG, None)]
    scales = pyramid(EM65_SIZE, EM65_OFFSET, plans)
    return LayerSpec("segmentation", "uint32", scales, {"mesh": "mesh_mip_0_err_40"})


def em35_spec() -> LayerSpec:
    plans = [((64, 64, 12), "raw", _ident(0, 1, 2)), ((32, 32, 12), "raw", _ident(0, 1, 1))]
    return LayerSpec("image", "uint8", pyramid(EM35_SIZE, EM35_OFFSET, plans))


def seg35_spec() -> LayerSpec:
    plans = [((32, 32, 16), CSEG, _ident(0, 1, 2)), ((48, 32, 32), "raw", _murmur(0, 1, 1))]
    offset = _add(EM35_OFFSET, SEG35_LOCAL)
    return LayerSpec("segmentation", "uint64", pyramid(SEG35_SIZE, offset, plans))


def clefts_spec(seg: LayerSpec) -> LayerSpec:
    """Synaptic clefts: one unsharded compressed_segmentation scale over the seg region."""
    first = seg.scales[0]
    scale = Scale(first.resolution, first.size, first.voxel_offset, (64, 64, 16), CSEG, None)
    return LayerSpec("segmentation", "uint64", (scale,))


def downsample(arr: np.ndarray, kind: str) -> np.ndarray:
    """Halve x and y: mean pooling for images, striding for labels (odd edges padded)."""
    if kind == "segmentation":
        return np.ascontiguousarray(arr[::2, ::2, :])
    pad = ((0, arr.shape[0] % 2), (0, arr.shape[1] % 2), (0, 0))
    a = np.pad(arr, pad, mode="edge").astype(np.float32)
    pooled = (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]) / 4.0
    return np.rint(pooled).astype(arr.dtype)


def scale_arrays(spec: LayerSpec, finest: np.ndarray) -> list[np.ndarray]:
    """The array of every scale of `spec`, derived from the finest one."""
    arrays = [finest]
    for scale in spec.scales[1:]:
        arrays.append(downsample(arrays[-1], spec.layer_type))
        assert arrays[-1].shape == scale.size, (arrays[-1].shape, scale.size)
    return arrays


def _ts_spec(path: Path, spec: LayerSpec, scale: Scale) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "key": scale.key,
        "resolution": list(scale.resolution),
        "size": list(scale.size),
        "voxel_offset": list(scale.voxel_offset),
        "chunk_size": list(scale.chunk),
        "encoding": scale.encoding,
    }
    if scale.encoding == CSEG:
        meta["compressed_segmentation_block_size"] = [8, 8, 8]
    if scale.sharding is not None:
        meta["sharding"] = scale.sharding
    return {
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "file", "path": str(path)},
        "multiscale_metadata": {
            "type": spec.layer_type,
            "data_type": spec.data_type,
            "num_channels": 1,
        },
        "scale_metadata": meta,
        "create": True,
    }


def write_tensorstore(path: Path, spec: LayerSpec, arrays: list[np.ndarray]) -> None:
    """Write every scale with TensorStore (all scales of `spec` must be sharded)."""
    import tensorstore as ts

    for scale, arr in zip(spec.scales, arrays, strict=True):
        assert scale.sharding is not None, "TensorStore writes the sharded scales"
        store = ts.open(_ts_spec(path, spec, scale)).result()
        store[...] = arr[..., np.newaxis].astype(spec.data_type)
    patch_info(path, spec.extra_info)


def write_cloudvolume(path: Path, spec: LayerSpec, arrays: list[np.ndarray]) -> None:
    """Write every (unsharded) scale with CloudVolume; all-background chunks are not written."""
    from cloudvolume import CloudVolume

    first = spec.scales[0]
    info = CloudVolume.create_new_info(
        num_channels=1,
        layer_type=spec.layer_type,
        data_type=spec.data_type,
        encoding=first.encoding,
        resolution=list(first.resolution),
        voxel_offset=list(first.voxel_offset),
        volume_size=list(first.size),
        chunk_size=list(first.chunk),
        compressed_segmentation_block_size=(8, 8, 8),
    )
    cloudpath = f"file://{path}"
    cv = CloudVolume(cloudpath, info=info)
    for scale in spec.scales[1:]:
        cv.add_scale((2, 2, 1), encoding=scale.encoding, chunk_size=list(scale.chunk))
    cv.commit_info()
    for mip, arr in enumerate(arrays):
        cv = CloudVolume(
            cloudpath, mip=mip, compress="gzip", delete_black_uploads=True, progress=False
        )
        cv[:, :, :] = arr.astype(spec.data_type)
    (path / "provenance").unlink(missing_ok=True)
    patch_info(path, spec.extra_info)


def _intify(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_intify(v) for v in value]
    if isinstance(value, dict):
        return {k: _intify(v) for k, v in value.items()}
    return value


def patch_info(path: Path, extra: dict[str, Any]) -> None:
    """Merge `extra` keys into the layer `info`, with integral numbers written as ints."""
    info_path = path / "info"
    info = json.loads(info_path.read_text())
    info.update(extra)
    info_path.write_text(json.dumps(_intify(info), indent=2, sort_keys=True) + "\n")
