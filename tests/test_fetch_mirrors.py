"""Mirror choice and failover, GCS fidelity, and the plan / mirrors commands, against the
session's S3 (moto) and GCS (fake-gcs-server) servers, with fault proxies in front."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fetch_helpers import local_files

from microns_get.cli.app import run
from microns_get.testing.faultproxy import FaultProxy, FaultRule

EM = "iarpa_microns/minnie/minnie65/em/"


def seed_tree(mini_microns, bucket: str, prefix: str, local_prefix: str) -> dict[str, bytes]:
    return {
        local_prefix + key[len(prefix) :]: mini_microns.read(bucket, key)
        for key in mini_microns.keys(bucket, prefix)
    }


def last_event(capsys) -> dict:
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    return lines[-1]


@pytest.fixture
def proxies(mirrors, mirror_env, monkeypatch) -> Iterator[tuple[FaultProxy, FaultProxy]]:
    with FaultProxy(mirrors.s3_endpoint) as s3, FaultProxy(mirrors.gcs_endpoint) as gcs:
        monkeypatch.setenv("MICRONS_GET_S3_ENDPOINT", s3.url)
        monkeypatch.setenv("MICRONS_GET_GCS_ENDPOINT", gcs.url)
        yield s3, gcs


def test_slow_mirror_loses_the_probe(proxies, mini_microns, tmp_path, capsys) -> None:
    s3, gcs = proxies
    gcs.add_rule(FaultRule("delay", seconds=0.3))  # fake-gcs is normally the faster server
    assert run(["fetch", "em", "--dest", str(tmp_path), "--json"]) == 0
    done = last_event(capsys)
    assert done["mirrors_used"] == {"s3": done["objects_done"]}
    expected = seed_tree(mini_microns, "bossdb-open-data", EM, EM)
    assert local_files(tmp_path) == expected


def test_mirrors_command_ranks_by_measurement(proxies, capsys) -> None:
    s3, gcs = proxies
    gcs.add_rule(FaultRule("delay", seconds=0.3))
    assert run(["mirrors", "em", "--json"]) == 0
    probes = json.loads(capsys.readouterr().out)
    assert [p["provider"] for p in probes] == ["s3", "gcs"]
    assert probes[1]["latency_s"] >= 0.3
    s3.clear_rules()
    gcs.clear_rules()
    s3.add_rule(FaultRule("delay", seconds=0.3))
    assert run(["mirrors", "em", "--json"]) == 0
    assert [p["provider"] for p in json.loads(capsys.readouterr().out)] == ["gcs", "s3"]


def test_mirror_dying_mid_run_fails_over(
    proxies, mini_microns, tmp_path, capsys, monkeypatch
) -> None:
    s3, gcs = proxies
    monkeypatch.setenv("MICRONS_GET_RETRIES", "2")
    gcs.add_rule(FaultRule("delay", seconds=0.5, times=2))  # S3 wins the probe ...
    s3.add_rule(FaultRule("dead", path_contains="8_8_40/"))  # ... then serves no 8_8_40 shard
    assert run(["fetch", "em", "--dest", str(tmp_path), "--json"]) == 0
    done = last_event(capsys)
    assert done["objects_failed"] == 0
    shards = [k for k in mini_microns.keys("bossdb-open-data", EM + "8_8_40/")]
    assert done["mirrors_used"].get("gcs", 0) >= len(shards)
    assert local_files(tmp_path) == seed_tree(mini_microns, "bossdb-open-data", EM, EM)


def test_every_mirror_dead_fails_cleanly(proxies, tmp_path, capsys, monkeypatch) -> None:
    s3, gcs = proxies
    monkeypatch.setenv("MICRONS_GET_RETRIES", "1")
    for proxy in proxies:
        proxy.add_rule(FaultRule("dead"))
    code = run(["fetch", "em", "--dest", str(tmp_path / "d")])
    assert code == 5
    assert not (tmp_path / "d").exists()


def test_gcs_objects_land_as_stored_and_verify_by_crc32c(
    mirror_env, mini_microns, tmp_path, capsys
) -> None:
    prefix = "minnie/minnie65/nuclei/"
    assert run(["fetch", "nuclei", "--mirror", "gcs", "--dest", str(tmp_path), "--json"]) == 0
    done = last_event(capsys)
    assert set(done["verified_by"]) == {"md5+crc32c"}
    local = "iarpa_microns/minnie/minnie65/nuclei/"
    expected = seed_tree(mini_microns, "iarpa_microns", prefix, local)
    got = local_files(tmp_path)
    assert got == expected
    gzipped = [k for k in expected if expected[k][:2] == b"\x1f\x8b"]
    assert gzipped, "the nuclei chunks are stored gzip-encoded"


def test_plan_json_lists_objects_and_moves_nothing(
    mirror_env, mini_microns, tmp_path, capsys
) -> None:
    dest = tmp_path / "d"
    assert run(["plan", "skeletons", "--version", "661", "--json", "--dest", str(dest)]) == 0
    plan = json.loads(capsys.readouterr().out)
    keys = mini_microns.keys("bossdb-open-data", "iarpa_microns/minnie/minnie65/skeletons/v661/")
    assert sorted(i["path"] for i in plan["items"]) == sorted(keys)
    assert plan["summary"]["objects"] == len(keys)
    assert plan["plan_id"] == plan["summary"]["plan_id"]
    assert not dest.exists()


def test_dry_run_reports_egress(mirror_env, tmp_path, capsys) -> None:
    assert (
        run(["fetch", "em", "--dry-run", "--json", "--mirror", "s3", "--dest", str(tmp_path / "d")])
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["egress"]) == {"s3"}
    assert summary["egress"]["s3"]["bytes"] == summary["bytes"] > 0


def test_a_static_server_over_dest_is_itself_a_mirror(mirror_env, tmp_path, capsys) -> None:
    from microns_get.testing.servers import static_http_server

    first, second = tmp_path / "first", tmp_path / "second"
    box = ["--bbox", "13830,13840,14818,13930,13901,14845", "--bbox-resolution", "8,8,40"]
    assert run(["fetch", "nucleus-detection", "--dest", str(first), "--quiet"]) == 0
    assert run(["fetch", "em", *box, "--dest", str(first), "--quiet"]) == 0
    with static_http_server(first) as base:
        assert run(["fetch", "nucleus-detection", "--mirror", base, "--dest", str(second)]) == 0
        assert run(["fetch", "em", *box, "--mirror", base, "--dest", str(second)]) == 0
    ours, theirs = local_files(first), local_files(second)
    assert ours == theirs and len(ours) > 10


def test_cutouts_read_from_the_measured_fastest_mirror(proxies, tmp_path, capsys) -> None:
    s3, gcs = proxies
    s3.add_rule(FaultRule("delay", seconds=0.3))
    box = ["--bbox", "13830,13840,14818,13930,13901,14845", "--bbox-resolution", "8,8,40"]
    assert run(["fetch", "em", *box, "--dry-run", "--json", "--dest", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["layer_url"].startswith("gs://")
    s3.clear_rules()
    gcs.add_rule(FaultRule("delay", seconds=0.3))
    assert run(["fetch", "em", *box, "--dry-run", "--json", "--dest", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["layer_url"].startswith("s3://")


def test_gcs_objects_in_parts_verify_from_the_parts_crc32cs(
    proxies, mini_microns, tmp_path, capsys
):
    """Parts hashed with CRC32C as they stream combine into the object's CRC32C: no second read.
    A flipped byte in one part is caught by that check and the object is fetched again."""
    _, gcs = proxies
    flip = gcs.add_rule(FaultRule("flip_byte", at=100, only_ranged=True, times=1))
    argv = ["fetch", "em", "--volume", "minnie35", "--mirror", "gcs", "--part-size", "32K"]
    assert run([*argv, "--dest", str(tmp_path), "--json"]) == 0
    done = last_event(capsys)
    assert flip.fired == 1 and done["retries"] >= 1
    prefix = "minnie/minnie35/em/"
    expected = seed_tree(mini_microns, "iarpa_microns", prefix, "iarpa_microns/" + prefix)
    assert local_files(tmp_path) == expected
    in_parts = [k for k, data in expected.items() if len(data) > 32 << 10]
    assert in_parts and done["verified_by"]["crc32c"] == len(in_parts)
