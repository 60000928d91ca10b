"""The threaded ranged reader (`sources.direct`) against a local upstream and our fault proxy:
the same status mapping and body checks as the aiohttp path, connection reuse, cancellation,
redirects, and `DirectTransport` (HEAD, bodies of unknown length)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from microns_get.errors import RemoteError
from microns_get.sources.direct import (
    ConnectionPool,
    DirectReader,
    DirectTransport,
    RangeRead,
    make_direct_session,
)
from microns_get.sources.http import MissingObject, RetryableHttpError
from microns_get.testing.faultproxy import FaultProxy, FaultRule, slow_down, too_many_requests
from microns_get.testing.servers import handler_server

BLOB = os.urandom(3 * (1 << 20) + 12345)  # several reader buffers and a ragged end


class _Upstream(BaseHTTPRequestHandler):
    """/blob honours Range; /whole ignores it (200, whole body); /chunked answers chunked;
    /hangup closes each connection after answering, as a server's idle timeout does; /moved
    redirects to /blob."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        if self._redirected():
            return
        found = self.path == "/blob"
        self.send_response(200 if found else 404)
        self.send_header("Content-Length", str(len(BLOB) if found else 0))
        self.send_header("ETag", '"e"')
        self.end_headers()

    def _redirected(self) -> bool:
        if self.path != "/moved":
            return False
        self.send_response(302)
        self.send_header("Location", "/blob")
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if self._redirected():
            return
        if path == "/hangup":  # answers, then closes the kept-alive connection without a word
            self._send(200, BLOB[:1000], {})
            self.close_connection = True
            return
        if path == "/chunked":
            self._chunked(BLOB[:100_000])
            return
        if path not in ("/blob", "/whole"):
            self._send(404, b"<Error><Code>NoSuchKey</Code></Error>", {})
            return
        rng = self.headers.get("Range")
        if rng is None or path == "/whole":
            self._send(200, BLOB, {"ETag": '"e"'})
            return
        first, _, last = rng.removeprefix("bytes=").partition("-")
        start, end = int(first), min(int(last), len(BLOB) - 1)
        headers = {"Content-Range": f"bytes {start}-{end}/{len(BLOB)}", "ETag": '"e"'}
        self._send(206, BLOB[start : end + 1], headers)

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chunked(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(0, len(body), 30_000):
            piece = body[i : i + 30_000]
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with handler_server(_Upstream) as url:
        yield url


def read(url: str, start: int, end: int, pool: ConnectionPool | None = None) -> bytes:
    """The range through a `RangeRead`, reassembled from what its sink was given."""
    out = bytearray(end - start)

    def sink(buffer: memoryview, position: int) -> None:
        out[position - start : position - start + len(buffer)] = buffer

    RangeRead(pool or ConnectionPool(10), url, None, start, end, sink).run()
    return bytes(out)


def test_ranges_arrive_whole_and_in_order(upstream: str) -> None:
    assert read(f"{upstream}/blob", 0, len(BLOB)) == BLOB
    assert read(f"{upstream}/blob", 1_000_003, 2_500_000) == BLOB[1_000_003:2_500_000]


def test_a_connection_is_reused_after_a_complete_body(upstream: str) -> None:
    pool = ConnectionPool(10)
    read(f"{upstream}/blob", 0, 10, pool)
    first, was_idle = pool.take("http", upstream.removeprefix("http://"))
    assert was_idle
    pool.give_back("http", upstream.removeprefix("http://"), first)
    read(f"{upstream}/blob", 10, 20, pool)
    assert pool.take("http", upstream.removeprefix("http://"))[0] is first


def test_chunked_body_is_read_and_the_connection_kept(upstream: str) -> None:
    pool = ConnectionPool(10)
    assert read(f"{upstream}/chunked", 0, 100_000, pool) == BLOB[:100_000]
    assert pool.take("http", upstream.removeprefix("http://"))[0].sock is not None


def test_a_connection_the_server_closed_is_replaced_not_failed(upstream: str) -> None:
    pool = ConnectionPool(10)
    for _ in range(3):  # each read after the first finds the pooled connection closed
        assert read(f"{upstream}/hangup", 0, 1000, pool) == BLOB[:1000]


def test_missing_object_is_missing_not_retryable(upstream: str) -> None:
    with pytest.raises(MissingObject):
        read(f"{upstream}/nothing", 0, 10)


def test_body_longer_than_the_range_is_refused(upstream: str) -> None:
    # a server that ignores Range and answers 200 with everything
    with pytest.raises(RetryableHttpError, match="longer"):
        read(f"{upstream}/whole", 0, 1000)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (slow_down(), "SlowDown"),
        (too_many_requests(retry_after=2), "429"),
        (FaultRule("reset", after_bytes=200_000), "talking to"),
        (FaultRule("truncate", after_bytes=200_000), "talking to|short body"),
        (FaultRule("wrong_content_range", shift=5), "Content-Range"),
    ],
    ids=["503-slowdown", "429", "reset", "truncated", "wrong-content-range"],
)
def test_faults_are_retryable_errors(
    upstream_proxy: FaultProxy, rule: FaultRule, message: str
) -> None:
    upstream_proxy.add_rule(rule)
    with pytest.raises(RetryableHttpError, match=message) as caught:
        read(f"{upstream_proxy.url}/blob", 100, 1_500_000)
    if rule.status == 429 and rule.kind == "status":
        assert caught.value.retry_after == 2.0


