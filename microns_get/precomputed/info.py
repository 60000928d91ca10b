"""Parse and validate neuroglancer precomputed `info` files (volumes, meshes, skeletons).

Owns: the typed view of an `info` (scales, chunk sizes, encodings, sharding specs) and the format
rules from neuroglancer's volume.md / sharded.md. Unknown keys are tolerated (real MICrONS infos
carry `locked`, `graph`, `mesh_metadata`, ...). A violation raises `InfoError` naming the field and
the rule. No I/O: callers hand in the bytes they fetched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from microns_get.errors import InfoError

DATA_TYPES = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32")
SHARDING_TYPE = "neuroglancer_uint64_sharded_v1"
HASHES = ("identity", "murmurhash3_x86_128")
INDEX_ENCODINGS = ("raw", "gzip")
MESH_TYPES = ("neuroglancer_multilod_draco", "neuroglancer_legacy_mesh")
SKELETON_TYPE = "neuroglancer_skeletons"


@dataclass(frozen=True)
class ShardingSpec:
    preshift_bits: int
    hash: str
    minishard_bits: int
    shard_bits: int
    minishard_index_encoding: str = "raw"
    data_encoding: str = "raw"

    def to_json(self) -> dict[str, Any]:
        return {"@type": SHARDING_TYPE, **self.__dict__}


@dataclass(frozen=True)
class Scale:
    key: str
    size: tuple[int, int, int]
    resolution: tuple[float, float, float]
    voxel_offset: tuple[int, int, int]
    chunk_sizes: tuple[tuple[int, int, int], ...]
    encoding: str
    sharding: ShardingSpec | None
    compressed_segmentation_block_size: tuple[int, int, int] | None

    @property
    def chunk_size(self) -> tuple[int, int, int]:
        return self.chunk_sizes[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "resolution": list(self.resolution),
            "size": list(self.size),
            "voxel_offset": list(self.voxel_offset),
            "chunk_sizes": [list(c) for c in self.chunk_sizes],
            "encoding": self.encoding,
            "sharding": self.sharding.to_json() if self.sharding else None,
            "compressed_segmentation_block_size": (
                list(self.compressed_segmentation_block_size)
                if self.compressed_segmentation_block_size
                else None
            ),
        }


@dataclass(frozen=True)
class VolumeInfo:
    type: str
    data_type: str
    num_channels: int
    scales: tuple[Scale, ...]
    mesh: str | None
    skeletons: str | None
    segment_properties: str | None
    raw: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "data_type": self.data_type,
            "num_channels": self.num_channels,
            "mesh": self.mesh,
            "skeletons": self.skeletons,
            "segment_properties": self.segment_properties,
            "scales": [s.to_json() for s in self.scales],
        }


@dataclass(frozen=True)
class AuxInfo:
    """A `mesh/info` or `skeletons/info`: its type and sharding, the rest kept raw."""

    type: str
    sharding: ShardingSpec | None
    raw: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"@type": self.type, "sharding": self.sharding.to_json() if self.sharding else None}


def _fail(field: str, rule: str, got: Any = None) -> InfoError:
    suffix = "" if got is None else f" (got {json.dumps(got)[:60]})"
    return InfoError(f"info: {field}: {rule}{suffix}")


def load_json(data: bytes | str, what: str = "info") -> Mapping[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InfoError(f"{what}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InfoError(f"{what}: expected a JSON object at the top level")
    return value


def _int(value: Any, field: str, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(field, "must be an integer", value)
    if minimum is not None and value < minimum:
        raise _fail(field, f"must be at least {minimum}", value)
    if maximum is not None and value > maximum:
        raise _fail(field, f"must be at most {maximum}", value)
    return value


def _vec3(value: Any, field: str, *, integer: bool, minimum: float | None = None) -> tuple:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 3:
        raise _fail(field, "must be a list of 3 numbers", value)
    out = []
    for i, item in enumerate(value):
        ok = isinstance(item, int) if integer else isinstance(item, (int, float))
        if isinstance(item, bool) or not ok:
            kind = "integers" if integer else "numbers"
            raise _fail(f"{field}[{i}]", f"must hold {kind}", item)
        if minimum is not None and item < minimum:
            raise _fail(f"{field}[{i}]", f"must be at least {minimum}", item)
        out.append(item)
    return tuple(out)


def parse_sharding(value: Any, field: str) -> ShardingSpec | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _fail(field, "must be an object", value)
    if value.get("@type") != SHARDING_TYPE:
        raise _fail(f"{field}.@type", f"must be {SHARDING_TYPE!r}", value.get("@type"))
    for name in ("preshift_bits", "minishard_bits", "shard_bits", "hash"):
        if name not in value:
            raise _fail(f"{field}.{name}", "is required")
    spec = ShardingSpec(
        preshift_bits=_int(value["preshift_bits"], f"{field}.preshift_bits", 0, 64),
        hash=value["hash"],
        minishard_bits=_int(value["minishard_bits"], f"{field}.minishard_bits", 0, 64),
        shard_bits=_int(value["shard_bits"], f"{field}.shard_bits", 0, 64),
        minishard_index_encoding=value.get("minishard_index_encoding", "raw"),
        data_encoding=value.get("data_encoding", "raw"),
    )
    if spec.hash not in HASHES:
        raise _fail(f"{field}.hash", f"must be one of {', '.join(HASHES)}", spec.hash)
    if spec.minishard_bits + spec.shard_bits > 64:
        raise _fail(field, "minishard_bits + shard_bits must be at most 64")
    for name in ("minishard_index_encoding", "data_encoding"):
        if getattr(spec, name) not in INDEX_ENCODINGS:
            raise _fail(f"{field}.{name}", "must be raw or gzip", getattr(spec, name))
    return spec


def _parse_scale(value: Any, i: int, data_type: str) -> Scale:
    field = f"scales[{i}]"
    if not isinstance(value, Mapping):
        raise _fail(field, "must be an object", value)
    for name in ("key", "size", "resolution", "chunk_sizes", "encoding"):
        if name not in value:
            raise _fail(f"{field}.{name}", "is required")
    key = value["key"]
    if not isinstance(key, str) or not key:
        raise _fail(f"{field}.key", "must be a non-empty string", key)
    chunk_sizes = value["chunk_sizes"]
    if not isinstance(chunk_sizes, list) or not chunk_sizes:
        raise _fail(f"{field}.chunk_sizes", "must be a non-empty list of [x,y,z]", chunk_sizes)
    chunks = tuple(
        _vec3(c, f"{field}.chunk_sizes[{j}]", integer=True, minimum=1)
        for j, c in enumerate(chunk_sizes)
    )
    encoding = value["encoding"]
    if not isinstance(encoding, str) or not encoding:
        raise _fail(f"{field}.encoding", "must be a non-empty string", encoding)
    sharding = parse_sharding(value.get("sharding"), f"{field}.sharding")
    if sharding is not None and len(chunks) != 1:
        raise _fail(f"{field}.chunk_sizes", "a sharded scale allows exactly one chunk size")
    block = value.get("compressed_segmentation_block_size")
    if encoding == "compressed_segmentation":
        if block is None:
            raise _fail(
                f"{field}.compressed_segmentation_block_size",
                "is required with compressed_segmentation",
            )
        if data_type not in ("uint32", "uint64"):
            raise _fail(f"{field}.encoding", "compressed_segmentation needs uint32 or uint64")
        block = _vec3(block, f"{field}.compressed_segmentation_block_size", integer=True, minimum=1)
    elif block is not None:
        raise _fail(
            f"{field}.compressed_segmentation_block_size",
            "is only allowed with compressed_segmentation",
        )
    return Scale(
        key=key,
        size=_vec3(value["size"], f"{field}.size", integer=True, minimum=1),
        resolution=_vec3(value["resolution"], f"{field}.resolution", integer=False, minimum=0),
        voxel_offset=_vec3(
            value.get("voxel_offset", [0, 0, 0]), f"{field}.voxel_offset", integer=True
        ),
        chunk_sizes=chunks,
        encoding=encoding,
        sharding=sharding,
        compressed_segmentation_block_size=block,
    )


def _optional_dir(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if value is not None and (not isinstance(value, str) or not value):
        raise _fail(name, "must be a directory name (string)", value)
    return value


def parse_volume_info(data: bytes | str | Mapping[str, Any]) -> VolumeInfo:
    """Parse and validate a layer's `info`."""
    raw = data if isinstance(data, Mapping) else load_json(data)
    if raw.get("@type", "neuroglancer_multiscale_volume") != "neuroglancer_multiscale_volume":
        raise _fail("@type", "must be 'neuroglancer_multiscale_volume' when present", raw["@type"])
    layer_type = raw.get("type")
    if layer_type not in ("image", "segmentation"):
        raise _fail("type", "must be 'image' or 'segmentation'", layer_type)
    data_type = raw.get("data_type")
    if not isinstance(data_type, str) or data_type.lower() not in DATA_TYPES:
        raise _fail("data_type", f"must be one of {', '.join(DATA_TYPES)}", data_type)
    data_type = data_type.lower()
    num_channels = _int(raw.get("num_channels"), "num_channels", 1)
    if layer_type == "segmentation" and num_channels != 1:
        raise _fail("num_channels", "must be 1 for a segmentation", num_channels)
    scales_raw = raw.get("scales")
    if not isinstance(scales_raw, list) or not scales_raw:
        raise _fail("scales", "must be a non-empty list", scales_raw)
    scales = tuple(_parse_scale(s, i, data_type) for i, s in enumerate(scales_raw))
    _check_scales(scales)
    return VolumeInfo(
        type=layer_type,
        data_type=data_type,
        num_channels=num_channels,
        scales=scales,
        mesh=_optional_dir(raw, "mesh"),
        skeletons=_optional_dir(raw, "skeletons"),
        segment_properties=_optional_dir(raw, "segment_properties"),
        raw=raw,
    )


def _check_scales(scales: tuple[Scale, ...]) -> None:
    keys = [s.key for s in scales]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise _fail("scales", f"keys must be unique; {duplicates[0]!r} repeats")
    for i in range(1, len(scales)):
        for d in range(3):
            if scales[i].resolution[d] < scales[i - 1].resolution[d]:
                raise _fail(
                    f"scales[{i}].resolution", "must not decrease from one scale to the next"
                )


def parse_aux_info(data: bytes | str | Mapping[str, Any], what: str) -> AuxInfo:
    """Parse a `mesh/info` (what="mesh") or `skeletons/info` (what="skeletons")."""
    raw = data if isinstance(data, Mapping) else load_json(data, f"{what}/info")
    kind = raw.get("@type")
    allowed = MESH_TYPES if what == "mesh" else (SKELETON_TYPE,)
    if kind not in allowed:
        raise InfoError(f"{what}/info: @type: must be one of {', '.join(allowed)} (got {kind!r})")
    sharding = parse_sharding(raw.get("sharding"), f"{what}.sharding")
    return AuxInfo(type=kind, sharding=sharding, raw=raw)
