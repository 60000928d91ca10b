"""One run per destination: a lock file that works on NFS, Lustre and GPFS (no fcntl).

Owns: `DEST/.microns-get/lock`, created atomically with `O_CREAT | O_EXCL` (atomic on NFSv3+ and
on the parallel file systems) and holding JSON `{host, pid, started, token}`; the staleness rule
(a dead pid on this host, or older than the TTL on any host); the takeover of a stale lock by
renaming it to a unique name first (rename is atomic: of two runs that both judged it stale,
only one moves it), and release only by the run whose token is in the file.
Must not decide anything about what a run transfers.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microns_get.errors import LockHeld

LOCK_NAME = "lock"
DEFAULT_TTL = 24 * 3600.0


@dataclass(frozen=True)
class LockInfo:
    host: str
    pid: int
    started: float
    token: str

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "started": self.started, "token": self.token}

    @classmethod
    def from_text(cls, text: str) -> LockInfo | None:
        try:
            data = json.loads(text)
            return cls(str(data["host"]), int(data["pid"]), float(data["started"]), data["token"])
        except (ValueError, KeyError, TypeError):
            return None  # half-written or foreign: judged by the file's age instead

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"host {self.host} pid {self.pid} since {since}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def stale_reason(info: LockInfo | None, age: float, ttl: float, host: str) -> str | None:
    """Why a lock may be taken over, or None while its holder may still be running. Pure."""
    if age > ttl:
        return f"older than {ttl / 3600:g} h"
    if info is None:
        # Unreadable: either being written right now or garbage; give a writer a moment.
        return "unreadable" if age > 60 else None
    if info.host == host and not pid_alive(info.pid):
        return f"pid {info.pid} is not running on {host}"
    return None


class DestLock:
    """`with DestLock(state_dir):` holds the destination for one run; raises `LockHeld`."""

    def __init__(self, state_dir: Path, ttl: float = DEFAULT_TTL) -> None:
        self.path = Path(state_dir) / LOCK_NAME
        self.ttl = ttl
        self.info = LockInfo(socket.gethostname(), os.getpid(), time.time(), uuid.uuid4().hex)
        self.warnings: list[str] = []
        self._created_dirs: list[Path] = []

    def __enter__(self) -> DestLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        self._make_parent()
        if self._create():
            return
        text, holder, age = self._read()
        reason = stale_reason(holder, age, self.ttl, self.info.host)
        if reason is None or not self._take_over(text):
            who = holder.describe() if holder else "an unreadable lock file"
            raise LockHeld(f"{self.path.parent.parent} is locked by {who} ({self.path})")
        self.warnings.append(
            f"took over a stale lock ({holder.describe() if holder else 'unreadable'}: {reason})"
        )

    def _make_parent(self) -> None:
        missing = []
        for parent in (self.path.parent, *self.path.parent.parents):
            if parent.exists():
                break
            missing.append(parent)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._created_dirs = missing  # innermost first: removed on release when left empty

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as out:
            json.dump(self.info.to_json(), out)
            out.flush()
            os.fsync(out.fileno())
        return True

    def _read(self) -> tuple[str, LockInfo | None, float]:
        try:
            text = self.path.read_text()
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return "", None, 0.0
        info = LockInfo.from_text(text)
        if info is not None:
            age = max(age, time.time() - info.started)
        return text, info, age

    def _take_over(self, judged: str) -> bool:
        """Move the stale lock aside (only one contender's rename succeeds), check it is the one
        judged stale (same bytes), then create ours with O_EXCL like any other run."""
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{self.info.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return self._create()  # its holder just released it
        if _read_or_empty(aside) != judged:
            # Another run took over between our read and our rename: put its lock back.
            _restore(aside, self.path)
            return False
        aside.unlink(missing_ok=True)
        return self._create()

    def release(self) -> None:
        """Remove the lock if it is still ours, then any directories the lock itself created."""
        current = LockInfo.from_text(_read_or_empty(self.path))
        if current is not None and current.token == self.info.token:
            self.path.unlink(missing_ok=True)
        for directory in self._created_dirs:
            try:
                directory.rmdir()
            except OSError:
                break  # not empty: the run wrote something there


def _read_or_empty(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _restore(aside: Path, path: Path) -> None:
    try:
        os.link(aside, path)  # atomic and never overwrites: a newer lock, if any, wins
    except OSError:
        pass
    aside.unlink(missing_ok=True)
