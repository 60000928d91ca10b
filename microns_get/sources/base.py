"""The one small interface every source implements: `stat`, ranged `read`, paginated `list`.

Owns: the `ObjectInfo` record, the `Source` contract, and cloud URL parsing. A missing object
is a value (`None`), never an exception; errors worth retrying are `RemoteError(retryable=True)`.
Must not know about datasets, plans or local files other than its own.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from microns_get.errors import BadInput

SCHEMES = ("s3", "gs", "https", "http", "file")


@dataclass(frozen=True)
class CloudPath:
    """`s3://bucket/key`, `gs://bucket/key`, `https://host/key`, `file:///abs/path`."""

    scheme: str
    bucket: str  # the bucket, or the host for http(s), or "" for file
    key: str  # no leading slash; "" for the bucket root

    @classmethod
    def parse(cls, url: str) -> CloudPath:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise BadInput(f"unsupported URL scheme in {url!r} (expected s3://, gs://, https://)")
        if scheme == "file":
            return cls("file", "", parts.path.lstrip("/"))
        if not parts.netloc:
            raise BadInput(f"URL has no bucket or host: {url!r}")
        return cls(scheme, parts.netloc, parts.path.lstrip("/"))

    def join(self, *names: str) -> CloudPath:
        key = "/".join([p.strip("/") for p in (self.key, *names) if p.strip("/")])
        return CloudPath(self.scheme, self.bucket, key)

    @property
    def url(self) -> str:
        if self.scheme == "file":
            return f"file:///{self.key}"
        return f"{self.scheme}://{self.bucket}/{self.key}"

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True, slots=True)  # slots: a million of these are a listing
class ObjectInfo:
    """What a listing or a HEAD says of one object. Hashes are as the remote reports them."""

    key: str  # full key inside the bucket (or path under the host)
    size: int
    etag: str | None = None  # unquoted; S3 multipart ETags keep their "-N" suffix
    md5_base64: str | None = None  # GCS md5Hash, or the S3 ETag when it is a plain MD5
    crc32c_base64: str | None = None  # GCS crc32c (big-endian, base64)
    generation: str | None = None  # GCS object generation
    content_encoding: str | None = None  # stored encoding (e.g. "gzip"): bytes land as stored
    last_modified: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def identity(self) -> str:
        """A string that changes when the remote object changes (for resume and sync)."""
        return f"{self.size}:{self.generation or self.etag or self.md5_base64 or ''}"


# the URL of a GET and its extra headers
HttpGet = tuple[str, Mapping[str, str] | None]


class Source(abc.ABC):
    """One bucket (or host) on one protocol. Keys are full keys inside the bucket."""

    scheme: str
    bucket: str

    @abc.abstractmethod
    async def stat(self, key: str) -> ObjectInfo | None:
        """HEAD the object; `None` when it does not exist."""

    @abc.abstractmethod
    async def read(self, key: str, start: int = 0, end: int | None = None) -> bytes | None:
        """Bytes `[start, end)` of the object as stored (never decompressed); `None` if missing."""

    @abc.abstractmethod
    def stream(
        self, key: str, start: int = 0, end: int | None = None, pin: ObjectInfo | None = None
    ) -> AsyncIterator[bytes]:
        """The body of `[start, end)` in pieces, as stored. With `pin`, the server must still hold
        that version (ETag / generation), else the read fails rather than splice two versions.
        A missing object raises `RemoteError(status=404)` here: mid-transfer it is an error."""

    def http_get(self, key: str, pin: ObjectInfo | None = None) -> HttpGet | None:
        """The URL and headers of a GET of `key` (pinned as `stream` pins), for sources reached
        over HTTP, so a reader of their own can fetch it; `None` for any other source."""
        return None

    @abc.abstractmethod
    def list(self, prefix: str, delimiter: str | None = None) -> AsyncIterator[ObjectInfo | str]:
        """Objects under `prefix`, page by page, in key order. With a delimiter, common
        prefixes are yielded as `str` (ending with the delimiter)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    async def __aenter__(self) -> Source:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
