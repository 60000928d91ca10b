"""Sanity tests of the test fixtures: the generated mini-MICrONS and the local servers."""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from urllib.parse import quote, urlencode

import numpy as np
import pytest

from microns_get.testing.seedtree import SeedTree
from microns_get.testing.servers import Mirrors

S3B = "bossdb-open-data"
GCSB = "iarpa_microns"
EM65 = "iarpa_microns/minnie/minnie65/em"
NUCLEI_GZ_PREFIX = "minnie/minnie65/nuclei/8_8_40/"
STACK = "iarpa_microns/minnie/functional_data/two_photon_structural_stacks/stack_small.tif"
S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def fetch(url: str, method: str = "GET", **headers: str) -> tuple[int, dict[str, str], bytes]:
    """A plain unsigned request; returns status, headers (lower-case names) and the raw body."""
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def first_gzip_key(tree: SeedTree, bucket: str, prefix: str) -> str:
    return next(k for k in tree.keys(bucket, prefix) if tree.entry(bucket, k).content_encoding)


# --- the generated tree ------------------------------------------------------------------------


def test_tree_layout(mini_microns: SeedTree) -> None:
    tree = mini_microns
    em_shards = tree.keys(S3B, f"{EM65}/8_8_40/")
    assert len(em_shards) >= 4 and all(k.endswith(".shard") for k in em_shards)
    info = json.loads(tree.read(S3B, f"{EM65}/info"))
    assert [s["key"] for s in info["scales"]] == ["8_8_40", "16_16_40", "32_32_40"]
    assert info["scales"][0]["voxel_offset"] != [0, 0, 0]
    assert len({tuple(s["chunk_sizes"][0]) for s in info["scales"]}) == 3
    assert tree.read(S3B, f"{EM65}/info") == tree.read(GCSB, "minnie/minnie65/em/info")
    skel = "iarpa_microns/minnie/minnie65/skeletons/v661/skeletons/"
    assert tree.has(S3B, skel + "864691135122603047_292685.swc")
    assert tree.entry(S3B, STACK).multipart_part_size == 5 * 1024 * 1024
    assert tree.has("zenodo.org", "record/5760218/files/minnie.tar.gz")
    for obj in tree.objects:
        assert tree.path_of(obj.bucket, obj.key).is_file()
        assert not (obj.content_encoding and obj.key.endswith(".gz"))


def test_nuclei_unsharded_with_absent_chunks(mini_microns: SeedTree) -> None:
    info = json.loads(mini_microns.read(S3B, "iarpa_microns/minnie/minnie65/nuclei/info"))
    assert info["mesh"] == "mesh_mip_0_err_40" and "sharding" not in info["scales"][0]
    scale = info["scales"][0]
    grid = np.ceil(np.array(scale["size"]) / scale["chunk_sizes"][0]).astype(int)
    chunks = mini_microns.keys(S3B, "iarpa_microns/minnie/minnie65/nuclei/8_8_40/")
    assert 0 < len(chunks) < int(np.prod(grid))
    mesh = "iarpa_microns/minnie/minnie65/nuclei/mesh_mip_0_err_40/"
    manifest = json.loads(mini_microns.read_decoded(S3B, mesh + "292685:0"))
    for frag in manifest["fragments"]:
        assert mini_microns.has(S3B, mesh + frag)
    assert not mini_microns.has(S3B, mesh + "info")


# --- S3 (moto) ---------------------------------------------------------------------------------


def test_s3_anonymous_get_head(mirrors: Mirrors, mini_microns: SeedTree) -> None:
    key = first_gzip_key(mini_microns, S3B, "iarpa_microns/minnie/minnie65/nuclei/8_8_40/")
    url = f"{mirrors.s3_endpoint}/{S3B}/{quote(key)}"
    status, headers, body = fetch(url)
    assert status == 200 and body == mini_microns.read(S3B, key)
    assert headers.get("content-encoding") == "gzip"
    status, headers, _ = fetch(url, method="HEAD")
    assert status == 200 and int(headers["content-length"]) == len(body)
    assert headers["etag"].strip('"') == hashlib.md5(body).hexdigest()
    assert fetch(f"{mirrors.s3_endpoint}/{S3B}/no/such/key")[0] == 404


