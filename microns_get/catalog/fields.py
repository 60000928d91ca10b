"""Turning catalogue text into values: declared sizes and mirror URLs.

Owns: `parse_declared_size` ("117 TB" -> 117e12, decimal units as the catalogue means them) and
`make_mirror` (a catalogue cloudpath -> provider, working URL and public HTTPS URL). Raises
`ValueError` with the expectation; the manifest loader adds file and line.
"""

from __future__ import annotations

import re
from decimal import Decimal

from microns_get.catalog.model import PROVIDERS, Mirror

UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "PB": 10**15}
_AMOUNT = r"(\d+(?:\.\d+)?)\s*(PB|TB|GB|MB|KB|B)"
_SINGLE = re.compile(rf"^{_AMOUNT}$")
_TOTAL = re.compile(rf"{_AMOUNT}\s+total\b")
_NO_SIZE = re.compile(r"^[^\d]*$")  # e.g. "many files": declares no amount

SIZE_EXPECTED = "a size like '117 TB', '14KB' or 'multiple, 9.8 GB each, 186.2 GB total'"

_S3_HTTPS = re.compile(r"^https://([a-z0-9][a-z0-9.-]*)\.s3(?:\.[a-z0-9-]+)?\.amazonaws\.com/(.*)$")
_GCS_HTTPS = re.compile(r"^https://storage\.googleapis\.com/([^/]+)/(.*)$")
_BUCKET_URL = re.compile(r"^(s3|gs)://([^/]+)/(.+)$")
_HTTPS_URL = re.compile(r"^https://[^/\s]+/\S+$")
_GRAPHENE_URL = re.compile(r"^graphene://(?:middleauth\+)?https://[^/\s]+/\S+$")

URL_EXPECTED = (
    "a URL of the form https://host/path, s3://bucket/key, gs://bucket/key or graphene://"
)


def parse_declared_size(text: str) -> int | None:
    """Bytes declared by a catalogue size text; None when it states no amount ("many files").

    `117 TB` -> 117e12, `14KB` -> 14e3; for lists of files the `... total` amount counts.
    """
    text = text.strip()
    total = _TOTAL.search(text)
    match = total or _SINGLE.match(text)
    if match:
        return int(Decimal(match.group(1)) * UNITS[match.group(2)])
    if text and _NO_SIZE.match(text):
        return None
    raise ValueError(SIZE_EXPECTED)


def make_mirror(catalogue_url: str, url: str | None = None) -> Mirror:
    """The mirror for a catalogue cloudpath; `url` overrides the working URL derived from it."""
    check_url(catalogue_url)
    working = (url or _working_url(catalogue_url)).rstrip("/")
    check_url(working)
    provider = _provider(working)
    return Mirror(provider, working, catalogue_url, _https_url(provider, working))


def mirror_rank(mirror: Mirror) -> int:
    """Sort key for preference order: S3, then GCS, then HTTPS (then graphene)."""
    return PROVIDERS.index(mirror.provider)


def check_url(url: str) -> None:
    if not any(p.match(url) for p in (_HTTPS_URL, _BUCKET_URL, _GRAPHENE_URL)):
        raise ValueError(URL_EXPECTED)


def _working_url(catalogue_url: str) -> str:
    """`https://B.s3.amazonaws.com/K` -> `s3://B/K`; `https://storage.googleapis.com/B/K` ->
    `gs://B/K`; anything else is already the working URL."""
    s3 = _S3_HTTPS.match(catalogue_url)
    if s3:
        return f"s3://{s3.group(1)}/{s3.group(2)}"
    gcs = _GCS_HTTPS.match(catalogue_url)
    if gcs:
        return f"gs://{gcs.group(1)}/{gcs.group(2)}"
    return catalogue_url


def _provider(url: str) -> str:
    scheme = url.split("://", 1)[0]
    return {"s3": "s3", "gs": "gcs", "https": "https", "graphene": "graphene"}[scheme]


def _https_url(provider: str, url: str) -> str | None:
    if provider == "graphene":
        return None
    if provider == "https":
        return url
    bucket_url = _BUCKET_URL.match(url)
    if bucket_url is None:
        raise ValueError(URL_EXPECTED)
    _, bucket, key = bucket_url.groups()
    if provider == "s3":
        return f"https://{bucket}.s3.amazonaws.com/{key}"
    return f"https://storage.googleapis.com/{bucket}/{key}"
