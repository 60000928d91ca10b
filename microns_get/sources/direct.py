"""Ranged GETs read straight into a reused buffer by a worker thread (the large-object path).

Why not aiohttp here: on the event loop every received piece is a new `bytes` object, joined,
handed to a thread to be written and hashed, and the loop's one thread does all the receiving.
For a multi-GiB object that costs more CPU than the hashing itself. Here each part has a thread
that does `recv_into` a buffer it owns, then `pwrite` and MD5 on the same buffer: all three
release the GIL, so both cores work, and no piece is copied in Python.

Owns: a small pool of keep-alive `http.client` connections per host, one ranged GET with the
same status mapping and Content-Range checks as `sources.http` (404 is `MissingObject`; 5xx,
429, resets and short bodies are retryable), cancellation of a read in flight from another
thread, and redirects (as aiohttp follows them). Must not retry, hash, write or know about
datasets: the caller's `sink` does that.

`DirectTransport` is the same as `http.HttpTransport` (HEAD, GET of a range or a whole body) on
these threads: a run that needs nothing else (a cutout) never imports aiohttp, whose import and
SSL set-up cost about a fifth of such a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import mmap
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

from microns_get.errors import RemoteError
from microns_get.sources.http import (
    IDENTITY,
    STREAM_CHUNK,
    USER_AGENT,
    MissingObject,
    RetryableHttpError,
    check_content_range,
    network_error,
    range_header,
    status_error,
)
from microns_get.sources.proxies import connect_via, forward_target, proxy_for

BUFFER = 1 << 20  # bytes received per `recv_into` round; each is written and hashed at once
IDLE_PER_HOST = 32  # keep-alive connections kept per host, at least (one per thread if more)
REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 10  # as aiohttp's default

T = TypeVar("T")
# (buffer of received bytes, offset of its first byte in the object) -> None
Sink = Callable[[memoryview, int], None]


# how a kept-alive connection that the server closed fails on its next request
STALE_ERRORS = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
    ConnectionAbortedError,
)


class _StaleConnection(Exception):
    """The request failed before any answer on a connection that may have gone stale."""


class Cancelled(Exception):
    """The read was stopped by `RangeRead.cancel` (its task was cancelled)."""


class _Redirected(Exception):
    def __init__(self, location: str) -> None:
        self.location = location


class ConnectionPool:
    """Idle keep-alive connections per (scheme, host:port); thread-safe."""

    def __init__(self, timeout: float, keep: int = IDLE_PER_HOST) -> None:
        self.keep = max(keep, IDLE_PER_HOST)
        self.timeout = timeout
        self._idle: dict[tuple[str, str], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    def take(self, scheme: str, netloc: str) -> tuple[http.client.HTTPConnection, bool]:
        """A connection to the host, and whether it was idle in the pool (the server may have
        closed it since)."""
        with self._lock:
            idle = self._idle.get((scheme, netloc))
            if idle:
                return idle.pop(), True
        return self.new(scheme, netloc), False

    def new(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        if scheme == "https" and self._tls is None:
            self._tls = ssl.create_default_context()
        proxy = proxy_for(scheme, netloc)
        if proxy is not None:
            return connect_via(proxy, scheme, netloc, self.timeout, self._tls)
        if scheme == "https":
            return http.client.HTTPSConnection(netloc, timeout=self.timeout, context=self._tls)
        return http.client.HTTPConnection(netloc, timeout=self.timeout)

    def give_back(self, scheme: str, netloc: str, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault((scheme, netloc), [])
            if len(idle) < self.keep:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            pools, self._idle = list(self._idle.values()), {}
        for idle in pools:
            for conn in idle:
                conn.close()


class RangeRead:
    """One ranged GET of `[start, end)`, fed to `sink` buffer by buffer; `run` in a thread.
    Without a sink (and without `into`) the body is kept whole in `body`, and `end` may be
    `None` (to the end of the object); with `method="HEAD"` only `response_headers` are kept."""

    def __init__(
        self,
        pool: ConnectionPool,
        url: str,
        headers: Mapping[str, str] | None,
        start: int,
        end: int | None,
        sink: Sink | None = None,
        method: str = "GET",
    ) -> None:
        self.pool = pool
        self.url = url
        self.headers = {
            **IDENTITY,
            "User-Agent": USER_AGENT,
            **(headers or {}),
            **range_header(start, end),
        }
        self.start = start
        self.end = end
        self.sink = sink
        self.method = method
        # with `into`, the body is read into it (as many bytes as the range) and `sink` unused
        self.into: memoryview | None = None
        self.body = b""
        self.response_headers: Mapping[str, str] = {}
        self._conn: http.client.HTTPConnection | None = None
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._answered = False  # the status line arrived (so a failure is not a stale socket)

    def cancel(self) -> None:
        """Stop the read from another thread: a blocked `recv` returns at once."""
        self._cancelled.set()
        with self._lock:
            conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def run(self) -> int:
        """Read the whole range into the sink; returns the bytes received."""
        for _ in range(MAX_REDIRECTS):
            try:
                return self._run_once()
            except _Redirected as hop:
                self.url = hop.location
        raise RemoteError(f"more than {MAX_REDIRECTS} redirects from {self.url}", retryable=False)

    def _run_once(self) -> int:
        parts = urlsplit(self.url)
        target = (parts.path + (f"?{parts.query}" if parts.query else "")) or "/"
        conn, was_idle = self.pool.take(parts.scheme, parts.netloc)
        try:
            return self._attempt(conn, parts.scheme, parts.netloc, target)
        except _StaleConnection:
            # A kept-alive connection the server had closed meanwhile, failing before any byte
            # of the answer: not a fault of the server, so one fresh connection, not a retry.
            if not was_idle:
                raise network_error(self.url, ConnectionError("closed before answering")) from None
            fresh = self.pool.new(parts.scheme, parts.netloc)
            try:
                return self._attempt(fresh, parts.scheme, parts.netloc, target)
            except _StaleConnection as exc:
                raise network_error(self.url, exc.__cause__ or exc) from exc

    def _attempt(
        self, conn: http.client.HTTPConnection, scheme: str, netloc: str, target: str
    ) -> int:
        with self._lock:
            self._conn = conn
        reusable = False
        self._answered = False
        try:
            received = self._exchange(conn, target)
            reusable = True
            return received
        except (OSError, http.client.HTTPException) as exc:
            if self._cancelled.is_set():
                raise Cancelled(self.url) from exc
            if not self._answered and isinstance(exc, STALE_ERRORS):
                raise _StaleConnection(self.url) from exc
            raise network_error(self.url, exc) from exc
        finally:
            with self._lock:
                self._conn = None
            if reusable and not self._cancelled.is_set():
                self.pool.give_back(scheme, netloc, conn)
            else:
                conn.close()

    def _exchange(self, conn: http.client.HTTPConnection, target: str) -> int:
        target, proxy_headers = forward_target(conn, target)
        conn.request(self.method, target, headers={**self.headers, **proxy_headers})
        resp = conn.getresponse()
        self._answered = True
        self._check_status(resp)
        self.response_headers = resp.headers
        if self.method == "HEAD":
            resp.read()  # nothing, but the connection is free again
            return 0
        check_content_range(self.url, resp.status, resp.headers, self.start)
        if self.sink is None and self.into is None:
            self.body = resp.read()  # to Content-Length, the last chunk, or EOF
            received = len(self.body)
        else:
            received = self._drain(resp)
        if self.end is not None and received != self.end - self.start:
            raise RetryableHttpError(
                f"short body from {self.url}: {received} of {self.end - self.start} bytes"
            )
        # Read past the range: nothing may follow it (a chunked body's last chunk is consumed
        # here, so the connection can be reused).
        if not resp.isclosed() and resp.read(1):
            raise RetryableHttpError(f"body longer than the range asked from {self.url}")
        return received

    def _check_status(self, resp: http.client.HTTPResponse) -> None:
        location = resp.headers.get("Location")
        if resp.status in REDIRECTS and location:
            resp.read()
            raise _Redirected(urljoin(self.url, location))
        if resp.status >= 400:
            body = resp.read(4096).decode("utf-8", "replace")
            if resp.status == 404:
                raise MissingObject(self.url)
            raise status_error(self.url, resp.status, resp.headers, body)

    def _drain(self, resp: http.client.HTTPResponse) -> int:
        assert self.end is not None  # a sink or a buffer is given a known range
        want = self.end - self.start
        into = self.into
        # page-aligned (mmap), so a sink may write it with O_DIRECT as it is (`direct_io`)
        owned = mmap.mmap(-1, min(BUFFER, want)) if into is None else None
        buffer = into if owned is None else memoryview(owned)
        received = 0
        try:
            while received < want:
                if self._cancelled.is_set():
                    raise Cancelled(self.url)
                if into is not None:  # straight into the caller's buffer, nothing to hand on
                    n = resp.readinto(into[received : received + BUFFER])
                else:
                    assert self.sink is not None
                    n = resp.readinto(buffer[: min(BUFFER, want - received)])
                    if n:
                        self.sink(buffer[:n], self.start + received)
                if not n:
                    break
                received += n
        finally:
            if owned is not None:
                buffer.release()
                with contextlib.suppress(BufferError):  # a view still held: the GC frees it
                    owned.close()
        return received


class DirectReader:
    """Runs `RangeRead`s on its own threads for the event loop; one per run."""

    def __init__(self, workers: int, timeout: float = 60.0) -> None:
        # its own threads, and as many more of the small-object fast path (transfer.small)
        self.pool = ConnectionPool(timeout, keep=2 * workers)
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="range")

    async def read(
        self, url: str, headers: Mapping[str, str] | None, start: int, end: int, sink: Sink
    ) -> int:
        """Feed `[start, end)` to `sink` (on a reader thread); returns the bytes received."""
        read = RangeRead(self.pool, url, headers, start, end, sink)
        return await self.call(read.run, read.cancel)

    def get_bytes(self, url: str, headers: Mapping[str, str] | None, size: int) -> bytearray:
        """The whole `size`-byte object in memory; blocking, for code already on a thread of
        `call` (a small object is fetched and landed in one thread step)."""
        body = bytearray(size)
        read = RangeRead(self.pool, url, headers, 0, size)
        read.into = memoryview(body)
        read.run()
        return body

    async def call(self, work: Callable[[], T], cancel: Callable[[], None] | None = None) -> T:
        return await call_on(self.executor, work, cancel)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.pool.close()


class DirectTransport:
    """`http.HttpTransport`'s interface on a `DirectReader`'s threads, and the "session" sources
    accept in place of an aiohttp one (`http.transport_for`). Same semantics: 404 is `None` from
    `head` / `get_bytes` and `MissingObject` from `stream`, failures worth retrying are
    `RetryableHttpError`, bodies arrive as stored (identity unless the caller asks for gzip)."""

    def __init__(self, reader: DirectReader) -> None:
        self.reader = reader

    async def head(
        self, url: str, headers: Mapping[str, str] | None = None
    ) -> Mapping[str, str] | None:
        read = RangeRead(self.reader.pool, url, headers, 0, None, method="HEAD")
        try:
            await self.reader.call(read.run, read.cancel)
        except MissingObject:
            return None
        return read.response_headers

    async def get_bytes(
        self,
        url: str,
        start: int = 0,
        end: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> bytes | None:
        try:
            return await self._body(url, start, end, headers)
        except MissingObject:
            return None

    async def stream(
        self,
        url: str,
        start: int = 0,
        end: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[bytes]:
        """The range read whole, then handed on in pieces: this transport serves metadata and
        cutout-sized reads; large objects go through `DirectReader.read` with a sink instead."""
        body = memoryview(await self._body(url, start, end, headers))
        for offset in range(0, len(body), STREAM_CHUNK):
            yield bytes(body[offset : offset + STREAM_CHUNK])

    async def _body(
        self, url: str, start: int, end: int | None, headers: Mapping[str, str] | None
    ) -> bytes:
        read = RangeRead(self.reader.pool, url, headers, start, end)
        await self.reader.call(read.run, read.cancel)
        return read.body

    async def close(self) -> None:
        self.reader.close()

    async def __aenter__(self) -> DirectTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def make_direct_session(jobs: int = 16, timeout: float = 60.0) -> DirectTransport:
    """A run's HTTP on `jobs` reader threads (`async with` closes it), as `make_session`."""
    return DirectTransport(DirectReader(jobs, timeout))


async def call_on(
    executor: Executor | None, work: Callable[[], T], cancel: Callable[[], None] | None = None
) -> T:
    """Run `work` on `executor` (None: the loop's default one). If the awaiting task is
    cancelled, `cancel` is called and the thread is waited for: whatever it writes is written
    before this returns."""
    future = asyncio.get_running_loop().run_in_executor(executor, work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if cancel is not None:
            cancel()
        await _settle(future)
        raise


async def _settle(future: asyncio.Future[Any]) -> None:
    """Wait until a cancelled read's thread has stopped, whatever else is cancelled meanwhile."""
    while not future.done():
        try:
            await asyncio.wait([future])
        except asyncio.CancelledError:
            continue
    future.exception()  # retrieved: it was the cancellation itself, or moot now
