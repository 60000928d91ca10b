"""`info` parsing and validation: real MICrONS shapes pass, each rule violation names its field."""

from __future__ import annotations

import copy
import json

import pytest

from microns_get.errors import InfoError
from microns_get.precomputed.info import parse_aux_info, parse_volume_info

# The minnie65 segmentation geometry as CAVE code hard-codes it (shared/reference/microns-layouts.md
# section 2.2), with its non-standard keys, plus a sharded scale in the seg_m1300 style.
MINNIE65_SEG = {
    "app": {"supported_api_versions": [0, 1]},
    "chunks_start_at_voxel_offset": True,
    "data_type": "uint64",
    "graph": {"chunk_size": [256, 256, 512], "n_layers": 12},
    "mesh": "graphene_meshes",
    "num_channels": 1,
    "scales": [
        {
            "chunk_sizes": [[128, 128, 32]],
            "compressed_segmentation_block_size": [8, 8, 8],
            "encoding": "compressed_segmentation",
            "key": "8_8_40",
            "locked": True,
            "resolution": [8, 8, 40],
            "size": [192424, 131051, 13008],
            "voxel_offset": [26385, 30308, 14850],
            "sharding": {
                "@type": "neuroglancer_uint64_sharded_v1",
                "preshift_bits": 9,
                "hash": "identity",
                "minishard_bits": 6,
                "shard_bits": 17,
                "minishard_index_encoding": "gzip",
                "data_encoding": "gzip",
            },
        },
        {
            "chunk_sizes": [[128, 128, 16]],
            "encoding": "raw",
            "key": "1024_1024_640",
            "resolution": [1024, 1024, 640],
            "size": [1504, 1024, 813],
            "voxel_offset": [206, 236, 928],
        },
    ],
    "skeletons": "skeleton",
    "type": "segmentation",
}


def test_real_shape_parses_and_tolerates_unknown_keys() -> None:
    info = parse_volume_info(json.dumps(MINNIE65_SEG))
    assert info.type == "segmentation" and info.data_type == "uint64"
    assert [s.key for s in info.scales] == ["8_8_40", "1024_1024_640"]
    fine = info.scales[0]
    assert fine.sharding is not None and fine.sharding.shard_bits == 17
    assert fine.compressed_segmentation_block_size == (8, 8, 8)
    assert fine.voxel_offset == (26385, 30308, 14850)
    assert info.scales[1].sharding is None
    assert info.mesh == "graphene_meshes" and info.skeletons == "skeleton"


def mutate(path: str, value):
    info = copy.deepcopy(MINNIE65_SEG)
    target = info
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target[key]
    last = keys[-1]
    if value is DELETE:
        del target[last]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return json.dumps(info)


DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        pytest.param("type", "volume", "type", id="bad-type"),
        pytest.param("data_type", "uint128", "data_type", id="bad-dtype"),
        pytest.param("num_channels", 3, "num_channels", id="seg-channels"),
        pytest.param("scales", [], "scales", id="no-scales"),
        pytest.param("scales.0.size", [1, 2], "scales[0].size", id="size-len"),
        pytest.param("scales.0.size", [1, -2, 3], "scales[0].size[1]", id="size-negative"),
        pytest.param("scales.0.key", DELETE, "scales[0].key", id="key-missing"),
        pytest.param(
            "scales.0.chunk_sizes",
            [[64, 64, 64], [32, 32, 32]],
            "chunk_sizes",
            id="sharded-two-chunk-sizes",
        ),
        pytest.param(
            "scales.0.compressed_segmentation_block_size",
            DELETE,
            "compressed_segmentation_block_size",
            id="cseg-block-missing",
        ),
        pytest.param("scales.0.sharding.hash", "sha1", "sharding.hash", id="bad-hash"),
        pytest.param("scales.0.sharding.@type", "other", "sharding.@type", id="bad-sharding-type"),
        pytest.param(
            "scales.0.sharding.minishard_index_encoding",
            "zstd",
            "minishard_index_encoding",
            id="bad-index-encoding",
        ),
        pytest.param("scales.0.sharding.shard_bits", "17", "shard_bits", id="bits-not-int"),
        pytest.param(
            "scales.1.resolution", [4, 4, 40], "scales[1].resolution", id="resolution-decreases"
        ),
        pytest.param("scales.1.key", "8_8_40", "scales", id="duplicate-key"),
        pytest.param("mesh", 5, "mesh", id="mesh-not-string"),
    ],
)
def test_each_violation_names_field(path: str, value, field: str) -> None:
    with pytest.raises(InfoError) as err:
        parse_volume_info(mutate(path, value))
    assert field in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "data", [b"{not json", b"[1, 2]", b"\xff\xfe"], ids=["syntax", "list", "binary"]
)
def test_malformed_json(data: bytes) -> None:
    with pytest.raises(InfoError):
        parse_volume_info(data)


def test_mesh_info() -> None:
    mesh = {
        "@type": "neuroglancer_multilod_draco",
        "vertex_quantization_bits": 16,
        "transform": [16, 0, 0, 0, 0, 16, 0, 0, 0, 0, 40, 0],
        "lod_scale_multiplier": 1.0,
        "sharding": {
            "@type": "neuroglancer_uint64_sharded_v1",
            "preshift_bits": 6,
            "hash": "murmurhash3_x86_128",
            "minishard_bits": 8,
            "shard_bits": 13,
            "minishard_index_encoding": "gzip",
            "data_encoding": "gzip",
        },
    }
    parsed = parse_aux_info(json.dumps(mesh), "mesh")
    assert parsed.sharding is not None and parsed.sharding.preshift_bits == 6
    with pytest.raises(InfoError, match="mesh/info"):
        parse_aux_info(json.dumps({"@type": "something"}), "mesh")
