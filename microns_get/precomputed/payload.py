"""Chunk payloads before decoding: the gzip wrapper, the errors, and a check that a payload is a
valid chunk that needs no numpy where the encoding allows (a raw chunk can only be the wrong
size).

Owns: `maybe_gunzip`, `CorruptChunk`, `UnsupportedEncoding` (re-exported by `codecs`) and
`check_chunk`. Imports nothing heavy: a cutout checks every chunk it writes, and its start-up
should not pay for numpy when its layer is raw. Decoding proper is `codecs`.
Must not: do I/O.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

from microns_get.errors import MicronsGetError, VerificationFailed
from microns_get.precomputed.info import Scale

GZIP_MAGIC = b"\x1f\x8b"
# info `data_type` -> bytes per value (every type volume.md allows)
ITEM_SIZES = {
    "uint8": 1,
    "int8": 1,
    "uint16": 2,
    "int16": 2,
    "uint32": 4,
    "int32": 4,
    "float32": 4,
    "uint64": 8,
    "int64": 8,
    "float64": 8,
}


class CorruptChunk(VerificationFailed):
    """A chunk payload does not decode to the shape and type its `info` promises."""


class UnsupportedEncoding(MicronsGetError):
    """The chunk encoding is not one this tool can decode (or its decoder is not installed)."""


def maybe_gunzip(data: bytes) -> bytes:
    """Undo a gzip wrapper when the bytes carry one; otherwise return them unchanged.

    The magic alone is not proof: a raw uint8 chunk may start with 0x1f 0x8b. Such bytes fail to
    inflate (or fail the gzip CRC) and are returned as they came, for the codec to judge.
    """
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        inflater = zlib.decompressobj(wbits=31)
        out = inflater.decompress(data)
        # Multi-member gzip files (concatenated streams) are legal; keep inflating.
        while inflater.eof and inflater.unused_data:
            rest = inflater.unused_data
            inflater = zlib.decompressobj(wbits=31)
            out += inflater.decompress(rest)
        return out if inflater.eof else data
    except zlib.error:
        return data


def check_chunk(
    data: bytes, scale: Scale, data_type: str, num_channels: int, chunk_shape: Sequence[int]
) -> None:
    """Raise `CorruptChunk` unless `data` decodes as `codecs.decode_chunk` would decode it.

    A raw payload of the clipped (or the full, padded) chunk's size always decodes, so its size
    is the whole check. Other encodings, and a raw payload of another size (for the exact
    message), go through the decoder.
    """
    if scale.encoding == "raw" and _raw_size_ok(data, scale, data_type, num_channels, chunk_shape):
        return
    from microns_get.precomputed.codecs import decode_chunk

    decode_chunk(data, scale, data_type, num_channels, chunk_shape)


def _raw_size_ok(
    data: bytes, scale: Scale, data_type: str, num_channels: int, chunk_shape: Sequence[int]
) -> bool:
    item = ITEM_SIZES.get(data_type.lower())
    if item is None:
        return False
    size = len(maybe_gunzip(data))
    per_voxel = item * num_channels
    shapes = {tuple(chunk_shape), tuple(scale.chunk_size)}
    return any(size == math.prod(shape) * per_voxel for shape in shapes)
