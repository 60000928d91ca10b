"""A fault-injecting HTTP reverse proxy for tests of the transfer engine.

Owns: `FaultProxy`, an aiohttp server on a free 127.0.0.1 port, run in a background thread with
its own event loop, that forwards every request to one upstream (moto, fake-gcs-server, a static
server) byte for byte, never decompressing; `FaultRule`, the faults a test switches on at run time
(error statuses, resets, short bodies, flipped bits, wrong Content-Range, latency, throttling, a
dead mirror); and `ProxyStats`, the counters and request log the tests assert on. Rules and stats
are shared with the test thread, so every access goes through one lock.
"""

from __future__ import annotations

import asyncio
import copy
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

KINDS = frozenset("status reset truncate flip_byte wrong_content_range delay throttle dead".split())
# RFC 9110 hop-by-hop headers, plus the ones this proxy recomputes (Host, length of a re-read body).
_HOP = frozenset(
    "connection keep-alive proxy-authenticate proxy-authorization proxy-connection te trailer "
    "trailers transfer-encoding upgrade host expect".split()
)
_AUTO = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
SLOWDOWN_XML = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"


@dataclass
class FaultRule:
    """One fault, its matcher and how often it fires; counters `seen`/`fired` are live."""

    kind: str
    # Matcher: every given condition must hold.
    method: str | None = None
    path_contains: str | None = None
    path_regex: str | None = None
    query_contains: str | None = None
    only_ranged: bool = False
    # How often: skip the first N matches, then fire with `probability` at most `times` times.
    times: int | None = None
    probability: float | None = None
    seed: int = 0
    skip_first: int = 0
    # Parameters of the fault kinds.
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    after_bytes: int = 0  # reset / truncate: body bytes sent before the cut
    at: int = 0  # flip_byte: body offset of the byte whose low bit is flipped
    shift: int = 1  # wrong_content_range: added to start and end
    seconds: float = 0.0  # delay
    bytes_per_sec: float = 0.0  # throttle
    name: str = ""  # key in ProxyStats.fired; defaults to the kind
    seen: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {sorted(KINDS)}")
        if self.kind == "throttle" and self.bytes_per_sec <= 0:
            raise ValueError("throttle needs bytes_per_sec > 0")
        self.name = self.name or self.kind
        self._regex = re.compile(self.path_regex) if self.path_regex else None
        self._rng = random.Random(self.seed)

    def matches(self, request: web.BaseRequest) -> bool:
        if self.method and request.method.upper() != self.method.upper():
            return False
        if self.path_contains and self.path_contains not in request.path:
            return False
        if self._regex and not self._regex.search(request.path):
            return False
        if self.query_contains and self.query_contains not in request.query_string:
            return False
        return not (self.only_ranged and "Range" not in request.headers)

    def should_fire(self, request: web.BaseRequest) -> bool:
        """Advance the counters for one request; the caller holds the proxy lock."""
        if not self.matches(request):
            return False
        self.seen += 1
        if self.seen <= self.skip_first or (self.times is not None and self.fired >= self.times):
            return False
        # Drawn only for eligible requests, so a seed gives the same pattern on every run.
        if self.probability is not None and self._rng.random() >= self.probability:
            return False
        self.fired += 1
        return True


def slow_down(**match: Any) -> FaultRule:
    """A 503 with the S3 `SlowDown` error body; `match` takes the other FaultRule fields."""
    headers = {"Content-Type": "application/xml"}
    return FaultRule("status", status=503, headers=headers, body=SLOWDOWN_XML, **match)


def too_many_requests(retry_after: float = 1, **match: Any) -> FaultRule:
    """A 429 carrying `Retry-After`; `match` takes the other FaultRule fields."""
    headers = {"Retry-After": f"{retry_after:g}"}
    return FaultRule("status", status=429, headers=headers, body=b"rate limited", **match)


