"""One contract, every source: S3 (moto), GCS (fake-gcs-server), HTTPS (static server), local.
Every network source runs over both transports: an aiohttp session and the direct (threads and
http.client) one that cutouts use.

Each source must: stat an object (None when missing), read it whole and by range as stored
(gzip objects stay gzip), page through listings in key order with and without a delimiter, and
pin reads to a version. Expected bytes come from the seed tree the servers were loaded from.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import google_crc32c
import pytest

from microns_get.config import resolve_settings
from microns_get.errors import RemoteError
from microns_get.sources import CloudPath, ObjectInfo, Source, make_session, open_source
from microns_get.sources.direct import make_direct_session
from microns_get.sources.gcs import GcsSource
from microns_get.sources.local import LocalSource
from microns_get.sources.s3 import S3Source

S3_BUCKET = "bossdb-open-data"
CSV_KEY = "iarpa_microns/minnie/minnie65/nucleus_detection/nucleus_detection_v0.csv"
SWC_PREFIX = "skel/swc/proofread/"


@dataclass(frozen=True)
class Case:
    name: str
    bucket: str
    object_key: str
    prefix: str | None  # None: the source has no listing (plain HTTPS)
    gzip_key: str | None


def first_gzip_key(tree, bucket: str) -> str | None:
    for key in tree.keys(bucket):
        if tree.entry(bucket, key).content_encoding == "gzip":
            return key
    return None


def cases(tree) -> list[Case]:
    return [
        Case(
            "s3",
            S3_BUCKET,
            CSV_KEY,
            "iarpa_microns/minnie/minnie65/",
            first_gzip_key(tree, S3_BUCKET),
        ),
        Case(
            "gcs",
            "microns-static-links",
            tree.keys("microns-static-links", SWC_PREFIX)[0],
            SWC_PREFIX,
            None,
        ),
        Case(
            "gcs-gzip",
            "iarpa_microns",
            tree.keys("iarpa_microns", "minnie/minnie65/nuclei/")[0],
            "minnie/minnie65/nuclei/",
            first_gzip_key(tree, "iarpa_microns"),
        ),
        Case("https", "zenodo.org", "record/5760218/files/minnie.tar.gz", None, None),
        Case("local", S3_BUCKET, CSV_KEY, "iarpa_microns/minnie/minnie65/", None),
    ]


@pytest.fixture(params=["s3", "gcs", "gcs-gzip", "https", "local"])
def case(request, mini_microns) -> Case:
    return {c.name: c for c in cases(mini_microns)}[request.param]


SESSIONS: dict[str, Callable[[int, float], AbstractAsyncContextManager[Any]]] = {
    "aiohttp": make_session,
    "direct": make_direct_session,
}


@pytest.fixture(params=sorted(SESSIONS))
def new_session(request) -> Callable[[int, float], AbstractAsyncContextManager[Any]]:
    return SESSIONS[request.param]


@pytest.fixture
def run(mirrors, mini_microns, case, new_session) -> Iterator:
    """Runs a coroutine function `fn(source)` against the case's source, on each transport."""
    settings = resolve_settings({}, None, environ=mirrors.env())

    def runner(fn):
        async def body():
            async with new_session(4, 30) as session:
                source = make_source(case, settings, session, mini_microns)
                return await fn(source)

        return asyncio.run(body())

    yield runner


def make_source(case: Case, settings, session, tree) -> Source:
    if case.name == "local":
        return LocalSource(tree.root / "objects" / case.bucket)
    scheme = {"s3": "s3", "https": "https"}.get(case.name, "gs")
    return open_source(CloudPath(scheme, case.bucket, ""), session, settings)


def test_stat_reports_size_and_hashes(run, case, mini_microns) -> None:
    expected = mini_microns.read(case.bucket, case.object_key)
    info = run(lambda s: s.stat(case.object_key))
    assert isinstance(info, ObjectInfo)
    assert info.key == case.object_key
    assert info.size == len(expected)
    md5 = base64.b64encode(hashlib.md5(expected).digest()).decode()
    if case.name == "s3":
        assert info.etag == hashlib.md5(expected).hexdigest()
        assert info.md5_base64 == md5
    if case.name.startswith("gcs"):
        assert info.md5_base64 == md5
        crc = base64.b64encode(google_crc32c.Checksum(expected).digest()).decode()
        assert info.crc32c_base64 == crc
        assert info.generation


