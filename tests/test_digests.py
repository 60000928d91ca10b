"""Digests, S3 multipart ETags and `verify_object`, against known vectors and hashlib."""

from __future__ import annotations

import base64
import hashlib
import random
from pathlib import Path

import google_crc32c
import pytest

from microns_get.errors import VerificationFailed
from microns_get.sources.base import ObjectInfo
from microns_get.verify import digests
from microns_get.verify.digests import (
    EtagKind,
    MiB,
    PartDigester,
    StreamHasher,
    candidate_part_sizes,
    crc32c_combine,
    etag_md5_base64,
    hash_file,
    matches_written,
    multipart_count,
    multipart_etag,
    parse_etag,
    part_md5s,
    verify_crc32c_parts,
    verify_object,
    written_checksum,
)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def md5_b64(data: bytes) -> str:
    return b64(hashlib.md5(data).digest())


def blob(size: int, seed: int = 0) -> bytes:
    """Deterministic random bytes, so a wrong part size gives a wrong ETag."""
    return random.Random(seed).randbytes(size)


def s3_multipart(data: bytes, part: int) -> str:
    pieces = [data[i : i + part] for i in range(0, len(data), part)] or [b""]
    return multipart_etag([hashlib.md5(p).digest() for p in pieces])


@pytest.fixture
def write(tmp_path: Path):
    def _write(data: bytes, name: str = "obj") -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return _write


# -- StreamHasher and friends -------------------------------------------------------------------


def test_empty_stream_vectors() -> None:
    h = StreamHasher()
    assert h.md5_hex() == "d41d8cd98f00b204e9800998ecf8427e"
    assert h.md5_base64() == "1B2M2Y8AsgTpgAmY7PhCfg=="
    assert h.crc32c_base64() == "AAAAAA=="


def test_crc32c_check_value_in_gcs_form() -> None:
    h = StreamHasher()
    for piece in (b"1234", bytearray(b"56"), memoryview(b"789")):
        h.update(piece)
    assert h.crc32c_digest() == (0xE3069283).to_bytes(4, "big")
    # base64 of e3 06 92 83 (the brief's "4wbIgw==" decodes to e3 06 c8 83: a typo)
    assert h.crc32c_base64() == "4waSgw=="
    assert h.md5_hex() == hashlib.md5(b"123456789").hexdigest()
    assert h.size == 9


@pytest.mark.parametrize(
    ("data", "crc"),
    [
        pytest.param(bytes(32), 0x8A9136AA, id="zeros"),
        pytest.param(b"\xff" * 32, 0x62A8AB43, id="ones"),
        pytest.param(bytes(range(32)), 0x46DD794E, id="incrementing"),
        pytest.param(bytes(range(31, -1, -1)), 0x113FDB5C, id="decrementing"),
    ],
)
def test_crc32c_rfc3720_vectors(data: bytes, crc: int) -> None:
    # iSCSI CRC32C test vectors (RFC 3720, B.4); GCS stores the value big-endian, base64.
    h = StreamHasher()
    h.update(data)
    assert h.crc32c_base64() == b64(crc.to_bytes(4, "big"))


def test_hash_file_ranges(write) -> None:
    data = blob(3 * MiB + 17)
    path = write(data)
    assert hash_file(path).md5_hex() == hashlib.md5(data).hexdigest()
    assert hash_file(path, chunk=1000).md5_hex() == hashlib.md5(data).hexdigest()
    part = hash_file(path, start=100, end=MiB + 5, chunk=4096)
    assert part.md5_hex() == hashlib.md5(data[100 : MiB + 5]).hexdigest()
    assert part.size == MiB + 5 - 100
    assert hash_file(path, start=len(data) - 3).md5_hex() == hashlib.md5(data[-3:]).hexdigest()


def test_part_digester_splits_across_chunk_boundaries() -> None:
    data = blob(10_000)
    d = PartDigester(3000)
    for i in range(0, len(data), 777):
        d.update(data[i : i + 777])
    assert d.digests() == [hashlib.md5(data[i : i + 3000]).digest() for i in range(0, 10_000, 3000)]
    assert PartDigester(5).digests() == [hashlib.md5(b"").digest()]