@dataclass
class RequestRecord:
    """One served request; `status` is None when no response was sent (dead)."""

    method: str
    path: str
    query: str
    range: str | None
    status: int | None = None
    bytes_sent: int = 0
    faults: tuple[str, ...] = ()


@dataclass
class ProxyStats:
    """Counters since start (or `reset_stats`); bytes are response body bytes sent to clients."""

    requests: int = 0
    fired: Counter[str] = field(default_factory=Counter)
    bytes_sent: int = 0
    bytes_by_path: Counter[str] = field(default_factory=Counter)
    log: list[RequestRecord] = field(default_factory=list)


@dataclass
class _Exchange:
    """One request in flight: its log record, and what the fired rules do to its response."""

    request: web.Request
    record: RequestRecord
    terminal: FaultRule | None = None  # a status or dead rule: the upstream is not asked
    delay: float = 0.0
    rate: float | None = None
    cut_at: int | None = None
    cut_reset: bool = False
    flips: set[int] = field(default_factory=set)
    cr_shift: int = 0

    def add(self, rule: FaultRule) -> None:
        self.record.faults += (rule.name,)
        k = rule.kind
        if k in ("status", "dead"):
            self.terminal = rule
        elif k == "delay":
            self.delay += rule.seconds
        elif k == "throttle":
            self.rate = min(self.rate or rule.bytes_per_sec, rule.bytes_per_sec)
        elif k in ("reset", "truncate") and (self.cut_at is None or rule.after_bytes < self.cut_at):
            self.cut_at, self.cut_reset = rule.after_bytes, k == "reset"
        elif k == "flip_byte":
            self.flips.add(rule.at)
        elif k == "wrong_content_range":
            self.cr_shift += rule.shift

    def mangle(self, chunk: bytes, offset: int) -> bytes:
        """The part of `chunk` (at body `offset`) still to send, with its flipped bits."""
        if self.cut_at is not None:
            chunk = chunk[: max(0, self.cut_at - offset)]
        data = bytearray(chunk)
        for at in self.flips:
            if offset <= at < offset + len(data):
                data[at - offset] ^= 0x01
        return bytes(data)


def _abort(request: web.BaseRequest) -> None:
    """Drop the connection with a TCP RST (linger 0), so the client sees a reset, not an EOF."""
    if (transport := request.transport) is not None:
        if (sock := transport.get_extra_info("socket")) is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()


def _shift_range(value: str, shift: int) -> str:
    m = _CONTENT_RANGE.fullmatch(value.strip())
    return f"bytes {int(m[1]) + shift}-{int(m[2]) + shift}/{m[3]}" if m else value


