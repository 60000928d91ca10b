"""Cutouts: every voxel of the box equals what an independent reader (tensorstore) reads from the
same remote server, and the local layer opens in tensorstore and cloud-volume as it is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts

from microns_get.cli.app import run
from microns_get.testing.faultproxy import FaultProxy, FaultRule

# (dataset args, remote bucket, remote prefix, local layer under DEST)
EM65 = (["em"], "bossdb-open-data", "iarpa_microns/minnie/minnie65/em")
SEG1300 = (["seg", "--version", "1300"], "iarpa_microns", "minnie/minnie65/seg_m1300")
SEG117 = (["seg", "--version", "117"], "bossdb-open-data", "iarpa_microns/minnie/minnie65/seg")
NUCLEI = (["nuclei"], "bossdb-open-data", "iarpa_microns/minnie/minnie65/nuclei")
EM35 = (["em", "--volume", "minnie35"], "bossdb-open-data", "iarpa_microns/minnie/minnie35/em")


def local_layer(bucket: str, prefix: str) -> str:
    return prefix if bucket == "bossdb-open-data" else f"{bucket}/{prefix}"


def remote_store(mirrors, bucket: str, prefix: str) -> ts.TensorStore:
    base = mirrors.s3_endpoint if bucket == "bossdb-open-data" else mirrors.gcs_endpoint
    spec = {
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "http", "base_url": f"{base}/{bucket}/{prefix}/"},
    }
    return ts.open(spec, read=True).result()


def local_store(path: Path) -> ts.TensorStore:
    spec = {"driver": "neuroglancer_precomputed", "kvstore": {"driver": "file", "path": f"{path}/"}}
    return ts.open(spec, read=True).result()


def read_box(store: ts.TensorStore, scale: int, lo, hi) -> np.ndarray:
    view = store if scale == 0 else None
    if view is None:
        raise AssertionError
    return view[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2], 0].read().result()


def open_scale(base_spec_store: ts.TensorStore, scale_index: int) -> ts.TensorStore:
    spec = base_spec_store.spec().to_json()
    spec["scale_index"] = scale_index
    spec.pop("scale_metadata", None)
    spec.pop("multiscale_metadata", None)
    spec.pop("dtype", None)
    spec.pop("schema", None)
    spec.pop("transform", None)
    return ts.open(spec, read=True).result()


def fetch(*args: str) -> int:
    return run(["fetch", *args])


def scale_box(mirrors, bucket, prefix, index, lo, hi, dest: Path) -> None:
    """Fetch [lo, hi) given in the scale's own voxels, then compare with tensorstore remote."""
    remote = open_scale(remote_store(mirrors, bucket, prefix), index)
    info = json.loads(Path(dest, local_layer(bucket, prefix), "info").read_text())
    local = open_scale(local_store(dest / local_layer(bucket, prefix)), index)
    want = remote[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2], 0].read().result()
    got = local[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2], 0].read().result()
    assert info["scales"][index].get("sharding") is None
    np.testing.assert_array_equal(got, want)
    assert want.any(), "the test box should hold data"


def res_arg(resolution) -> str:
    return ",".join(str(int(r)) for r in resolution)


CASES = [
    # name, dataset, scale index, resolution, lo, hi (scale voxels): unaligned, crossing chunks
    pytest.param(
        EM65, 0, (8, 8, 40), (13830, 13840, 14818), (13930, 13901, 14845), id="em-identity"
    ),
    pytest.param(EM65, 1, (16, 16, 40), (6915, 6920, 14820), (7000, 6990, 14856), id="em-mip1"),
    pytest.param(
        SEG1300, 0, (8, 8, 40), (13850, 13845, 14825), (13990, 13980, 14850), id="seg1300-murmur"
    ),
    pytest.param(
        SEG117,
        2,
        (32, 32, 40),
        (3462, 3460, 14820),
        (3502, 3496, 14852),
        id="seg117-raw-whole-scale",
    ),
    pytest.param(
        NUCLEI,
        0,
        (8, 8, 40),
        (13824, 13824, 14816),
        (14024, 13992, 14856),
        id="nuclei-unsharded-absent",
    ),
    pytest.param(EM35, 0, (8, 8, 40), (14100, 13960, 14830), (14208, 14048, 14860), id="em35-edge"),
]


