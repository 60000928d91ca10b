"""One remote request under the run's policies: retries with backoff, and mirror health.

Owns: counting retries, reporting them as events, and charging failures to the mirror that
caused them (a mirror marked down stops being retried while another is still up). Shared by the
whole-object engine and the cutout runner, so both behave the same under faults.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from microns_get.errors import RemoteError
from microns_get.transfer import events as ev
from microns_get.transfer.health import MirrorHealth
from microns_get.transfer.retry import with_retries

T = TypeVar("T")


class Requester:
    def __init__(self, settings: Any, health: MirrorHealth, emit: ev.Emit = ev.ignore) -> None:
        self.settings = settings
        self.health = health
        self.emit = emit
        self.retries = 0

    async def __call__(self, provider: str, url: str, call: Callable[[], Awaitable[T]]) -> T:
        def on_retry(exc: BaseException) -> None:
            self.retries += 1
            self.emit(ev.Retrying(url, str(exc)))
            if self.health.failure(provider):
                self.emit(ev.MirrorDown(provider, str(exc)))

        def give_up() -> bool:
            others = self.health.rank or [provider]
            return self.health.is_down(provider) and not self.health.all_down(others)

        try:
            # Fast path: most requests succeed at once, and building the retry machinery
            # for each of thousands of small requests costs more than the request.
            result = await call()
        except RemoteError as exc:
            if not exc.retryable or self.settings.retries <= 1 or give_up():
                self._charge(provider, exc)
                raise
            on_retry(exc)
            await asyncio.sleep(first_wait(exc))
        else:
            self.health.success(provider)
            return result
        try:
            result = await with_retries(call, self.settings.retries - 1, on_retry, give_up)
        except RemoteError as exc:
            self._charge(provider, exc)
            raise
        self.health.success(provider)
        return result

    def _charge(self, provider: str, exc: RemoteError) -> None:
        """A request that failed for good counts against its mirror."""
        if exc.retryable and self.health.failure(provider):
            self.emit(ev.MirrorDown(provider, str(exc)))


def first_wait(exc: BaseException) -> float:
    """Before the first retry: the server's Retry-After, else a short jittered pause."""
    retry_after = getattr(exc, "retry_after", None)
    return min(float(retry_after), 60.0) if retry_after is not None else random.uniform(0.05, 0.3)