def test_missing_is_a_value(run, case) -> None:
    assert run(lambda s: s.stat(case.object_key + ".absent")) is None
    assert run(lambda s: s.read(case.object_key + ".absent")) is None


def test_read_whole_and_ranges(run, case, mini_microns) -> None:
    expected = mini_microns.read(case.bucket, case.object_key)
    assert run(lambda s: s.read(case.object_key)) == expected
    assert run(lambda s: s.read(case.object_key, 3, 40)) == expected[3:40]
    tail_start = len(expected) - 5
    assert run(lambda s: s.read(case.object_key, tail_start)) == expected[tail_start:]


def test_stream_pinned_to_the_stat_version(run, case, mini_microns) -> None:
    expected = mini_microns.read(case.bucket, case.object_key)

    async def stream(source: Source) -> bytes:
        pin = await source.stat(case.object_key)
        return b"".join([c async for c in source.stream(case.object_key, 0, len(expected), pin)])

    assert run(stream) == expected


def test_gzip_objects_arrive_as_stored(run, case, mini_microns) -> None:
    if case.gzip_key is None:
        pytest.skip("this case has no gzip-encoded object")
    stored = mini_microns.read(case.bucket, case.gzip_key)
    assert stored[:2] == b"\x1f\x8b"
    assert run(lambda s: s.read(case.gzip_key)) == stored
    info = run(lambda s: s.stat(case.gzip_key))
    assert info.size == len(stored)
    assert info.content_encoding == "gzip"


def test_listing_matches_the_bucket(run, case, mini_microns) -> None:
    if case.prefix is None:
        pytest.skip("plain HTTPS has no listing")
    expected = mini_microns.keys(case.bucket, case.prefix)

    async def collect(source: Source) -> list:
        return [i async for i in source.list(case.prefix)]

    listed = run(collect)
    assert [i.key for i in listed] == expected
    sizes = {i.key: i.size for i in listed}
    for key in expected[:5]:
        assert sizes[key] == len(mini_microns.read(case.bucket, key))


def test_listing_with_delimiter_gives_common_prefixes(run, case, mini_microns) -> None:
    if case.prefix is None:
        pytest.skip("plain HTTPS has no listing")
    keys = mini_microns.keys(case.bucket, case.prefix)
    rest = [k[len(case.prefix) :] for k in keys]
    expected_dirs = sorted({case.prefix + r.split("/")[0] + "/" for r in rest if "/" in r})
    expected_files = sorted(case.prefix + r for r in rest if "/" not in r)

    async def collect(source: Source) -> list:
        return [i async for i in source.list(case.prefix, delimiter="/")]

    listed = run(collect)
    assert sorted(i for i in listed if isinstance(i, str)) == expected_dirs
    assert sorted(i.key for i in listed if isinstance(i, ObjectInfo)) == expected_files


def test_range_past_the_end_is_an_error_not_data(run, case, mini_microns) -> None:
    size = len(mini_microns.read(case.bucket, case.object_key))
    if case.name == "local":
        assert run(lambda s: s.read(case.object_key, size + 10, size + 20)) == b""
        return
    with pytest.raises(RemoteError):
        run(lambda s: s.read(case.object_key, size + 10, size + 20))


@pytest.mark.parametrize("page", [1, 3])
def test_s3_and_gcs_listings_page(mirrors, mini_microns, page, new_session, monkeypatch) -> None:
    """Small pages force continuation tokens / page tokens through every page."""
    settings = resolve_settings({}, None, environ=mirrors.env())
    monkeypatch.setattr(S3Source, "page_size", page)
    monkeypatch.setattr(GcsSource, "page_size", page)

    async def body():
        async with new_session(4, 30) as session:
            s3 = open_source(CloudPath("s3", S3_BUCKET, ""), session, settings)
            gcs = open_source(CloudPath("gs", "microns-static-links", ""), session, settings)
            prefix = "iarpa_microns/minnie/minnie65/skeletons/"
            a = [i.key async for i in s3.list(prefix)]
            b = [i.key async for i in gcs.list(SWC_PREFIX)]
            return a, b

    a, b = asyncio.run(body())
    assert a == mini_microns.keys(S3_BUCKET, "iarpa_microns/minnie/minnie65/skeletons/")
    assert b == mini_microns.keys("microns-static-links", SWC_PREFIX)
    assert len(a) > page and len(b) > page
