"""Many machines on one plan: `plan --queue` on an fq:// queue, worker processes, leases.

Workers are real subprocesses sharing a queue folder and a destination, in front of moto through
the fault proxy (which counts the GETs per key). Leases are short (2 s) so a killed worker's task
comes back quickly; nothing asserts how fast anything runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from fetch_helpers import (
    STACKS,
    ScratchS3,
    env_without_config,
    local_files,
    random_bytes,
    temp_files,
)

from microns_get.checkpoint import CheckpointStore
from microns_get.cli.app import run
from microns_get.config import resolve_settings
from microns_get.distributed.queue import Queue, normalize_queue_url
from microns_get.distributed.tasks import TaskSpec, run_task, split_plan
from microns_get.errors import BadInput
from microns_get.plan.model import Plan, PlanItem, RemoteCopy
from microns_get.testing.faultproxy import FaultProxy, FaultRule

KIB = 1 << 10
OBJECTS = {
    STACKS + f"w_{i:02d}.tif": random_bytes(40 * KIB + 31 * i, seed=900 + i) for i in range(9)
}
OBJECTS[STACKS + "w_big.tif"] = random_bytes(1200 * KIB, seed=999)


@pytest.fixture
def scratch(scratch_endpoint: str) -> ScratchS3:
    s3 = ScratchS3(scratch_endpoint)
    s3.reset()
    for key, data in OBJECTS.items():
        s3.put(key, data)
    return s3


def enqueue(queue: Path, dest: Path, capsys, *extra: str) -> dict:
    capsys.readouterr()
    args = ["plan", "structural-stacks", "--dest", str(dest), "--queue", f"fq://{queue}"]
    assert run([*args, "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def spawn_worker(
    queue: Path, proxy: FaultProxy, home: Path, *extra: str, lease: int = 2
) -> subprocess.Popen:
    env = env_without_config({"MICRONS_GET_S3_ENDPOINT": proxy.url, "HOME": str(home)})
    command = [
        sys.executable,
        "-m",
        "microns_get",
        "worker",
        f"fq://{queue}",
        "--lease-seconds",
        str(lease),
    ]
    return subprocess.Popen(
        [*command, "--quiet", *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def object_gets(proxy: FaultProxy) -> Counter[str]:
    return Counter(
        r.path.rsplit("/", 1)[-1]
        for r in proxy.stats.log
        if r.method == "GET" and "list-type" not in r.query and r.status in (200, 206)
    )


def wait_all(procs: list[subprocess.Popen], timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise AssertionError(
                f"worker hung: {proc.stderr.read() if proc.stderr else ''}"
            ) from None
    return codes


def queue_counts(queue: Path, capsys) -> dict:
    capsys.readouterr()
    assert run(["queue", "status", f"fq://{queue}", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_three_workers_make_the_single_run_tree_fetching_each_object_once(
    proxy, tmp_path, capsys
) -> None:
    single = tmp_path / "single"
    assert run(["fetch", "structural-stacks", "--dest", str(single), "--json"]) == 0
    dest, queue = tmp_path / "dest", tmp_path / "queue"
    planned = enqueue(queue, dest, capsys, "--task-items", "2")
    assert planned["tasks"] == 5 and planned["objects"] == len(OBJECTS)
    proxy.add_rule(FaultRule("delay", seconds=0.2, method="GET"))  # tasks overlap in time
    proxy.reset_stats()
    # a lease long enough that a busy machine never lets one lapse: each object once, by design
    workers = [spawn_worker(queue, proxy, tmp_path, lease=30) for _ in range(3)]
    codes = wait_all(workers)
    assert codes == [0, 0, 0], [w.stderr.read() for w in workers if w.stderr]
    assert local_files(dest) == local_files(single) == OBJECTS
    gets = object_gets(proxy)
    assert set(gets) == {key.rsplit("/", 1)[-1] for key in OBJECTS}
    assert set(gets.values()) == {1}, gets
    checkpoints = list((dest / ".microns-get" / "workers").glob("*.sqlite"))
    assert len(checkpoints) >= 2  # one per worker that ran something, never one shared file
    counts = queue_counts(queue, capsys)
    assert counts["enqueued"] == 0 and counts["completed"] == 5 and counts["failed"] == 0


def _journal_has_items(dest: Path, pid: int) -> Path | None:
    """The task folder in which worker `pid` has finished at least one item, task not done."""
    name = f"{socket.gethostname()}-{pid}.jsonl"
    for journal in (dest / ".microns-get" / "tasks").glob(f"*/{name}"):
        if (journal.parent / "done").exists():
            continue
        if any('"path"' in line for line in journal.read_text().splitlines()):
            return journal.parent
    return None


def test_a_killed_workers_task_is_finished_by_another_after_its_lease(
    proxy, tmp_path, capsys
) -> None:
    dest, queue = tmp_path / "dest", tmp_path / "queue"
    enqueue(queue, dest, capsys, "--task-items", "5")
    # Slow enough that the first worker is still inside its task when it is killed.
    proxy.add_rule(FaultRule("throttle", bytes_per_sec=300_000, method="GET"))
    proxy.reset_stats()
    first = spawn_worker(queue, proxy, tmp_path)
    deadline = time.monotonic() + 30
    while (task_dir := _journal_has_items(dest, first.pid)) is None:
        assert first.poll() is None, f"worker ended early: {first.stderr.read()}"
        assert time.monotonic() < deadline, "the worker finished no item"
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    done_by_first = {
        json.loads(line)["path"].rsplit("/", 1)[-1]
        for line in next(task_dir.glob(f"*-{first.pid}.jsonl")).read_text().splitlines()
        if '"path"' in line
    }
    second = spawn_worker(queue, proxy, tmp_path)
    assert wait_all([second]) == [0], second.stderr.read() if second.stderr else ""
    assert local_files(dest) == OBJECTS and not temp_files(dest)
    assert (task_dir / "done").exists()
    assert len(list(task_dir.glob("*.jsonl"))) == 2  # both workers journaled the same task
    gets = object_gets(proxy)
    assert all(gets[name] == 1 for name in done_by_first), gets  # finished items: not again
    assert max(gets.values()) <= 2  # the one cut mid-transfer is fetched again, once
    assert queue_counts(queue, capsys)["enqueued"] == 0


def test_a_task_already_done_by_another_worker_moves_nothing(proxy, tmp_path, capsys) -> None:
    dest = tmp_path / "dest"
    assert run(["plan", "structural-stacks", "--json"]) == 0
    plan = Plan.from_json(json.loads(capsys.readouterr().out))
    spec = split_plan(plan, str(dest), max_items=100)[0]
    settings = resolve_settings({})
    with CheckpointStore.open(tmp_path / "a.sqlite") as store:
        first = asyncio.run(run_task(spec, dest, settings, store))
    proxy.reset_stats()
    with CheckpointStore.open(tmp_path / "b.sqlite") as other_workers_store:
        again = asyncio.run(run_task(spec, dest, settings, other_workers_store))
    assert first.fetched == len(OBJECTS) and again.fetched == 0
    assert again.already_done == len(OBJECTS) and again.bytes_moved == 0
    assert object_gets(proxy) == Counter()


def _plan(sizes: list[int]) -> Plan:
    items = tuple(
        PlanItem(f"d/f{i}", size, (RemoteCopy(f"s3://b/d/f{i}", "s3", size=size, etag="e"),))
        for i, size in enumerate(sizes)
    )
    return Plan(request={"dataset": "x"}, items=items, part_size=1 << 20, mirror="s3://b/d")


@pytest.mark.parametrize(
    "sizes, max_items, max_bytes, expected",
    [
        pytest.param([1] * 5, 2, 100, [2, 2, 1], id="by-count"),
        pytest.param([40, 40, 40, 10], 10, 100, [2, 2], id="by-bytes"),
        pytest.param([10, 500, 10], 10, 100, [1, 1, 1], id="big-item-alone"),
        pytest.param([], 10, 100, [], id="empty"),
    ],
)
def test_split_plan(sizes, max_items, max_bytes, expected) -> None:
    plan = _plan(sizes)
    specs = split_plan(plan, "/dest", max_items, max_bytes)
    assert [len(s.items) for s in specs] == expected
    assert [i for s in specs for i in s.items] == list(plan.items)  # every item once, in order
    assert len({s.key for s in specs}) == len(specs)
    for spec in specs:
        assert TaskSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


@pytest.mark.parametrize("url", ["fq:/x", "http://q", "mem://q", "fq://"])
def test_queue_urls_are_checked(url) -> None:
    with pytest.raises(BadInput):
        normalize_queue_url(url)


def test_relative_fq_paths_become_absolute(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalize_queue_url("fq://q") == f"fq://{tmp_path / 'q'}"
    assert Queue("fq://q").counts().enqueued == 0


def test_plan_queue_refuses_cutouts(tmp_path, capsys) -> None:
    code = run(["plan", "em", "--bbox", "0,0,0,8,8,8", "--queue", f"fq://{tmp_path}/q"])
    assert code == 2
    assert "--bbox" in capsys.readouterr().err