def test_other_client_errors_are_not_retryable(upstream_proxy: FaultProxy) -> None:
    upstream_proxy.add_rule(FaultRule("status", status=403, body=b"<Code>AccessDenied</Code>"))
    with pytest.raises(RemoteError) as caught:
        read(f"{upstream_proxy.url}/blob", 0, 100)
    assert not caught.value.retryable and caught.value.status == 403


def test_get_bytes_returns_the_whole_object(upstream: str) -> None:
    reader = DirectReader(2)
    try:
        assert reader.get_bytes(f"{upstream}/blob", None, len(BLOB)) == BLOB
    finally:
        reader.close()


def test_cancelling_a_read_stops_its_thread_before_returning(upstream_proxy: FaultProxy) -> None:
    """After the cancelled task returns, nothing more is written by the reader's thread."""
    upstream_proxy.add_rule(FaultRule("throttle", bytes_per_sec=2_000_000))
    calls: list[int] = []
    started = threading.Event()

    def sink(buffer: memoryview, position: int) -> None:
        calls.append(position)
        started.set()

    async def main() -> None:
        reader = DirectReader(2)
        task = asyncio.create_task(
            reader.read(f"{upstream_proxy.url}/blob", None, 0, len(BLOB), sink)
        )
        await asyncio.to_thread(started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        seen = len(calls)
        await asyncio.sleep(0.5)
        assert len(calls) == seen  # the thread had stopped
        assert len(calls) < 4  # it stopped before the end (4 buffers at the throttled rate)
        reader.close()

    asyncio.run(main())


def over_transport(fn):  # noqa: ANN001, ANN201 - fn(transport) -> awaitable
    async def main():  # noqa: ANN202
        async with make_direct_session(2, 10) as transport:
            return await fn(transport)

    return asyncio.run(main())


def test_transport_head_follows_redirects_and_missing_is_none(upstream: str) -> None:
    async def heads(transport: DirectTransport) -> list:
        return [await transport.head(f"{upstream}/{name}") for name in ("moved", "nothing")]

    found, missing = over_transport(heads)
    assert int(found["Content-Length"]) == len(BLOB) and found["ETag"] == '"e"'
    assert missing is None


@pytest.mark.parametrize("path", ["blob", "chunked", "moved"])
def test_transport_reads_bodies_of_unknown_length(upstream: str, path: str) -> None:
    expected = BLOB[:100_000] if path == "chunked" else BLOB
    assert over_transport(lambda t: t.get_bytes(f"{upstream}/{path}")) == expected
    if path != "chunked":  # which ignores Range
        assert over_transport(lambda t: t.get_bytes(f"{upstream}/{path}", 5, 50)) == BLOB[5:50]


def test_transport_missing_is_none_or_missing_object(upstream: str) -> None:
    async def stream(transport: DirectTransport) -> None:
        async for _ in transport.stream(f"{upstream}/nothing"):
            pass

    assert over_transport(lambda t: t.get_bytes(f"{upstream}/nothing")) is None
    with pytest.raises(MissingObject):
        over_transport(stream)


def test_transport_truncated_body_of_unknown_length_is_retryable(
    upstream_proxy: FaultProxy,
) -> None:
    upstream_proxy.add_rule(FaultRule("truncate", after_bytes=200_000))
    with pytest.raises(RetryableHttpError):
        over_transport(lambda t: t.get_bytes(f"{upstream_proxy.url}/blob"))
