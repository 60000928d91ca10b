"""Sharded-format math and index decoding (precomputed/sharding.py).

Oracles: cloud-volume's `ShardingSpecification` and `compressed_morton_code` hash and locate
independently; cloud-volume writes label shards, multi-resolution mesh manifests and mesh shards.
Shards written by TensorStore, read end to end down to decoded chunks, are in
test_precomputed_codecs.py.
"""

from __future__ import annotations

import gzip
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest

from microns_get.precomputed.info import Scale, ShardingSpec
from microns_get.precomputed.sharding import (
    ChunkRange,
    CorruptIndex,
    Manifest,
    choose_whole_shard,
    coalesce,
    compressed_morton,
    compressed_morton_many,
    decode_minishard_index,
    decode_multires_manifest,
    decode_shard_index,
    decode_shard_index_entry,
    find_chunk,
    hash_chunk_id,
    index_length,
    locate_chunk,
    manifest_fragment_range,
    minishard_index_range,
    morton_bits,
    segment_shard_location,
    shard_filename,
    shard_index_range,
    volume_chunk_id,
)

# CloudVolume writes ~/.cloudvolume on import; keep it in a scratch dir (conftest does too).
_CV = str(Path(tempfile.gettempdir()) / "microns-get-tests-cloudvolume")
os.environ.setdefault("CLOUD_VOLUME_DIR", _CV)
os.environ.setdefault("CLOUD_FILES_DIR", _CV)
cv_sharding = pytest.importorskip("cloudvolume.datasource.precomputed.sharding")
cv_common = pytest.importorskip("cloudvolume.datasource.precomputed.common")
cv_multilod = pytest.importorskip("cloudvolume.datasource.precomputed.mesh.multilod")

MESH_SPEC = ShardingSpec(6, "murmurhash3_x86_128", 8, 13, "gzip", "gzip")  # seg_m1300/mesh
EM_SPEC = ShardingSpec(9, "identity", 6, 17, "gzip", "gzip")  # bossdb em 8_8_40


def spec(hash_: str = "identity", pre: int = 0, mini: int = 2, shard: int = 2, idx: str = "raw"):
    return ShardingSpec(pre, hash_, mini, shard, idx, "raw")


def cv_spec(s: ShardingSpec):
    return cv_sharding.ShardingSpecification.from_dict(s.to_json())


# --- chunk ids and location -------------------------------------------------------------------


def test_compressed_morton_witness() -> None:
    assert compressed_morton((627, 523, 415), (1664, 1408, 818)) == 478469439
    em = Scale(
        "8_8_40",
        (212992, 180224, 13088),
        (8, 8, 40),
        (13824, 13824, 14816),
        ((128, 128, 16),),
        "raw",
        EM_SPEC,
        None,
    )
    assert volume_chunk_id(em, (627, 523, 415)) == 478469439
    assert morton_bits((1664, 1408, 818)) == 32


@pytest.mark.parametrize(
    "grid",
    [(1664, 1408, 818), (1, 1, 1), (5, 1, 300), (2, 3, 4), (1504, 1024, 407)],
    ids=["em", "single", "flat-y", "tiny", "seg"],
)
def test_compressed_morton_matches_cloudvolume(grid: tuple) -> None:
    rng = np.random.default_rng(sum(grid))
    points = np.stack([rng.integers(0, n, 200) for n in grid], axis=1)
    ours = compressed_morton_many(points, grid)
    theirs = cv_common.compressed_morton_code(points, grid)
    assert ours.tolist() == np.asarray(theirs).tolist()
    assert [compressed_morton(tuple(p), grid) for p in points.tolist()[:20]] == ours[:20].tolist()


def test_compressed_morton_rejects_outside_grid() -> None:
    with pytest.raises(ValueError):
        compressed_morton((3, 0, 0), (3, 1, 1))
    with pytest.raises(ValueError):
        compressed_morton_many(np.array([[0, 1, 0]]), (3, 1, 1))


