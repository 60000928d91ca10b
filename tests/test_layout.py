"""Canonical local paths and the refusal of hostile keys."""

from __future__ import annotations

import pytest

from microns_get.errors import UnsafeKey
from microns_get.layout import canonical_path, safe_relative
from microns_get.sources import CloudPath


@pytest.mark.parametrize(
    ("url", "local"),
    [
        pytest.param(
            "s3://bossdb-open-data/iarpa_microns/minnie/minnie65/nucleus_detection/nucleus_detection_v0.csv",
            "iarpa_microns/minnie/minnie65/nucleus_detection/nucleus_detection_v0.csv",
            id="s3-drops-bucket",
        ),
        pytest.param(
            "gs://iarpa_microns/minnie/minnie65/seg_m1300/info",
            "iarpa_microns/minnie/minnie65/seg_m1300/info",
            id="gcs-keeps-bucket",
        ),
        pytest.param(
            "gs://microns-static-links/skel/swc/proofread/864691135122603047.swc",
            "microns-static-links/skel/swc/proofread/864691135122603047.swc",
            id="static-links",
        ),
        pytest.param(
            "https://zenodo.org/record/5760218/files/minnie.tar.gz",
            "zenodo.org/record/5760218/files/minnie.tar.gz",
            id="web-host",
        ),
    ],
)
def test_canonical_path(url: str, local: str) -> None:
    assert str(canonical_path(CloudPath.parse(url))) == local


@pytest.mark.parametrize(
    "key",
    ["../x", "a/../../x", "/etc/passwd", "a/./b", "a//b", "..", "", "a\\..\\b", "x\x00y"],
)
def test_hostile_keys_are_refused(key: str) -> None:
    with pytest.raises(UnsafeKey):
        safe_relative(key)


def test_ordinary_keys_pass() -> None:
    assert str(safe_relative("seg/8_8_40/0-64_0-64_0-16")) == "seg/8_8_40/0-64_0-64_0-16"
    assert str(safe_relative("mesh/123:0")) == "mesh/123:0"
