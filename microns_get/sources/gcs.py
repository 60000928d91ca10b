"""Public GCS buckets (iarpa_microns, microns-static-links, microns_phase3), anonymous.

Owns: the JSON API (object metadata with md5Hash / crc32c / generation, paginated listing) and
media downloads. Every media request sends `Accept-Encoding: gzip`, so an object stored with
`Content-Encoding: gzip` arrives as stored (its hashes cover those bytes), not decompressed by GCS.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from microns_get.errors import RemoteError
from microns_get.sources.base import HttpGet, ObjectInfo, Source
from microns_get.sources.http import IDENTITY, transport_for

if TYPE_CHECKING:
    from microns_get.sources.http import Session

LIST_FIELDS = (
    "items(name,size,md5Hash,crc32c,generation,etag,updated,contentEncoding),prefixes,nextPageToken"
)
# Stored bytes, never GCS's decompressed copy.
MEDIA_HEADERS = {"Accept-Encoding": "gzip"}


def object_info_from_json(item: Mapping[str, Any]) -> ObjectInfo:
    return ObjectInfo(
        key=str(item["name"]),
        size=int(item.get("size", 0)),
        etag=item.get("etag"),
        md5_base64=item.get("md5Hash"),
        crc32c_base64=item.get("crc32c"),
        generation=str(item["generation"]) if item.get("generation") is not None else None,
        content_encoding=item.get("contentEncoding") or None,
        last_modified=item.get("updated"),
    )


class GcsSource(Source):
    scheme = "gs"
    page_size = 1000  # items per listing page (the JSON API's maximum)

    def __init__(self, bucket: str, session: Session, endpoint: str) -> None:
        self.bucket = bucket
        self.http = transport_for(session)
        self.endpoint = endpoint
        self.api = f"{endpoint}/storage/v1/b/{quote(bucket, safe='')}/o"

    def metadata_url(self, key: str) -> str:
        return f"{self.api}/{quote(key, safe='')}"

    def media_url(self, key: str, generation: str | None = None) -> str:
        params = {"alt": "media"}
        if generation:
            params["generation"] = generation
        return f"{self.metadata_url(key)}?{urlencode(params)}"

    async def stat(self, key: str) -> ObjectInfo | None:
        item = await self._get_json(self.metadata_url(key))
        return None if item is None else object_info_from_json(item)

    async def read(self, key: str, start: int = 0, end: int | None = None) -> bytes | None:
        return await self.http.get_bytes(self.media_url(key), start, end, MEDIA_HEADERS)

    def stream(
        self, key: str, start: int = 0, end: int | None = None, pin: ObjectInfo | None = None
    ) -> AsyncIterator[bytes]:
        url, headers = self.http_get(key, pin)
        return self.http.stream(url, start, end, headers)

    def http_get(self, key: str, pin: ObjectInfo | None = None) -> HttpGet:
        # Asking for the planned generation pins the bytes: a replaced object answers 404.
        generation = pin.generation if pin is not None else None
        return self.media_url(key, generation), MEDIA_HEADERS

    async def list(self, prefix: str, delimiter: str | None = None):
        token: str | None = None
        while True:
            params = {"prefix": prefix, "fields": LIST_FIELDS, "maxResults": str(self.page_size)}
            if delimiter:
                params["delimiter"] = delimiter
            if token:
                params["pageToken"] = token
            page = await self._get_json(f"{self.api}?{urlencode(params)}")
            if page is None:  # the bucket itself is missing
                raise RemoteError(f"GCS bucket {self.bucket!r} not found", status=404)
            objects = [object_info_from_json(item) for item in page.get("items", [])]
            merged: list[ObjectInfo | str] = sorted(
                [*objects, *page.get("prefixes", [])],
                key=lambda item: item if isinstance(item, str) else item.key,
            )
            for item in merged:
                yield item
            token = page.get("nextPageToken")
            if not token:
                return

    async def _get_json(self, url: str) -> dict[str, Any] | None:
        body = await self.http.get_bytes(url, headers=IDENTITY)
        if body is None:
            return None
        try:
            return json.loads(body)
        except ValueError as exc:
            raise RemoteError(f"unreadable JSON from {url}", retryable=True) from exc
