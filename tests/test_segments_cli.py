"""`fetch --segments` from the command line: meshes as cloud-volume reads them, skeletons."""

from __future__ import annotations

import json

import numpy as np
import pytest

from microns_get.cli.app import run


def test_meshes_by_id_read_back_like_the_remote(mirror_env, mini_microns, tmp_path, capsys) -> None:
    from cloudvolume import CloudVolume

    ids = mini_microns.meta["m1300_mesh_ids"][:2]
    arg = ",".join(map(str, ids))
    assert (
        run(
            [
                "fetch",
                "seg",
                "--version",
                "1300",
                "--segments",
                arg,
                "--meshes",
                "--dest",
                str(tmp_path),
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert sorted(s["segment_id"] for s in report["segments"]) == sorted(ids)
    local = CloudVolume(
        f"file://{tmp_path}/iarpa_microns/minnie/minnie65/seg_m1300", progress=False
    )
    remote = CloudVolume(
        f"precomputed://{mirror_env.gcs_endpoint}/iarpa_microns/minnie/minnie65/seg_m1300",
        progress=False,
    )
    for segment_id in ids:
        ours, theirs = (
            local.mesh.get(segment_id)[segment_id],
            remote.mesh.get(segment_id)[segment_id],
        )
        np.testing.assert_array_equal(ours.vertices, theirs.vertices)
        np.testing.assert_array_equal(ours.faces, theirs.faces)


def test_unknown_segment_is_reported_and_exit_1(mirror_env, tmp_path, capsys) -> None:
    code = run(
        [
            "fetch",
            "seg",
            "--version",
            "1300",
            "--segments",
            "12345",
            "--meshes",
            "--dest",
            str(tmp_path),
        ]
    )
    assert code == 1
    assert "12345: missing" in capsys.readouterr().err


def test_skeletons_by_root_and_by_nucleus(mirror_env, mini_microns, tmp_path) -> None:
    root = mini_microns.meta["swc_proofread"][0]
    assert (
        run(
            [
                "fetch",
                "skeletons",
                "--version",
                "1300",
                "--part",
                "proofread",
                "--segments",
                str(root),
                "--dest",
                str(tmp_path),
            ]
        )
        == 0
    )
    key = f"skel/swc/proofread/{root}.swc"
    landed = tmp_path / "microns-static-links" / key
    assert landed.read_bytes() == mini_microns.read("microns-static-links", key)
    assert (
        run(
            [
                "fetch",
                "skeletons",
                "--version",
                "661",
                "--nuclei",
                "292685",
                "--dest",
                str(tmp_path),
            ]
        )
        == 0
    )
    base = tmp_path / "iarpa_microns/minnie/minnie65/skeletons/v661"
    assert (base / "skeletons/864691135122603047_292685.swc").exists()
    assert (base / "metadata/864691135122603047_292685.json").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(
            ["seg", "--version", "1300", "--segments", "1,x", "--meshes"],
            "whole-number",
            id="bad-id",
        ),
        pytest.param(
            ["seg", "--version", "1300", "--segments", "1"], "--meshes", id="no-meshes-flag"
        ),
        pytest.param(
            ["nucleus-detection", "--segments", "1", "--meshes"], "segmentation", id="not-a-layer"
        ),
    ],
)
def test_bad_segment_requests(mirror_env, tmp_path, capsys, args, needle) -> None:
    assert run(["fetch", *args, "--dest", str(tmp_path / "d")]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