def test_multipart_etag_of_12_mib_in_5_mib_parts(write) -> None:
    data = blob(12 * MiB)
    p1, p2, p3 = data[: 5 * MiB], data[5 * MiB : 10 * MiB], data[10 * MiB :]
    want = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in (p1, p2, p3))).hexdigest()
    digests_ = part_md5s(write(data), 5 * MiB)
    assert len(digests_) == 3
    assert multipart_etag(digests_) == f"{want}-3"


# -- ETags --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("etag", "kind", "count"),
    [
        pytest.param("d41d8cd98f00b204e9800998ecf8427e", EtagKind.MD5, None, id="plain-md5"),
        pytest.param('"D41D8CD98F00B204E9800998ECF8427E"', EtagKind.MD5, None, id="quoted-upper"),
        pytest.param("d41d8cd98f00b204e9800998ecf8427e-12", EtagKind.MULTIPART, 12, id="mp"),
        pytest.param('"9b2cf535f27731c974343645a3985328-1"', EtagKind.MULTIPART, 1, id="mp-1"),
        pytest.param("d41d8cd98f00b204e9800998ecf8427e-0", EtagKind.OPAQUE, None, id="mp-zero"),
        pytest.param('"5f9c7a1b-1a2b"', EtagKind.OPAQUE, None, id="nginx"),
        pytest.param('W/"d41d8cd98f00b204e9800998ecf8427e"', EtagKind.OPAQUE, None, id="weak"),
        pytest.param("CKih16GjycICEAE=", EtagKind.OPAQUE, None, id="gcs"),
        pytest.param("", EtagKind.OPAQUE, None, id="empty"),
        pytest.param(None, EtagKind.OPAQUE, None, id="none"),
    ],
)
def test_parse_etag(etag: str | None, kind: EtagKind, count: int | None) -> None:
    assert parse_etag(etag) is kind
    assert multipart_count(etag) == count


def test_etag_md5_base64() -> None:
    assert etag_md5_base64('"d41d8cd98f00b204e9800998ecf8427e"') == "1B2M2Y8AsgTpgAmY7PhCfg=="
    assert etag_md5_base64("d41d8cd98f00b204e9800998ecf8427e-2") is None


