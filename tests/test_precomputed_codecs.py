"""Chunk payload decoding and raw encoding (precomputed/codecs.py).

Round trips against independent writers, whose input arrays are the expected values:
* sharded layers written by TensorStore (identity and murmurhash3 hashes, raw and gzip minishard
  indexes and data, raw and compressed_segmentation, non-zero voxel_offset, several shards),
  read the way the tool reads them: shard index entry -> minishard index -> chunk -> decode;
  cloud-volume's `ShardReader` cross-checks each minishard index;
* unsharded layers written by cloud-volume (`.gz` files) and TensorStore (raw, multi-channel
  compressed_segmentation, jpeg), found by `chunk_key`.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from microns_get.precomputed.codecs import (
    CorruptChunk,
    UnsupportedEncoding,
    decode_chunk,
    encode_raw,
    maybe_gunzip,
)
from microns_get.precomputed.grid import Chunk, chunk_key, chunks_for, grid_shape, scale_bounds
from microns_get.precomputed.info import Scale, VolumeInfo, parse_volume_info
from microns_get.precomputed.payload import check_chunk
from microns_get.precomputed.sharding import (
    CorruptIndex,
    compressed_morton,
    decode_minishard_index,
    decode_shard_index,
    decode_shard_index_entry,
    find_chunk,
    index_length,
    locate_chunk,
    minishard_index_range,
    shard_index_range,
)

_CV = str(Path(tempfile.gettempdir()) / "microns-get-tests-cloudvolume")
os.environ.setdefault("CLOUD_VOLUME_DIR", _CV)
os.environ.setdefault("CLOUD_FILES_DIR", _CV)
cloudvolume = pytest.importorskip("cloudvolume")
ts = pytest.importorskip("tensorstore")
cv_sharding = pytest.importorskip("cloudvolume.datasource.precomputed.sharding")
pytest.importorskip("compressed_segmentation")

SIZE, OFFSET, CHUNK = (20, 18, 10), (3, 5, 7), (8, 8, 4)


def window(scale: Scale, chunk: Chunk) -> tuple[slice, ...]:
    return tuple(slice(lo - o, hi - o) for lo, hi, o in zip(chunk.lo, chunk.hi, scale.voxel_offset))


def all_chunks(info: VolumeInfo) -> list[Chunk]:
    return chunks_for(info.scales[0], scale_bounds(info.scales[0]))


# --- cloud-volume writer (unsharded, name.gz) --------------------------------------------------


def write_cloudvolume(root: Path, encoding: str, dtype: str, channels: int, array: np.ndarray):
    extra = {"compressed_segmentation_block_size": (4, 4, 2)} if encoding != "raw" else {}
    info = cloudvolume.CloudVolume.create_new_info(
        num_channels=channels,
        layer_type="segmentation" if encoding != "raw" else "image",
        data_type=dtype,
        encoding=encoding,
        resolution=[8, 8, 40],
        voxel_offset=list(OFFSET),
        chunk_size=list(CHUNK),
        volume_size=list(SIZE),
        **extra,
    )
    vol = cloudvolume.CloudVolume(f"file://{root}", info=info, compress="gzip", progress=False)
    vol.commit_info()
    vol[:, :, :] = array
    return parse_volume_info((root / "info").read_bytes())


@pytest.mark.parametrize(
    "encoding, dtype, channels",
    [("raw", "uint16", 2), ("raw", "float32", 1), ("compressed_segmentation", "uint64", 1)],
    ids=["raw-uint16-2ch", "raw-float32", "cseg-uint64"],
)
def test_cloudvolume_unsharded_gz(tmp_path: Path, encoding: str, dtype: str, channels: int):
    rng = np.random.default_rng(5)
    array = (rng.integers(0, 9, size=(*SIZE, channels)) * 7919).astype(dtype)
    info = write_cloudvolume(tmp_path, encoding, dtype, channels, array)
    scale = info.scales[0]
    chunks = all_chunks(info)
    assert len(chunks) == 27
    for chunk in chunks:
        payload = (tmp_path / (chunk_key(scale, chunk) + ".gz")).read_bytes()
        assert payload.startswith(b"\x1f\x8b")
        got = decode_chunk(payload, scale, info.data_type, channels, chunk.shape)
        assert got.shape == (*chunk.shape, channels)
        np.testing.assert_array_equal(got, array[window(scale, chunk)])


# --- TensorStore writer ------------------------------------------------------------------------


def write_tensorstore(
    root: Path, encoding: str, dtype: str, array: np.ndarray, sharding: dict | None = None
) -> VolumeInfo:
    scale = {
        "size": list(SIZE),
        "voxel_offset": list(OFFSET),
        "resolution": [8, 8, 40],
        "chunk_size": list(CHUNK),
        "encoding": encoding,
    }
    if encoding == "compressed_segmentation":
        scale["compressed_segmentation_block_size"] = [4, 4, 2]
    if encoding == "jpeg":
        scale["jpeg_quality"] = 100
    if sharding:
        scale["sharding"] = {"@type": "neuroglancer_uint64_sharded_v1", **sharding}
    meta = {"type": "image", "data_type": dtype, "num_channels": array.shape[3]}
    kv = {"driver": "file", "path": str(root)}
    spec = {"driver": "neuroglancer_precomputed", "kvstore": kv, "create": True}
    store = ts.open({**spec, "multiscale_metadata": meta, "scale_metadata": scale}).result()
    store[...] = array
    return parse_volume_info((root / "info").read_bytes())


# id: (hash, preshift_bits, minishard_bits, shard_bits, minishard_index_encoding, data_encoding,
#      chunk encoding). Several shards each, except the last (shard_bits 0: one "0.shard").
MURMUR, CSEG = "murmurhash3_x86_128", "compressed_segmentation"
SHARDED = {
    "identity-gzipidx-raw": ("identity", 1, 2, 2, "gzip", "gzip", "raw"),
    "murmur-rawidx-cseg": (MURMUR, 0, 1, 3, "raw", "raw", CSEG),
    "murmur-gzipidx-cseg-gzip": (MURMUR, 2, 3, 1, "gzip", "gzip", CSEG),
    "identity-rawidx-raw-one-shard": ("identity", 0, 0, 0, "raw", "raw", "raw"),
}
KEYS = ("hash", "preshift_bits", "minishard_bits", "shard_bits")
KEYS += ("minishard_index_encoding", "data_encoding")


def write_sharded(root: Path, layout: tuple) -> tuple[VolumeInfo, np.ndarray]:
    rng = np.random.default_rng(len(layout[-1]))
    labels = rng.choice([0, 7, 2**40 + 3, 2**63 + 11, 12345], size=(*SIZE, 1)).astype("uint64")
    info = write_tensorstore(root, layout[-1], "uint64", labels, dict(zip(KEYS, layout[:-1])))
    return info, labels


@pytest.fixture(scope="module", params=list(SHARDED), ids=list(SHARDED))
def ts_sharded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp(request.param)
    return (root, *write_sharded(root, SHARDED[request.param]))


def read_sharded_chunk(root: Path, scale: Scale, grid: tuple) -> bytes:
    """What a ranged reader does: shard index entry -> minishard index -> chunk bytes."""
    spec = scale.sharding
    cid = compressed_morton(grid, grid_shape(scale))
    loc = locate_chunk(spec, cid)
    shard = (root / scale.key / loc.filename).read_bytes()
    entry = decode_shard_index_entry(shard[slice(*shard_index_range(spec, loc.minishard))])
    start, end = minishard_index_range(spec, entry, len(shard))
    found = find_chunk(decode_minishard_index(shard[start:end], spec, len(shard)), cid)
    assert found is not None, f"chunk {cid} not in {loc.filename} minishard {loc.minishard}"
    return shard[found.start : found.end]


def test_sharded_every_chunk_reads_back(ts_sharded) -> None:
    root, info, labels = ts_sharded
    scale = info.scales[0]
    chunks = all_chunks(info)
    assert len(chunks) == 27
    assert len(list((root / scale.key).glob("*.shard"))) > 1 or scale.sharding.shard_bits == 0
    for chunk in chunks:
        payload = read_sharded_chunk(root, scale, chunk.grid)
        got = decode_chunk(payload, scale, info.data_type, 1, chunk.shape)
        np.testing.assert_array_equal(got, labels[window(scale, chunk)])


def test_sharded_index_structure(ts_sharded) -> None:
    """Every shard decodes whole, holds exactly the grid's chunk ids where `locate_chunk` says,
    its ranges do not overlap, and cloud-volume decodes each minishard index the same way."""
    root, info, _ = ts_sharded
    scale = info.scales[0]
    spec = scale.sharding
    reader = cv_sharding.ShardReader(
        None, None, cv_sharding.ShardingSpecification.from_dict(spec.to_json())
    )
    seen: set[int] = set()
    for path in sorted((root / scale.key).glob("*.shard")):
        shard = path.read_bytes()
        for minishard, entry in enumerate(decode_shard_index(shard[: index_length(spec)], spec)):
            if entry[0] == entry[1]:
                continue
            start, end = minishard_index_range(spec, entry, len(shard))
            ranges = decode_minishard_index(shard[start:end], spec, len(shard))
            theirs = reader.decode_minishard_index(shard[start:end]).tolist()
            assert [(r.chunk_id, r.start, r.size) for r in ranges] == [tuple(t) for t in theirs]
            assert {locate_chunk(spec, r.chunk_id)[1:] for r in ranges} == {(minishard, path.name)}
            ordered = sorted(ranges, key=lambda r: r.start)
            assert all(a.end <= b.start for a, b in zip(ordered, ordered[1:]))
            seen.update(r.chunk_id for r in ranges)
    gshape = grid_shape(scale)
    assert seen == {compressed_morton(c.grid, gshape) for c in all_chunks(info)}


def test_sharded_damaged_minishard_index(tmp_path: Path) -> None:
    info, _ = write_sharded(tmp_path, SHARDED["identity-gzipidx-raw"])
    scale = info.scales[0]
    spec = scale.sharding
    path = next((tmp_path / scale.key).glob("*.shard"))
    shard = bytearray(path.read_bytes())
    index = bytes(shard[: index_length(spec)])
    entry = next(e for e in decode_shard_index(index, spec) if e[1] > e[0])
    start, end = minishard_index_range(spec, entry)
    shard[start + 12] ^= 0xFF  # a byte inside the gzip stream
    with pytest.raises(CorruptIndex, match=f"{path.name}: gzip decoding failed"):
        decode_minishard_index(bytes(shard[start:end]), spec, len(shard), path.name)
    with pytest.raises(CorruptIndex, match="expected 64 bytes"):
        decode_shard_index(bytes(shard[:60]), spec)


# --- TensorStore writer, unsharded ------------------------------------------------------------


def test_tensorstore_raw_bytes_equal_encode_raw(tmp_path: Path) -> None:
    array = np.random.default_rng(1).integers(0, 2**31, size=(*SIZE, 3)).astype("int32")
    info = write_tensorstore(tmp_path, "raw", "int32", array)
    scale = info.scales[0]
    for chunk in all_chunks(info):
        payload = (tmp_path / chunk_key(scale, chunk)).read_bytes()
        assert encode_raw(array[window(scale, chunk)]) == payload
        got = decode_chunk(payload, scale, "int32", 3, chunk.shape)
        np.testing.assert_array_equal(got, array[window(scale, chunk)])


def test_tensorstore_multichannel_compressed_segmentation(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    array = rng.choice([0, 3, 99, 2**32 - 1, 70000], size=(*SIZE, 2)).astype("uint32")
    array[:8, :8, :, 1] = 5  # a single-value region: 0-bit blocks
    info = write_tensorstore(tmp_path, "compressed_segmentation", "uint32", array)
    scale = info.scales[0]
    for chunk in all_chunks(info):
        payload = (tmp_path / chunk_key(scale, chunk)).read_bytes()
        got = decode_chunk(payload, scale, "uint32", 2, chunk.shape)
        np.testing.assert_array_equal(got, array[window(scale, chunk)])


@pytest.mark.parametrize("decoder", ["simplejpeg", "pillow"])
@pytest.mark.parametrize("channels", [1, 3], ids=["gray", "rgb"])
def test_tensorstore_jpeg(
    tmp_path: Path, channels: int, decoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if decoder == "pillow":
        pytest.importorskip("PIL")
        monkeypatch.setitem(sys.modules, "simplejpeg", None)  # import now raises ImportError
    # Smooth content so quality-100 JPEG is near-lossless; compare with TensorStore's own decode.
    x, y, z = np.meshgrid(*(np.arange(n) for n in SIZE), indexing="ij")
    base = (x * 5 + y * 3 + z * 7).astype("uint8")
    array = np.stack([base + 40 * c for c in range(channels)], axis=-1).astype("uint8")
    info = write_tensorstore(tmp_path, "jpeg", "uint8", array)
    scale = info.scales[0]
    stored = ts.open(
        {"driver": "neuroglancer_precomputed", "kvstore": f"file://{tmp_path}/"}
    ).result()
    oracle = stored.read().result()
    for chunk in all_chunks(info):
        payload = (tmp_path / chunk_key(scale, chunk)).read_bytes()
        got = decode_chunk(payload, scale, "uint8", channels, chunk.shape)
        diff = np.abs(got.astype(int) - oracle[window(scale, chunk)].astype(int))
        assert diff.max() <= 2


# --- synthetic payloads -----------------------------------------------------------------------


def raw_scale(chunk: tuple = CHUNK, encoding: str = "raw") -> Scale:
    extra = {"compressed_segmentation_block_size": [4, 4, 2]} if encoding != "raw" else {}
    info = {
        "type": "segmentation",
        "data_type": "uint64",
        "num_channels": 1,
        "scales": [
            {
                "key": "s",
                "resolution": [8, 8, 40],
                "size": list(SIZE),
                "chunk_sizes": [list(chunk)],
                "encoding": encoding,
                **extra,
            }
        ],
    }
    return parse_volume_info(info).scales[0]


def test_raw_that_looks_gzipped_stays_raw() -> None:
    array = np.zeros((4, 4, 1, 1), dtype="uint8")
    array[0, 0, 0, 0], array[1, 0, 0, 0] = 0x1F, 0x8B
    payload = encode_raw(array)
    assert maybe_gunzip(payload) == payload
    got = decode_chunk(payload, raw_scale((4, 4, 1)), "uint8", 1, (4, 4, 1))
    np.testing.assert_array_equal(got, array)


def test_gzip_multimember_and_plain() -> None:
    assert maybe_gunzip(gzip.compress(b"ab") + gzip.compress(b"cd")) == b"abcd"
    assert maybe_gunzip(b"plain") == b"plain"


def test_full_size_edge_chunk_is_cropped() -> None:
    full = np.arange(8 * 8 * 4, dtype="uint64").reshape(8, 8, 4, 1)
    got = decode_chunk(gzip.compress(encode_raw(full)), raw_scale(), "uint64", 1, (4, 2, 4))
    np.testing.assert_array_equal(got, full[:4, :2, :4])


def test_encode_raw_round_trip_and_endianness() -> None:
    array = np.arange(24, dtype=">u2").reshape(2, 3, 4)
    payload = encode_raw(array)
    assert payload[:4] == b"\x00\x00\x0c\x00"  # little endian, x fastest: (0,0,0) then (1,0,0)
    got = decode_chunk(payload, raw_scale((2, 3, 4)), "uint16", 1, (2, 3, 4))
    np.testing.assert_array_equal(got[..., 0], array)
    assert encode_raw(array, "uint32") == array.astype("<u4").tobytes(order="F")
    with pytest.raises(ValueError):
        encode_raw(np.zeros((2, 2)))


def cseg_payload() -> bytes:
    import compressed_segmentation as cseg

    array = np.random.default_rng(4).choice([1, 2, 3, 2**40], size=CHUNK).astype("uint64")
    return cseg.compress(np.asfortranarray(array), block_size=(4, 4, 2), order="F")


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (b"", "bad payload length"),
        (b"\x01\x00\x00\x00", "cannot hold"),
        (b"\x02\x00\x00\x00" + b"\0" * 60, "bad channel offsets"),
        (cseg_payload()[:-8], "past the end"),
        (cseg_payload()[:40], "cannot hold"),
        (cseg_payload()[:7] + b"\x05" + cseg_payload()[8:], "invalid bit width"),
        (cseg_payload()[:8] + b"\0\0\0\0" + cseg_payload()[12:], "header table"),
    ],
    ids=["empty", "no-headers", "channel-offset", "truncated", "cut-headers", "bits", "into-hdr"],
)
def test_corrupt_compressed_segmentation(payload: bytes, fragment: str) -> None:
    scale = raw_scale(encoding="compressed_segmentation")
    with pytest.raises(CorruptChunk, match=fragment):
        decode_chunk(payload, scale, "uint64", 1, CHUNK)


def test_compressed_segmentation_fuzz_never_crashes() -> None:
    """Random truncations and byte flips give CorruptChunk or an array, never a segfault."""
    scale = raw_scale(encoding="compressed_segmentation")
    good = cseg_payload()
    rng = np.random.default_rng(9)
    for _ in range(300):
        bad = bytearray(good[: int(rng.integers(0, len(good) + 1))])
        for _ in range(int(rng.integers(0, 4))):
            if bad:
                bad[int(rng.integers(0, len(bad)))] = int(rng.integers(0, 256))
        try:
            out = decode_chunk(bytes(bad), scale, "uint64", 1, CHUNK)
        except CorruptChunk:
            continue
        assert out.shape == (*CHUNK, 1)


@pytest.mark.parametrize(
    "payload, encoding, dtype, fragment",
    [
        (b"\0" * 7, "raw", "uint64", "expected 2048 bytes, got 7"),
        (gzip.compress(b"\0" * 16)[:-3], "raw", "uint64", "start like gzip but do not inflate"),
        (b"\xff\xd8garbage", "jpeg", "uint8", "jpeg chunk does not decode"),
        (b"", "jpeg", "uint16", "must be uint8"),
    ],
    ids=["raw-short", "truncated-gzip", "jpeg-garbage", "jpeg-dtype"],
)
def test_corrupt_chunks(payload: bytes, encoding: str, dtype: str, fragment: str) -> None:
    scale = Scale("s", SIZE, (8, 8, 40), (0, 0, 0), (CHUNK,), encoding, None, None)
    with pytest.raises(CorruptChunk, match=fragment):
        decode_chunk(payload, scale, dtype, 1, CHUNK)


def test_unknown_encoding() -> None:
    scale = Scale("s", SIZE, (8, 8, 40), (0, 0, 0), (CHUNK,), "jxl", None, None)
    with pytest.raises(UnsupportedEncoding, match="'jxl'"):
        decode_chunk(b"\0", scale, "uint8", 1, CHUNK)


# --- check_chunk: the decoder's verdict, without numpy for raw chunks ------------------------


def _verdict(check, *args) -> str:
    try:
        check(*args)
    except (CorruptChunk, UnsupportedEncoding) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok"


RAW64 = encode_raw(np.arange(8 * 8 * 4, dtype="uint64").reshape(8, 8, 4))


@pytest.mark.parametrize(
    "payload, encoding, dtype, shape",
    [
        (RAW64, "raw", "uint64", CHUNK),
        (gzip.compress(RAW64), "raw", "uint64", CHUNK),
        (RAW64, "raw", "uint64", (4, 2, 4)),  # stored padded to the full chunk: accepted
        (RAW64[:-8], "raw", "uint64", CHUNK),
        (RAW64, "raw", "uint32", CHUNK),
        (RAW64, "raw", "UINT64", CHUNK),
        (gzip.compress(RAW64)[:-3], "raw", "uint64", CHUNK),
        (b"\0" * 7, "raw", "uint64", CHUNK),
        (b"\xff\xd8garbage", "jpeg", "uint8", CHUNK),
        (b"\0", "jxl", "uint8", CHUNK),
    ],
    ids=[
        "raw",
        "gzipped",
        "padded-edge",
        "short",
        "other-dtype",
        "upper-case-dtype",
        "truncated-gzip",
        "tiny",
        "jpeg-garbage",
        "unknown-encoding",
    ],
)
def test_check_chunk_agrees_with_decode_chunk(
    payload: bytes, encoding: str, dtype: str, shape: tuple
) -> None:
    scale = Scale("s", SIZE, (8, 8, 40), (0, 0, 0), (CHUNK,), encoding, None, None)
    args = (payload, scale, dtype, 1, shape)
    assert _verdict(check_chunk, *args) == _verdict(decode_chunk, *args)


def test_check_chunk_of_a_raw_layer_needs_no_numpy() -> None:
    code = (
        "import sys\n"
        "from microns_get.precomputed.info import Scale\n"
        "from microns_get.precomputed.payload import check_chunk\n"
        "scale = Scale('s', (8, 8, 4), (8, 8, 40), (0, 0, 0), ((8, 8, 4),), 'raw', None, None)\n"
        "check_chunk(bytes(256), scale, 'uint8', 1, (8, 8, 4))\n"
        "print('numpy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
