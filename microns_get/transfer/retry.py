"""The retry policy: which failures are tried again, and how long to wait between tries.

Owns: exponential backoff with full jitter (tenacity), `Retry-After` honoured when the server sent
one, and the rule that only `RemoteError(retryable=True)` is retried (429, 5xx, SlowDown, resets,
timeouts, short bodies); 403 / 404 / 416 are final. Pure policy: the caller does the I/O.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

from microns_get.errors import RemoteError

if TYPE_CHECKING:
    from tenacity import RetryCallState

T = TypeVar("T")


@cache
def _jitter() -> Any:
    # tenacity (and the tornado it imports) loads only when something is retried: most runs
    # never do, and every run pays for its imports
    from tenacity import wait_random_exponential

    return wait_random_exponential(multiplier=0.25, max=20)


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, RemoteError) and exc.retryable


def wait_seconds(state: RetryCallState) -> float:
    """The server's `Retry-After` when it gave one (capped), else jittered exponential backoff."""
    exc = state.outcome.exception() if state.outcome else None
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        return min(float(retry_after), 60.0)
    return _jitter()(state)


async def with_retries(
    call: Callable[[], Awaitable[T]],
    attempts: int,
    on_retry: Callable[[BaseException], None] | None = None,
    give_up: Callable[[], bool] | None = None,
) -> T:
    """Run `call` until it succeeds, fails for good, or runs out of attempts. `give_up` is asked
    before each retry (the engine stops retrying a mirror that has been marked down)."""

    from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

    def should_retry(exc: BaseException) -> bool:
        return is_retryable(exc) and not (give_up is not None and give_up())

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            on_retry(state.outcome.exception())

    retrying = AsyncRetrying(
        retry=retry_if_exception(should_retry),
        stop=stop_after_attempt(max(1, attempts)),
        wait=wait_seconds,
        before_sleep=before_sleep,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity re-raises the last error")