@pytest.mark.parametrize(
    "sharding, chunk_id, filename, minishard",
    [
        (MESH_SPEC, 864691136389585015, "11c0.shard", 192),
        (MESH_SPEC, 864691135278214049, "0583.shard", 245),
        (MESH_SPEC, 864691135572530981, "1d96.shard", 22),
        (EM_SPEC, 478469439, "03909.shard", 46),
    ],
    ids=["mesh-witness-11c0", "mesh-notebook-0583", "mesh-1d96", "em-witness-03909"],
)
def test_layout_vectors(sharding: ShardingSpec, chunk_id: int, filename: str, minishard: int):
    loc = segment_shard_location(sharding, chunk_id)
    assert (loc.filename, loc.minishard) == (filename, minishard)
    assert int(filename.split(".")[0], 16) == loc.shard


def test_murmur_of_zero() -> None:
    assert hash_chunk_id(spec("murmurhash3_x86_128"), 0) == 0x4772B084E028AE41


@pytest.mark.parametrize(
    "sharding",
    [MESH_SPEC, EM_SPEC, spec(), spec("murmurhash3_x86_128", 3, 0, 0), spec("identity", 0, 10, 20)],
    ids=["mesh", "em", "small", "no-bits", "wide"],
)
def test_location_matches_cloudvolume(sharding: ShardingSpec) -> None:
    theirs = cv_spec(sharding)
    rng = np.random.default_rng(7)
    ids = [0, 1, (1 << 64) - 1] + rng.integers(0, 1 << 63, 300, dtype=np.uint64).tolist()
    for cid in ids:
        loc = theirs.compute_shard_location(cid)
        assert locate_chunk(sharding, cid) == (
            int(loc.shard_number, 16),
            int(loc.minishard_number),
            f"{loc.shard_number}.shard",
        )


@pytest.mark.parametrize(
    "bits, shard, name", [(0, 0, "0.shard"), (4, 15, "f.shard"), (13, 5, "0005.shard")], ids=str
)
def test_shard_filename(bits: int, shard: int, name: str) -> None:
    assert shard_filename(ShardingSpec(0, "identity", 0, bits), shard) == name


def test_index_ranges() -> None:
    assert index_length(MESH_SPEC) == 4096
    assert shard_index_range(MESH_SPEC, 192) == (3072, 3088)
    with pytest.raises(ValueError):
        shard_index_range(MESH_SPEC, 256)


# --- cloud-volume-written mesh shards ---------------------------------------------------------


def test_cloudvolume_label_shards() -> None:
    """Skeleton-style shards: the chunk id is the segment id, data stored as given."""
    sharding = ShardingSpec(2, "murmurhash3_x86_128", 3, 2, "gzip", "raw")
    rng = np.random.default_rng(3)
    data = {int(i): rng.bytes(int(rng.integers(1, 300))) for i in rng.integers(1, 2**60, 60)}
    files = cv_spec(sharding).synthesize_shards(data)
    for label, blob in data.items():
        loc = segment_shard_location(sharding, label)
        shard = files[loc.filename]
        entry = decode_shard_index(shard[: index_length(sharding)], sharding)[loc.minishard]
        start, end = minishard_index_range(sharding, entry, len(shard))
        found = find_chunk(decode_minishard_index(shard[start:end], sharding, len(shard)), label)
        assert found is not None and shard[found.start : found.end] == blob


def make_manifest(segment: int, lods: list[int]):
    rng = np.random.default_rng(segment % 1000)
    positions = [rng.integers(0, 8, size=(n, 3)).astype(np.uint32) for n in lods]
    sizes = rng.integers(10, 90, size=sum(lods)).astype(np.uint32)
    return cv_multilod.MultiLevelPrecomputedMeshManifest(
        segment,
        chunk_shape=[16.0, 16.0, 40.0],
        grid_origin=[573440.0, 344064.0, 716800.0],
        num_lods=len(lods),
        lod_scales=[2.0**i for i in range(len(lods))],
        vertex_offsets=[[0.0, 0.5 * i, 0.0] for i in range(len(lods))],
        num_fragments_per_lod=lods,
        fragment_positions=positions,
        fragment_offsets=sizes,
    )


