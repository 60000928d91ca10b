"""Mirroring for cron: incremental sync, deletes, locks, quota, bandwidth, jobs files.

Real local servers (moto behind the fault proxy); the rules themselves are also checked as
tables. Timing is asserted only loosely (the bandwidth cap), never as a speed test.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fetch_helpers import STACKS, ScratchS3, local_files, random_bytes

from microns_get.catalog import load_catalog
from microns_get.checkpoint.store import ItemRecord
from microns_get.cli.app import run
from microns_get.errors import ConfigError, LockHeld
from microns_get.mirror.bandwidth import Schedule, TokenBucket, parse_bwlimit
from microns_get.mirror.jobs import load_jobs
from microns_get.mirror.lock import DestLock, LockInfo, stale_reason
from microns_get.mirror.sync import (
    Change,
    Space,
    after_verify,
    classify,
    delete_decision,
    quota_problem,
)
from microns_get.plan.model import PlanItem, RemoteCopy
from microns_get.testing.faultproxy import FaultProxy, FaultRule
from microns_get.transfer.engine import content_identity

MIB = 1 << 20
SMALL = {STACKS + f"s_{i:02d}.tif": random_bytes(3000 + 97 * i, seed=500 + i) for i in range(10)}
BIG_KEY = STACKS + "big.tif"


@pytest.fixture
def scratch(scratch_endpoint: str) -> ScratchS3:
    s3 = ScratchS3(scratch_endpoint)
    s3.reset()
    for key, data in SMALL.items():
        s3.put(key, data)
    return s3


def sync(dest: Path, *extra: str) -> int:
    return run(["sync", "structural-stacks", "--dest", str(dest), "--json", *extra])


def summary(capsys) -> dict:
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    return [e for e in lines if e.get("event") == "MirrorSummary"][-1]


def job(capsys) -> dict:
    return summary(capsys)["jobs"][0]


def data_bytes(proxy: FaultProxy) -> int:
    """Body bytes of object reads (listings excluded)."""
    return sum(
        r.bytes_sent for r in proxy.stats.log if r.method == "GET" and "list-type" not in r.query
    )


def reports(dest: Path) -> list[dict]:
    folder = dest / ".microns-get" / "reports"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


# -- incremental ----------------------------------------------------------------------------


def test_added_changed_removed(proxy, scratch, tmp_path, capsys, monkeypatch) -> None:
    # Small listing pages and comparison pages: the listing is consumed as a stream.
    monkeypatch.setattr("microns_get.sources.s3.S3Source.page_size", 3)
    monkeypatch.setattr("microns_get.mirror.listing.PAGE", 4)
    dest = tmp_path / "dest"
    assert sync(dest) == 0
    assert job(capsys)["added"] == 10
    assert sum("list-type" in r.query for r in proxy.stats.log) >= 4  # paged: 10 keys, 3 a page
    keys = sorted(SMALL)
    new_key, changed_key, removed_key = STACKS + "s_new.tif", keys[0], keys[1]
    scratch.put(new_key, b"new object")
    scratch.put(changed_key, b"changed contents")
    scratch.client.delete_object(Bucket="bossdb-open-data", Key=removed_key)
    assert sync(dest) == 0
    result = job(capsys)
    assert (result["added"], result["changed"], result["deleted"]) == (1, 1, 0)
    assert result["unchanged"] == 8
    expected = {**SMALL, new_key: b"new object", changed_key: b"changed contents"}
    assert local_files(dest) == expected  # the removed object is kept without --delete
    report = reports(dest)[-1]
    assert report["totals"]["added"] == 1 and report["totals"]["changed"] == 1
    assert report["plan_ids"] and report["exit_code"] == 0 and report["duration_s"] >= 0


def test_nothing_changed_moves_zero_bytes_and_hashes_nothing(
    proxy, tmp_path, capsys, monkeypatch
) -> None:
    dest = tmp_path / "dest"
    assert sync(dest) == 0
    capsys.readouterr()
    proxy.reset_stats()

    def no_hashing(*args, **kwargs):
        raise AssertionError("an unchanged item was re-hashed")

    monkeypatch.setattr("microns_get.mirror.listing.verify_object", no_hashing)
    assert sync(dest) == 0
    result = job(capsys)
    assert result["unchanged"] == 10 and result["bytes"] == 0 and result["plan_ids"] == []
    assert data_bytes(proxy) == 0
    assert any("list-type" in r.query for r in proxy.stats.log)  # it did list


def test_checksum_refetches_a_corrupted_local_copy(proxy, tmp_path, capsys) -> None:
    dest = tmp_path / "dest"
    assert sync(dest) == 0
    victim = dest / sorted(SMALL)[3]
    data = bytearray(victim.read_bytes())
    data[10] ^= 0xFF
    victim.write_bytes(bytes(data))  # same size: only a hash can tell
    capsys.readouterr()
    assert sync(dest) == 0
    assert job(capsys)["unchanged"] == 10
    assert sync(dest, "--checksum") == 0
    result = job(capsys)
    assert result["changed"] == 1 and result["unchanged"] == 9
    assert local_files(dest) == SMALL


def test_existing_files_are_adopted_by_hash_not_refetched(proxy, tmp_path, capsys) -> None:
    dest = tmp_path / "dest"
    for key, data in SMALL.items():  # a tree made by another tool: no checkpoint
        (dest / key).parent.mkdir(parents=True, exist_ok=True)
        (dest / key).write_bytes(data)
    proxy.reset_stats()
    assert sync(dest) == 0
    assert job(capsys)["unchanged"] == 10
    assert data_bytes(proxy) == 0


# -- delete ---------------------------------------------------------------------------------


def _remove_remote(scratch: ScratchS3, keys: list[str]) -> None:
    for key in keys:
        scratch.client.delete_object(Bucket="bossdb-open-data", Key=key)


def test_delete_removes_what_the_remote_dropped(proxy, scratch, tmp_path, capsys) -> None:
    dest = tmp_path / "dest"
    (dest / STACKS).mkdir(parents=True)
    (dest / "unrelated.txt").write_text("outside the dataset root")
    assert sync(dest) == 0
    gone = sorted(SMALL)[5]
    _remove_remote(scratch, [gone])
    assert sync(dest, "--delete") == 0
    assert job(capsys)["deleted"] == 1
    assert not (dest / gone).exists()
    assert (dest / "unrelated.txt").exists()
    assert set(local_files(dest)) == {*SMALL, "unrelated.txt"} - {gone}


def test_delete_refused_after_a_failed_listing(
    proxy, scratch, tmp_path, capsys, monkeypatch
) -> None:
    dest = tmp_path / "dest"
    assert sync(dest) == 0
    gone = sorted(SMALL)[2]
    _remove_remote(scratch, [gone])
    monkeypatch.setenv("MICRONS_GET_RETRIES", "1")
    proxy.add_rule(FaultRule("status", status=503, query_contains="list-type"))
    capsys.readouterr()
    assert sync(dest, "--delete") == 5
    result = job(capsys)
    assert result["deleted"] == 0 and not result["listing_complete"]
    assert (dest / gone).exists()


def test_delete_over_the_share_needs_force(proxy, scratch, tmp_path, capsys) -> None:
    dest = tmp_path / "dest"
    assert sync(dest) == 0
    gone = sorted(SMALL)[:3]  # 30% of the tree > the default 10%
    _remove_remote(scratch, gone)
    capsys.readouterr()
    assert sync(dest, "--delete") == 1
    result = job(capsys)
    assert result["deleted"] == 0 and "refusing to delete 3 of 10" in result["errors"][0]
    assert all((dest / key).exists() for key in gone)
    assert sync(dest, "--delete", "--force") == 0
    assert job(capsys)["deleted"] == 3
    assert not any((dest / key).exists() for key in gone)


# -- lock -----------------------------------------------------------------------------------


def _write_lock(dest: Path, pid: int, started: float | None = None) -> Path:
    path = dest / ".microns-get" / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    info = LockInfo(socket.gethostname(), pid, started or time.time(), "t0")
    path.write_text(json.dumps(info.to_json()))
    return path


def test_second_run_while_locked_exits_3_naming_the_holder(proxy, tmp_path, capsys) -> None:
    dest = tmp_path / "dest"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(dest, holder.pid)
        assert sync(dest) == 3
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"pid {holder.pid}" in err[0] and socket.gethostname() in err[0]
        assert not local_files(dest)
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_dead_pid_is_taken_over(proxy, tmp_path, capsys) -> None:
    dest = tmp_path / "dest"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = _write_lock(dest, dead.pid)
    assert sync(dest) == 0
    out = capsys.readouterr().out
    assert "took over a stale lock" in out and f"pid {dead.pid}" in out
    assert not lock.exists()  # released at the end
    assert local_files(dest) == SMALL


def test_takeover_is_won_by_one_run_only(tmp_path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(tmp_path, dead.pid)
    first, second = DestLock(tmp_path / ".microns-get"), DestLock(tmp_path / ".microns-get")
    first.acquire()
    with pytest.raises(LockHeld):
        second.acquire()  # the lock is now first's, whose pid (ours) is alive
    first.release()
    second.acquire()
    second.release()


@pytest.mark.parametrize(
    "host, pid_alive, age, expected",
    [
        pytest.param("here", True, 10, None, id="live-holder"),
        pytest.param("here", False, 10, "not running", id="dead-pid-same-host"),
        pytest.param("elsewhere", False, 10, None, id="other-host-young"),
        pytest.param("elsewhere", True, 25 * 3600, "older than", id="other-host-past-ttl"),
    ],
)
def test_stale_rule(host, pid_alive, age, expected) -> None:
    pid = os.getpid() if pid_alive else 2**22 + 12345
    reason = stale_reason(LockInfo(host, pid, time.time() - age, "t"), age, 24 * 3600, "here")
    assert (reason is None) if expected is None else expected in reason


# -- quota ----------------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_quota_refusal_writes_nothing(proxy, scratch, small_tmpfs, capsys) -> None:
    scratch.put(BIG_KEY, random_bytes(3 * MIB, seed=3))
    dest = small_tmpfs / "dest"
    assert run(["sync", "structural-stacks", "--dest", str(dest), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not enough space" in err[0] and "--ignore-quota" in err[0], err
    assert not dest.exists() and not list(small_tmpfs.iterdir())


@pytest.mark.parametrize(
    "need_bytes, need_files, space, problem",
    [
        pytest.param(10, 1, Space(100, 10), None, id="fits"),
        pytest.param(200, 1, Space(100, 10), "bytes needed", id="bytes"),
        pytest.param(10, 20, Space(100, 10), "inodes free", id="inodes"),
        pytest.param(10, 20, Space(100, None), None, id="no-inode-count"),
    ],
)
def test_quota_rule(need_bytes, need_files, space, problem) -> None:
    found = quota_problem("/d", need_bytes, need_files, space)
    assert (found is None) if problem is None else problem in found


# -- bandwidth ------------------------------------------------------------------------------


def test_bwlimit_caps_the_rate(proxy, scratch, tmp_path, capsys) -> None:
    cap = 2 * MIB
    scratch.put(BIG_KEY, random_bytes(6 * MIB, seed=4))
    dest = tmp_path / "dest"
    started = time.monotonic()
    code = sync(dest, "--include", "big.tif", "--bwlimit", "2M", "--part-size", "1M")
    elapsed = time.monotonic() - started
    assert code == 0 and job(capsys)["bytes"] == 6 * MIB
    rate = 6 * MIB / elapsed
    assert 0.5 * cap < rate < 1.3 * cap, f"{rate / MIB:.2f} MiB/s against a 2 MiB/s cap"


@pytest.mark.parametrize(
    "text, minute, rate",
    [
        pytest.param("50M", 0, 50 * MIB, id="plain"),
        pytest.param("08:00,10M 20:00,off", 9 * 60, 10 * MIB, id="day"),
        pytest.param("08:00,10M 20:00,off", 21 * 60, None, id="night"),
        pytest.param("08:00,10M 20:00,off", 3 * 60, None, id="before-first-wraps"),
        pytest.param("20:00,1M 08:00,512K", 12 * 60, 512 << 10, id="unsorted"),
    ],
)
def test_bwlimit_schedule(text, minute, rate) -> None:
    schedule = parse_bwlimit(text)
    assert isinstance(schedule, Schedule) and schedule.rate_at(minute) == rate


@pytest.mark.parametrize("text", ["fast", "25:00,1M", "08:00", "08:00,lots"])
def test_bwlimit_refuses_nonsense(text) -> None:
    with pytest.raises(ConfigError):
        parse_bwlimit(text)


def test_token_bucket_spreads_bytes_over_time() -> None:
    clock = [0.0]
    bucket = TokenBucket(lambda: 1000, clock=lambda: clock[0])
    assert bucket.delay_for(250) == 0.0  # the burst allowance
    assert bucket.delay_for(1000) == pytest.approx(1.0)
    assert bucket.delay_for(500) == pytest.approx(1.5)  # queued behind the previous caller
    clock[0] = 1.5
    assert bucket.delay_for(0) == pytest.approx(0.0)


# -- jobs files -----------------------------------------------------------------------------


GOOD_JOBS = """\
dest: out
delete_max_fraction: 0.2
jobs:
  - name: tifs-a
    dataset: structural-stacks
    include: ["s_0*.tif"]
  - name: tifs-b
    dataset: structural-stacks
    include: s_1*
