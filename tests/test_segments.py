"""Meshes and skeletons of chosen segment ids, against the local S3/GCS servers.

cloud-volume reading the remote layer over HTTP is the oracle for meshes: the local layer must
give the same vertices and faces for every level of detail. Byte counts are checked against the
remote shard files decoded independently, so "only the needed bytes" is an equation.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import tensorstore as ts
from cloudvolume import CloudVolume

from microns_get.catalog import load_catalog
from microns_get.config import resolve_settings
from microns_get.errors import BadInput
from microns_get.precomputed.info import parse_aux_info
from microns_get.precomputed.sharding import (
    decode_minishard_index,
    decode_multires_manifest,
    decode_shard_index,
    find_chunk,
    index_length,
    segment_shard_location,
)
from microns_get.segments import (
    SegmentsResult,
    fetch_segment_meshes,
    fetch_skeletons,
    layer_mirror_urls,
    local_root,
)
from microns_get.segments import shardfile as sf
from microns_get.segments.skeletons import matches
from microns_get.sources import make_session
from microns_get.testing.seedtree import SeedTree
from microns_get.testing.servers import Mirrors

T = TypeVar("T")
GCS = "iarpa_microns"
M1300 = "minnie/minnie65/seg_m1300"
NUCLEI = "minnie/minnie65/nuclei"
NUCLEI_MESH = f"{NUCLEI}/mesh_mip_0_err_40"
STATIC = "microns-static-links"
V661 = "iarpa_microns/minnie/minnie65/skeletons/v661"


def run(fn: Callable[[Any, Any], Awaitable[T]]) -> T:
    """Run `fn(session, settings)` with settings from the environment `mirror_env` set."""
    settings = resolve_settings({"retries": 2})

    async def main() -> T:
        async with make_session(settings.jobs, settings.timeout) as session:
            return await fn(session, settings)

    return asyncio.run(main())


def meshes(url: str | list[str], local: Path, ids: list[int]) -> SegmentsResult:
    return run(lambda s, cfg: fetch_segment_meshes(s, cfg, url, local, ids))


def all_lods(cv: CloudVolume, sid: int) -> list[Any]:
    num_lods = cv.mesh.get_manifest(sid).num_lods
    return [cv.mesh.get(sid, lod=lod)[sid] for lod in range(num_lods)]


def assert_same_meshes(local: CloudVolume, remote: CloudVolume, sid: int) -> None:
    mine, theirs = all_lods(local, sid), all_lods(remote, sid)
    assert len(mine) == len(theirs) >= 1
    for a, b in zip(mine, theirs):
        assert len(a.vertices) > 0
        np.testing.assert_array_equal(a.vertices, b.vertices)
        np.testing.assert_array_equal(a.faces, b.faces)


def remote_cv(mirrors: Mirrors, prefix: str) -> CloudVolume:
    # fake-gcs-server also serves path-style /BUCKET/KEY, which cloud-volume reads as HTTP.
    return CloudVolume(f"precomputed://{mirrors.gcs_endpoint}/{GCS}/{prefix}", progress=False)


def local_cv(layer: Path) -> CloudVolume:
    return CloudVolume(f"file://{layer}", progress=False)


def m1300_part() -> Any:
    return load_catalog().find("seg", "minnie65").version("1300").parts[0]


def m1300_spec(tree: SeedTree) -> Any:
    return parse_aux_info(tree.info(GCS, M1300, "mesh/info"), "mesh").sharding


def needed_bytes(tree: SeedTree, ids: list[int]) -> tuple[int, int, dict[int, tuple[bytes, bytes]]]:
    """(index bytes, segment bytes, each id's stored (fragments, manifest)) of reading `ids` from
    the seeded shards: the span of shard-index entries and each minishard index once per shard."""
    spec = m1300_spec(tree)
    index_bytes, blobs, spans = 0, {}, {}
    minis: set[tuple[str, int]] = set()
    for sid in ids:
        loc = segment_shard_location(spec, sid)
        spans.setdefault(loc.filename, set()).add(loc.minishard)
        shard = tree.read(GCS, f"{M1300}/mesh/{loc.filename}")
        start, end = decode_shard_index(shard[: index_length(spec)], spec)[loc.minishard]
        chunk = find_chunk(decode_minishard_index(shard[4096 + start : 4096 + end], spec), sid)
        if (loc.filename, loc.minishard) not in minis:
            minis.add((loc.filename, loc.minishard))
            index_bytes += end - start
        manifest = decode_multires_manifest(gzip.decompress(shard[chunk.start : chunk.end]))
        fragments = shard[chunk.start - manifest.total_fragment_bytes : chunk.start]
        blobs[sid] = (fragments, shard[chunk.start : chunk.end])
    index_bytes += sum(16 * (max(m) - min(m) + 1) for m in spans.values())
    return index_bytes, sum(len(f) + len(m) for f, m in blobs.values()), blobs


def info_bytes(tree: SeedTree) -> int:
    return sum(len(tree.read(GCS, f"{M1300}/{name}")) for name in ("info", "mesh/info"))


# --- sharded multi-resolution meshes (seg_m1300) -------------------------------------------------


def test_sharded_meshes_read_back_like_the_remote(
    mirror_env: Mirrors, mini_microns: SeedTree, tmp_path: Path
) -> None:
    part = m1300_part()
    cfg = resolve_settings({})
    urls = layer_mirror_urls(part, cfg, "seg")
    layer = local_root(tmp_path, part)
    assert layer == tmp_path / GCS / M1300
    ids = mini_microns.meta["m1300_mesh_ids"]
    result = meshes(urls, layer, ids)
    assert result.layout == "sharded-multires"
    assert result.fetched == ids and not result.errors
    local, remote = local_cv(layer), remote_cv(mirror_env, M1300)
    for sid in ids:
        assert_same_meshes(local, remote, sid)
    remote_mesh_info = mini_microns.info(GCS, M1300, "mesh/info")
    assert json.loads((layer / "mesh" / "info").read_bytes()) == remote_mesh_info
    assert json.loads((layer / "info").read_bytes()) == mini_microns.info(GCS, M1300)
    shards = {segment_shard_location(m1300_spec(mini_microns), s).filename for s in ids}
    assert sorted(p.name for p in (layer / "mesh").glob("*.shard")) == sorted(shards)
    # TensorStore (the reader neuroglancer's format docs are mirrored in) reads the local shards.
    kv = ts.KvStore.open(
        {
            "driver": "neuroglancer_uint64_sharded",
            "base": f"file://{layer}/mesh/",
            "metadata": remote_mesh_info["sharding"],
        }
    ).result()
    _, _, blobs = needed_bytes(mini_microns, ids)
    for sid in ids:
        manifest = kv.read(struct.pack(">Q", sid)).result().value
        assert manifest == gzip.decompress(blobs[sid][1])


def test_sharded_reads_only_the_needed_bytes(
    mirror_env: Mirrors, mini_microns: SeedTree, tmp_path: Path
) -> None:
    ids = mini_microns.meta["m1300_mesh_ids"]
    pair = [ids[0], ids[0] ^ 1]  # same id >> 6: same shard and same minishard
    assert pair[1] in ids
    result = meshes(f"gs://{GCS}/{M1300}", tmp_path, pair)
    index_bytes, segment_bytes, blobs = needed_bytes(mini_microns, pair)
    # info + mesh/info, one shard-index entry, one minishard index, then manifest + fragments each.
    assert result.shared.requests == 2 + 1 + 1
    assert result.shared.bytes_read == info_bytes(mini_microns) + index_bytes
    for sid in pair:
        report = result.segments[sid]
        size = sum(map(len, blobs[sid]))
        assert (report.requests, report.bytes_read, report.bytes_written) == (2, size, size)
    assert result.bytes_read == info_bytes(mini_microns) + index_bytes + segment_bytes
    one = meshes(f"gs://{GCS}/{M1300}", tmp_path / "one", [ids[1]])
    assert one.segments[ids[1]].bytes_read == needed_bytes(mini_microns, [ids[1]])[1]
    # Never the whole shard (these mini shards hold one or two segments each).
    for fetched, sid in ((result, pair[0]), (one, ids[1])):
        name = segment_shard_location(m1300_spec(mini_microns), sid)
        shard_size = len(mini_microns.read(GCS, f"{M1300}/mesh/{name.filename}"))
        assert fetched.bytes_read - info_bytes(mini_microns) < shard_size


def test_a_later_fetch_adds_to_the_local_shards(
    mirror_env: Mirrors, mini_microns: SeedTree, tmp_path: Path
) -> None:
    ids = mini_microns.meta["m1300_mesh_ids"]
    first, more = [ids[0]], [ids[0] ^ 1, ids[1]]
    meshes(f"gs://{GCS}/{M1300}", tmp_path, first)
    shard = next((tmp_path / "mesh").glob("*.shard"))
    assert set(sf.parse_shard(m1300_spec(mini_microns), shard.read_bytes())) == set(first)
    second = meshes(f"gs://{GCS}/{M1300}", tmp_path, more)
    assert second.fetched == more
    assert not [f for f in second.files if f.endswith("info")]  # kept, not rewritten
    local, remote = local_cv(tmp_path), remote_cv(mirror_env, M1300)
    for sid in first + more:
        assert_same_meshes(local, remote, sid)
    again = meshes(f"gs://{GCS}/{M1300}", tmp_path, [ids[0], ids[1]])
    assert again.present == [ids[0], ids[1]]
    assert again.requests == 2 and not again.files  # only the two info files were read


def test_a_whole_mirrored_shard_counts_as_present(
    mirror_env: Mirrors, mini_microns: SeedTree, tmp_path: Path
) -> None:
    """A full mirror of the layer already holds the ids: nothing is read or rewritten."""
    ids = mini_microns.meta["m1300_mesh_ids"][:2]
    spec = m1300_spec(mini_microns)
    (tmp_path / "mesh").mkdir()
    for name in ("info", "mesh/info"):
        (tmp_path / name).write_bytes(mini_microns.read(GCS, f"{M1300}/{name}"))
    shards = {}
    for sid in ids:
        name = segment_shard_location(spec, sid).filename
        shards[name] = mini_microns.read(GCS, f"{M1300}/mesh/{name}")
        (tmp_path / "mesh" / name).write_bytes(shards[name])
    result = meshes(f"gs://{GCS}/{M1300}", tmp_path, ids)
    assert result.present == ids and result.requests == 2 and not result.files
    for name, data in shards.items():
        assert (tmp_path / "mesh" / name).read_bytes() == data


def test_local_state_that_does_not_fit_is_never_overwritten(
    mirror_env: Mirrors, mini_microns: SeedTree, tmp_path: Path
) -> None:
    ids = mini_microns.meta["m1300_mesh_ids"]
    mesh_info = mini_microns.info(GCS, M1300, "mesh/info")
    other = dict(mesh_info, sharding=dict(mesh_info["sharding"], minishard_bits=6))
    (tmp_path / "a" / "mesh").mkdir(parents=True)
    (tmp_path / "a" / "mesh" / "info").write_text(json.dumps(other))
    with pytest.raises(BadInput, match="differs from the remote"):
        meshes(f"gs://{GCS}/{M1300}", tmp_path / "a", ids[:1])
    layer = tmp_path / "b"
    name = segment_shard_location(m1300_spec(mini_microns), ids[0]).filename
    (layer / "mesh").mkdir(parents=True)
    (layer / "mesh" / name).write_bytes(b"not a shard")
    result = meshes(f"gs://{GCS}/{M1300}", layer, ids[:2])
    assert result.failed == ids[:1] and result.fetched == ids[1:2]
    assert "move it away" in result.segments[ids[0]].detail
    assert (layer / "mesh" / name).read_bytes() == b"not a shard"


def test_ids_without_a_mesh_are_reported_not_failed(
    mirror_env: Mirrors, mini_microns: SeedTree, tmp_path: Path
) -> None:
    ids = mini_microns.meta["m1300_mesh_ids"]
    same_minishard = ids[0] ^ 2  # shares the shard and minishard, but has no mesh
    no_shard = 12345
    assert same_minishard not in ids
    result = meshes(f"gs://{GCS}/{M1300}", tmp_path, [same_minishard, no_shard, ids[1]])
    assert result.missing == [same_minishard, no_shard]
    assert result.fetched == [ids[1]] and not result.failed and not result.errors
    assert "not in its minishard" in result.segments[same_minishard].detail
    assert "no shard file" in result.segments[no_shard].detail
    assert len(list((tmp_path / "mesh").glob("*.shard"))) == 1


def test_shard_files_round_trip_and_keep_the_remote_bytes(mini_microns: SeedTree) -> None:
    spec = m1300_spec(mini_microns)
    ids = mini_microns.meta["m1300_mesh_ids"]
    name = segment_shard_location(spec, ids[0]).filename
    remote = sf.parse_shard(spec, mini_microns.read(GCS, f"{M1300}/mesh/{name}"))
    assert set(remote) == {ids[0], ids[0] ^ 1}
    _, _, blobs = needed_bytes(mini_microns, list(remote))
    for sid, blob in remote.items():
        assert (blob.fragments, blob.manifest) == blobs[sid]
    assert sf.parse_shard(spec, sf.build_shard(spec, remote)) == remote
    assert sf.index_span(spec, [3]) == (48, 64)
    assert sf.index_span(spec, [1, 5]) == (16, 96)


# --- legacy and unsharded multi-resolution meshes ------------------------------------------------


def test_legacy_nuclei_meshes_read_back_like_the_remote(
    mirror_env: Mirrors, mini_microns: SeedTree, tmp_path: Path
) -> None:
    part = load_catalog().find("nuclei", "minnie65").version(None).parts[0]
    # A first mirror that does not answer: the layer comes from the next one.
    urls = ["s3://no-such-bucket/nuclei", *layer_mirror_urls(part, resolve_settings({}), "nuclei")]
    ids = mini_microns.meta["nuclei_mesh_ids"]
    layer = local_root(tmp_path, part)
    result = meshes(urls, layer, [*ids, 4242])
    assert result.layout == "legacy"
    assert result.fetched == ids and result.missing == [4242]
    remote, local = remote_cv(mirror_env, NUCLEI), local_cv(layer)
    for sid in ids:
        mine, theirs = local.mesh.get(sid), remote.mesh.get(sid)
        np.testing.assert_array_equal(mine.vertices, theirs.vertices)
        np.testing.assert_array_equal(mine.faces, theirs.faces)
        names = mini_microns.keys(GCS, f"{NUCLEI_MESH}/{sid}:")
        for key in names:
            local_bytes = (layer / "mesh_mip_0_err_40" / key.rsplit("/", 1)[1]).read_bytes()
            assert local_bytes == mini_microns.read_decoded(GCS, key)
        assert result.segments[sid].requests == len(names)
    assert not (layer / "mesh_mip_0_err_40" / "info").exists()
    again = meshes(urls[1:], layer, ids)
    assert again.present == ids and all(r.requests == 0 for r in again.segments.values())


def test_unsharded_multires_meshes_are_copied(
    mirror_env: Mirrors, mini_microns: SeedTree, tmp_path: Path
) -> None:
    """A layer with `<id>.index` + `<id>` (no sharding), built from a seeded segment."""
    ids = mini_microns.meta["m1300_mesh_ids"][:2]
    _, _, blobs = needed_bytes(mini_microns, ids)
    src = tmp_path / "src"
    (src / "mesh").mkdir(parents=True)
    (src / "info").write_bytes(mini_microns.read(GCS, f"{M1300}/info"))
    mesh_info = mini_microns.info(GCS, M1300, "mesh/info")
    del mesh_info["sharding"]
    (src / "mesh" / "info").write_text(json.dumps(mesh_info))
    for sid, (fragments, manifest) in blobs.items():
        (src / "mesh" / f"{sid}.index").write_bytes(gzip.decompress(manifest))
        (src / "mesh" / str(sid)).write_bytes(fragments)
    result = meshes(f"file://{src}", tmp_path / "dest", [*ids, 99])
    assert result.layout == "unsharded-multires"
    assert result.fetched == ids and result.missing == [99]
    for sid in ids:
        assert_same_meshes(local_cv(tmp_path / "dest"), local_cv(src), sid)
        assert_same_meshes(local_cv(tmp_path / "dest"), remote_cv(mirror_env, M1300), sid)


# --- skeletons ----------------------------------------------------------------------------------


def skeletons(version: str, ids: list[int], dest: Path, nuclei: list[int] | None = None):
    parts = load_catalog().find("skeletons", "minnie65").version(version).parts
    return run(lambda s, cfg: fetch_skeletons(s, cfg, version, parts, ids, dest, nuclei))


def test_v1300_skeletons_land_byte_identical(
    mirror_env: Mirrors, mini_microns: SeedTree, tmp_path: Path
) -> None:
    proofread, dendrite = mini_microns.meta["swc_proofread"], mini_microns.meta["swc_dendrite"]
    only_dendrite = [s for s in dendrite if s not in proofread]
    ids = [proofread[0], only_dendrite[0], 1]
    result = skeletons("1300", ids, tmp_path)
    assert result.fetched == ids[:2] and result.missing == [1] and not result.errors
    for folder, members in (("proofread", proofread), ("dendrite", dendrite)):
        for sid in ids[:2]:
            path = tmp_path / STATIC / "skel/swc" / folder / f"{sid}.swc"
            if sid in members:
                assert path.read_bytes() == mini_microns.read(
                    STATIC, f"skel/swc/{folder}/{sid}.swc"
                )
            else:
                assert not path.exists()
    # one GET per id and part, 404s included; no listing
    assert result.requests == 2 * len(ids) and result.shared.requests == 0
    assert "no skeleton in proofread, dendrite" in result.segments[1].detail


def test_v661_skeletons_by_root_and_by_nucleus(
    mirror_env: Mirrors, mini_microns: SeedTree, tmp_path: Path
) -> None:
    (root, nucleus), (root2, nucleus2) = mini_microns.meta["v661_skeletons"][:2]
    assert (root, nucleus) == (864691135122603047, 292685)
    result = skeletons("v661", [root, 7], tmp_path, nuclei=[nucleus2])
    assert result.fetched == [root, nucleus2] and result.missing == [7]
    assert result.segments[nucleus2].id_kind == "nucleus"
    for rid, nid in ((root, nucleus), (root2, nucleus2)):
        for folder, ext in (("skeletons", "swc"), ("meshworks", "h5"), ("metadata", "json")):
            key = f"{V661}/{folder}/{rid}_{nid}.{ext}"
            assert (tmp_path / key).read_bytes() == mini_microns.read("bossdb-open-data", key)
    assert result.shared.requests == 3  # one listing per part, whatever the number of ids
    assert result.segments[root].requests == 3 and result.segments[7].requests == 0
    again = skeletons("661", [root], tmp_path)
    assert again.present == [root] and again.segments[root].requests == 0


def test_nucleus_ids_need_v661(mirror_env: Mirrors, tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="named by root id only"):
        skeletons("1300", [], tmp_path, nuclei=[292685])
    parts = load_catalog().find("skeletons", "minnie65").version("1300").parts
    with pytest.raises(BadInput, match="no skeleton file naming"):
        run(lambda s, cfg: fetch_skeletons(s, cfg, "42", parts, [1], tmp_path))


@pytest.mark.parametrize(
    ("name", "wanted", "kind", "expected"),
    [
        ("v661/skeletons/864691135122603047_292685.swc", 864691135122603047, "root", True),
        ("864691135122603047_292685.h5", 292685, "nucleus", True),
        ("864691135122603047_292685.json", 29268, "nucleus", False),
        ("8646911351226030471_292685.swc", 864691135122603047, "root", False),
        ("864691135122603047.swc", 864691135122603047, "root", False),
    ],
    ids=["root", "nucleus", "nucleus-prefix", "root-prefix", "no-nucleus"],
)
def test_v661_name_matching(name: str, wanted: int, kind: str, expected: bool) -> None:
    assert matches(name, wanted, kind) is expected