def test_s3_anonymous_list_paginated(mirrors: Mirrors, mini_microns: SeedTree) -> None:
    prefix, keys, token = "iarpa_microns/minnie/minnie65/", [], None
    while True:
        query = {"list-type": "2", "prefix": prefix, "max-keys": "25"}
        if token:
            query["continuation-token"] = token
        status, _, body = fetch(f"{mirrors.s3_endpoint}/{S3B}?{urlencode(query)}")
        assert status == 200
        root = ET.fromstring(body)
        keys += [e.text for e in root.iter(f"{S3_NS}Key")]
        token = root.findtext(f"{S3_NS}NextContinuationToken")
        if root.findtext(f"{S3_NS}IsTruncated") != "true":
            break
    assert keys == mini_microns.keys(S3B, prefix)


def test_s3_range_and_multipart_etag(mirrors: Mirrors, mini_microns: SeedTree) -> None:
    data = mini_microns.read(S3B, STACK)
    url = f"{mirrors.s3_endpoint}/{S3B}/{STACK}"
    status, headers, body = fetch(url, Range="bytes=100-199")
    assert status == 206 and body == data[100:200]
    assert headers["content-range"] == f"bytes 100-199/{len(data)}"
    part = 5 * 1024 * 1024
    digests = b"".join(hashlib.md5(data[i : i + part]).digest() for i in range(0, len(data), part))
    etag = fetch(url, method="HEAD")[1]["etag"].strip('"')
    assert etag == f"{hashlib.md5(digests).hexdigest()}-3"


# --- GCS (fake-gcs-server) ---------------------------------------------------------------------


def gcs_list(endpoint: str, bucket: str, prefix: str) -> list[dict]:
    items, token = [], None
    while True:
        query = {"prefix": prefix, "maxResults": "40"}
        if token:
            query["pageToken"] = token
        status, _, body = fetch(f"{endpoint}/storage/v1/b/{bucket}/o?{urlencode(query)}")
        assert status == 200
        page = json.loads(body)
        items += page.get("items", [])
        token = page.get("nextPageToken")
        if not token:
            return items


def test_gcs_listing_has_hashes(mirrors: Mirrors, mini_microns: SeedTree) -> None:
    items = gcs_list(mirrors.gcs_endpoint, GCSB, "minnie/minnie65/")
    assert [i["name"] for i in items] == mini_microns.keys(GCSB, "minnie/minnie65/")
    for item in items:
        stored = mini_microns.read(GCSB, item["name"])
        assert item["md5Hash"] == base64.b64encode(hashlib.md5(stored).digest()).decode()
        assert item["crc32c"] and item["generation"] and int(item["size"]) == len(stored)
        assert (
            item.get("contentEncoding") == mini_microns.entry(GCSB, item["name"]).content_encoding
        )


def test_gcs_ranged_media_get_returns_stored_bytes(
    mirrors: Mirrors, mini_microns: SeedTree
) -> None:
    key = first_gzip_key(mini_microns, GCSB, NUCLEI_GZ_PREFIX)
    stored = mini_microns.read(GCSB, key)
    media = f"{mirrors.gcs_endpoint}/storage/v1/b/{GCSB}/o/{quote(key, safe='')}?alt=media"
    path_style = f"{mirrors.gcs_endpoint}/{GCSB}/{quote(key)}"
    for url in (media, path_style):
        status, headers, body = fetch(url, Range="bytes=10-49", **{"Accept-Encoding": "gzip"})
        assert status == 206 and body == stored[10:50]
        assert headers["content-range"] == f"bytes 10-49/{len(stored)}"
        assert "x-goog-generation" in headers and "md5=" in headers["x-goog-hash"]
    # Without Accept-Encoding: gzip the server transcodes (serves the decoded bytes), as GCS does.
    status, headers, body = fetch(media)
    assert status == 200 and body == mini_microns.read_decoded(GCSB, key)
    assert "content-encoding" not in headers


# --- static HTTP (zenodo stand-in) -------------------------------------------------------------


def test_http_range_head_and_416(mirrors: Mirrors, mini_microns: SeedTree) -> None:
    key = mini_microns.meta["zenodo_key"]
    data = mini_microns.read("zenodo.org", key)
    url = f"{mirrors.http_base}/{key}"
    status, headers, body = fetch(url)
    assert status == 200 and body == data and "content-encoding" not in headers
    status, headers, _ = fetch(url, method="HEAD")
    assert status == 200 and int(headers["content-length"]) == len(data) and headers["etag"]
    status, headers, body = fetch(url, Range="bytes=5-14")
    assert status == 206 and body == data[5:15]
    assert headers["content-range"] == f"bytes 5-14/{len(data)}"
    assert fetch(url, Range=f"bytes={len(data) + 10}-")[0] == 416
    assert fetch(f"{mirrors.http_base}/record/none")[0] == 404


