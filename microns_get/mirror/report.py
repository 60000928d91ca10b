"""What a mirror run did: per-job results, the run's events, and the JSON report file.

Owns: `JobResult` (added, changed, unchanged, deleted, bytes, errors, plan ids, duration and the
job's exit code), the mirror events the CLI renders beside the engine's, and writing the report
to `DEST/.microns-get/reports/<timestamp>.json` atomically (temp name, then rename), so cron
and monitoring read either a whole report or none. Must not print.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from microns_get import __version__
from microns_get.errors import ExitCode
from microns_get.transfer import events as ev

REPORTS_DIR = "reports"


@dataclass
class JobResult:
    name: str
    dataset: str
    dest: str
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    bytes: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    plan_ids: list[str] = field(default_factory=list)
    listing_complete: bool = False
    seconds: float = 0.0
    exit_code: int = ExitCode.OK

    def fail(self, message: str, code: int) -> None:
        self.errors.append(message)
        self.exit_code = max(self.exit_code, int(code))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- events (rendered by the CLI next to the engine's) ----------------------------------------


@dataclass(frozen=True)
class JobListed(ev.Event):
    job: str
    added: int
    changed: int
    unchanged: int
    bytes_to_fetch: int
    complete: bool


@dataclass(frozen=True)
class FileDeleted(ev.Event):
    job: str
    path: str


@dataclass(frozen=True)
class MirrorNote(ev.Event):
    """A warning or a refusal worth a line even under --quiet (stale lock, refused delete)."""

    job: str
    message: str


@dataclass(frozen=True)
class JobFinished(ev.Event):
    result: dict[str, Any]


# -- the report file --------------------------------------------------------------------------


def run_report(
    dest: Path, results: list[JobResult], started: float, finished: float
) -> dict[str, Any]:
    return {
        "tool": f"microns-get {__version__}",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "dest": str(dest),
        "started": _iso(started),
        "finished": _iso(finished),
        "duration_s": round(finished - started, 3),
        "exit_code": max((r.exit_code for r in results), default=0),
        "totals": {
            key: sum(getattr(r, key) for r in results)
            for key in ("added", "changed", "deleted", "unchanged", "bytes", "failed")
        },
        "errors": [f"{r.name}: {e}" for r in results for e in r.errors],
        "plan_ids": [p for r in results for p in r.plan_ids],
        "jobs": [r.to_json() for r in results],
    }


def write_report(state_dir: Path, report: dict[str, Any], started: float) -> Path:
    directory = state_dir / REPORTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started))
    # Microseconds and pid keep two runs of the same second (two destinations) apart.
    name = f"{stamp}.{int(started * 1e6) % 1_000_000:06d}Z-{os.getpid()}.json"
    final = directory / name
    temp = directory / f".{name}.tmp"
    temp.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    os.replace(temp, final)
    return final


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
