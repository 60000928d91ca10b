"""The command line as a user runs it: list, info against both servers, config, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from microns_get.cli.app import run

REFERENCE_URLS = Path(__file__).parent / "data" / "catalogue_cloudpaths.txt"


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def collect_strings(value) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set().union(*(collect_strings(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(collect_strings(v) for v in value)) if value else set()
    return set()


def test_list_json_holds_every_catalogue_cloudpath(capsys) -> None:
    code, out, _ = cli(capsys, "list", "--json")
    assert code == 0
    entries = json.loads(out)
    found = collect_strings(entries)
    expected = set(REFERENCE_URLS.read_text().split())
    assert len(expected) == 41
    assert expected <= found
    ids = {e["id"] for e in entries}
    assert {"em", "seg", "graphene", "skeletons", "digital-twin-csv"} <= ids


def test_list_table_and_filters(capsys) -> None:
    code, out, _ = cli(capsys, "list", "--volume", "minnie35")
    assert code == 0 and "em" in out and "nucleus-detection" not in out
    code, out, _ = cli(capsys, "list", "--kind", "table", "--json")
    assert code == 0 and {e["kind"] for e in json.loads(out)} == {"table"}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["info", "segg"], "did you mean: seg", id="unknown-dataset"),
        pytest.param(["info", "seg", "--version", "12"], "valid versions: 117", id="bad-version"),
        pytest.param(["info", "em", "--volume", "minnie99"], "minnie65", id="bad-volume"),
        pytest.param(["list", "--kind", "movies"], "kind", id="bad-kind"),
        pytest.param(["info"], "Missing argument", id="missing-argument"),
        pytest.param(["info", "em", "--nonsense"], "No such option", id="unknown-option"),
        pytest.param(["fetch", "graphene"], "CAVEclient", id="graphene-not-static"),
        pytest.param(["fetch", "em", "--jobs", "0"], "jobs", id="bad-jobs"),
        pytest.param(["fetch", "em", "--part-size", "lots"], "not a size", id="bad-part-size"),
        pytest.param(["fetch", "em", "--mirror", "ftp://x"], "mirror", id="bad-mirror"),
        pytest.param(
            ["fetch", "skeletons", "--version", "1300", "--part", "x"], "proofread", id="bad-part"
        ),
        pytest.param(["fetch", "seg", "--version", "1300", "--mirror", "s3"], "no s3", id="no-s3"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    capsys, mirror_env, tmp_path, args, needle
) -> None:
    dest = tmp_path / "dest"
    code, out, err = cli(capsys, *args, *(["--dest", str(dest)] if args[0] == "fetch" else []))
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("microns-get: error: ")
    assert not dest.exists()


def test_info_seg_1300_reads_remote_scales_from_gcs(capsys, mirror_env, mini_microns) -> None:
    code, out, _ = cli(capsys, "info", "seg", "--version", "1300", "--json")
    assert code == 0
    facts = json.loads(out)["live"][""]
    remote = mini_microns.info("iarpa_microns", "minnie/minnie65/seg_m1300")
    assert [s["key"] for s in facts["info"]["scales"]] == [s["key"] for s in remote["scales"]]
    for ours, theirs in zip(facts["info"]["scales"], remote["scales"], strict=True):
        assert ours["size"] == theirs["size"]
        assert ours["voxel_offset"] == theirs["voxel_offset"]
        assert ours["chunk_sizes"] == theirs["chunk_sizes"]
        assert ours["encoding"] == theirs["encoding"]
        assert ours["sharding"]["hash"] == theirs["sharding"]["hash"]
    assert facts["mesh"]["@type"] == "neuroglancer_multilod_draco"
    assert facts["mesh"]["sharding"]["preshift_bits"] == 6
    assert facts["fetched_from"].startswith(mirror_env.gcs_endpoint)


@pytest.mark.parametrize("mirror", ["s3", "gcs"])
def test_info_em_from_each_mirror(capsys, mirror_env, mini_microns, mirror) -> None:
    code, out, _ = cli(capsys, "info", "em", "--mirror", mirror, "--json")
    assert code == 0
    facts = json.loads(out)["live"][""]
    remote = mini_microns.info("bossdb-open-data", "iarpa_microns/minnie/minnie65/em")
    assert [s["key"] for s in facts["info"]["scales"]] == [s["key"] for s in remote["scales"]]
    endpoint = mirror_env.s3_endpoint if mirror == "s3" else mirror_env.gcs_endpoint
    assert facts["fetched_from"].startswith(endpoint)


def test_info_table_output(capsys, mirror_env) -> None:
    code, out, _ = cli(capsys, "info", "em")
    assert code == 0
    assert "8_8_40" in out and "scales" in out and "sharding" in out


def test_info_object_set_counts_a_listing(capsys, mirror_env, mini_microns) -> None:
    code, out, _ = cli(capsys, "info", "skeletons", "--version", "1300", "--json")
    assert code == 0
    live = json.loads(out)["live"]
    for part in ("proofread", "dendrite"):
        keys = mini_microns.keys("microns-static-links", f"skel/swc/{part}/")
        assert live[part]["object_count"] == len(keys)
        expected = sum(len(mini_microns.read("microns-static-links", k)) for k in keys)
        assert live[part]["total_bytes"] == expected


def test_info_single_file_heads_size_and_checksum(capsys, mirror_env, mini_microns) -> None:
    code, out, _ = cli(capsys, "info", "nucleus-detection", "--json")
    assert code == 0
    obj = json.loads(out)["live"][""]["object"]
    key = "iarpa_microns/minnie/minnie65/nucleus_detection/nucleus_detection_v0.csv"
    assert obj["size"] == len(mini_microns.read("bossdb-open-data", key))
    assert obj["md5_base64"]


def test_info_https_file_through_rewrite(capsys, mirror_env, mini_microns) -> None:
    code, out, _ = cli(capsys, "info", "ground-truth", "--json")
    assert code == 0
    live = json.loads(out)["live"][""]
    assert live["fetched_from"].startswith(mirror_env.http_base)
    assert live["object"]["size"] == len(
        mini_microns.read("zenodo.org", "record/5760218/files/minnie.tar.gz")
    )


def test_info_graphene_needs_no_network(capsys, monkeypatch) -> None:
    monkeypatch.setenv("MICRONS_GET_GCS_ENDPOINT", "http://127.0.0.1:9")
    code, out, _ = cli(capsys, "info", "graphene", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["nearest_static"] == "1300" and data["access"]


def test_info_fails_over_when_first_mirror_is_dead(capsys, mirror_env, monkeypatch) -> None:
    monkeypatch.setenv("MICRONS_GET_S3_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("MICRONS_GET_RETRIES", "1")
    code, out, _ = cli(capsys, "info", "em", "--json")
    assert code == 0
    live = json.loads(out)["live"][""]
    assert live["fetched_from"].startswith(mirror_env.gcs_endpoint)
    assert live["failed_mirrors"][0]["mirror"].startswith("s3://")


def test_info_with_every_mirror_dead_is_a_remote_error(capsys, monkeypatch) -> None:
    monkeypatch.setenv("MICRONS_GET_S3_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("MICRONS_GET_GCS_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("MICRONS_GET_RETRIES", "1")
    code, _, err = cli(capsys, "info", "em")
    assert code == 5
    assert "no mirror of em answered" in err and len(err.strip().splitlines()) == 1


def test_config_shows_where_each_value_came_from(capsys, tmp_path, monkeypatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("jobs: 7\ngcs_endpoint: http://file:1\ns3_endpoint: http://file:2\n")
    monkeypatch.setenv("MICRONS_GET_GCS_ENDPOINT", "http://env:3")
    monkeypatch.delenv("MICRONS_GET_S3_ENDPOINT", raising=False)
    code, out, _ = cli(
        capsys, "--config", str(config), "--s3-endpoint", "http://flag:4", "config", "--json"
    )
    assert code == 0
    settings = json.loads(out)["settings"]
    assert settings["s3_endpoint"] == {"value": "http://flag:4", "from": "flag"}
    assert settings["gcs_endpoint"] == {
        "value": "http://env:3",
        "from": "env MICRONS_GET_GCS_ENDPOINT",
    }
    assert settings["jobs"] == {"value": 7, "from": f"config {config}"}
    assert settings["retries"]["from"] == "default"


def test_bad_config_file_is_exit_2(capsys, tmp_path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("jobz: 3\n")
    code, _, err = cli(capsys, "--config", str(config), "config")
    assert code == 2 and "jobz" in err


def test_module_entry_point_runs() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "microns_get", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.startswith("microns-get ")


def test_json_output_is_streamed_but_the_same_text(capsys) -> None:
    """`print_json` writes in batches (a million-key plan) the text `json.dumps` would make."""
    from pathlib import PurePosixPath

    from microns_get.cli.render import print_json

    value = {"items": [{"path": PurePosixPath(f"k/{i}"), "size": i} for i in range(40_000)]}
    print_json(value)
    assert capsys.readouterr().out == json.dumps(value, indent=2, default=str) + "\n"
