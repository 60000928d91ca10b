"""Tests of the fault-injecting proxy against a tiny Range-capable upstream defined here."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import http.client
import json
import os
import random
import socket
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import aiohttp
import pytest

from microns_get.testing.faultproxy import (
    SLOWDOWN_XML,
    FaultProxy,
    FaultRule,
    slow_down,
    too_many_requests,
)
from microns_get.testing.servers import handler_server

BLOB = random.Random(7).randbytes(300_000)
SMALL = os.urandom(4096)
PLAIN = b"hello compressible world " * 2000
GZ = gzip.compress(PLAIN)


class _Upstream(BaseHTTPRequestHandler):
    """Serves OBJECTS with single-range support; PUT stores; /echo returns the request headers."""

    protocol_version = "HTTP/1.1"
    objects: dict[str, tuple[bytes, dict[str, str]]] = {}

    def log_message(self, *args: object) -> None:  # keep pytest output quiet
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str], head: bool = False) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_GET(self, head: bool = False) -> None:
        if self.path.startswith("/echo"):
            echo = {"path": self.path, "headers": dict(self.headers.items())}
            self._send(200, json.dumps(echo).encode(), {"Content-Type": "application/json"})
            return
        if self.path.split("?")[0] not in self.objects:
            self._send(404, b"no such object", {})
            return
        data, headers = self.objects[self.path.split("?")[0]]
        rng = self.headers.get("Range")
        if rng is None:
            self._send(200, data, headers, head)
            return
        first, _, last = rng.removeprefix("bytes=").partition("-")
        start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
        headers = {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"}
        self._send(206, data[start : end + 1], headers, head)

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.objects[self.path] = (body, {"ETag": '"put"'})
        self._send(200, b"", {"ETag": '"put"'})


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    _Upstream.objects = {
        "/b/blob.bin": (BLOB, {"ETag": '"blob-etag"', "x-goog-hash": "crc32c=AAAAAA=="}),
        "/b/small.bin": (SMALL, {"ETag": '"small"'}),
        "/b/plain.json.gz": (GZ, {"Content-Encoding": "gzip", "Content-Type": "text/plain"}),
    }
    with handler_server(_Upstream) as url:
        yield url


@pytest.fixture
def proxy(upstream_proxy: FaultProxy) -> FaultProxy:
    return upstream_proxy


@contextlib.contextmanager
def open_response(
    proxy: FaultProxy, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> Iterator[http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        yield conn.getresponse()
    finally:
        conn.close()


def fetch(
    proxy: FaultProxy, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[http.client.HTTPResponse, bytes]:
    with open_response(proxy, path, headers, method) as resp:
        return resp, resp.read()


# -- passthrough ---------------------------------------------------------------------------


def test_passthrough_full_body_and_headers(proxy: FaultProxy) -> None:
    resp, body = fetch(proxy, "/b/blob.bin")
    assert resp.status == 200 and body == BLOB
    assert resp.getheader("Content-Length") == str(len(BLOB))
    assert resp.getheader("ETag") == '"blob-etag"'
    assert resp.getheader("x-goog-hash") == "crc32c=AAAAAA=="


def test_passthrough_ranged_206(proxy: FaultProxy) -> None:
    resp, body = fetch(proxy, "/b/blob.bin?x=1", {"Range": "bytes=1000-70999"})
    assert resp.status == 206 and body == BLOB[1000:71000]
    assert resp.getheader("Content-Range") == f"bytes 1000-70999/{len(BLOB)}"
    assert resp.getheader("Content-Length") == "70000"


def test_passthrough_keeps_content_encoding_and_does_not_decompress(proxy: FaultProxy) -> None:
    resp, body = fetch(proxy, "/b/plain.json.gz", {"Accept-Encoding": "gzip"})
    assert resp.getheader("Content-Encoding") == "gzip"
    assert body == GZ and gzip.decompress(body) == PLAIN


def test_passthrough_head(proxy: FaultProxy) -> None:
    resp, body = fetch(proxy, "/b/blob.bin", method="HEAD")
    assert resp.status == 200 and body == b""
    assert resp.getheader("Content-Length") == str(len(BLOB))


def test_put_body_is_forwarded(proxy: FaultProxy) -> None:
    payload = os.urandom(50_000)
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.request("PUT", "/b/seeded.bin", body=payload)
    assert conn.getresponse().status == 200
    conn.close()
    assert fetch(proxy, "/b/seeded.bin")[1] == payload


def test_request_headers_forwarded_and_host_rewritten(proxy: FaultProxy, upstream: str) -> None:
    sent = {"Range": "bytes=0-9", "If-Match": '"abc"', "X-Custom": "1", "Keep-Alive": "5"}
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.putrequest("GET", "/echo?q=1", skip_accept_encoding=True)
    for k, v in sent.items():
        conn.putheader(k, v)
    conn.endheaders()
    echo = json.loads(conn.getresponse().read())
    conn.close()
    got = {k.lower(): v for k, v in echo["headers"].items()}
    assert echo["path"] == "/echo?q=1"
    assert got["host"] == upstream.removeprefix("http://")
    assert got["range"] == "bytes=0-9" and got["if-match"] == '"abc"' and got["x-custom"] == "1"
    assert "keep-alive" not in got
    assert "accept-encoding" not in got  # not invented by the proxy's client


def test_aiohttp_client_concurrent_ranges(proxy: FaultProxy) -> None:
    async def main() -> list[bytes]:
        async with aiohttp.ClientSession(auto_decompress=False) as s:

            async def part(i: int) -> bytes:
                hdr = {"Range": f"bytes={i * 30_000}-{i * 30_000 + 29_999}"}
                async with s.get(proxy.url + "/b/blob.bin", headers=hdr) as r:
                    return await r.read()

            return await asyncio.gather(*(part(i) for i in range(10)))

    assert b"".join(asyncio.run(main())) == BLOB


# -- fault kinds ---------------------------------------------------------------------------


def test_status_slowdown_and_429_retry_after(proxy: FaultProxy) -> None:
    proxy.add_rule(slow_down(times=1))
    proxy.add_rule(too_many_requests(retry_after=1, times=1))
    resp, body = fetch(proxy, "/b/small.bin")
    assert resp.status == 503 and body == SLOWDOWN_XML and b"<Code>SlowDown</Code>" in body
    resp, _ = fetch(proxy, "/b/small.bin")
    assert resp.status == 429 and resp.getheader("Retry-After") == "1"
    resp, body = fetch(proxy, "/b/small.bin")
    assert resp.status == 200 and body == SMALL


def test_reset_mid_body(proxy: FaultProxy) -> None:
    proxy.add_rule(FaultRule("reset", after_bytes=10_000))
    with open_response(proxy, "/b/blob.bin") as resp, pytest.raises(ConnectionError):
        assert resp.status == 200 and resp.getheader("Content-Length") == str(len(BLOB))
        resp.read()
    assert proxy.wait_idle() and proxy.stats.log[-1].bytes_sent == 10_000


def test_truncate_short_body(proxy: FaultProxy) -> None:
    proxy.add_rule(FaultRule("truncate", after_bytes=12_345))
    with open_response(proxy, "/b/blob.bin", {"Range": "bytes=0-99999"}) as resp:
        assert resp.getheader("Content-Length") == "100000"
        with pytest.raises(http.client.IncompleteRead) as info:
            resp.read()
    assert info.value.partial == BLOB[:12_345]


def test_flip_byte_changes_exactly_one_bit(proxy: FaultProxy) -> None:
    proxy.add_rule(FaultRule("flip_byte", at=70_000))
    _, body = fetch(proxy, "/b/blob.bin")
    diffs = [i for i, (a, b) in enumerate(zip(body, BLOB, strict=True)) if a != b]
    assert diffs == [70_000] and body[70_000] ^ BLOB[70_000] == 1


def test_wrong_content_range(proxy: FaultProxy) -> None:
    proxy.add_rule(FaultRule("wrong_content_range", only_ranged=True, shift=512))
    resp, body = fetch(proxy, "/b/blob.bin", {"Range": "bytes=100-199"})
    assert resp.status == 206 and body == BLOB[100:200]
    assert resp.getheader("Content-Range") == f"bytes 612-711/{len(BLOB)}"


def test_delay(proxy: FaultProxy) -> None:
    proxy.add_rule(FaultRule("delay", seconds=0.4))
    t0 = time.monotonic()
    _, body = fetch(proxy, "/b/small.bin")
    assert body == SMALL and time.monotonic() - t0 >= 0.35


def test_throttle(proxy: FaultProxy) -> None:
    proxy.add_rule(FaultRule("throttle", bytes_per_sec=100_000))
    t0 = time.monotonic()
    _, body = fetch(proxy, "/b/blob.bin", {"Range": "bytes=0-199999"})
    assert body == BLOB[:200_000] and time.monotonic() - t0 > 1.0


def test_dead(proxy: FaultProxy) -> None:
    proxy.add_rule(FaultRule("dead"))
    with pytest.raises(ConnectionError):
        fetch(proxy, "/b/small.bin")
    assert proxy.wait_idle() and proxy.stats.log[-1].status is None
    proxy.clear_rules()
    assert fetch(proxy, "/b/small.bin")[1] == SMALL


def test_stopped_proxy_refuses(upstream: str) -> None:
    proxy = FaultProxy(upstream).start()
    port = proxy.port
    proxy.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_unreachable_upstream_gives_502() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    with FaultProxy(f"http://127.0.0.1:{dead_port}") as proxy:
        assert fetch(proxy, "/x")[0].status == 502


# -- how often, matchers -------------------------------------------------------------------


def test_times_then_spent(proxy: FaultProxy) -> None:
    rule = proxy.add_rule(FaultRule("status", status=500, times=2, name="boom"))
    assert [fetch(proxy, "/b/small.bin")[0].status for _ in range(4)] == [500, 500, 200, 200]
    assert rule.fired == 2 and rule.seen == 4
    assert proxy.stats.fired == {"boom": 2}


def test_skip_first(proxy: FaultProxy) -> None:
    proxy.add_rule(FaultRule("status", status=500, skip_first=2, times=1))
    assert [fetch(proxy, "/b/small.bin")[0].status for _ in range(4)] == [200, 200, 500, 200]


def test_probability_is_seeded(proxy: FaultProxy) -> None:
    rng = random.Random(42)
    expected = [500 if rng.random() < 0.5 else 200 for _ in range(12)]
    proxy.add_rule(FaultRule("status", status=500, probability=0.5, seed=42))
    assert [fetch(proxy, "/b/small.bin")[0].status for _ in range(12)] == expected
    assert 0 < expected.count(500) < 12


def test_matchers(proxy: FaultProxy) -> None:
    proxy.add_rule(FaultRule("status", status=501, method="HEAD"))
    proxy.add_rule(FaultRule("status", status=502, path_regex=r"small\.bin$", only_ranged=True))
    proxy.add_rule(FaultRule("status", status=504, path_contains="blob", query_contains="alt=x"))
    assert fetch(proxy, "/b/small.bin", method="HEAD")[0].status == 501
    assert fetch(proxy, "/b/small.bin")[0].status == 200
    assert fetch(proxy, "/b/small.bin", {"Range": "bytes=0-1"})[0].status == 502
    assert fetch(proxy, "/b/blob.bin?alt=y")[0].status == 200
    assert fetch(proxy, "/b/blob.bin?alt=x")[0].status == 504


def test_rules_combine_and_unknown_kind_rejected(proxy: FaultProxy) -> None:
    proxy.add_rule(FaultRule("flip_byte", at=0))
    proxy.add_rule(FaultRule("truncate", after_bytes=100))
    with open_response(proxy, "/b/small.bin") as resp:
        with pytest.raises(http.client.IncompleteRead) as info:
            resp.read()
    assert info.value.partial[0] == SMALL[0] ^ 1 and info.value.partial[1:] == SMALL[1:100]
    with pytest.raises(ValueError):
        FaultRule("explode")


def test_stats_count_bytes_and_log(proxy: FaultProxy) -> None:
    fetch(proxy, "/b/small.bin")
    fetch(proxy, "/b/blob.bin", {"Range": "bytes=0-999"})
    proxy.add_rule(FaultRule("truncate", after_bytes=500, path_contains="blob"))
    with pytest.raises(http.client.IncompleteRead):
        fetch(proxy, "/b/blob.bin")
    assert proxy.wait_idle()
    stats = proxy.stats
    assert stats.requests == 3
    assert stats.bytes_by_path == {"/b/small.bin": len(SMALL), "/b/blob.bin": 1500}
    assert stats.bytes_sent == len(SMALL) + 1500
    assert [(r.method, r.path, r.range, r.status) for r in stats.log] == [
        ("GET", "/b/small.bin", None, 200),
        ("GET", "/b/blob.bin", "bytes=0-999", 206),
        ("GET", "/b/blob.bin", None, 200),
    ]
    assert stats.log[-1].faults == ("truncate",) and stats.fired == {"truncate": 1}
    proxy.reset_stats()
    assert proxy.stats.requests == 0 and proxy.stats.bytes_sent == 0
