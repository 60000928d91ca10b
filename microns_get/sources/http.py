"""Plain HTTP(S) plumbing shared by every network source, and the HTTPS source itself.

Owns: the aiohttp session (never decompresses: stored bytes land as stored), status mapping
(404 is a value, 5xx/429/resets are retryable `RemoteError`s), ranged reads with Content-Range
checks, and host rewrites (`https://zenodo.org=http://127.0.0.1:PORT`).
Must not retry (the retry policy wraps calls) or know about datasets.

aiohttp is imported only where a session is made or used: importing this module (or any source)
must not load it, so a run on `direct.DirectTransport` (a cutout) never pays for it (~0.1 s).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import quote

from microns_get import __version__
from microns_get.errors import RemoteError
from microns_get.sources.base import HttpGet, ObjectInfo, Source

if TYPE_CHECKING:
    import aiohttp

    from microns_get.sources.direct import DirectTransport

    # what sources are built on: an aiohttp session, or the thread-based direct transport
    Session: TypeAlias = aiohttp.ClientSession | DirectTransport
    Transport: TypeAlias = "HttpTransport | DirectTransport"

USER_AGENT = f"microns-get/{__version__}"
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
STREAM_CHUNK = 1 << 20
# Metadata, listings and plain web files: ask for the bytes as they are, never a compressed copy.
IDENTITY = {"Accept-Encoding": "identity"}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def make_session(jobs: int = 16, timeout: float = 60.0) -> aiohttp.ClientSession:
    """One session per run: per-host connection limit, no automatic decompression, and the
    environment's HTTP(S)_PROXY / NO_PROXY honoured (`trust_env`), as by `sources.proxies`."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=max(64, jobs * 4), limit_per_host=jobs)
    client_timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=client_timeout,
        auto_decompress=False,
        headers={"User-Agent": USER_AGENT},
        trust_env=True,
    )


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    import datetime as _dt

    return max(0.0, (when - _dt.datetime.now(_dt.UTC)).total_seconds())


