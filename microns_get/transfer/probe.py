"""Measuring mirrors: latency of a small ranged GET and throughput of a few-MiB range.

Owns: the probe requests and the ranking rule (estimated time for the whole plan:
requests x latency / parallelism + bytes / throughput). A mirror whose probe fails ranks last.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from microns_get.errors import RemoteError
from microns_get.sources import Source

LATENCY_BYTES = 1024
THROUGHPUT_BYTES = 4 << 20


@dataclass(frozen=True)
class Probe:
    provider: str
    url: str
    latency_s: float | None = None
    throughput_bps: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.latency_s is not None

    def estimate_seconds(self, requests: int, total_bytes: int, jobs: int) -> float:
        if not self.ok:
            return float("inf")
        transfer = total_bytes / self.throughput_bps if self.throughput_bps else 0.0
        return requests * (self.latency_s or 0.0) / max(1, jobs) + transfer

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def probe(source: Source, provider: str, url: str, key: str, size: int) -> Probe:
    """Two timed reads of one object the plan needs anyway."""
    try:
        started = time.monotonic()
        await source.read(key, 0, min(size, LATENCY_BYTES) or None)
        latency = time.monotonic() - started
        throughput = None
        length = min(size, THROUGHPUT_BYTES)
        if length > LATENCY_BYTES:
            started = time.monotonic()
            data = await source.read(key, 0, length)
            elapsed = max(time.monotonic() - started, 1e-6)
            throughput = len(data or b"") / elapsed
    except RemoteError as exc:
        return Probe(provider, url, error=str(exc))
    return Probe(provider, url, latency_s=latency, throughput_bps=throughput)


def rank(probes: Sequence[Probe], requests: int, total_bytes: int, jobs: int) -> list[Probe]:
    """Best first; ties keep the catalogue order (sorted() is stable)."""
    return sorted(probes, key=lambda p: p.estimate_seconds(requests, total_bytes, jobs))
