"""The resume state: one SQLite file per destination, shared by every process writing there.

Owns: the schema (plans, items, parts, schema_version), the item state machine
(pending → partial → done | failed | absent) and the rule that a resume never splices two
versions of a remote object: finished parts are kept only when the identity (size + ETag or
generation) and the part layout are unchanged.
Must not do network or file-content I/O, nor decide what to fetch: callers report progress here.

Concurrency: WAL journal, a busy timeout, and short `BEGIN IMMEDIATE` write transactions, so
several processes can share the file. A connection is used from one thread (the asyncio loop of
its process); calls are single short statements, quick enough not to need a thread pool.

Durability: `synchronous=NORMAL` in WAL mode makes each commit survive a crash or SIGKILL of
the process as soon as the call returns; after a power loss the last few commits may roll back,
which is safe here because losing a "done" mark only means that part is fetched again.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

from microns_get.errors import BadInput

SCHEMA_VERSION = 1
STATES = ("pending", "partial", "done", "failed", "absent")
FINISHED = ("done", "absent")
_PAGE = 1000  # rows per read page and per registration transaction: keeps locks short

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS plans (
    plan_id TEXT PRIMARY KEY, created REAL NOT NULL,
    request_json TEXT NOT NULL, plan_json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY, plan_id TEXT, local_path TEXT NOT NULL, remote_url TEXT NOT NULL,
    size INTEGER NOT NULL, identity TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
    verified_by TEXT, mirror TEXT, bytes_done INTEGER NOT NULL DEFAULT 0, error TEXT,
    updated REAL NOT NULL, checksum TEXT);
CREATE INDEX IF NOT EXISTS items_by_plan_state ON items (plan_id, state);
CREATE INDEX IF NOT EXISTS items_by_state ON items (state);
CREATE TABLE IF NOT EXISTS parts (
    item_id TEXT NOT NULL, idx INTEGER NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL,
    md5 BLOB, done INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (item_id, idx));
"""

_ITEM_COLUMNS = (
    "item_id, plan_id, local_path, remote_url, size, identity, state, verified_by, mirror, "
    "bytes_done, error, updated, checksum"
)


@dataclass(frozen=True)
class ItemRecord:
    """One row of `items`: where an object goes, which version, and how far it got."""

    item_id: str
    plan_id: str | None
    local_path: str
    remote_url: str
    size: int
    identity: str
    state: str
    verified_by: str | None
    mirror: str | None
    bytes_done: int
    error: str | None
    updated: float
    checksum: str | None = None  # "crc32c:<hex>" (earlier "md5:<hex>") of the bytes written


class FinishedItem(NamedTuple):
    """One small item recorded finished by `items_finished` (state "done" or "absent")."""

    item_id: str
    plan_id: str | None
    local_path: str
    remote_url: str
    size: int
    identity: str
    state: str
    verified_by: str | None = None
    mirror: str | None = None
    checksum: str | None = None


class PlannedItem(NamedTuple):
    """What `register_items` needs to list an item as pending before any worker starts it."""

    item_id: str
    local_path: str
    remote_url: str
    size: int
    identity: str