def test_decode_manifest_matches_cloudvolume() -> None:
    theirs = make_manifest(864691136389585015, [5, 2, 1, 0])
    ours = decode_multires_manifest(theirs.to_binary())
    assert ours.chunk_shape == (16.0, 16.0, 40.0)
    assert ours.grid_origin == (573440.0, 344064.0, 716800.0)
    assert (ours.num_lods, ours.lod_scales) == (4, (1.0, 2.0, 4.0, 8.0))
    assert ours.vertex_offsets[1] == (0.0, 0.5, 0.0)
    for lod in range(4):
        np.testing.assert_array_equal(ours.fragment_positions[lod], theirs.fragment_positions[lod])
    assert [s for lod in ours.fragment_sizes for s in lod] == theirs.fragment_offsets.tolist()
    again = cv_multilod.MultiLevelPrecomputedMeshManifest.from_binary(theirs.to_binary(), 1)
    assert ours.total_fragment_bytes == sum(int(a.sum()) for a in again.fragment_offsets)


def test_sharded_multires_mesh_fragments_precede_manifest() -> None:
    sharding = ShardingSpec(6, "murmurhash3_x86_128", 2, 1, "gzip", "raw")
    rng = np.random.default_rng(11)
    data, offsets, fragments = {}, {}, {}
    for segment in (864691136389585015, 864691135278214049, 864691135572530981, 99):
        manifest = make_manifest(segment, [3, 1])
        frag = rng.bytes(int(np.sum(manifest.fragment_offsets)))
        binary = manifest.to_binary()
        data[segment], offsets[segment], fragments[segment] = frag + binary, len(binary), frag
    files = cv_spec(sharding).synthesize_shards(data, data_offset=offsets)
    for segment, frag in fragments.items():
        loc = segment_shard_location(sharding, segment)
        shard = files[loc.filename]
        entry = decode_shard_index(shard[: index_length(sharding)], sharding)[loc.minishard]
        start, end = minishard_index_range(sharding, entry, len(shard))
        found = find_chunk(decode_minishard_index(shard[start:end], sharding, len(shard)), segment)
        manifest = decode_multires_manifest(shard[found.start : found.end])
        lo, hi = manifest_fragment_range(found.start, manifest, index_length(sharding))
        assert shard[lo:hi] == frag


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:20],
        lambda b: b[:-4],
        lambda b: b + b"\0" * 4,
        lambda b: b[:24] + b"\xff" * 4 + b[28:],
    ],
    ids=["header-cut", "tail-cut", "trailing", "huge-lod-count"],
)
def test_corrupt_manifest(mutate) -> None:
    with pytest.raises(CorruptIndex, match="mesh manifest"):
        decode_multires_manifest(mutate(make_manifest(5, [2, 1]).to_binary()))


def test_fragment_range_cannot_reach_into_index() -> None:
    manifest = decode_multires_manifest(make_manifest(5, [2, 1]).to_binary())
    with pytest.raises(CorruptIndex, match="before byte 4096"):
        manifest_fragment_range(4100, manifest, 4096)


def test_empty_manifest() -> None:
    blob = struct.pack("<6fI", 1, 1, 1, 0, 0, 0, 0)
    assert decode_multires_manifest(blob) == Manifest((1, 1, 1), (0, 0, 0), 0, (), (), (), ())


# --- corrupt indexes --------------------------------------------------------------------------


def _index(*rows: tuple[int, ...]) -> bytes:
    return np.array(rows, dtype="<u8").reshape(3, -1).tobytes()


def test_minishard_row_one_delta_rule() -> None:
    s = spec(mini=0)  # index length 16
    raw = _index((5, 2, 10), (100, 3, 0), (7, 4, 1))
    assert decode_minishard_index(raw, s) == [
        ChunkRange(5, 116, 123),
        ChunkRange(7, 126, 130),
        ChunkRange(17, 130, 131),
    ]
    assert decode_minishard_index(b"", s) == []