@pytest.mark.parametrize(("layer", "index", "resolution", "lo", "hi"), CASES)
def test_cutout_equals_remote(mirror_env, tmp_path, layer, index, resolution, lo, hi) -> None:
    args, bucket, prefix = layer
    box = ",".join(map(str, (*lo, *hi)))
    dest = tmp_path / "dest"
    code = fetch(
        *args,
        "--bbox",
        box,
        "--bbox-resolution",
        res_arg(resolution),
        "--mip",
        str(index),
        "--dest",
        str(dest),
        "--json",
    )
    assert code == 0
    scale_box(mirror_env, bucket, prefix, index, lo, hi, dest)


def test_default_frame_is_4_4_40_and_ranges_not_whole_shards(
    mirror_env, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("MICRONS_GET_REQUEST_COST", "0")  # always prefer byte ranges
    dest = tmp_path / "dest"
    # 4,4,40 box -> 8,8,40 voxels (13850..13950, 13850..13900, 14822..14840)
    box = "27700,27700,14822,27900,27800,14840"
    assert (
        fetch("seg", "--version", "1300", "--bbox", box, "--dry-run", "--json", "--dest", str(dest))
        == 0
    )
    plan = json.loads(capsys.readouterr().out)
    scale = plan["scales"][0]
    assert scale["box"] == {"lo": [13850, 13850, 14822], "hi": [13950, 13900, 14840]}
    assert not any(choice["whole"] for choice in scale["shards"])
    assert plan["totals"]["ranged_bytes"] < sum(c["shard_size"] for c in scale["shards"])
    assert not dest.exists()  # a dry run writes nothing
    assert fetch("seg", "--version", "1300", "--bbox", box, "--dest", str(dest), "--json") == 0
    scale_box(
        mirror_env,
        "iarpa_microns",
        "minnie/minnie65/seg_m1300",
        0,
        (13850, 13850, 14822),
        (13950, 13900, 14840),
        dest,
    )


@pytest.mark.parametrize(("cost", "whole"), [(0, False), (64 << 20, True)], ids=["ranges", "whole"])
def test_whole_shard_when_cheaper(cost: int, whole: bool) -> None:
    from microns_get.plan.cutout import MAX_GAP, sharded_reads
    from microns_get.precomputed.sharding import ChunkRange

    # three chunks far apart in a 1 MiB shard: three ranges, or one read of their whole span
    located = {
        f"8_8_40/c{i}": ChunkRange(
            i, 4096 + i * (MAX_GAP + 200_000), 4096 + i * (MAX_GAP + 200_000) + 1000
        )
        for i in range(3)
    }
    reads, choice = sharded_reads("8_8_40/00.shard", located, 1 << 20, True, cost)
    assert choice.whole is whole
    assert len(reads) == (1 if whole else 3)
    slices = sorted((c.name, r.start + c.offset) for r in reads for c in r.chunks)
    assert slices == sorted((name, r.start) for name, r in located.items())
    if whole:  # from the first needed byte to the last: not the shard index before them
        assert (reads[0].start, reads[0].end) == (4096, 4096 + 2 * (MAX_GAP + 200_000) + 1000)


def test_a_whole_shard_is_read_in_pieces_cut_at_chunk_boundaries() -> None:
    """A multi-GB shard read as one stream would be slow on cloud storage and sit in memory
    whole: its span is read in pieces of at most `max_read` bytes, each a run of whole chunks."""
    from microns_get.plan.cutout import MAX_GAP, sharded_reads
    from microns_get.precomputed.sharding import ChunkRange

    stride = 3000 + MAX_GAP + 8000  # chunks of 3000 bytes, gaps too wide to coalesce
    located = {
        f"c{i:02d}": ChunkRange(i, 1000 + i * stride, 1000 + i * stride + 3000) for i in range(20)
    }
    span_end = 1000 + 19 * stride + 3000
    reads, choice = sharded_reads("0.shard", located, 2 << 20, True, 1 << 20, max_read=200_000)
    assert choice.whole and choice.ranged_requests == 20
    assert all(r.end - r.start <= 200_000 for r in reads)
    per_piece = (200_000 - 3000) // stride + 1
    assert [len(r.chunks) for r in reads] == [per_piece] * (20 // per_piece) + (
        [20 % per_piece] if 20 % per_piece else []
    )
    assert [r.start for r in reads] == [1000 + k * per_piece * stride for k in range(len(reads))]
    assert reads[-1].end == span_end
    # each piece is a request in the cost model: pieces of one chunk each cost as many requests
    # as the ranges, plus the gaps' bytes, so ranges win
    reads, choice = sharded_reads("0.shard", located, 2 << 20, True, 1 << 20, max_read=3000)
    assert not choice.whole and len(reads) == 20


def test_second_box_adds_and_rerun_moves_nothing(mirror_env, tmp_path, capsys) -> None:
    dest = tmp_path / "dest"
    first = ("13830,13840,14818,13870,13870,14830", (13830, 13840, 14818), (13870, 13870, 14830))
    second = ("13950,13930,14830,14000,13990,14850", (13950, 13930, 14830), (14000, 13990, 14850))
    # one mirror throughout: with `auto` a loaded machine may rank the other one first, whose
    # shards have other ETags, and a chunk of another remote version is fetched again
    args = ("--bbox-resolution", "8,8,40", "--dest", str(dest), "--json", "--mirror", "s3")
    for box, _, _ in (first, second):
        assert fetch("em", "--bbox", box, *args) == 0
    for _, lo, hi in (first, second):
        scale_box(mirror_env, *EM65[1:], 0, lo, hi, dest)
    capsys.readouterr()
    assert fetch("em", "--bbox", second[0], *args) == 0
    done = [json.loads(x) for x in capsys.readouterr().out.splitlines()][-1]
    assert done["objects_done"] == 0 and done["bytes_moved"] == 0 and done["objects_skipped"] > 0


def test_local_layer_opens_in_cloud_volume(mirror_env, tmp_path) -> None:
    from cloudvolume import CloudVolume

    dest = tmp_path / "dest"
    lo, hi = (13850, 13845, 14825), (13990, 13980, 14850)
    box = ",".join(map(str, (*lo, *hi)))
    assert (
        fetch(
            "seg",
            "--version",
            "1300",
            "--bbox",
            box,
            "--bbox-resolution",
            "8,8,40",
            "--dest",
            str(dest),
            "--json",
        )
        == 0
    )
    cv = CloudVolume(
        f"file://{dest}/iarpa_microns/minnie/minnie65/seg_m1300",
        mip=0,
        fill_missing=True,
        progress=False,
    )
    got = np.asarray(cv[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])[..., 0]
    remote = remote_store(mirror_env, "iarpa_microns", "minnie/minnie65/seg_m1300")
    want = remote[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2], 0].read().result()
    np.testing.assert_array_equal(got, want)


