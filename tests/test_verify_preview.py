"""`verify` and `preview` on data fetched from the local fixture servers: clean fetches verify,
each kind of damage is reported (exit 4), and a preview's pixels are the seeded EM section."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image

from microns_get.cli import local_cmds
from microns_get.cli.app import run
from microns_get.errors import MicronsGetError, exit_code_for
from microns_get.precomputed.sharding import compressed_morton
from microns_get.preview import extent, open_layer
from microns_get.verify.local import grid_of_chunk_id, verify_path

S3 = "bossdb-open-data"
EM = "iarpa_microns/minnie/minnie65/em"
SEG = "iarpa_microns/minnie/minnie65/seg"
CSV = "iarpa_microns/minnie/minnie65/nucleus_detection/nucleus_detection_v0.csv"
BOX = "13830,13840,14818,13930,13901,14845"  # 8,8,40 voxels: 4x3x2 EM chunks, with data


def cli(*args: str) -> int:
    """The two commands on a local typer app, with errors mapped as `app.run` maps them."""
    app = typer.Typer()
    app.command("verify")(local_cmds.verify)
    app.command("preview")(local_cmds.preview)
    try:
        result = app(list(args), standalone_mode=False, prog_name="microns-get")
    except MicronsGetError as exc:
        return exit_code_for(exc)
    return result if isinstance(result, int) else 0


@pytest.fixture(scope="module")
def fetched(mirrors, tmp_path_factory) -> dict[str, Path]:
    """Fetched once per module: an EM + seg cutout, an EM mip-1 cutout, the whole EM layer
    (shards as stored) and the nucleus table (one whole object). Tests damage copies."""
    root = tmp_path_factory.mktemp("fetched")
    dests = {name: root / name for name in ("cutout", "mip1", "whole", "table")}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in mirrors.env().items():
            mp.setenv(name, value)
        mp.delenv("MICRONS_GET_CONFIG", raising=False)
        mp.setenv("HOME", str(root))
        box = ["--bbox", BOX, "--bbox-resolution", "8,8,40", "--quiet"]
        assert run(["fetch", "em", *box, "--dest", str(dests["cutout"])]) == 0
        assert run(["fetch", "seg", "--version", "117", *box, "--dest", str(dests["cutout"])]) == 0
        assert run(["fetch", "em", "--mip", "1", *box, "--dest", str(dests["mip1"])]) == 0
        assert run(["fetch", "em", "--quiet", "--dest", str(dests["whole"])]) == 0
        assert run(["fetch", "nucleus-detection", "--quiet", "--dest", str(dests["table"])]) == 0
    return dests


@pytest.fixture
def copy_of(fetched, tmp_path):
    def make(name: str) -> Path:
        return Path(shutil.copytree(fetched[name], tmp_path / name))

    return make


def kinds(report) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in report.findings:
        out.setdefault(f.kind, set()).add(f.path)
    return out


def test_clean_fetches_verify_through_the_cli(fetched, capsys) -> None:
    for name in fetched:
        assert cli("verify", str(fetched[name])) == 0, capsys.readouterr().out
    capsys.readouterr()
    assert cli("verify", str(fetched["cutout"]), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["what"] == "dest" and report["findings"] == []
    assert report["checked"]["layers"] == 2 and report["checked"]["chunks decoded"] == 24 + 4
    assert cli("verify", str(fetched["cutout"] / EM)) == 0  # the layer alone
    assert "ok" in capsys.readouterr().out


def test_deleted_chunk_is_missing(copy_of, capsys) -> None:
    dest = copy_of("cutout")
    gone = "8_8_40/13824-13856_13824-13856_14816-14832"
    (dest / EM / gone).unlink()
    report = verify_path(dest)
    assert kinds(report) == {"missing": {f"{EM}/{gone}"}}
    assert verify_path(dest / EM).findings[0].path == gone  # the layer alone knows its plan too
    assert cli("verify", str(dest)) == 4
    out = capsys.readouterr().out
    assert f"FAIL missing: {EM}/{gone}: a plan expects it; checkpoint: done" in out
    local_cmds.print_table(report)  # what a terminal shows
    assert "missing" in capsys.readouterr().out


def test_truncated_and_bit_flipped_chunks_fail_to_decode(copy_of) -> None:
    dest = copy_of("cutout")
    short = dest / EM / "8_8_40/13920-13952_13856-13888_14832-14848"
    short.write_bytes(short.read_bytes()[:1000])
    # A raw chunk decodes whatever its bits; a compressed_segmentation header does not.
    flipped = next((dest / SEG / "8_8_40").iterdir())
    data = bytearray(flipped.read_bytes())
    data[0] ^= 0x40  # the channel offset word
    flipped.write_bytes(bytes(data))
    report = verify_path(dest)
    found = kinds(report)
    damaged = {f"{EM}/8_8_40/{short.name}", f"{SEG}/8_8_40/{flipped.name}"}
    assert found == {"decode": damaged, "checksum": damaged}
    assert "expected 16384 bytes, got 1000" in str(report.findings)


def test_bit_flip_in_a_raw_chunk_is_caught_by_its_recorded_md5(copy_of) -> None:
    dest = copy_of("cutout")
    chunk = dest / EM / "8_8_40/13920-13952_13856-13888_14832-14848"
    data = bytearray(chunk.read_bytes())
    data[100] ^= 0x01  # still a valid raw chunk: only the checksum can tell
    chunk.write_bytes(bytes(data))
    assert kinds(verify_path(dest)) == {"checksum": {f"{EM}/8_8_40/{chunk.name}"}}
    assert verify_path(dest, checksums=False).ok


def test_verify_reads_a_read_only_dest(fetched, tmp_path) -> None:
    dest = Path(shutil.copytree(fetched["cutout"], tmp_path / "ro"))
    for path in [dest, *dest.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        before = sorted(p.name for p in (dest / ".microns-get").iterdir())
        assert verify_path(dest).ok
        assert sorted(p.name for p in (dest / ".microns-get").iterdir()) == before
    finally:
        for path in [dest, *dest.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)


def test_off_grid_and_unplanned_chunks(copy_of) -> None:
    dest = copy_of("cutout")
    chunk = dest / EM / "8_8_40/13888-13920_13888-13920_14832-14848"
    shutil.copy(chunk, chunk.with_name("13890-13920_13888-13920_14832-14848"))
    shutil.copy(chunk, chunk.with_name("1-33_0-32_0-16"))
    report = verify_path(dest)
    assert set(kinds(report)) == {"grid", "extra"}
    assert "not a cell of the 32x32x16 chunk grid" in str(report.findings)
    assert "not inside the volume" in str(report.findings)


def test_corrupted_info_is_a_schema_error(copy_of, capsys) -> None:
    dest = copy_of("cutout")
    info = json.loads((dest / EM / "info").read_text())
    info["scales"][0]["chunk_sizes"] = [[32, 32]]
    (dest / EM / "info").write_text(json.dumps(info))
    report = verify_path(dest)
    assert set(kinds(report)) == {"schema"}
    assert "chunk_sizes[0]" in report.findings[0].detail
    assert cli("verify", str(dest / EM / "info")) == 4


def test_whole_layer_shards_verify_and_a_bad_index_is_reported(fetched, copy_of) -> None:
    report = verify_path(fetched["whole"])
    assert report.ok, report.findings
    assert report.checked["shards"] == 30 and report.checked["minishard indexes"] > 30
    assert report.checked["sampled chunks decoded"] > 30
    assert report.checked["verified by md5+crc32c"] == 31
    dest = copy_of("whole")
    shard = dest / EM / "8_8_40/01.shard"
    data = bytearray(shard.read_bytes())
    struct.pack_into("<QQ", data, 16, 500, 100)  # minishard 1 ends before it starts
    shard.write_bytes(bytes(data))
    report = verify_path(dest, checksums=False)
    assert kinds(report) == {"shard": {f"{EM}/8_8_40/01.shard"}}
    assert "minishard 1 ends before it starts" in report.findings[0].detail
    assert set(kinds(verify_path(dest))) == {"shard", "checksum"}
    assert set(kinds(verify_path(shard))) == {"shard", "checksum"}  # the file alone


def test_changed_whole_object_is_a_checksum_mismatch(copy_of, capsys) -> None:
    dest = copy_of("table")
    path = dest / CSV
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    assert kinds(verify_path(dest)) == {"checksum": {CSV}}
    assert "md5 mismatch" in verify_path(path).findings[0].detail
    assert verify_path(dest, checksums=False).ok
    assert cli("verify", str(dest)) == 4
    path.unlink()
    assert kinds(verify_path(dest)) == {"missing": {CSV}}


def test_bad_verify_paths_are_exit_2(tmp_path) -> None:
    assert cli("verify", str(tmp_path / "nope")) == 2
    assert cli("verify", str(tmp_path)) == 2
    (tmp_path / "stray.txt").write_text("x")
    assert cli("verify", str(tmp_path / "stray.txt")) == 2


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_preview_pixels_are_the_em_section(fetched, mini_microns, tmp_path, capsys) -> None:
    out = tmp_path / "slice.png"
    assert cli("preview", str(fetched["cutout"] / EM), "--out", str(out)) == 0
    assert f"wrote {out}: scale 8_8_40, x 13824..13952, y 13824..13920, z 14832" in (
        capsys.readouterr().out
    )
    with Image.open(out) as image:
        assert image.size == (128, 96) and image.mode == "L"
        pixels = np.asarray(image)
    em = mini_microns.expected_array(S3, EM, "8_8_40")  # [x, y, z] from the volume offset
    np.testing.assert_array_equal(pixels, em[0:128, 0:96, 14832 - 14816].T)


def test_preview_of_whole_layer_shards(fetched, mini_microns, tmp_path) -> None:
    out = tmp_path / "whole.png"
    assert cli("preview", str(fetched["whole"] / EM), "--z", "14850", "--out", str(out)) == 0
    em = mini_microns.expected_array(S3, EM, "8_8_40")
    np.testing.assert_array_equal(read_png(out)[..., 0], em[:, :, 14850 - 14816].T)


def seg_truth(mini_microns, fetched, xs: np.ndarray, ys: np.ndarray, z: int) -> np.ndarray:
    """Seeded seg labels at 8,8,40 voxels (xs, ys, z), 0 outside the fetched seg chunks."""
    seg = open_layer(fetched["cutout"] / SEG, "segmentation")
    scale = seg.info.scales[0]
    box = extent(seg, scale)
    labels = mini_microns.expected_array(S3, SEG, scale.key)
    off = scale.voxel_offset
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    inside = (gx >= box.lo[0]) & (gx < box.hi[0]) & (gy >= box.lo[1]) & (gy < box.hi[1])
    got = np.zeros(gx.shape, dtype=labels.dtype)
    got[inside] = labels[gx[inside] - off[0], gy[inside] - off[1], z - off[2]]
    return got.T


def changed_where(plain: Path, overlaid: Path) -> np.ndarray:
    return (read_png(plain) != read_png(overlaid)).any(axis=-1)


@pytest.mark.parametrize(
    ("name", "zoom", "size"), [("cutout", 1, (128, 96)), ("mip1", 2, (64, 64))]
)
def test_seg_overlay_changes_only_labelled_pixels(
    fetched, mini_microns, tmp_path, name, zoom, size
) -> None:
    layer, seg = fetched[name] / EM, fetched["cutout"] / SEG
    plain, overlaid = tmp_path / "plain.png", tmp_path / "seg.png"
    assert cli("preview", str(layer), "--out", str(plain)) == 0
    assert cli("preview", str(layer), "--seg", str(seg), "--out", str(overlaid)) == 0
    with Image.open(overlaid) as image:
        assert image.size == size
    box = extent(open_layer(layer, "image"), open_layer(layer, "image").info.scales[zoom - 1])
    # Nearest neighbour: an image voxel takes the label of the seg voxel under its centre.
    xs = np.floor((np.arange(box.lo[0], box.hi[0]) + 0.5) * zoom).astype(int)
    ys = np.floor((np.arange(box.lo[1], box.hi[1]) + 0.5) * zoom).astype(int)
    labelled = seg_truth(mini_microns, fetched, xs, ys, (box.lo[2] + box.hi[2]) // 2) != 0
    changed = changed_where(plain, overlaid)
    assert labelled.any() and (~labelled).any()
    assert not (changed & ~labelled).any()
    assert changed.sum() >= 0.95 * labelled.sum()


@pytest.mark.parametrize(
    "args",
    [
        ["--z", "14900"],
        ["--mip", "2"],
        ["--scale", "9_9_40"],
        ["--scale", "8_8_40", "--mip", "0"],
        ["--seg", "{em}"],
    ],
    ids=["z-outside", "no-chunks", "no-scale", "scale-and-mip", "seg-is-image"],
)
def test_bad_preview_input_is_exit_2_and_writes_nothing(fetched, tmp_path, args) -> None:
    out = tmp_path / "slice.png"
    em = str(fetched["cutout"] / EM)
    args = [a.format(em=em) for a in args]
    assert cli("preview", em, *args, "--out", str(out)) == 2
    assert cli("preview", str(fetched["cutout"] / SEG), "--out", str(out)) == 2
    assert cli("preview", str(tmp_path), "--out", str(out)) == 2
    assert list(tmp_path.iterdir()) == []


def test_chunk_id_round_trip() -> None:
    shape = (5, 3, 9)
    for x in range(5):
        for y in range(3):
            for z in range(9):
                assert grid_of_chunk_id(compressed_morton((x, y, z), shape), shape) == (x, y, z)
    assert grid_of_chunk_id(1 << 20, shape) is None