# -- candidate part sizes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "n", "expected"),
    [
        pytest.param(12 * MiB, 3, [5 * MiB, 4 * MiB], id="12MiB-in-3"),
        pytest.param(20 * MiB, 3, [8 * MiB, 8_000_000, 7 * MiB, 6990507], id="aws-default-first"),
        pytest.param(100 * MiB, 7, [16 * MiB, 15 * MiB, 16_000_000, 14979658], id="console"),
        pytest.param(10 * 1024 * MiB, 10, [1024 * MiB], id="1GiB-parts"),
        pytest.param(100_000 * MiB, 6250, [16 * MiB], id="s3transfer-doubled-8MiB"),
        pytest.param(100_000 * MiB, 3125, [32 * MiB], id="s3transfer-doubled-twice"),
        pytest.param(1000 * MiB + 1, 3, [334 * MiB, 349525334], id="even-split-MiB-then-exact"),
    ],
)
def test_candidate_part_sizes(size: int, n: int, expected: list[int]) -> None:
    sizes = candidate_part_sizes(size, n)
    assert sizes == expected
    assert all(-(-size // p) == n for p in sizes)


def test_candidate_single_part_and_nonsense() -> None:
    assert candidate_part_sizes(3 * MiB, 1) == [8 * MiB]
    assert candidate_part_sizes(0, 1) == [8 * MiB]
    assert candidate_part_sizes(3 * MiB, 0) == []
    assert candidate_part_sizes(3 * MiB, 4000) == []


# -- verify_object ------------------------------------------------------------------------------


def gcs_info(data: bytes, *, md5: bool = True, crc: bool = True) -> ObjectInfo:
    h = StreamHasher()
    h.update(data)
    return ObjectInfo(
        key="k",
        size=len(data),
        etag="CKih16GjycICEAE=",
        md5_base64=h.md5_base64() if md5 else None,
        crc32c_base64=h.crc32c_base64() if crc else None,
        generation="1700000000000000",
    )


def flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    ("md5", "crc", "method"),
    [
        pytest.param(True, True, "md5+crc32c", id="both"),
        pytest.param(True, False, "md5", id="md5-only"),
        pytest.param(False, True, "crc32c", id="composite-object-crc-only"),
    ],
)
def test_verify_gcs_hashes(write, md5: bool, crc: bool, method: str) -> None:
    data = blob(MiB + 3)
    path = write(data)
    info = gcs_info(data, md5=md5, crc=crc)
    result = verify_object(path, info)
    assert (result.method, result.ok) == (method, True)
    flip(path, 1000)
    bad = verify_object(path, info)
    assert (bad.method, bad.ok) == (method, False)
    assert "mismatch" in bad.detail and "expected" in bad.detail
    with pytest.raises(VerificationFailed, match="the/file: .*mismatch"):
        bad.require("the/file")


def test_verify_s3_plain_md5_etag(write) -> None:
    data = blob(5000)
    path = write(data)
    info = ObjectInfo(key="k", size=len(data), etag=hashlib.md5(data).hexdigest())
    assert verify_object(path, info) == digests.Verification(
        "md5", True, f"md5 {md5_b64(data)} matched"
    )
    flip(path, 0)
    bad = verify_object(path, info)
    assert (bad.method, bad.ok) == ("md5", False)


def test_known_md5_spares_the_read(write, monkeypatch: pytest.MonkeyPatch) -> None:
    data = blob(2000)
    path = write(data)
    monkeypatch.setattr(digests, "_scan", _no_read)
    info = ObjectInfo(key="k", size=len(data), md5_base64=md5_b64(data))
    assert verify_object(path, info, known_md5_base64=md5_b64(data)).ok
    bad = verify_object(path, info, known_md5_base64=md5_b64(b"other"))
    assert not bad.ok and "md5 mismatch" in bad.detail


def test_crc_is_read_together_with_md5_once(write, monkeypatch: pytest.MonkeyPatch) -> None:
    data = blob(2000)
    path = write(data)
    reads: list[object] = []
    real = digests._scan
    monkeypatch.setattr(digests, "_scan", lambda *a, **k: (reads.append(a), real(*a, **k)))
    assert verify_object(path, gcs_info(data)).method == "md5+crc32c"
    assert len(reads) == 1


def _no_read(*args: object, **kwargs: object) -> None:
    raise AssertionError("the file was read although its digests were known")


def test_size_mismatch_always_fails(write) -> None:
    data = blob(100)
    path = write(data)
    for info in (gcs_info(data + b"x"), ObjectInfo(key="k", size=99, etag="opaque")):
        result = verify_object(path, info)
        assert (result.method, result.ok) == ("size", False)
        assert "size mismatch" in result.detail


@pytest.mark.parametrize(
    "etag",
    [
        pytest.param('"5f9c7a1b-1a2b"', id="nginx"),
        pytest.param("3c9a3b6e0d2f4a5b8c7d6e5f4a3b2c1d0e9f8a7b", id="seaweedfs-like"),
        pytest.param(None, id="no-etag"),
    ],
)
def test_size_only_when_nothing_to_check(write, etag: str | None) -> None:
    path = write(b"abc")
    result = verify_object(path, ObjectInfo(key="k", size=3, etag=etag))
    assert (result.method, result.ok) == ("size-only", True)
    assert "not checked" in result.detail


@pytest.mark.parametrize(
    ("size", "part"),
    [
        pytest.param(12 * MiB, 5 * MiB, id="5MiB"),
        pytest.param(17 * MiB + 5, 8 * MiB, id="8MiB-first-guess"),
        pytest.param(33 * MiB, 16_000_000, id="console-16MB"),
    ],
)
def test_verify_multipart_recomputes(write, size: int, part: int) -> None:
    data = blob(size)
    path = write(data)
    info = ObjectInfo(key="k", size=size, etag=f'"{s3_multipart(data, part)}"')
    result = verify_object(path, info)
    assert (result.method, result.ok) == ("s3-multipart-etag", True)
    assert digests._human(part) in result.detail
    flip(path, size - 1)
    tampered = verify_object(path, info)
    # A multipart ETag that nothing reproduces cannot tell corruption from an unknown part size.
    assert (tampered.method, tampered.ok) == ("size-only", True)
    assert "not reproduced" in tampered.detail


def test_multipart_first_guess_costs_one_read(write, monkeypatch: pytest.MonkeyPatch) -> None:
    data = blob(17 * MiB)
    path = write(data)
    reads: list[object] = []
    real = digests._scan
    monkeypatch.setattr(digests, "_scan", lambda *a, **k: (reads.append(a), real(*a, **k)))
    info = ObjectInfo(key="k", size=len(data), etag=s3_multipart(data, 8 * MiB))
    assert verify_object(path, info).method == "s3-multipart-etag"
    assert len(reads) == 1


def test_multipart_uses_recorded_part_digests(write, monkeypatch: pytest.MonkeyPatch) -> None:
    data = blob(12 * MiB)
    path = write(data)
    recorded = {
        5 * MiB: [hashlib.md5(data[i : i + 5 * MiB]).digest() for i in (0, 5 * MiB, 10 * MiB)]
    }
    monkeypatch.setattr(digests, "_scan", _no_read)
    info = ObjectInfo(key="k", size=len(data), etag=s3_multipart(data, 5 * MiB))
    result = verify_object(path, info, part_md5_by_size=recorded)
    assert (result.method, result.ok) == ("s3-multipart-etag", True)
    assert "recorded while downloading" in result.detail


def test_multipart_falls_back_to_file_when_recorded_parts_differ(write) -> None:
    data = blob(12 * MiB)
    path = write(data)
    recorded = {
        4 * MiB: [hashlib.md5(data[i : i + 4 * MiB]).digest() for i in range(0, 12 * MiB, 4 * MiB)]
    }
    info = ObjectInfo(key="k", size=len(data), etag=s3_multipart(data, 5 * MiB))
    result = verify_object(path, info, part_md5_by_size=recorded)
    assert (result.method, result.ok) == ("s3-multipart-etag", True)
    assert "5 MiB" in result.detail


def test_multipart_with_unknown_part_size_is_size_only(write) -> None:
    data = blob(12 * MiB)
    path = write(data)
    info = ObjectInfo(key="k", size=len(data), etag=s3_multipart(data, 4 * MiB + 12345))
    result = verify_object(path, info)
    assert (result.method, result.ok) == ("size-only", True)
    assert "8 MiB" not in result.detail  # 8 MiB gives 2 parts, not 3: never tried
    assert "5 MiB" in result.detail


@pytest.mark.parametrize(
    ("len_a", "len_b"), [(0, 5), (5, 0), (1, 1), (1000, 77_777), (3 << 20, 123)]
)
def test_crc32c_combine_equals_the_crc32c_of_the_concatenation(len_a: int, len_b: int) -> None:
    rng = random.Random(len_a * 31 + len_b)
    a, b = rng.randbytes(len_a), rng.randbytes(len_b)
    combined = crc32c_combine(google_crc32c.value(a), google_crc32c.value(b), len_b)
    assert combined == google_crc32c.value(a + b)


def test_object_crc32c_from_parts_and_a_wrong_part_is_caught() -> None:
    rng = random.Random(5)
    parts = [rng.randbytes(n) for n in (1 << 20, 1 << 20, 4321)]
    whole = b"".join(parts)
    expected = ObjectInfo(
        key="k",
        size=len(whole),
        crc32c_base64=base64.b64encode(google_crc32c.Checksum(whole).digest()).decode(),
    )
    digests = [google_crc32c.Checksum(p).digest() for p in parts]
    lengths = [len(p) for p in parts]
    assert verify_crc32c_parts(expected, digests, lengths).ok
    bad = [digests[0], google_crc32c.Checksum(parts[1][:-1] + b"x").digest(), digests[2]]
    assert not verify_crc32c_parts(expected, bad, lengths).ok
    assert verify_crc32c_parts(expected, [digests[0], None, digests[2]], lengths) is None


def test_written_checksum_is_crc32c_and_catches_a_changed_byte() -> None:
    data = b"a chunk as written" * 1000
    recorded = written_checksum(data)
    assert recorded == f"crc32c:{google_crc32c.value(data):08x}"
    assert matches_written(recorded, data)
    flipped = bytearray(data)
    flipped[1234] ^= 0x01
    assert not matches_written(recorded, bytes(flipped))
    assert not matches_written(recorded, data[:-1])


def test_matches_written_reads_md5_records_of_older_state_files() -> None:
    data = b"written by an earlier version"
    assert matches_written("md5:" + hashlib.md5(data).hexdigest(), data)
    assert not matches_written("md5:" + hashlib.md5(b"other").hexdigest(), data)
    assert not matches_written("sha1:abc", data)  # an unknown record never passes
