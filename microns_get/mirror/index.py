"""The listing of one mirror run, streamed into a scratch SQLite file instead of memory.

Owns: the table of every listed item of every job in the run with its classification (`sync.
Change`), kept page by page as the listing arrives, and the queries the runner needs afterwards:
totals for the quota check, the items to fetch in batches, the membership test of the delete
rule. The file is private to one process (the destination lock is held), lives beside the
checkpoint and is removed at the end, so it uses a rollback journal (no WAL: that needs shared
memory, which NFS does not give) and does not fsync: a crash only loses a scratch file.
Must not decide anything: `sync` classifies, the runner acts.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from microns_get.plan.model import PlanItem, RemoteCopy

PAGE = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS listed (
    job TEXT NOT NULL, part TEXT NOT NULL, path TEXT NOT NULL, change TEXT NOT NULL,
    size INTEGER NOT NULL, item TEXT, action TEXT, method TEXT, PRIMARY KEY (job, path))
"""


@dataclass(frozen=True)
class Row:
    """One listed item. `item` is kept only where the runner will need it again (to fetch it,
    or to record an adopted copy); `action` is "adopt" or "invalidate" after a local hash."""

    path: str
    change: str
    size: int
    item: PlanItem | None = None
    action: str | None = None
    method: str | None = None


def _item_json(item: PlanItem | None) -> str | None:
    return None if item is None else json.dumps(asdict(item), separators=(",", ":"))


def _item(text: str) -> PlanItem:
    data = json.loads(text)
    copies = tuple(RemoteCopy(**c) for c in data["copies"])
    return PlanItem(path=data["path"], size=data["size"], copies=copies)


class ListingIndex:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode = DELETE")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute(_SCHEMA)

    def close(self, remove: bool = True) -> None:
        self._db.close()
        if remove:
            for suffix in ("", "-journal"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def clear(self, job: str, part: str) -> None:
        """Forget a part's rows before it is listed (again, after a failure or on another
        mirror): a row is never left over from a listing that did not finish."""
        self._db.execute("DELETE FROM listed WHERE job = ? AND part = ?", (job, part))

    def add(self, job: str, part: str, rows: Iterable[Row]) -> None:
        values = [
            (job, part, r.path, r.change, r.size, _item_json(r.item), r.action, r.method)
            for r in rows
        ]
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT OR REPLACE INTO listed VALUES (?, ?, ?, ?, ?, ?, ?, ?)", values
        )
        self._db.execute("COMMIT")

    def counts(self, job: str) -> dict[str, tuple[int, int]]:
        """{change: (items, bytes)} for one job."""
        rows = self._db.execute(
            "SELECT change, count(*), coalesce(sum(size), 0) FROM listed WHERE job = ? "
            "GROUP BY change",
            (job,),
        )
        return {change: (n, size) for change, n, size in rows}

    def to_fetch(self, jobs: Iterable[str], changes: Iterable[str]) -> tuple[int, int]:
        """(bytes, files) of the given changes over `jobs`: what the quota check weighs."""
        jobs, changes = list(jobs), list(changes)
        if not jobs or not changes:
            return 0, 0
        sql = (
            f"SELECT coalesce(sum(size), 0), count(*) FROM listed WHERE job IN "
            f"({','.join('?' * len(jobs))}) AND change IN ({','.join('?' * len(changes))})"
        )
        size, count = self._db.execute(sql, [*jobs, *changes]).fetchone()
        return int(size), int(count)

    def rows(
        self, job: str, *, changes: Iterable[str] = (), action: str | None = None
    ) -> Iterator[Row]:
        """Matching rows in path order, read a page at a time (no read stays open between
        yields, so the caller may write elsewhere meanwhile)."""
        changes = list(changes)
        where = "job = ? AND path > ?"
        args: list[object] = [job]
        if changes:
            where += f" AND change IN ({','.join('?' * len(changes))})"
        if action is not None:
            where += " AND action = ?"
        after = ""
        while True:
            page = self._db.execute(
                f"SELECT path, change, size, item, action, method FROM listed WHERE {where} "
                f"ORDER BY path LIMIT {PAGE}",
                [*args, after, *changes, *([action] if action is not None else [])],
            ).fetchall()
            for path, change, size, item, act, method in page:
                yield Row(path, change, size, _item(item) if item else None, act, method)
            if len(page) < PAGE:
                return
            after = page[-1][0]

    def has(self, job: str, path: str) -> bool:
        row = self._db.execute("SELECT 1 FROM listed WHERE job = ? AND path = ?", (job, path))
        return row.fetchone() is not None