class FaultProxy:
    """Reverse proxy to `upstream` (e.g. `http://127.0.0.1:9000`) with run-time fault rules."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self._upstream_host = urlsplit(self.upstream).netloc
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified as each request finishes
        self._rules: list[FaultRule] = []
        self._stats = ProxyStats()
        self._inflight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        if self._thread is not None:
            return self
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._astart(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._astop(), self._loop).result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
            self._thread = self._loop = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _astart(self) -> None:
        # No pool limit: the engine under test may open many parallel ranged requests.
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False
        )
        app = web.Application(client_max_size=1 << 34)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def _astop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def add_rule(self, rule: FaultRule) -> FaultRule:
        """Append a rule; rules are checked in order, and a firing status/dead rule ends it."""
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove_rule(self, rule: FaultRule) -> None:
        with self._lock:
            self._rules = [r for r in self._rules if r is not rule]

    def clear_rules(self) -> None:
        with self._lock:
            self._rules = []

    @property
    def stats(self) -> ProxyStats:
        """A snapshot copy, safe to read while the proxy keeps serving."""
        with self._lock:
            return copy.deepcopy(self._stats)

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = ProxyStats()

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is being served (its log record written); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout)

    def _begin(self, request: web.Request) -> _Exchange:
        headers = request.headers
        rec = RequestRecord(
            request.method, request.path, request.query_string, headers.get("Range")
        )
        ex = _Exchange(request, rec)
        with self._lock:
            self._inflight += 1
            self._stats.requests += 1
            for rule in self._rules:
                if rule.should_fire(request):
                    ex.add(rule)
                    self._stats.fired[rule.name] += 1
                    if ex.terminal is not None:
                        break
        return ex

    def _count(self, rec: RequestRecord, n: int) -> None:
        with self._lock:
            rec.bytes_sent += n
            self._stats.bytes_sent += n
            self._stats.bytes_by_path[rec.path] += n

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        ex = self._begin(request)
        try:
            if ex.delay:
                await asyncio.sleep(ex.delay)
            if (rule := ex.terminal) is None:
                return await self._forward(ex)
            if rule.kind == "dead":
                _abort(request)
                return web.Response()  # never sent: aiohttp drops it on the closed transport
            ex.record.status = rule.status
            self._count(ex.record, len(rule.body))
            return web.Response(status=rule.status, headers=rule.headers, body=rule.body)
        finally:
            with self._lock:
                self._stats.log.append(ex.record)
                self._inflight -= 1
                self._idle.notify_all()

    def _request_headers(self, request: web.Request) -> dict[str, str]:
        named = request.headers.get("Connection", "")  # headers it names are hop-by-hop too
        dropped = _HOP | {h.strip().lower() for h in named.split(",")}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in dropped}
        headers["Host"] = self._upstream_host
        return headers

    async def _forward(self, ex: _Exchange) -> web.StreamResponse:
        assert self._session is not None
        request = ex.request
        body = await request.read() if request.body_exists else None
        # aiohttp adds these when absent; an added Accept-Encoding would change what upstream sends.
        skip = [h for h in _AUTO if h not in request.headers]
        try:
            upstream = await self._session.request(
                request.method,
                self.upstream + request.path_qs,
                headers=self._request_headers(request),
                data=body,
                skip_auto_headers=skip,
                allow_redirects=False,
            )
        except aiohttp.ClientError as exc:
            ex.record.status = 502
            return web.Response(status=502, text=f"faultproxy: upstream unreachable: {exc}")
        async with upstream:
            return await self._relay(ex, upstream)

    async def _relay(self, ex: _Exchange, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for k, v in upstream.headers.items():
            if k.lower() == "content-range" and ex.cr_shift:
                v = _shift_range(v, ex.cr_shift)
            if k.lower() not in _HOP:
                resp.headers.add(k, v)
        ex.record.status = upstream.status
        await resp.prepare(ex.request)
        try:
            await self._stream_body(ex, upstream, resp)
        except ConnectionError:
            return resp  # the client went away; what it got is already counted
        except aiohttp.ClientError:
            _abort(ex.request)  # the upstream broke mid-body: pass the breakage on
            return resp
        if ex.cut_at is None or ex.record.bytes_sent < ex.cut_at:
            await resp.write_eof()
        elif ex.cut_reset:
            _abort(ex.request)
        elif ex.request.transport is not None:
            ex.request.transport.close()  # flushes what was written, then a clean FIN
        return resp

    async def _stream_body(
        self, ex: _Exchange, upstream: aiohttp.ClientResponse, resp: web.StreamResponse
    ) -> None:
        offset, started = 0, time.monotonic()
        async for chunk in upstream.content.iter_chunked(1 << 16):
            chunk = ex.mangle(chunk, offset)
            # A throttled body goes out in slices, each paced against the body's start.
            step = max(1, int(ex.rate / 50) if ex.rate else len(chunk))
            for i in range(0, len(chunk), step):
                if ex.rate:
                    await asyncio.sleep(started + (offset + i) / ex.rate - time.monotonic())
                piece = chunk[i : i + step]
                await resp.write(piece)
                self._count(ex.record, len(piece))
            offset += len(chunk)
            if ex.cut_at is not None and offset >= ex.cut_at:
                return
