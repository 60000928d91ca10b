"""The public S3 bucket (bossdb-open-data), anonymous and unsigned.

Owns: S3 URL forms (virtual-hosted on AWS; path-style `{endpoint}/{bucket}/{key}` when an endpoint
is configured), HEAD -> ObjectInfo, ranged GET, ListObjectsV2 paging. Requests are never signed:
a user's AWS credentials are never sent to a public bucket.
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlencode

from microns_get.errors import RemoteError
from microns_get.sources.base import HttpGet, ObjectInfo, Source
from microns_get.sources.http import IDENTITY, if_match, info_from_headers, transport_for

if TYPE_CHECKING:
    from microns_get.sources.http import Session

_PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")


def md5_base64_from_etag(etag: str | None) -> str | None:
    """A single-part S3 ETag is the hex MD5; multipart (`...-N`) ones are not."""
    if etag and _PLAIN_MD5.match(etag):
        return base64.b64encode(bytes.fromhex(etag)).decode()
    return None


def _local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child_text(element: ET.Element, name: str) -> str | None:
    for child in element:
        if _local_name(child.tag) == name:
            return child.text
    return None


def parse_list_page(xml_text: str) -> tuple[list[ObjectInfo], list[str], str | None]:
    """One ListObjectsV2 page: objects, common prefixes, next continuation token."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise RemoteError(f"unreadable S3 listing: {exc}", retryable=True) from exc
    url_encoded = (_child_text(root, "EncodingType") or "") == "url"
    decode = unquote if url_encoded else (lambda s: s)
    objects: list[ObjectInfo] = []
    prefixes: list[str] = []
    for child in root:
        name = _local_name(child.tag)
        if name == "Contents":
            etag = (_child_text(child, "ETag") or "").strip('"') or None
            objects.append(
                ObjectInfo(
                    key=decode(_child_text(child, "Key") or ""),
                    size=int(_child_text(child, "Size") or 0),
                    etag=etag,
                    md5_base64=md5_base64_from_etag(etag),
                    last_modified=_child_text(child, "LastModified"),
                )
            )
        elif name == "CommonPrefixes":
            prefixes.append(decode(_child_text(child, "Prefix") or ""))
    truncated = (_child_text(root, "IsTruncated") or "false").lower() == "true"
    token = _child_text(root, "NextContinuationToken") if truncated else None
    return objects, prefixes, token


class S3Source(Source):
    scheme = "s3"
    page_size = 1000  # keys per listing page (S3's maximum)

    def __init__(self, bucket: str, session: Session, endpoint: str | None) -> None:
        self.bucket = bucket
        self.http = transport_for(session)
        self.bucket_url = (
            f"{endpoint}/{bucket}" if endpoint else f"https://{bucket}.s3.amazonaws.com"
        )

    def url_for(self, key: str) -> str:
        return f"{self.bucket_url}/{quote(key)}"

    async def stat(self, key: str) -> ObjectInfo | None:
        headers = await self.http.head(self.url_for(key))
        if headers is None:
            return None
        info = info_from_headers(key, headers)
        return replace(info, md5_base64=md5_base64_from_etag(info.etag))

    async def read(self, key: str, start: int = 0, end: int | None = None) -> bytes | None:
        return await self.http.get_bytes(self.url_for(key), start, end)

    def stream(
        self, key: str, start: int = 0, end: int | None = None, pin: ObjectInfo | None = None
    ) -> AsyncIterator[bytes]:
        url, headers = self.http_get(key, pin)
        return self.http.stream(url, start, end, headers)

    def http_get(self, key: str, pin: ObjectInfo | None = None) -> HttpGet:
        # If-Match pins the bytes to the version we planned with: never splice two versions.
        return self.url_for(key), if_match(pin)

    async def list(self, prefix: str, delimiter: str | None = None):
        token: str | None = None
        while True:
            params: dict[str, str] = {
                "list-type": "2",
                "prefix": prefix,
                "encoding-type": "url",
                "max-keys": str(self.page_size),
            }
            if delimiter:
                params["delimiter"] = delimiter
            if token:
                params["continuation-token"] = token
            objects, prefixes, token = await self._list_page(params)
            # S3 returns objects and prefixes as two sorted runs; merge them in key order.
            merged: list[ObjectInfo | str] = sorted(
                [*objects, *prefixes], key=lambda item: item if isinstance(item, str) else item.key
            )
            for item in merged:
                yield item
            if not token:
                return

    async def _list_page(self, params: Mapping[str, str]):
        url = f"{self.bucket_url}?{urlencode(params)}"
        body = await self.http.get_bytes(url, headers=IDENTITY)
        if body is None:  # the bucket itself is missing
            raise RemoteError(f"HTTP 404 from {url} (no such bucket)", status=404)
        return parse_list_page(body.decode("utf-8", "replace"))
