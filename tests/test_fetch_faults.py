"""Whole-object fetches through a fault-injecting proxy in front of real local servers.

Every case must end with byte-identical files and nothing corrupt under a final name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fetch_helpers import (
    STACKS,
    ScratchS3,
    done_items,
    done_parts,
    env_without_config,
    local_files,
    random_bytes,
    ranged_bytes,
    temp_files,
)

from microns_get.cli.app import run
from microns_get.testing.faultproxy import FaultRule, slow_down, too_many_requests

MIB = 1 << 20
BIG_KEY = STACKS + "stack_big.tif"
BIG = random_bytes(6 * MIB + 12345, seed=1)
SMALL = {
    STACKS + f"small_{i:02d}.tif": random_bytes(20_000 + i * 977, seed=100 + i) for i in range(8)
}


@pytest.fixture
def scratch(scratch_endpoint: str) -> ScratchS3:
    s3 = ScratchS3(scratch_endpoint)
    s3.reset()
    s3.put(BIG_KEY, BIG)
    for key, data in SMALL.items():
        s3.put(key, data)
    return s3


def expected_tree() -> dict[str, bytes]:
    return {BIG_KEY: BIG, **SMALL}


def fetch_stacks(dest: Path, *extra: str) -> int:
    return run(["fetch", "structural-stacks", "--dest", str(dest), "--json", *extra])


def finished_event(capsys) -> dict:
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    return [e for e in lines if e["event"] == "RunFinished"][-1]


def test_clean_fetch_is_byte_identical(proxy, tmp_path, capsys) -> None:
    assert fetch_stacks(tmp_path, "--part-size", "1M") == 0
    assert local_files(tmp_path) == expected_tree()
    done = finished_event(capsys)
    assert done["objects_done"] == 9 and done["retries"] == 0
    assert not temp_files(tmp_path)


@pytest.mark.parametrize("direct_io", ["auto", "off"])
def test_large_parts_are_written_with_o_direct_unless_turned_off(
    proxy, tmp_path, capsys, monkeypatch, direct_io: str
) -> None:
    from microns_get.transfer import parts

    opened: list[int | None] = []

    def spy(path: Path) -> int | None:
        opened.append(parts_open_direct(path))
        return opened[-1]

    parts_open_direct = parts.open_direct
    monkeypatch.setattr(parts, "open_direct", spy)
    monkeypatch.setenv("MICRONS_GET_DIRECT_IO", direct_io)
    assert fetch_stacks(tmp_path, "--part-size", "1M") == 0
    assert local_files(tmp_path) == expected_tree()
    if direct_io == "auto":  # the one large object; pytest's tmp dir allows O_DIRECT
        assert len(opened) == 1 and opened[0] is not None
    else:
        assert opened == []


@pytest.mark.parametrize(
    "rule",
    [
        pytest.param(slow_down(probability=0.3, seed=7, method="GET"), id="503-slowdown"),
        pytest.param(
            too_many_requests(retry_after=1, times=2, only_ranged=True), id="429-retry-after"
        ),
        pytest.param(
            FaultRule("reset", after_bytes=5000, times=3, only_ranged=True), id="reset-mid-body"
        ),
        pytest.param(
            FaultRule("truncate", after_bytes=700, times=3, only_ranged=True), id="short-body"
        ),
        pytest.param(
            FaultRule("wrong_content_range", shift=512, times=2, only_ranged=True),
            id="wrong-content-range",
        ),
        pytest.param(
            FaultRule("flip_byte", at=100, times=2, path_contains="small_03"), id="flipped-byte"
        ),
        pytest.param(
            FaultRule("flip_byte", at=4321, times=1, path_contains="stack_big"),
            id="flipped-byte-in-a-part",
        ),
    ],
)
def test_faults_end_with_identical_files(proxy, tmp_path, capsys, rule) -> None:
    proxy.add_rule(rule)
    assert fetch_stacks(tmp_path, "--part-size", "1M", "--jobs", "4") == 0
    assert local_files(tmp_path) == expected_tree()
    assert not temp_files(tmp_path)
    assert rule.fired >= 1
    assert finished_event(capsys)["retries"] >= 1


def test_rerun_moves_nothing(proxy, tmp_path, capsys) -> None:
    assert fetch_stacks(tmp_path) == 0
    capsys.readouterr()
    proxy.reset_stats()
    assert fetch_stacks(tmp_path) == 0
    done = finished_event(capsys)
    assert done["objects_skipped"] == 9 and done["bytes_moved"] == 0
    assert ranged_bytes(proxy.stats.log, "stack") == 0


def test_object_replaced_between_parts_restarts_from_the_new_version(
    proxy, scratch, tmp_path, capsys
) -> None:
    # Hold the second part of the big object while the test replaces the object upstream.
    proxy.add_rule(
        FaultRule(
            "delay", seconds=1.5, path_contains="stack_big", only_ranged=True, skip_first=1, times=1
        )
    )
    replacement = random_bytes(len(BIG), seed=99)
    replaced = threading.Timer(0.5, lambda: scratch.put(BIG_KEY, replacement))
    replaced.start()
    code = fetch_stacks(tmp_path, "--part-size", "1M", "--jobs", "1", "--include", "stack_big*")
    replaced.join()
    assert code == 0
    assert local_files(tmp_path) == {BIG_KEY: replacement}
    assert finished_event(capsys)["retries"] >= 1


def test_listing_keys_that_escape_dest_are_refused(proxy, scratch, tmp_path, capsys) -> None:
    scratch.put(STACKS + "../../../../escape.txt", b"evil")
    dest = tmp_path / "dest"
    assert fetch_stacks(dest) == 2
    err = capsys.readouterr().err
    assert "escape" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "escape.txt").exists()
    assert not dest.exists() or not local_files(dest)


def _kill_when(
    proc: subprocess.Popen, ready, timeout: float = 60, sig: int = signal.SIGKILL
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"fetch ended before the kill: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("fetch made no progress")
        time.sleep(0.05)
    os.kill(proc.pid, sig)
    proc.wait(timeout=timeout)


def _spawn_fetch(dest: Path, proxy_url: str, *args: str) -> subprocess.Popen:
    env = env_without_config({"MICRONS_GET_S3_ENDPOINT": proxy_url, "HOME": str(dest.parent)})
    command = [
        sys.executable,
        "-m",
        "microns_get",
        "fetch",
        "structural-stacks",
        "--dest",
        str(dest),
    ]
    return subprocess.Popen(
        [*command, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def test_kill_9_mid_large_object_then_rerun_fetches_only_unfinished_parts(
    proxy, tmp_path, capsys
) -> None:
    dest = tmp_path / "dest"
    proxy.add_rule(FaultRule("throttle", bytes_per_sec=1_500_000, path_contains="stack_big"))
    proc = _spawn_fetch(
        dest, proxy.url, "--part-size", "1M", "--jobs", "2", "--include", "stack_big*"
    )
    _kill_when(proc, lambda: done_parts(dest) >= 2)
    finished_before_kill = done_parts(dest)
    assert BIG_KEY not in local_files(dest)  # nothing under the final name
    assert temp_files(dest)
    proxy.clear_rules()
    proxy.wait_idle()  # the killed client's requests may still be draining
    proxy.reset_stats()
    assert fetch_stacks(dest, "--part-size", "1M", "--include", "stack_big*") == 0
    assert local_files(dest) == {BIG_KEY: BIG}
    parts = -(-len(BIG) // MIB)
    refetched = ranged_bytes(proxy.stats.log, "stack_big")
    assert refetched <= len(BIG) - finished_before_kill * MIB
    assert refetched >= (parts - finished_before_kill - 1) * MIB
    assert not temp_files(dest)


def test_kill_9_mid_many_small_objects_then_rerun(proxy, tmp_path, capsys) -> None:
    dest = tmp_path / "dest"
    proxy.add_rule(FaultRule("delay", seconds=0.3, path_contains="small_"))
    proc = _spawn_fetch(dest, proxy.url, "--jobs", "2", "--exclude", "stack_big*")
    _kill_when(proc, lambda: done_items(dest) >= 2)
    finished_before_kill = done_items(dest)
    for key, data in local_files(dest).items():
        assert SMALL[key] == data  # whatever is under a final name is complete
    proxy.clear_rules()
    proxy.wait_idle()  # the killed client's requests may still be draining
    proxy.reset_stats()
    assert fetch_stacks(dest, "--exclude", "stack_big*") == 0
    assert local_files(dest) == SMALL
    done = finished_event(capsys)
    assert done["objects_skipped"] >= finished_before_kill
    fetched_again = {r.path for r in proxy.stats.log if r.method == "GET" and "small_" in r.path}
    assert len(fetched_again) == len(SMALL) - done["objects_skipped"]


@pytest.mark.parametrize(
    ("args", "slow"),
    [
        (("--jobs", "2", "--exclude", "stack_big*"), FaultRule("delay", seconds=0.3)),
        (
            ("--part-size", "1M", "--include", "stack_big*"),
            FaultRule("throttle", bytes_per_sec=1_500_000),
        ),
    ],
    ids=["many-small-objects", "large-object"],
)
def test_ctrl_c_stops_cleanly_and_a_rerun_completes(proxy, tmp_path, args, slow) -> None:
    """SIGINT while reader threads are busy: exit 130 saying so, the threads stopped before the
    process exits, nothing incomplete under a final name, and a rerun finishes the rest."""
    dest = tmp_path / "dest"
    proxy.add_rule(slow)
    proc = _spawn_fetch(dest, proxy.url, *args)
    if "--exclude" in args:  # small objects are recorded in batches: watch the progress lines
        _kill_when(proc, lambda: " done " in proc.stderr.readline(), sig=signal.SIGINT)
    else:
        _kill_when(proc, lambda: done_parts(dest) >= 1, sig=signal.SIGINT)
    err = proc.stderr.read()
    assert proc.returncode == 130, err
    assert "error: interrupted" in err.strip().splitlines()[-1], err
    wanted = SMALL if "--exclude" in args else {BIG_KEY: BIG}
    got = local_files(dest)
    assert len(got) < len(wanted)  # it was stopped mid-run
    for key, data in got.items():
        assert wanted[key] == data
    if "--exclude" in args:  # every object that landed was recorded before the exit
        assert done_items(dest) == len(got)
    proxy.clear_rules()
    proxy.wait_idle()
    assert fetch_stacks(dest, *args) == 0
    assert local_files(dest) == wanted
    assert not temp_files(dest)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_disk_is_one_clear_error_and_a_rerun_completes(proxy, small_disk, capsys) -> None:
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (4 * MIB))  # leaves too little room for the 6 MiB object
    dest = small_disk / "dest"
    code = run(["fetch", "structural-stacks", "--dest", str(dest), "--part-size", "1M"])
    err = capsys.readouterr().err
    assert code == 1
    assert "no space left" in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1
    assert BIG_KEY not in local_files(dest)
    filler.unlink()
    assert fetch_stacks(dest, "--part-size", "1M") == 0
    assert local_files(dest) == expected_tree()


def _multipart_put(scratch: ScratchS3, key: str, data: bytes, part_size: int) -> str:
    client = scratch.client
    upload = client.create_multipart_upload(Bucket="bossdb-open-data", Key=key)
    parts = []
    for number, start in enumerate(range(0, len(data), part_size), 1):
        body = data[start : start + part_size]
        etag = client.upload_part(
            Bucket="bossdb-open-data",
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=body,
        )["ETag"]
        parts.append({"ETag": etag, "PartNumber": number})
    done = client.complete_multipart_upload(
        Bucket="bossdb-open-data",
        Key=key,
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": parts},
    )
    return done["ETag"].strip('"')


def test_multipart_object_downloads_in_its_upload_part_size(
    proxy, scratch, tmp_path, capsys
) -> None:
    data = random_bytes(12 * MIB + 777, seed=5)
    key = STACKS + "multi.tif"
    etag = _multipart_put(scratch, key, data, 5 * MIB)
    assert etag.endswith("-3")
    assert fetch_stacks(tmp_path, "--include", "multi*") == 0  # default part size: 64 MiB
    assert local_files(tmp_path) == {key: data}
    events = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    done = [e for e in events if e["event"] == "ItemDone"][0]
    assert done["verified_by"] == "s3-multipart-etag"
    assert "while downloading" in done["detail"]  # no second read of the file
    ranges = [r.range for r in proxy.stats.log if "multi" in r.path and r.range]
    assert sorted(ranges)[0] == f"bytes=0-{5 * MIB - 1}"


def test_unreproducible_multipart_etag_needs_two_identical_downloads(
    proxy, scratch, tmp_path, capsys
) -> None:
    data = random_bytes(12 * MIB, seed=6)
    key = STACKS + "odd.tif"
    _multipart_put(scratch, key, data, 5 * MIB + 512 * 1024)  # an unusual uploader part size
    assert fetch_stacks(tmp_path, "--include", "odd*") == 0
    assert local_files(tmp_path) == {key: data}
    done = finished_event(capsys)
    assert done["verified_by"] == {"size-only": 1} and done["retries"] >= 1


def test_complete_unrecorded_file_is_adopted_not_fetched(proxy, tmp_path, capsys) -> None:
    (tmp_path / STACKS).mkdir(parents=True)
    for key, data in SMALL.items():
        (tmp_path / key).write_bytes(data)  # as another tool, or a run killed before recording
    (tmp_path / STACKS / "small_05.tif").write_bytes(b"x" * len(SMALL[STACKS + "small_05.tif"]))
    assert fetch_stacks(tmp_path, "--exclude", "stack_big*") == 0
    assert local_files(tmp_path) == SMALL
    done = finished_event(capsys)
    assert done["objects_skipped"] == len(SMALL) - 1 and done["objects_done"] == 1
    fetched = {r.path for r in proxy.stats.log if r.method == "GET" and "small_" in r.path}
    assert fetched == {f"/bossdb-open-data/{STACKS}small_05.tif"}