# --- independent readers against the servers ---------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "scale_index"),
    [(EM65, 0), (EM65, 2), ("iarpa_microns/minnie/minnie65/seg", 1)],
)
def test_tensorstore_reads_sharded_layers_from_s3(
    mirrors: Mirrors, mini_microns: SeedTree, prefix: str, scale_index: int
) -> None:
    import tensorstore as ts

    kvstore = {
        "driver": "s3",
        "bucket": S3B,
        "path": prefix + "/",
        "endpoint": mirrors.s3_endpoint,
        "aws_region": "us-east-1",
        "aws_credentials": {"type": "anonymous"},
    }
    spec = {"driver": "neuroglancer_precomputed", "kvstore": kvstore, "scale_index": scale_index}
    store = ts.open(spec, read=True).result()
    key = _scale_key(mini_microns, prefix, scale_index)
    expected = mini_microns.expected_array(S3B, prefix, key)
    np.testing.assert_array_equal(store.read().result()[..., 0], expected)


def _scale_key(tree: SeedTree, prefix: str, scale_index: int) -> str:
    return json.loads(tree.read(S3B, f"{prefix}/info"))["scales"][scale_index]["key"]


def test_cloudvolume_reads_seg_m1300_and_multires_mesh_from_gcs(
    mirrors: Mirrors, mini_microns: SeedTree
) -> None:
    from cloudvolume import CloudVolume

    prefix = "minnie/minnie65/seg_m1300"
    url = f"precomputed://{mirrors.gcs_endpoint}/{GCSB}/{prefix}"
    cv = CloudVolume(url, mip=0, progress=False)
    assert cv.mesh.meta.info["@type"] == "neuroglancer_multilod_draco"
    np.testing.assert_array_equal(
        cv[:, :, :][..., 0], mini_microns.expected_array(GCSB, prefix, "8_8_40")
    )
    lo, hi = cv.bounds.minpt * cv.resolution, cv.bounds.maxpt * cv.resolution
    for segid in mini_microns.meta["m1300_mesh_ids"]:
        mesh = cv.mesh.get(segid)[segid]
        assert len(mesh.faces) > 50
        assert np.all(mesh.vertices >= lo - 64) and np.all(mesh.vertices <= hi + 64)


def test_cloudvolume_reads_nuclei_and_legacy_mesh_from_s3(
    mirrors: Mirrors, mini_microns: SeedTree
) -> None:
    from cloudvolume import CloudVolume

    prefix = "iarpa_microns/minnie/minnie65/nuclei"
    url = f"precomputed://{mirrors.s3_endpoint}/{S3B}/{prefix}"
    cv = CloudVolume(url, mip=0, fill_missing=True, progress=False)
    np.testing.assert_array_equal(
        cv[:, :, :][..., 0], mini_microns.expected_array(S3B, prefix, "8_8_40")
    )
    for nucleus_id in mini_microns.meta["nuclei_mesh_ids"]:
        assert len(cv.mesh.get(nucleus_id).faces) > 20


def test_tables_agree_with_the_segmentation(mini_microns: SeedTree) -> None:
    import csv
    import io

    seg_prefix = "iarpa_microns/minnie/minnie65/seg"
    offset = json.loads(mini_microns.read(S3B, f"{seg_prefix}/info"))["scales"][0]["voxel_offset"]
    seg = mini_microns.expected_array(S3B, seg_prefix, "8_8_40")
    table = "iarpa_microns/minnie/minnie65/nucleus_detection/nucleus_detection_v0.csv"
    rows = list(csv.DictReader(io.StringIO(mini_microns.read(S3B, table).decode())))
    assert len(rows) >= 24 and "292685" in {r["id"] for r in rows}
    for row in rows:
        x, y, z = (int(row[f"pt_position_{a}"]) for a in "xyz")
        idx = (x // 2 - offset[0], y // 2 - offset[1], z - offset[2])
        assert int(row["pt_root_id"]) == int(seg[idx])


def test_mirror_env(mirror_env: Mirrors) -> None:
    import os

    assert os.environ["MICRONS_GET_S3_ENDPOINT"] == mirror_env.s3_endpoint
    assert os.environ["MICRONS_GET_HTTP_REWRITE"] == f"https://zenodo.org={mirror_env.http_base}"
    assert "MICRONS_GET_CONFIG" not in os.environ
    assert not any(os.scandir(os.environ["HOME"]))