def test_mip_all_fetches_every_scale(mirror_env, tmp_path) -> None:
    dest = tmp_path / "dest"
    assert (
        fetch(
            "em",
            "--bbox",
            "27700,27700,14820,27900,27800,14850",
            "--mip",
            "all",
            "--dest",
            str(dest),
            "--json",
        )
        == 0
    )
    layer = dest / "iarpa_microns/minnie/minnie65/em"
    assert {p.name for p in layer.iterdir() if p.is_dir()} == {"8_8_40", "16_16_40", "32_32_40"}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["em", "--bbox", "1,2,3"], "6", id="too-few-numbers"),
        pytest.param(["em", "--bbox", "10,10,10,5,20,20"], "", id="inverted"),
        pytest.param(["em", "--bbox", "10,10,10,10,20,20"], "", id="empty"),
        pytest.param(["em", "--bbox", "a,b,c,d,e,f"], "", id="not-numbers"),
        pytest.param(["em", "--bbox", "0,0,0,100,100,10"], "outside the volume", id="outside"),
        pytest.param(
            ["em", "--bbox", "27700,27700,14820,27900,27800,14850", "--mip", "9"],
            "no mip 9",
            id="bad-mip",
        ),
        pytest.param(
            ["em", "--bbox", "27700,27700,14820,27900,27800,14850", "--resolution", "5,5,40"],
            "no scale with resolution",
            id="bad-resolution",
        ),
        pytest.param(
            ["nucleus-detection", "--bbox", "1,1,1,2,2,2"], "precomputed", id="not-a-layer"
        ),
        pytest.param(["em", "--bbox", "1,1,1,2,2,2", "--bbox-units", "um"], "nm", id="bad-units"),
    ],
)
def test_bad_cutouts_are_exit_2_and_write_nothing(
    mirror_env, tmp_path, capsys, args, needle
) -> None:
    dest = tmp_path / "dest"
    assert fetch(*args, "--dest", str(dest)) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not dest.exists()


