"""The SQLite resume state: resume rules, states, summary, and sharing across processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from microns_get.checkpoint import CheckpointStore, PlannedItem
from microns_get.errors import BadInput

MB = 1_000_000
LAYOUT = [(0, MB), (MB, 2 * MB), (2 * MB, 2 * MB + 500)]
SIZE = LAYOUT[-1][1]


@pytest.fixture
def store(tmp_path: Path):
    with CheckpointStore.open(tmp_path / "dest" / ".microns-get" / "state.sqlite") as s:
        yield s


def begin(
    store: CheckpointStore,
    item_id: str = "a",
    identity: str = f"{SIZE}:etag1",
    parts: list[tuple[int, int]] | None = None,
    **kw: Any,
) -> set[int]:
    layout = LAYOUT if parts is None else parts
    return store.begin_item(
        item_id,
        plan_id="p1",
        local_path=f"out/{item_id}",
        remote_url=f"s3://b/{item_id}",
        size=layout[-1][1] if layout else 0,
        identity=identity,
        parts=layout,
        **kw,
    )


def test_open_creates_parents_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "x" / "y" / "state.sqlite"
    with CheckpointStore.open(path):
        pass
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(1,)]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    CheckpointStore.open(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(BadInput, match="newer microns-get"):
        CheckpointStore.open(path)


def test_not_a_database_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(BadInput, match="cannot open the resume state"):
        CheckpointStore.open(path)


def test_plans_round_trip(store: CheckpointStore) -> None:
    assert store.load_plan("nope") is None
    store.save_plan("p1", {"dataset": "minnie65"}, {"items": [1, 2]})
    store.save_plan("p2", {"dataset": "minnie35"}, {"items": []})
    assert store.load_plan("p1") == {"items": [1, 2]}
    assert store.load_request("p2") == {"dataset": "minnie35"}
    assert set(store.plan_ids()) == {"p1", "p2"}


def test_resume_keeps_done_parts(store: CheckpointStore) -> None:
    assert begin(store) == set()
    store.part_done("a", 0, b"\x01" * 16)
    store.part_done("a", 2, None)
    assert store.item("a").state == "partial"
    assert begin(store) == {0, 2}
    assert store.part_digests("a") == [b"\x01" * 16, None, None]
    record = store.item("a")
    assert (record.state, record.bytes_done) == ("partial", MB + 500)


def test_identity_change_resets(store: CheckpointStore) -> None:
    begin(store)
    store.part_done("a", 0, b"\x01" * 16)
    assert begin(store, identity=f"{SIZE}:etag2") == set()
    assert store.part_digests("a") == [None, None, None]
    record = store.item("a")
    assert (record.identity, record.state, record.bytes_done) == (f"{SIZE}:etag2", "pending", 0)
    assert begin(store, identity=f"{SIZE}:etag2") == set()  # nothing done under the new version


def test_layout_change_resets(store: CheckpointStore) -> None:
    begin(store)
    store.part_done("a", 0, b"\x01" * 16)
    halves = [(0, SIZE // 2), (SIZE // 2, SIZE)]
    assert begin(store, parts=halves) == set()
    assert store.part_digests("a") == [None, None]
    store.part_done("a", 1, b"\x02" * 16)
    assert begin(store, parts=halves) == {1}


def test_restart_flag_drops_parts(store: CheckpointStore) -> None:
    begin(store)
    store.part_done("a", 1, b"\x01" * 16)
    assert begin(store, restart=True) == set()
    assert store.part_digests("a") == [None, None, None]


def test_part_done_twice_counts_bytes_once(store: CheckpointStore) -> None:
    begin(store)
    store.part_done("a", 1, None)
    store.part_done("a", 1, b"\x03" * 16)
    assert store.item("a").bytes_done == MB
    assert store.part_digests("a")[1] == b"\x03" * 16


def test_unknown_part_or_item_is_an_error(store: CheckpointStore) -> None:
    begin(store)
    with pytest.raises(KeyError):
        store.part_done("a", 7, None)
    with pytest.raises(KeyError):
        store.item_done("ghost", "md5", "s3")


def test_done_failed_absent(store: CheckpointStore) -> None:
    begin(store, "a")
    store.part_done("a", 0, None)
    store.item_done("a", "md5+crc32c", "gcs")
    record = store.item("a")
    assert (record.state, record.verified_by, record.mirror, record.bytes_done) == (
        "done",
        "md5+crc32c",
        "gcs",
        SIZE,
    )
    assert store.part_digests("a") == []  # the temp file is gone; so are its parts
    assert store.is_done("a", f"{SIZE}:etag1")
    assert not store.is_done("a", f"{SIZE}:etag2")
    assert not store.is_done("ghost", "x")

    begin(store, "b")
    store.part_done("b", 0, None)
    store.item_failed("b", "503 after 8 tries")
    assert (store.item("b").state, store.item("b").error) == ("failed", "503 after 8 tries")
    assert begin(store, "b") == {0}  # a failed item resumes on the next run
    assert store.item("b").error is None

    begin(store, "c", identity="0:absent", parts=[])
    store.item_absent("c")
    assert store.item("c").state == "absent"
    assert store.is_done("c", "0:absent")


def test_summary_and_items_by_state(store: CheckpointStore) -> None:
    store.register_items(
        "p1", [PlannedItem(f"i{n:04d}", f"out/{n}", f"s3://b/{n}", 10, "10:e") for n in range(2500)]
    )
    begin(store, "i0000")
    store.part_done("i0000", 0, None)
    store.item_done("i0001", "md5", "s3")
    store.item_failed("i0002", "boom")
    store.begin_item(
        "q",
        plan_id="p2",
        local_path="q",
        remote_url="s3://b/q",
        size=7,
        identity="7:e",
        parts=[(0, 7)],
    )
    summary = store.summary("p1")
    assert summary["items"] == 2500
    assert summary["states"]["done"] == {"items": 1, "bytes": 10, "bytes_done": 10}
    assert summary["states"]["failed"]["items"] == 1
    assert summary["states"]["partial"] == {"items": 1, "bytes": SIZE, "bytes_done": MB}
    assert summary["states"]["pending"]["items"] == 2497
    assert summary["states"]["absent"] == {"items": 0, "bytes": 0, "bytes_done": 0}
    assert store.summary()["items"] == 2501  # every plan
    assert store.summary("p2")["bytes"] == 7

    pending = list(store.items_by_state("pending", plan_id="p1"))
    assert len(pending) == 2497  # spans several pages
    assert [r.item_id for r in pending] == sorted(r.item_id for r in pending)
    assert [r.item_id for r in store.items_by_state("failed")] == ["i0002"]
    with pytest.raises(ValueError):
        list(store.items_by_state("weird"))


def test_register_items_leaves_known_items_alone(store: CheckpointStore) -> None:
    begin(store, "a")
    store.part_done("a", 0, None)
    store.register_items("p1", [PlannedItem("a", "out/a", "s3://b/a", SIZE, f"{SIZE}:etag1")])
    assert store.item("a").state == "partial"


def test_writes_are_iteration_safe(store: CheckpointStore) -> None:
    store.register_items("p1", [PlannedItem(f"i{n:04d}", "x", "y", 1, "1:e") for n in range(1500)])
    for record in store.items_by_state("pending"):
        store.item_done(record.item_id, "size-only", None)
    assert store.summary()["states"]["done"]["items"] == 1500


# -- several processes ---------------------------------------------------------------------------
# Children run under the "spawn" start method: a fresh interpreter each, like separate workers.

N_PARTS = 150


def _write_parts(path: str, item_id: str, start: Any) -> None:
    start.wait(30)
    with CheckpointStore.open(path, busy_timeout=30) as store:
        layout = [(i, i + 1) for i in range(N_PARTS)]
        store.begin_item(
            item_id,
            plan_id="p",
            local_path=item_id,
            remote_url=item_id,
            size=N_PARTS,
            identity="e",
            parts=layout,
        )
        for i in range(N_PARTS):
            store.part_done(item_id, i, i.to_bytes(16, "big"))
            if i % 10 == 0:
                store.summary()  # readers interleaved with writers


def test_two_processes_write_concurrently(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    path = str(tmp_path / "shared" / "state.sqlite")
    start = ctx.Event()
    # Both children also race to create the file and its schema.
    children = [ctx.Process(target=_write_parts, args=(path, f"w{n}", start)) for n in range(2)]
    for child in children:
        child.start()
    start.set()
    for child in children:
        child.join(120)
    assert [c.exitcode for c in children] == [0, 0]
    with CheckpointStore.open(path) as store:
        for n in range(2):
            assert store.part_digests(f"w{n}") == [i.to_bytes(16, "big") for i in range(N_PARTS)]
            assert store.item(f"w{n}").bytes_done == N_PARTS


def _write_until_killed(path: str, reported: Any) -> None:
    with CheckpointStore.open(path) as store:
        layout = [(i, i + 1) for i in range(100_000)]
        store.begin_item(
            "big",
            plan_id="p",
            local_path="big",
            remote_url="big",
            size=len(layout),
            identity="e",
            parts=layout,
        )
        for i in range(len(layout)):
            store.part_done("big", i, i.to_bytes(16, "big"))
            reported.put(i)  # only after part_done returned


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_recorded_parts_survive_sigkill(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    path = str(tmp_path / "state.sqlite")
    reported = ctx.Queue()
    child = ctx.Process(target=_write_until_killed, args=(path, reported))
    child.start()
    seen = [reported.get(timeout=60) for _ in range(50)]
    os.kill(child.pid, signal.SIGKILL)  # mid-write, no clean shutdown
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    while not reported.empty():
        seen.append(reported.get())
    with CheckpointStore.open(path) as store:
        digests = store.part_digests("big")
        assert all(digests[i] == i.to_bytes(16, "big") for i in seen)
        assert store.begin_item(
            "big",
            plan_id="p",
            local_path="big",
            remote_url="big",
            size=len(digests),
            identity="e",
            parts=[(i, i + 1) for i in range(len(digests))],
        ) >= set(seen)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_items_finished_records_many_in_one_go(tmp_path) -> None:
    from microns_get.checkpoint import FinishedItem

    with CheckpointStore.open(tmp_path / "s.sqlite") as store:
        store.begin_item(
            "a",
            plan_id="p",
            local_path="a",
            remote_url="u",
            size=9,
            identity="old",
            parts=[(0, 4), (4, 9)],
        )
        store.part_done("a", 0, b"x" * 16)
        store.items_finished(
            [
                FinishedItem("a", None, "a", "u", 9, "new", "done", "decoded", "gcs", "md5:ab"),
                FinishedItem("b", None, "b", "", 0, "absent", "absent"),
            ]
        )
        a, b = store.item("a"), store.item("b")
        assert (a.state, a.identity, a.checksum, a.bytes_done) == ("done", "new", "md5:ab", 9)
        assert b.state == "absent" and store.is_done("b", "absent")
        assert store.part_digests("a") == []
        with pytest.raises(ValueError):
            store.items_finished([FinishedItem("c", None, "c", "", 0, "x", "pending")])


def _open_when(path: str, start: Any, results: Any) -> None:
    start.wait()
    try:
        with CheckpointStore.open(path, busy_timeout=30):
            results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        results.put(repr(exc))


def test_many_processes_creating_one_state_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Switching a new file to WAL can fail at once with "database is locked" in all but one
    opener (SQLite does not wait there); every opener must still get the store."""
    # fork: children start fast enough to collide (without the retry, ~4% of openers fail)
    ctx = mp.get_context("fork")
    outcomes = []
    for round_ in range(12):
        path = str(tmp_path / f"r{round_}" / "state.sqlite")
        start, results = ctx.Event(), ctx.Queue()
        children = [ctx.Process(target=_open_when, args=(path, start, results)) for _ in range(8)]
        for child in children:
            child.start()
        start.set()
        for child in children:
            child.join(120)
        outcomes += [results.get(timeout=10) for _ in children]
    assert [o for o in outcomes if o != "ok"] == []