class RetryableHttpError(RemoteError):
    """A status or network failure worth trying again (after `retry_after` if the server said)."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message, status=status, retryable=True)
        self.retry_after = retry_after


def status_error(url: str, status: int, headers: Mapping[str, str], body: str = "") -> RemoteError:
    detail = f"HTTP {status} from {url}"
    code = re.search(r"<Code>([^<]+)</Code>", body or "")
    if code:
        detail += f" ({code.group(1)})"
    if status in RETRYABLE_STATUS or (code and code.group(1) in ("SlowDown", "InternalError")):
        return RetryableHttpError(detail, status=status, retry_after=retry_after_seconds(headers))
    return RemoteError(detail, status=status, retryable=False)


def network_error(url: str, exc: BaseException) -> RetryableHttpError:
    kind = type(exc).__name__
    return RetryableHttpError(f"{kind} talking to {url}: {exc or 'no detail'}")


def range_header(start: int, end: int | None) -> dict[str, str]:
    if start == 0 and end is None:
        return {}
    return {"Range": f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"}


def check_content_range(url: str, status: int, headers: Mapping[str, str], start: int) -> None:
    """A 206 must start where we asked; a 200 to a ranged request is only fine from 0."""
    if status == 206:
        match = _CONTENT_RANGE.match(headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != start:
            got = headers.get("Content-Range")
            raise RetryableHttpError(f"wrong Content-Range {got!r} from {url} (asked {start}-)")
    elif start != 0:
        raise RetryableHttpError(f"server ignored Range (HTTP {status}) at {url}")


def transport_for(session: Session) -> Transport:
    """The transport a source speaks through: the direct transport is its own."""
    from microns_get.sources.direct import DirectTransport  # imports this module: not at the top

    return session if isinstance(session, DirectTransport) else HttpTransport(session)


class HttpTransport:
    """GET/HEAD with status mapping on an aiohttp session; shared by the S3, GCS and HTTPS
    sources (`direct.DirectTransport` is the same interface on threads)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def head(self, url: str, headers: Mapping[str, str] | None = None):
        import aiohttp

        try:
            async with self.session.head(url, headers=headers, allow_redirects=True) as resp:
                if resp.status == 404:
                    return None
                if resp.status >= 400:
                    raise status_error(url, resp.status, resp.headers)
                return resp.headers.copy()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise network_error(url, exc) from exc

    async def get_bytes(
        self,
        url: str,
        start: int = 0,
        end: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> bytes | None:
        chunks = []
        stream = self.stream(url, start, end, headers)
        try:
            async for chunk in stream:
                chunks.append(chunk)
        except MissingObject:
            return None
        return b"".join(chunks)

    async def stream(
        self,
        url: str,
        start: int = 0,
        end: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[bytes]:
        """Yield the body of `[start, end)`; raises `MissingObject` on 404 and checks the length."""
        import aiohttp

        all_headers = {**IDENTITY, **(headers or {}), **range_header(start, end)}
        try:
            async with self.session.get(url, headers=all_headers) as resp:
                if resp.status == 404:
                    raise MissingObject(url)
                if resp.status >= 400:
                    raise status_error(url, resp.status, resp.headers, await _short_text(resp))
                check_content_range(url, resp.status, resp.headers, start)
                received = 0
                # Hand on pieces of about STREAM_CHUNK: the socket gives tens of KiB at a time,
                # and every piece costs the consumer a write (and a thread hop for large files).
                pending: list[bytes] = []
                pending_size = 0
                async for piece in resp.content.iter_any():
                    pending.append(piece)
                    pending_size += len(piece)
                    if pending_size >= STREAM_CHUNK:
                        received += pending_size
                        yield pending[0] if len(pending) == 1 else b"".join(pending)
                        pending, pending_size = [], 0
                if pending:
                    received += pending_size
                    yield b"".join(pending)
                expected = None if end is None else end - start
                if expected is not None and received != expected:
                    raise RetryableHttpError(
                        f"short body from {url}: {received} of {expected} bytes"
                    )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise network_error(url, exc) from exc


class MissingObject(RemoteError):
    """The object is absent (404). `read` turns it into `None`; mid-transfer it is an error."""

    def __init__(self, url: str) -> None:
        super().__init__(f"not found: {url}", status=404, retryable=False)


async def _short_text(resp: aiohttp.ClientResponse) -> str:
    import aiohttp

    try:
        return (await resp.content.read(4096)).decode("utf-8", "replace")
    except (TimeoutError, aiohttp.ClientError):
        return ""


def if_match(pin: ObjectInfo | None) -> dict[str, str] | None:
    """Pin a read to the planned version: the server answers 412 if the ETag changed."""
    return {"If-Match": f'"{pin.etag}"'} if pin is not None and pin.etag else None


def rewrite_url(url: str, rewrites: Mapping[str, str]) -> str:
    for src, dst in rewrites.items():
        if url == src or url.startswith(src + "/"):
            return dst + url[len(src) :]
    return url


def info_from_headers(key: str, headers: Mapping[str, str]) -> ObjectInfo:
    etag = (headers.get("ETag") or "").strip('"') or None
    if etag and etag.startswith('W/"'):
        etag = etag[3:].strip('"')
    return ObjectInfo(
        key=key,
        size=int(headers.get("Content-Length", "0")),
        etag=etag,
        content_encoding=headers.get("Content-Encoding"),
        last_modified=headers.get("Last-Modified"),
    )


class HttpsSource(Source):
    """A plain web host (Zenodo). There is no listing: a "prefix" is one object."""

    scheme = "https"

    def __init__(
        self,
        host: str,
        session: Session,
        rewrites: Mapping[str, str],
        scheme: str = "https",
    ) -> None:
        self.bucket = host
        self.scheme = scheme
        self.base = rewrite_url(f"{scheme}://{host}", rewrites)
        self.http = transport_for(session)

    def url_for(self, key: str) -> str:
        return f"{self.base}/{quote(key)}"

    async def stat(self, key: str) -> ObjectInfo | None:
        # Ask for the identity encoding: Content-Length must be the stored size.
        headers = await self.http.head(self.url_for(key), IDENTITY)
        return None if headers is None else info_from_headers(key, headers)

    async def read(self, key: str, start: int = 0, end: int | None = None) -> bytes | None:
        return await self.http.get_bytes(self.url_for(key), start, end)

    def stream(
        self, key: str, start: int = 0, end: int | None = None, pin: ObjectInfo | None = None
    ) -> AsyncIterator[bytes]:
        url, headers = self.http_get(key, pin)
        return self.http.stream(url, start, end, headers)

    def http_get(self, key: str, pin: ObjectInfo | None = None) -> HttpGet:
        return self.url_for(key), if_match(pin)

    async def list(self, prefix: str, delimiter: str | None = None):
        info = await self.stat(prefix)
        if info is not None:
            yield info
