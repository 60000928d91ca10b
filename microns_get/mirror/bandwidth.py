"""Bandwidth caps: `--bwlimit 50M`, or an rclone-style day schedule `"08:00,10M 20:00,off"`.

Owns: parsing the limit text, the schedule's rule (the entry whose time of day was reached last
is in force; before the first entry the day's last entry still holds, as in rclone) and a token
bucket that every connection of one process awaits per chunk received, so the cap is shared by
all parallel parts rather than applied per connection. Must not know about sources or plans: the
engine calls `TokenBucket.consume(n)` through its `throttle` hook.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from microns_get.config import parse_size
from microns_get.errors import ConfigError

_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
BURST_SECONDS = 0.25  # the bucket holds this much of a second's allowance: smooth, but not choppy


@dataclass(frozen=True)
class Schedule:
    """`entries` are (minute of the day, bytes/s or None for no cap), sorted by minute."""

    entries: tuple[tuple[int, int | None], ...]

    def rate_at(self, minute_of_day: int) -> int | None:
        current = self.entries[-1][1]  # before the first change of the day: last night's value
        for minute, rate in self.entries:
            if minute <= minute_of_day:
                current = rate
        return current

    def rate_now(self) -> int | None:
        now = datetime.now()
        return self.rate_at(now.hour * 60 + now.minute)

    @property
    def text(self) -> str:
        def rate_text(rate: int | None) -> str:
            return "off" if rate is None else str(rate)

        if len(self.entries) == 1 and self.entries[0][0] == 0:
            return rate_text(self.entries[0][1])
        return " ".join(f"{m // 60:02d}:{m % 60:02d},{rate_text(r)}" for m, r in self.entries)


def _rate(text: str) -> int | None:
    value = text.strip()
    if value.lower() in ("off", "none", "0", "unlimited"):
        return None
    try:
        return parse_size(value)
    except ConfigError:
        raise ConfigError(f"not a bandwidth: {text!r} (expected e.g. 50M, 1.5G, off)") from None


def parse_bwlimit(text: str | int | None) -> Schedule | None:
    """`50M` (bytes per second, binary multiples), `off`, or `HH:MM,RATE HH:MM,RATE ...`."""
    if text is None or str(text).strip() == "":
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    words = str(text).split()
    if len(words) == 1 and "," not in words[0]:
        rate = _rate(words[0])
        return None if rate is None else Schedule(((0, rate),))
    entries: dict[int, int | None] = {}
    for word in words:
        when, _, rate = word.partition(",")
        match = _TIME.match(when)
        if not match or not rate:
            raise ConfigError(
                f"bad bandwidth schedule entry {word!r} (expected HH:MM,RATE as in "
                f'"08:00,10M 20:00,off")'
            )
        entries[int(match.group(1)) * 60 + int(match.group(2))] = _rate(rate)
    return Schedule(tuple(sorted(entries.items())))


class TokenBucket:
    """A debt-based token bucket: a caller takes its bytes at once and sleeps off any deficit,
    so concurrent callers queue up fairly behind each other without a lock (one event loop)."""

    def __init__(
        self,
        rate: Callable[[], int | None],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = asyncio.sleep,
    ) -> None:
        self._rate = rate
        self._clock = clock
        self._sleep = sleep
        self._tokens: float | None = None  # full on first use: a burst's worth may go at once
        self._stamp = clock()
        self.consumed = 0

    @classmethod
    def for_schedule(cls, schedule: Schedule | None) -> TokenBucket | None:
        return None if schedule is None else cls(schedule.rate_now)

    def _refill(self, rate: int) -> None:
        now = self._clock()
        burst = rate * BURST_SECONDS
        tokens = burst if self._tokens is None else self._tokens + (now - self._stamp) * rate
        self._tokens = min(burst, tokens)
        self._stamp = now

    def delay_for(self, n: int) -> float:
        """Take `n` bytes' worth of tokens; the seconds the caller must now wait (0: none)."""
        self.consumed += n
        rate = self._rate()
        if rate is None:
            self._stamp = self._clock()
            self._tokens = 0.0
            return 0.0
        self._refill(rate)
        tokens = (self._tokens or 0.0) - n
        self._tokens = tokens
        return -tokens / rate if tokens < 0 else 0.0

    async def consume(self, n: int) -> None:
        delay = self.delay_for(n)
        if delay > 0:
            await self._sleep(delay)  # type: ignore[misc]
