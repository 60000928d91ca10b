"""HTTP(S)_PROXY and NO_PROXY from the environment are honoured by both HTTP clients (aiohttp
for listings and HEADs, http.client threads for the bulk bytes and cutouts): every request goes
through a forward proxy of the test's own when one is set, and none does when NO_PROXY names
the host. Checked against the session's local mirrors, files compared with the seeded objects."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

import pytest
from fetch_helpers import local_files

from microns_get.cli.app import run
from microns_get.testing.servers import handler_server

NUCLEUS = "iarpa_microns/minnie/minnie65/nucleus_detection/"  # on S3 only
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authorization", "transfer-encoding"}


class _ForwardProxy(BaseHTTPRequestHandler):
    """GET/HEAD with an absolute URL, forwarded to its host; requests are counted by host."""

    protocol_version = "HTTP/1.1"
    seen: list[str] = []
    lock = threading.Lock()

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._forward()

    def do_HEAD(self) -> None:
        self._forward()

    def _forward(self) -> None:
        url = urlsplit(self.path)
        if not url.scheme:  # not a proxy request: refuse, so a client that skips us shows
            self.send_error(400, "absolute URL expected")
            return
        with self.lock:
            self.seen.append(f"{self.command} {self.path}")
        upstream = http.client.HTTPConnection(url.netloc, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        upstream.request(
            self.command, url.path + (f"?{url.query}" if url.query else ""), headers=headers
        )
        resp = upstream.getresponse()
        body = resp.read()
        self.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(body))
        if length is not None:
            self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        upstream.close()


@pytest.fixture
def forward_proxy() -> Iterator[tuple[str, list[str]]]:
    _ForwardProxy.seen = []
    with handler_server(_ForwardProxy) as url:
        yield url, _ForwardProxy.seen


def _nucleus_files(mini_microns) -> dict[str, bytes]:
    bucket = "bossdb-open-data"
    return {key: mini_microns.read(bucket, key) for key in mini_microns.keys(bucket, NUCLEUS)}


def test_whole_objects_and_a_cutout_go_through_the_proxy(
    mirror_env, mini_microns, forward_proxy, monkeypatch, tmp_path
) -> None:
    proxy_url, seen = forward_proxy
    monkeypatch.setenv("HTTP_PROXY", proxy_url)
    dest = tmp_path / "dest"
    # a table (its HEAD by aiohttp, its bytes by the reader threads), then in ranged parts
    args = ["fetch", "nucleus-detection", "--mirror", "s3", "--quiet"]
    assert run([*args, "--dest", str(dest)]) == 0
    assert local_files(dest) == _nucleus_files(mini_microns)
    in_parts = tmp_path / "in-parts"
    assert run([*args, "--dest", str(in_parts), "--part-size", "4K"]) == 0
    assert local_files(in_parts) == _nucleus_files(mini_microns)
    heads = [line for line in seen if line.startswith("HEAD ")]  # aiohttp: the object's size
    gets = [line for line in seen if line.startswith("GET ") and NUCLEUS in line]  # threads
    assert len(heads) >= 2 and len(gets) >= 2
    tables = len(seen)
    # a cutout (http.client threads only): its info, shard indexes and chunks
    box = ["--bbox", "13856,13856,14828,13984,13968,14844", "--bbox-resolution", "8,8,40"]
    assert run(["fetch", "em", *box, "--mirror", "s3", "--dest", str(dest), "--quiet"]) == 0
    cutout = seen[tables:]
    assert any(line.endswith("/em/info") for line in cutout)
    assert any(".shard" in line for line in cutout)


def test_no_proxy_names_hosts_that_are_reached_directly(
    mirror_env, mini_microns, forward_proxy, monkeypatch, tmp_path
) -> None:
    proxy_url, seen = forward_proxy
    monkeypatch.setenv("HTTP_PROXY", proxy_url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    dest = tmp_path / "dest"
    args = ["fetch", "nucleus-detection", "--mirror", "s3", "--dest", str(dest), "--quiet"]
    assert run(args) == 0
    assert local_files(dest) == _nucleus_files(mini_microns)
    assert seen == []
