"""Checks of downloaded bytes: content digests now; precomputed checks live beside them."""

from microns_get.verify.digests import (
    COMMON_PART_SIZES,
    EtagKind,
    PartDigester,
    StreamHasher,
    Verification,
    candidate_part_sizes,
    etag_md5_base64,
    hash_file,
    multipart_count,
    multipart_etag,
    parse_etag,
    part_md5s,
    verify_object,
)

__all__ = [
    "COMMON_PART_SIZES",
    "EtagKind",
    "PartDigester",
    "StreamHasher",
    "Verification",
    "candidate_part_sizes",
    "etag_md5_base64",
    "hash_file",
    "multipart_count",
    "multipart_etag",
    "parse_etag",
    "part_md5s",
    "verify_object",
]