"""


def test_mirror_runs_a_jobs_file(proxy, tmp_path, capsys) -> None:
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(GOOD_JOBS)
    log = tmp_path / "logs" / "mirror.log"
    assert run(["mirror", str(jobs), "--quiet", "--log-file", str(log)]) == 0
    assert local_files(tmp_path / "out") == SMALL
    assert "tifs-a: 10 added" in capsys.readouterr().err
    lines = log.read_text().splitlines()
    assert lines and all(line[:4].isdigit() and line[10] == "T" for line in lines)
    assert len(reports(tmp_path / "out")) == 1


@pytest.mark.parametrize(
    "body, line, field",
    [
        pytest.param("jobs:\n  - dataset: structural-stacks\n    colour: red\n", 3, "colour",
                     id="unknown-field"),
        pytest.param("dest: x\njobs:\n  - dataset: no-such-thing\n", 3, "jobs[0].dataset",
                     id="unknown-dataset"),
        pytest.param("dest: x\njobs:\n  - dataset: structural-stacks\n    include: 3\n", 4,
                     "jobs[0].include", id="bad-include"),
        pytest.param("dest: x\nbwlimit: fast\njobs:\n  - dataset: structural-stacks\n", 2,
                     "bwlimit", id="bad-bwlimit"),
        pytest.param("dest: x\njobs:\n  - name: a\n", 3, "jobs[0].dataset", id="no-dataset"),
        pytest.param("dest: x\njobs:\n  - dataset: structural-stacks\n  - dataset: "
                     "structural-stacks\n", 4, "jobs[1].name", id="duplicate-name"),
        pytest.param("dest: x\njobs: [\n", 3, "not valid YAML", id="not-yaml"),
        pytest.param("dest: x\njobs:\n  - dataset: structural-stacks\n    bbox: 1,1,1,2,2,2\n",
                     4, "jobs[0].bbox", id="bbox-of-a-file-set"),
        pytest.param("dest: x\ndelete_max_fraction: 2\njobs:\n  - dataset: structural-stacks\n",
                     2, "delete_max_fraction", id="fraction-out-of-range"),
        pytest.param("jobs:\n  - dataset: structural-stacks\n", 2, "jobs[0].dest",
                     id="no-destination"),
    ],
)  # fmt: skip
def test_bad_jobs_file_one_line_nothing_written(tmp_path, capsys, body, line, field) -> None:
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(body)
    assert run(["mirror", str(jobs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{jobs}:{line}: " in err[0] and field in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs.yaml"]


def test_bare_off_is_no_bandwidth_cap(tmp_path) -> None:
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text("dest: x\nbwlimit: off\njobs:\n  - dataset: structural-stacks\n")
    parsed = load_jobs(jobs, load_catalog())
    assert parsed.bwlimit_given and parsed.bwlimit is None
    assert parsed.jobs[0].dest == tmp_path / "x"


def test_example_jobs_file_is_valid() -> None:
    example = Path(__file__).resolve().parent.parent / "scripts" / "jobs.example.yaml"
    parsed = load_jobs(example, load_catalog())
    assert parsed.jobs and parsed.bwlimit is not None


# -- classification -------------------------------------------------------------------------


def _item(size: int = 10, etag: str = "e1") -> PlanItem:
    return PlanItem("a/b", size, (RemoteCopy("s3://b/a/b", "s3", size=size, etag=etag),))


def _record(item: PlanItem, state: str = "done", size: int | None = None) -> ItemRecord:
    identity = content_identity(item.primary)
    size = item.size if size is None else size
    return ItemRecord("a/b", None, "a/b", "u", size, identity, state, "md5", "s3", 0, None, 0.0)


@pytest.mark.parametrize(
    "record, local_size, checksum, expected",
    [
        pytest.param(None, None, False, Change.ADDED, id="new"),
        pytest.param(_record(_item()), 10, False, Change.UNCHANGED, id="recorded"),
        pytest.param(_record(_item()), 10, True, Change.VERIFY, id="recorded-checksum"),
        pytest.param(_record(_item(etag="old")), 10, False, Change.CHANGED, id="remote-changed"),
        pytest.param(_record(_item()), 7, False, Change.CHANGED, id="local-size-differs"),
        pytest.param(None, 10, False, Change.VERIFY, id="unrecorded-same-size"),
        pytest.param(None, 3, False, Change.CHANGED, id="unrecorded-other-size"),
        pytest.param(_record(_item(), "failed"), 10, False, Change.VERIFY, id="failed-record"),
    ],
)
def test_classify(record, local_size, checksum, expected) -> None:
    assert classify(_item(), record, local_size, checksum) is expected


@pytest.mark.parametrize(
    "ok, method, recorded, expected",
    [
        pytest.param(True, "md5", False, Change.UNCHANGED, id="digest-adopts"),
        pytest.param(False, "md5", True, Change.CHANGED, id="digest-mismatch"),
        pytest.param(True, "size-only", False, Change.CHANGED, id="size-cannot-adopt"),
        pytest.param(True, "size-only", True, Change.UNCHANGED, id="size-keeps-record"),
    ],
)
def test_after_verify(ok, method, recorded, expected) -> None:
    assert after_verify(ok, method, recorded) is expected


@pytest.mark.parametrize(
    "n, scope, complete, force, allowed",
    [
        pytest.param(1, 10, True, False, True, id="within-share"),
        pytest.param(2, 10, True, False, False, id="over-share"),
        pytest.param(2, 10, True, True, True, id="over-share-forced"),
        pytest.param(1, 10, False, True, False, id="incomplete-listing-even-forced"),
        pytest.param(0, 0, True, False, True, id="nothing"),
    ],
)
def test_delete_rule(n, scope, complete, force, allowed) -> None:
    decision = delete_decision(
        [f"f{i}" for i in range(n)],
        scope,
        listing_complete=complete,
        max_fraction=0.1,
        force=force,
    )
    assert decision.allowed is allowed


def test_jobs_file_with_a_cutout_job(mirror_env, tmp_path, capsys) -> None:
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(
        "dest: out\njobs:\n  - name: em-box\n    dataset: em\n"
        "    bbox: 13830,13840,14818,13870,13870,14830\n    bbox_resolution: 8,8,40\n"
    )
    assert run(["mirror", str(jobs), "--json"]) == 0
    first = summary(capsys)["jobs"][0]
    assert first["bytes"] > 0 and first["plan_ids"]
    assert run(["mirror", str(jobs), "--json"]) == 0
    assert summary(capsys)["jobs"][0]["bytes"] == 0  # a rerun moves no chunk again


def test_multi_mirror_dataset_second_sync_moves_nothing(mirror_env, tmp_path, capsys) -> None:
    dest = tmp_path / "dest"
    assert sync_dataset("nuclei", dest) == 0
    assert job(capsys)["added"] > 0
    assert sync_dataset("nuclei", dest) == 0
    second = job(capsys)
    assert second["bytes"] == 0 and second["added"] == second["changed"] == 0


def sync_dataset(dataset: str, dest: Path) -> int:
    return run(["sync", dataset, "--dest", str(dest), "--json"])
