"""Decode precomputed chunk payloads to arrays (for verification and previews); encode raw chunks.

Owns: the chunk encodings of volume.md (`raw`, `compressed_segmentation`, `jpeg`), undoing a gzip
wrapper (sharded `data_encoding: gzip`, `.gz` files, `Content-Encoding: gzip` objects; the
numpy-free part of this, and the errors, live in `payload`), and the structural checks that keep
a corrupt payload from being decoded into garbage (or crashing a C decoder). Arrays are
(x, y, z, channel) with Fortran-order semantics (x fastest).
Must not: do I/O or know where a chunk lives (`grid.py`, `sharding.py`).

Libraries: `compressed_segmentation` (seung-lab) decodes compressed_segmentation one channel at a
time, after `_check_cseg_channel` has validated every block header (the C decoder does no bounds
checks and can segfault on truncated input); JPEG goes through `simplejpeg` or else Pillow,
whichever is installed. Both are imported lazily so the rest of the tool works without them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from microns_get.precomputed.info import Scale
from microns_get.precomputed.payload import (
    GZIP_MAGIC,
    CorruptChunk,
    UnsupportedEncoding,
    maybe_gunzip,
)

Shape = tuple[int, int, int]
Decoder = Callable[[bytes, Shape, Scale, np.dtype, int], np.ndarray]

_CSEG_BITS = (0, 1, 2, 4, 8, 16, 32)

__all__ = [
    "GZIP_MAGIC",
    "CorruptChunk",
    "UnsupportedEncoding",
    "decode_chunk",
    "encode_raw",
    "maybe_gunzip",
    "numpy_dtype",
]


def numpy_dtype(data_type: str) -> np.dtype:
    """The little-endian numpy dtype of an info `data_type`."""
    return np.dtype(data_type.lower()).newbyteorder("<")


def decode_chunk(
    data: bytes,
    scale: Scale,
    data_type: str,
    num_channels: int,
    chunk_shape: Sequence[int],
) -> np.ndarray:
    """Decode one chunk to an (x, y, z, channel) array of `chunk_shape` (the clipped chunk).

    A gzip wrapper is removed first. Edge chunks are normally stored clipped (TensorStore and
    cloud-volume do); one stored padded to the full chunk size is accepted and cropped.
    """
    raw = bytes(data)
    payload = maybe_gunzip(raw)
    x, y, z = (int(v) for v in chunk_shape)
    try:
        return _decode(payload, (x, y, z), scale, numpy_dtype(data_type), num_channels)
    except CorruptChunk as exc:
        if payload is raw and raw.startswith(GZIP_MAGIC):
            raise CorruptChunk(f"{exc} (the bytes start like gzip but do not inflate)") from None
        raise


def _decode(
    payload: bytes, shape: Shape, scale: Scale, dtype: np.dtype, num_channels: int
) -> np.ndarray:
    if scale.encoding == "raw":
        return _decode_sized(_decode_raw, payload, shape, scale, dtype, num_channels)
    if scale.encoding == "compressed_segmentation":
        return _decode_sized(_decode_cseg, payload, shape, scale, dtype, num_channels)
    if scale.encoding == "jpeg":
        return _decode_jpeg(payload, shape, dtype, num_channels)
    raise UnsupportedEncoding(f"cannot decode chunk encoding {scale.encoding!r}")


def _decode_sized(
    decoder: Decoder, payload: bytes, shape: Shape, scale: Scale, dtype: np.dtype, num_channels: int
) -> np.ndarray:
    """Decode at `shape`; failing that, at the full chunk size, cropped to `shape`."""
    try:
        return decoder(payload, shape, scale, dtype, num_channels)
    except CorruptChunk as exc:
        full = scale.chunk_size
        if full == shape:
            raise
        try:
            array = decoder(payload, full, scale, dtype, num_channels)
        except CorruptChunk:
            raise CorruptChunk(f"{exc} (nor does it decode as a full {_fmt(full)} chunk)") from None
        return array[: shape[0], : shape[1], : shape[2], :]


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(str(v) for v in shape)


# --- raw --------------------------------------------------------------------------------------


def _decode_raw(
    payload: bytes, shape: Shape, scale: Scale, dtype: np.dtype, num_channels: int
) -> np.ndarray:
    expected = math.prod(shape) * num_channels * dtype.itemsize
    if len(payload) != expected:
        raise CorruptChunk(
            f"raw chunk {_fmt(shape)}x{num_channels} {dtype.name}: expected {expected} bytes, "
            f"got {len(payload)}"
        )
    flat = np.frombuffer(payload, dtype=dtype)
    return flat.reshape((*shape, num_channels), order="F")


def encode_raw(array: np.ndarray, data_type: str | None = None) -> bytes:
    """The raw encoding of an (x, y, z) or (x, y, z, channel) array: little endian, x fastest."""
    dtype = numpy_dtype(data_type) if data_type else np.asarray(array).dtype.newbyteorder("<")
    values = np.asarray(array).astype(dtype, copy=False)
    if values.ndim not in (3, 4):
        raise ValueError(f"expected a 3-d or 4-d array, got shape {values.shape}")
    return values.tobytes(order="F")


# --- compressed_segmentation ------------------------------------------------------------------


def _decode_cseg(
    payload: bytes, shape: Shape, scale: Scale, dtype: np.dtype, num_channels: int
) -> np.ndarray:
    if dtype.name not in ("uint32", "uint64"):
        raise CorruptChunk(f"compressed_segmentation needs uint32 or uint64, not {dtype.name}")
    block = tuple(scale.compressed_segmentation_block_size or (8, 8, 8))
    channels = _split_cseg_channels(payload, num_channels)
    out = np.empty((*shape, num_channels), dtype=dtype, order="F")
    for c, words in enumerate(channels):
        checked = _check_cseg_channel(words, shape, block, dtype)
        out[..., c] = _cseg_decompress(checked, shape, block, dtype)
    return out


def _split_cseg_channels(payload: bytes, num_channels: int) -> list[np.ndarray]:
    """The per-channel uint32 word arrays; channel offsets are in words from the payload start."""
    if len(payload) % 4 or len(payload) < 4 * num_channels:
        raise CorruptChunk(f"compressed_segmentation: bad payload length {len(payload)}")
    words = np.frombuffer(payload, dtype="<u4")
    starts = [int(v) for v in words[:num_channels]]
    bounds = [*starts, len(words)]
    if starts[0] != num_channels or any(b > e for b, e in zip(bounds, bounds[1:])):
        raise CorruptChunk(f"compressed_segmentation: bad channel offsets {starts}")
    return [words[b:e] for b, e in zip(bounds, bounds[1:])]


def _check_cseg_channel(
    words: np.ndarray, shape: Shape, block: Shape, dtype: np.dtype
) -> np.ndarray:
    """Validate a channel's block headers and return it padded for the C decoder.

    The decoder does no bounds checks: a header or an encoded index pointing outside the channel
    would read (or crash on) foreign memory. Headers are checked here; encoded indexes cannot be
    checked without decoding, so zero words are appended to cover every index a block's bit
    width allows (corrupt indexes then decode to 0 instead of reading past the buffer).
    """
    grid = [-(-s // b) for s, b in zip(shape, block)]
    n_blocks, block_voxels = math.prod(grid), math.prod(block)
    if len(words) < 2 * n_blocks:
        raise CorruptChunk(
            f"compressed_segmentation: {len(words)} words cannot hold {n_blocks} block headers"
        )
    headers = words[: 2 * n_blocks].reshape(-1, 2).astype(np.int64)
    table, bits, values = headers[:, 0] & 0xFFFFFF, headers[:, 0] >> 24, headers[:, 1]
    if not np.isin(bits, _CSEG_BITS).all():
        raise CorruptChunk("compressed_segmentation: a block header has an invalid bit width")
    # A table with more than 2**16 entries needs a block of more than 2**16 voxels.
    if block_voxels <= 1 << 16 and (bits == 32).any():
        raise CorruptChunk("compressed_segmentation: 32-bit block in a block too small for it")
    per_entry = dtype.itemsize // 4
    end = len(words)
    value_end = values + -(-bits * block_voxels // 32)
    if (value_end > end).any() or (table + per_entry > end).any():
        raise CorruptChunk("compressed_segmentation: a block points past the end of its channel")
    if (table < 2 * n_blocks).any() or ((values < 2 * n_blocks) & (bits > 0)).any():
        raise CorruptChunk("compressed_segmentation: a block points into the header table")
    reach = table + np.where(bits == 32, 1, 1 << np.minimum(bits, 16)) * per_entry
    pad = max(0, int(reach.max(initial=0)) - end)
    return np.concatenate([words, np.zeros(pad, dtype="<u4")]) if pad else words


def _cseg_decompress(words: np.ndarray, shape: Shape, block: Shape, dtype: np.dtype) -> np.ndarray:
    try:
        import compressed_segmentation as cseg
    except ImportError:
        raise UnsupportedEncoding(
            "decoding compressed_segmentation needs the 'compressed-segmentation' package"
        ) from None
    # The library expects a single-channel file: one uint32 channel offset (1), then the channel.
    single = np.concatenate([np.array([1], dtype="<u4"), words]).tobytes()
    array = cseg.decompress(single, tuple(shape), dtype, tuple(block), order="F")
    return np.asarray(array).reshape(shape, order="F")


# --- jpeg -------------------------------------------------------------------------------------


def _decode_jpeg(payload: bytes, shape: Shape, dtype: np.dtype, num_channels: int) -> np.ndarray:
    if dtype.name != "uint8" or num_channels not in (1, 3):
        raise CorruptChunk(f"jpeg chunks must be uint8 with 1 or 3 channels, not {dtype.name}")
    image = _jpeg_pixels(payload, num_channels)
    # The image is x wide and y*z tall; rows run y fastest, then z.
    x, y, z = shape
    if image.shape[:2] != (y * z, x):
        raise CorruptChunk(f"jpeg chunk is {image.shape[1]}x{image.shape[0]}, expected {x}x{y * z}")
    pixels = image.reshape(z, y, x, num_channels)
    return np.asfortranarray(pixels.transpose(2, 1, 0, 3))


def _jpeg_pixels(payload: bytes, num_channels: int) -> np.ndarray:
    """(height, width, channels) uint8 pixels, via simplejpeg or else Pillow."""
    try:
        import simplejpeg
    except ImportError:
        return _jpeg_pixels_pillow(payload, num_channels)
    try:
        space = "GRAY" if num_channels == 1 else "RGB"
        return simplejpeg.decode_jpeg(payload, colorspace=space)
    except ValueError as exc:
        raise CorruptChunk(f"jpeg chunk does not decode ({exc})") from None


def _jpeg_pixels_pillow(payload: bytes, num_channels: int) -> np.ndarray:
    try:
        import io

        from PIL import Image
    except ImportError:
        raise UnsupportedEncoding("decoding jpeg needs 'simplejpeg' or 'Pillow'") from None
    try:
        with Image.open(io.BytesIO(payload)) as img:
            pixels = np.asarray(img.convert("L" if num_channels == 1 else "RGB"))
    except OSError as exc:
        raise CorruptChunk(f"jpeg chunk does not decode ({exc})") from None
    return pixels.reshape(pixels.shape[0], pixels.shape[1], -1)