class CheckpointStore:
    """The SQLite resume state. Use as a context manager, or call `close()`."""

    def __init__(
        self, path: str | Path, busy_timeout: float = 60.0, readonly: bool = False
    ) -> None:
        self.path = Path(path)
        try:
            if readonly:
                self._db = _connect_readonly(self.path, busy_timeout)
                return
            self._db = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None)
            self._init(busy_timeout)
        except sqlite3.DatabaseError as exc:
            raise BadInput(f"cannot open the resume state {self.path}: {exc}") from exc

    @classmethod
    def open(cls, path: str | Path, busy_timeout: float = 60.0) -> CheckpointStore:
        """Open (creating it and its parent directories if needed) the state file at `path`."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return cls(path, busy_timeout)

    def _init(self, busy_timeout: float) -> None:
        # The busy timeout comes first so that even switching to WAL waits for other openers.
        self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        self._use_wal(busy_timeout)
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._create_schema()

    def _use_wal(self, busy_timeout: float) -> None:
        """Switch a new state file to WAL. Two processes opening a new file at once can get
        SQLITE_BUSY here at once, without the busy handler (SQLite refuses to wait where waiting
        could deadlock), so retry until the busy timeout; a file already in WAL is left alone."""
        deadline = time.monotonic() + busy_timeout
        while True:
            try:
                mode = self._db.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    self._db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(random.uniform(0.005, 0.05))

    def _create_schema(self) -> None:
        with self._write() as db:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            columns = {row[1] for row in db.execute("PRAGMA table_info(items)")}
            if "checksum" not in columns:  # a state file from before checksums were recorded
                db.execute("ALTER TABLE items ADD COLUMN checksum TEXT")
            row = db.execute("SELECT max(version) FROM schema_version").fetchone()
            if row[0] is None:
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise BadInput(
                    f"{self.path} was written by a newer microns-get (schema {row[0]}, this "
                    f"version reads {SCHEMA_VERSION}); upgrade, or use another destination"
                )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction. IMMEDIATE takes the write lock up front: a deferred
        transaction that upgrades from read to write gets SQLITE_BUSY without waiting."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- plans ---------------------------------------------------------------------------------

    def save_plan(self, plan_id: str, request: dict[str, Any], plan: dict[str, Any]) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO plans (plan_id, created, request_json, plan_json) "
                "VALUES (?, ?, ?, ?)",
                (plan_id, time.time(), _dumps(request), _dumps(plan)),
            )

    def load_plan(self, plan_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT plan_json FROM plans WHERE plan_id = ?", (plan_id,))
        found = row.fetchone()
        return json.loads(found[0]) if found else None

    def load_request(self, plan_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT request_json FROM plans WHERE plan_id = ?", (plan_id,))
        found = row.fetchone()
        return json.loads(found[0]) if found else None

    def plan_ids(self) -> list[str]:
        """Saved plans, newest first."""
        rows = self._db.execute("SELECT plan_id FROM plans ORDER BY created DESC, plan_id")
        return [r[0] for r in rows]

    # -- items ---------------------------------------------------------------------------------

    def register_items(self, plan_id: str, items: Iterable[PlannedItem]) -> None:
        """List items as pending (so `summary` counts them) without touching known ones."""
        batch: list[tuple[Any, ...]] = []
        for item in items:
            batch.append((*item, plan_id, time.time()))
            if len(batch) >= _PAGE:
                self._insert_pending(batch)
                batch = []
        if batch:
            self._insert_pending(batch)

    def _insert_pending(self, rows: list[tuple[Any, ...]]) -> None:
        with self._write() as db:
            db.executemany(
                "INSERT OR IGNORE INTO items (item_id, local_path, remote_url, size, identity, "
                "plan_id, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def items_finished(self, items: Iterable[FinishedItem]) -> None:
        """Record many small items (cutout chunks) as finished in one transaction: for each,
        what `begin_item` + `item_done` (or `item_absent`) would record, at a fraction of the
        cost. Parts are never kept for these: a small item is fetched in one piece."""
        now = time.time()
        rows = [(*item, item.size if item.state == "done" else 0, now) for item in items]
        if not rows:
            return
        if any(row[6] not in FINISHED for row in rows):
            raise ValueError("items_finished takes only done or absent items")
        with self._write() as db:
            db.executemany(
                "INSERT INTO items (item_id, plan_id, local_path, remote_url, size, identity, "
                "state, verified_by, mirror, checksum, bytes_done, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (item_id) DO UPDATE SET plan_id = excluded.plan_id, "
                "local_path = excluded.local_path, remote_url = excluded.remote_url, "
                "size = excluded.size, identity = excluded.identity, state = excluded.state, "
                "verified_by = excluded.verified_by, mirror = excluded.mirror, "
                "checksum = excluded.checksum, bytes_done = excluded.bytes_done, "
                "updated = excluded.updated, error = NULL",
                rows,
            )
            db.executemany("DELETE FROM parts WHERE item_id = ?", [(row[0],) for row in rows])

    def begin_item(
        self,
        item_id: str,
        *,
        plan_id: str | None,
        local_path: str,
        remote_url: str,
        size: int,
        identity: str,
        parts: list[tuple[int, int]],
        restart: bool = False,
    ) -> set[int]:
        """Start (or resume) an item split into `parts` (`[start, end)` ranges, in order).

        Returns the indices of parts already finished, which the caller may skip. They are kept
        only when the recorded identity and layout equal these and `restart` is false (pass
        `restart=True` when the partial file is gone); otherwise every part starts again.
        """
        layout = [(int(s), int(e)) for s, e in parts]
        with self._write() as db:
            kept = set() if restart else self._resumable_parts(item_id, identity, layout)
            if not kept:
                db.execute("DELETE FROM parts WHERE item_id = ?", (item_id,))
                db.executemany(
                    'INSERT INTO parts (item_id, idx, start, "end") VALUES (?, ?, ?, ?)',
                    [(item_id, i, s, e) for i, (s, e) in enumerate(layout)],
                )
            done_bytes = sum(layout[i][1] - layout[i][0] for i in kept)
            db.execute(
                "INSERT INTO items (item_id, plan_id, local_path, remote_url, size, identity, "
                "state, bytes_done, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (item_id) DO UPDATE SET plan_id = excluded.plan_id, "
                "local_path = excluded.local_path, remote_url = excluded.remote_url, "
                "size = excluded.size, identity = excluded.identity, state = excluded.state, "
                "bytes_done = excluded.bytes_done, updated = excluded.updated, "
                "verified_by = NULL, mirror = NULL, error = NULL",
                (
                    item_id,
                    plan_id,
                    local_path,
                    remote_url,
                    size,
                    identity,
                    "partial" if kept else "pending",
                    done_bytes,
                    time.time(),
                ),
            )
        return kept

    def _resumable_parts(
        self, item_id: str, identity: str, layout: list[tuple[int, int]]
    ) -> set[int]:
        """Finished part indices worth keeping, or an empty set when the item must restart."""
        row = self._db.execute("SELECT identity FROM items WHERE item_id = ?", (item_id,))
        found = row.fetchone()
        if found is None or found[0] != identity:
            return set()
        rows = self._db.execute(
            'SELECT start, "end", done FROM parts WHERE item_id = ? ORDER BY idx', (item_id,)
        ).fetchall()
        if [(s, e) for s, e, _ in rows] != layout:
            return set()
        return {i for i, (_, _, done) in enumerate(rows) if done}

    def part_done(self, item_id: str, idx: int, md5: bytes | None) -> None:
        """Mark part `idx` finished (its bytes already flushed by the caller); durable on return.
        `md5` is the part's digest as the engine hashed it: MD5, or a 4-byte CRC32C."""
        with self._write() as db:
            cur = db.execute(
                'SELECT "end" - start, done FROM parts WHERE item_id = ? AND idx = ?',
                (item_id, idx),
            )
            found = cur.fetchone()
            if found is None:
                raise KeyError(f"no part {idx} recorded for item {item_id!r}: call begin_item")
            db.execute(
                "UPDATE parts SET done = 1, md5 = coalesce(?, md5) WHERE item_id = ? AND idx = ?",
                (md5, item_id, idx),
            )
            if not found[1]:  # count each part's bytes once, even if reported twice
                db.execute(
                    "UPDATE items SET bytes_done = bytes_done + ?, state = 'partial', "
                    "updated = ? WHERE item_id = ?",
                    (found[0], time.time(), item_id),
                )

    def part_digests(self, item_id: str) -> list[bytes | None]:
        """The digest recorded for each part (MD5 or CRC32C), in index order (None where
        unknown or unfinished)."""
        rows = self._db.execute(
            "SELECT md5, done FROM parts WHERE item_id = ? ORDER BY idx", (item_id,)
        )
        return [bytes(md5) if md5 is not None and done else None for md5, done in rows]

    def item_done(
        self, item_id: str, verified_by: str, mirror: str | None, checksum: str | None = None
    ) -> None:
        """The file is verified and in place; its part records describe nothing on disk now.
        `checksum` ("crc32c:<hex>") lets `verify` re-check files that have no remote checksum."""
        self._finish(item_id, "done", verified_by=verified_by, mirror=mirror)
        if checksum is not None:
            with self._write() as db:
                db.execute("UPDATE items SET checksum = ? WHERE item_id = ?", (checksum, item_id))

    def item_failed(self, item_id: str, error: str) -> None:
        """Give up on the item for this run; finished parts stay so a later run can resume."""
        self._set_state(item_id, "failed", error=error)

    def item_absent(self, item_id: str) -> None:
        """The remote has no such object and that means "empty" (e.g. an absent chunk)."""
        self._finish(item_id, "absent", verified_by=None, mirror=None)

    def _finish(
        self, item_id: str, state: str, verified_by: str | None, mirror: str | None
    ) -> None:
        with self._write() as db:
            cur = db.execute(
                "UPDATE items SET state = ?, verified_by = ?, mirror = ?, error = NULL, "
                "bytes_done = CASE WHEN ? = 'done' THEN size ELSE 0 END, updated = ? "
                "WHERE item_id = ?",
                (state, verified_by, mirror, state, time.time(), item_id),
            )
            _require_row(cur, item_id)
            db.execute("DELETE FROM parts WHERE item_id = ?", (item_id,))

    def _set_state(self, item_id: str, state: str, error: str | None) -> None:
        with self._write() as db:
            cur = db.execute(
                "UPDATE items SET state = ?, error = ?, updated = ? WHERE item_id = ?",
                (state, error, time.time(), item_id),
            )
            _require_row(cur, item_id)

    # -- queries -------------------------------------------------------------------------------

    def item(self, item_id: str) -> ItemRecord | None:
        row = self._db.execute(
            f"SELECT {_ITEM_COLUMNS} FROM items WHERE item_id = ?", (item_id,)
        ).fetchone()
        return ItemRecord(*row) if row else None

    def is_done(self, item_id: str, identity: str) -> bool:
        """True when this version of the item is finished: fetched and verified, or absent."""
        row = self._db.execute(
            "SELECT state, identity FROM items WHERE item_id = ?", (item_id,)
        ).fetchone()
        return row is not None and row[0] in FINISHED and row[1] == identity

    def items_by_state(self, state: str, plan_id: str | None = None) -> Iterator[ItemRecord]:
        """Items in `state`, by item id. Read in pages, so no read stays open between yields
        (the caller may write to the store while iterating)."""
        if state not in STATES:
            raise ValueError(f"unknown item state {state!r}; expected one of {STATES}")
        after = ""
        while True:
            sql = f"SELECT {_ITEM_COLUMNS} FROM items WHERE state = ? AND item_id > ?"
            args: list[Any] = [state, after]
            if plan_id is not None:
                sql += " AND plan_id = ?"
                args.append(plan_id)
            rows = self._db.execute(f"{sql} ORDER BY item_id LIMIT {_PAGE}", args).fetchall()
            yield from (ItemRecord(*r) for r in rows)
            if len(rows) < _PAGE:
                return
            after = rows[-1][0]

    def summary(self, plan_id: str | None = None) -> dict[str, Any]:
        """Counts and bytes per state, and totals: `{"items", "bytes", "bytes_done", "states":
        {state: {"items", "bytes", "bytes_done"}}}` (every state present, zeros included)."""
        sql = "SELECT state, count(*), coalesce(sum(size), 0), coalesce(sum(bytes_done), 0) "
        sql += "FROM items" + (" WHERE plan_id = ?" if plan_id is not None else "")
        rows = self._db.execute(sql + " GROUP BY state", () if plan_id is None else (plan_id,))
        states = {s: {"items": 0, "bytes": 0, "bytes_done": 0} for s in STATES}
        for state, count, size, done in rows:
            states[state] = {"items": count, "bytes": size, "bytes_done": done}
        return {
            "items": sum(s["items"] for s in states.values()),
            "bytes": sum(s["bytes"] for s in states.values()),
            "bytes_done": sum(s["bytes_done"] for s in states.values()),
            "states": states,
        }


def _connect_readonly(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """Read a state file without writing anything (a read-only DEST, `verify`)."""
    if not path.is_file():
        raise sqlite3.DatabaseError("no such file")
    uri = f"file:{quote(str(path.absolute()))}?mode=ro"
    db = sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None)
    try:
        db.execute("SELECT count(*) FROM items").fetchone()
    except sqlite3.OperationalError:
        # WAL files need a writable -shm; an unchanging copy can still be read as immutable.
        db.close()
        db = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None)
        db.execute("SELECT count(*) FROM items").fetchone()
    return db


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _require_row(cur: sqlite3.Cursor, item_id: str) -> None:
    if cur.rowcount == 0:
        raise KeyError(f"no item {item_id!r} in the resume state: call begin_item first")
