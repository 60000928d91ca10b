"""Sources: one module per protocol behind the `Source` interface (see `base`).

`open_source` picks the implementation for a URL and applies the configured endpoints. Importing
this package does not import aiohttp (see `http`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from microns_get.errors import BadInput
from microns_get.sources.base import CloudPath, ObjectInfo, Source
from microns_get.sources.gcs import GcsSource
from microns_get.sources.http import HttpsSource, make_session
from microns_get.sources.local import LocalSource
from microns_get.sources.s3 import S3Source

if TYPE_CHECKING:
    from microns_get.sources.http import Session

__all__ = [
    "CloudPath",
    "ObjectInfo",
    "Source",
    "make_session",
    "open_source",
    "source_url",
]


def open_source(path: CloudPath, session: Session, settings: Any) -> Source:
    """The source serving `path`'s bucket or host, with endpoints from `settings`; `session` is
    an aiohttp session (`make_session`) or a `direct.DirectTransport` (`make_direct_session`)."""
    if path.scheme == "s3":
        return S3Source(path.bucket, session, settings.s3_endpoint)
    if path.scheme == "gs":
        return GcsSource(path.bucket, session, settings.gcs_endpoint)
    if path.scheme in ("https", "http"):
        return HttpsSource(path.bucket, session, settings.http_rewrite, scheme=path.scheme)
    if path.scheme == "file":
        return LocalSource("/")
    raise BadInput(f"no source for {path.url}")


def source_url(source: Source, key: str) -> str:
    """Where a key of a source is actually fetched from (after endpoint overrides)."""
    url_for = getattr(source, "url_for", None) or getattr(source, "media_url", None)
    return url_for(key) if url_for else f"{source.scheme}://{source.bucket}/{key}"