@pytest.mark.parametrize(
    "raw, encoding, shard_size, fragment",
    [
        (b"\0" * 23, "raw", None, "not a multiple of 24"),
        (b"garbage!", "gzip", None, "gzip decoding failed"),
        (gzip.compress(_index((1,), (0,), (8,)))[:-6], "gzip", None, "gzip decoding failed"),
        (gzip.compress(b"\0" * 25), "gzip", None, "not a multiple of 24"),
        (_index((1,), (0,), (100,)), "raw", 64, r"past the shard end \(64\)"),
        (_index((1, 1), (0, 2**64 - 10), (8, 8)), "raw", None, "past the 64-bit range"),
    ],
    ids=["bad-length", "not-gzip", "truncated-gzip", "gzip-bad-length", "past-end", "overflow"],
)
def test_corrupt_minishard_index(raw: bytes, encoding: str, shard_size, fragment: str) -> None:
    with pytest.raises(CorruptIndex, match=fragment):
        decode_minishard_index(raw, spec(mini=0, idx=encoding), shard_size, "m.shard#0")


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"\0" * 15, "expected 16 bytes"),
        (struct.pack("<QQ", 10, 5), "end 5 before start 10"),
    ],
    ids=["short", "inverted"],
)
def test_corrupt_shard_index_entry(data: bytes, fragment: str) -> None:
    with pytest.raises(CorruptIndex, match=fragment):
        decode_shard_index_entry(data)


def test_corrupt_shard_index() -> None:
    s = spec(mini=1)
    assert decode_shard_index(struct.pack("<4Q", 0, 0, 0, 48), s) == [(0, 0), (0, 48)]
    with pytest.raises(CorruptIndex, match="expected 32 bytes, got 31"):
        decode_shard_index(b"\0" * 31, s)
    with pytest.raises(CorruptIndex, match="minishard 1 ends before"):
        decode_shard_index(struct.pack("<4Q", 0, 0, 9, 1), s)
    with pytest.raises(CorruptIndex, match="past the shard end"):
        minishard_index_range(s, (0, 48), shard_size=64)


# --- planning helpers -------------------------------------------------------------------------


def _r(start: int, end: int) -> ChunkRange:
    return ChunkRange(start, start, end)


@pytest.mark.parametrize(
    "ranges, gap, expected",
    [
        ([], 10, []),
        ([_r(0, 10), _r(10, 20)], 0, [(0, 20, 2)]),
        ([_r(0, 10), _r(15, 20)], 4, [(0, 10, 1), (15, 20, 1)]),
        ([_r(0, 10), _r(15, 20)], 5, [(0, 20, 2)]),
        ([_r(30, 40), _r(0, 10), _r(12, 20)], 2, [(0, 20, 2), (30, 40, 1)]),
        ([_r(0, 50), _r(10, 20), _r(49, 60)], 0, [(0, 60, 3)]),
    ],
    ids=["empty", "touching", "gap-too-big", "gap-at-limit", "unsorted", "overlapping"],
)
def test_coalesce(ranges: list, gap: int, expected: list) -> None:
    merged = coalesce(ranges, gap)
    assert [(m.start, m.end, len(m.members)) for m in merged] == expected
    assert sorted(r for m in merged for r in m.members) == sorted(ranges)


def test_coalesce_rejects_negative_gap() -> None:
    with pytest.raises(ValueError):
        coalesce([_r(0, 1)], -1)


@pytest.mark.parametrize(
    "needed, requests, shard_size, whole",
    [
        (1_000, 1, 10_000_000, False),
        (9_000_000, 40, 10_000_000, True),
        (5_000_000, 10, 10_000_000, False),
        (1_000_000, 100, 20_000_000, True),
        (10_000_000, 1, 10_000_000, False),
    ],
    ids=["one-small-range", "most-of-shard", "half-few-ranges", "many-ranges", "tie-goes-ranged"],
)
def test_choose_whole_shard(needed: int, requests: int, shard_size: int, whole: bool) -> None:
    assert choose_whole_shard(needed, requests, shard_size) is whole


def test_choose_whole_shard_request_cost_knob() -> None:
    assert not choose_whole_shard(1_000_000, 100, 20_000_000, request_cost_bytes=0)