def test_partly_outside_box_is_clipped_with_a_warning(mirror_env, tmp_path, capsys) -> None:
    dest = tmp_path / "dest"
    assert (
        fetch(
            "em",
            "--bbox",
            "13000,13000,14800,13900,13900,14830",
            "--bbox-resolution",
            "8,8,40",
            "--dest",
            str(dest),
        )
        == 0
    )
    assert "clipped" in capsys.readouterr().err
    scale_box(mirror_env, *EM65[1:], 0, (13824, 13824, 14816), (13900, 13900, 14830), dest)


@pytest.fixture
def gcs_proxy(mirrors, monkeypatch, mirror_env):
    with FaultProxy(mirrors.gcs_endpoint) as proxy:
        monkeypatch.setenv("MICRONS_GET_GCS_ENDPOINT", proxy.url)
        yield proxy


def test_corrupted_chunk_is_fetched_again(gcs_proxy, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MICRONS_GET_REQUEST_COST", "0")
    lo, hi = (13850, 13845, 14825), (13990, 13980, 14850)
    box = ",".join(map(str, (*lo, *hi)))
    rule = gcs_proxy.add_rule(
        FaultRule(
            "flip_byte", at=40, path_contains=".shard", only_ranged=True, skip_first=12, times=1
        )
    )
    dest = tmp_path / "dest"
    assert (
        fetch(
            "seg",
            "--version",
            "1300",
            "--bbox",
            box,
            "--bbox-resolution",
            "8,8,40",
            "--dest",
            str(dest),
            "--json",
        )
        == 0
    )
    assert rule.fired == 1
    mirrors = type("M", (), {"gcs_endpoint": gcs_proxy.url, "s3_endpoint": ""})
    gcs_proxy.clear_rules()
    scale_box(mirrors, "iarpa_microns", "minnie/minnie65/seg_m1300", 0, lo, hi, dest)


def test_corrupted_shard_index_is_a_clear_error(gcs_proxy, tmp_path, capsys) -> None:
    # the second request per shard is its index (after a HEAD); corrupt its first entry
    gcs_proxy.add_rule(
        FaultRule("flip_byte", at=7, path_contains=".shard", only_ranged=True, times=1000)
    )
    dest = tmp_path / "dest"
    code = fetch(
        "seg",
        "--version",
        "1300",
        "--bbox",
        "13850,13845,14825,13990,13980,14850",
        "--bbox-resolution",
        "8,8,40",
        "--dest",
        str(dest),
    )
    err = capsys.readouterr().err
    assert code == 4
    assert "index" in err and len([x for x in err.splitlines() if "error" in x]) == 1
    assert not dest.exists()


def test_long_merged_ranges_are_split_at_chunk_boundaries() -> None:
    from microns_get.plan.cutout import sharded_reads
    from microns_get.precomputed.sharding import ChunkRange

    # 40 touching 1 MiB chunks: one merged range, cut into reads of at most 8 MiB
    mib = 1 << 20
    located = {
        f"8_8_40/c{i:02d}": ChunkRange(i, 4096 + i * mib, 4096 + (i + 1) * mib) for i in range(40)
    }
    reads, choice = sharded_reads("8_8_40/0.shard", located, 64 * mib, True, 0)
    assert not choice.whole and choice.ranged_requests == len(reads) == 5
    assert all(r.end - r.start <= 8 * mib for r in reads)
    assert [c.name for r in reads for c in r.chunks] == sorted(located)
    assert reads[0].start == 4096 and reads[-1].end == 4096 + 40 * mib


@pytest.mark.parametrize("state_dir", [None, "/elsewhere/state"], ids=["default", "configured"])
def test_cutout_keeps_its_resume_state_where_fetch_does(state_dir: str | None) -> None:
    from microns_get.cutout import state_file
    from microns_get.fetch import STATE_FILE
    from microns_get.fetch import state_dir as fetch_state_dir

    settings = type("S", (), {"dest": "/data/dest", "state_dir": state_dir})()
    assert state_file(settings) == fetch_state_dir(settings) / STATE_FILE


def test_a_cutout_plan_has_a_short_repr() -> None:
    from microns_get.plan.cutout import CutoutPlan, ScalePlan

    scale = ScalePlan(0, "8_8_40", (8, 8, 40), {}, False, True, 4096)
    plan = CutoutPlan({}, "s3://b/em", "b/em", {}, [scale, scale])
    assert repr(plan) == "CutoutPlan(8192 chunks of 2 scales from s3://b/em)"


def test_the_local_info_leaves_out_scales_coarser_than_any_fetched() -> None:
    """A viewer zoomed out past the fetched scales would switch to an empty coarser one; left
    out, it draws the coarsest fetched one. Scales kept keep their mip numbers."""
    from types import SimpleNamespace

    from microns_get.plan.cutout import local_info

    spec = {"@type": "neuroglancer_uint64_sharded_v1"}
    remote = {"data_type": "uint8", "scales": [{"key": k, "sharding": spec} for k in "abc"]}

    def fetch(keys: str, existing: dict | None) -> dict:
        return local_info(remote, [SimpleNamespace(key=k) for k in keys], existing)

    def shape(info: dict) -> list[tuple[str, bool]]:
        return [(s["key"], "sharding" in s) for s in info["scales"]]

    first = fetch("a", None)
    assert shape(first) == [("a", False)]
    coarser = fetch("c", first)  # the scales up to it come back, as on the remote
    assert shape(coarser) == [("a", False), ("b", True), ("c", False)]
    assert shape(fetch("b", coarser)) == [("a", False), ("b", False), ("c", False)]
    assert shape(fetch("a", coarser)) == shape(coarser)  # a finer fetch drops nothing
    assert shape(fetch("b", None)) == [("a", True), ("b", False)]
    assert remote["scales"][0]["sharding"] == spec  # the remote's info is left as it was


def test_a_coarser_scale_fetched_later_comes_back_in_its_place(mirror_env, tmp_path) -> None:
    """Fetched at mip 0 the local info lists only mip 0; a later fetch at mip 2 brings back the
    scales up to it, in the remote's places, and both read as the remote."""
    dest, (args, bucket, prefix) = tmp_path / "dest", EM65
    lo, hi = (3460, 3460, 14820), (3500, 3490, 14850)  # in 32,32,40 nm voxels (mip 2)
    box = ",".join(map(str, (*lo, *hi)))
    common = ["--bbox", box, "--bbox-resolution", "32,32,40", "--dest", str(dest), "--json"]
    info = dest / local_layer(bucket, prefix) / "info"

    assert fetch(*args, *common) == 0
    assert [s["key"] for s in json.loads(info.read_text())["scales"]] == ["8_8_40"]
    assert fetch(*args, *common, "--mip", "2") == 0
    keys = [s["key"] for s in json.loads(info.read_text())["scales"]]
    assert keys == ["8_8_40", "16_16_40", "32_32_40"]
    scale_box(mirror_env, bucket, prefix, 2, lo, hi, dest)
    scale_box(mirror_env, bucket, prefix, 0, (13840, 13840, 14820), (14000, 13960, 14850), dest)
