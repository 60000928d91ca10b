"""Rendering engine events: rich bars on a TTY, timestamped plain lines otherwise (cron), or one
JSON object per line with `--json`. Owns presentation of progress only.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from microns_get.transfer import events as ev

if TYPE_CHECKING:
    from rich.console import Console


class JsonLines:
    """One JSON event per line on stdout (byte-level events are folded into item events)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out  # None: whatever sys.stdout is when an event arrives

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.BytesMoved):
            return
        out = self.out or sys.stdout
        out.write(json.dumps(event.to_json(), default=str) + "\n")
        out.flush()

    def __enter__(self) -> JsonLines:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class PlainLines:
    """Timestamped lines for logs and cron: starts, finished items, retries, failures."""

    def __init__(self, out: TextIO | None = None, quiet: bool = False) -> None:
        self.out = out  # None: whatever sys.stderr is when an event arrives
        self.quiet = quiet

    def _line(self, text: str) -> None:
        out = self.out or sys.stderr
        out.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}\n")
        out.flush()

    def __call__(self, event: ev.Event) -> None:
        if self.quiet and not isinstance(event, (ev.ItemFailed, ev.MirrorDown)):
            return
        text = plain_text(event)
        if text:
            self._line(text)

    def __enter__(self) -> PlainLines:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def plain_text(event: ev.Event) -> str | None:
    if isinstance(event, ev.RunStarted):
        return (
            f"plan {event.plan_id}: {event.objects} objects, {event.bytes} bytes "
            f"from {event.mirror}"
        )
    if isinstance(event, ev.ItemDone):
        return f"done {event.path} ({event.size} bytes, {event.mirror}, {event.verified_by})"
    if isinstance(event, ev.ItemSkipped):
        return f"skip {event.path} ({event.reason})"
    if isinstance(event, ev.ItemFailed):
        return f"FAILED {event.path}: {event.error}"
    if isinstance(event, ev.Retrying):
        return f"retry {event.url}: {event.error}"
    if isinstance(event, ev.MirrorDown):
        return f"mirror {event.mirror} marked down: {event.reason}"
    return None


class RichBars:
    """One bytes bar (rate, ETA) whose label counts objects, for an interactive terminal."""

    def __init__(self, console: Console | None = None) -> None:
        # rich is imported only here: off a terminal (cron, pipes, --json) it is never loaded
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.task: Any = None
        self.total_objects = 0
        self.finished_objects = 0

    def __enter__(self) -> RichBars:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _count_object(self) -> None:
        self.finished_objects += 1
        label = f"objects {self.finished_objects}/{self.total_objects}"
        self.progress.update(self.task, description=label)

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.RunStarted):
            self.total_objects = event.objects
            self.task = self.progress.add_task(f"objects 0/{event.objects}", total=event.bytes)
        elif self.task is None:
            return
        elif isinstance(event, ev.BytesMoved):
            self.progress.advance(self.task, event.bytes)
        elif isinstance(event, ev.ItemSkipped):
            self.progress.advance(self.task, event.size)
            self._count_object()
        elif isinstance(event, ev.ItemDone):
            self._count_object()
        elif isinstance(event, ev.ItemFailed):
            self._count_object()
            self.console.print(f"[red]FAILED[/red] {event.path}: {event.error}")
        elif isinstance(event, ev.MirrorDown):
            down = f"[yellow]mirror {event.mirror} marked down[/yellow]"
            self.console.print(f"{down}: {event.reason}")


def renderer_for(as_json: bool, quiet: bool = False) -> JsonLines | PlainLines | RichBars:
    if as_json:
        return JsonLines()
    if sys.stderr.isatty() and not quiet:
        return RichBars()
    return PlainLines(quiet=quiet)


def summary_lines(done: ev.RunFinished) -> list[str]:
    lines = [
        f"objects: {done.objects_done} fetched, {done.objects_skipped} already there, "
        f"{done.objects_failed} failed",
        f"bytes: {done.bytes_moved} in {done.seconds:.2f} s ({done.mb_per_s:.1f} MB/s), "
        f"retries: {done.retries}",
    ]
    if done.mirrors_used:
        lines.append("mirrors: " + ", ".join(f"{k}={v}" for k, v in done.mirrors_used.items()))
    if done.verified_by:
        lines.append("verified: " + ", ".join(f"{k}={v}" for k, v in done.verified_by.items()))
    lines += [f"failed: {f}" for f in done.failures]
    return lines
