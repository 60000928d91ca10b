"""Content digests and the check of a downloaded file against what the remote declared.

Owns: MD5 + CRC32C computed in one stream (`StreamHasher`), per-part MD5s and the S3 multipart
ETag (`md5(md5(p1) ‖ … ‖ md5(pN))-N`), ETag classification, the guess of the part size an
uploader used, and `verify_object`, which picks the strongest check the remote allows.
Must not do network I/O, decide retries, or move files: it reads local bytes and reports.

Reading policy of `verify_object` (the file is read at most twice, usually once):
pass 1 computes whatever whole-object digests are still unknown (MD5, CRC32C) and, for a
multipart ETag, the part digests of the most likely part size only. Each candidate part size
costs a full MD5 of the file, so hashing all ~15 candidates up front would multiply CPU by 15
for the common case (aws cli / boto3 8 MiB parts) that needs one. Only when the first
candidate fails does pass 2 hash every remaining candidate together, in one read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import google_crc32c

from microns_get.errors import VerificationFailed
from microns_get.sources.base import ObjectInfo

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
READ_CHUNK = 8 * MiB

# Part sizes seen in the wild, most likely first: aws cli / boto3 default (8 MiB), the S3
# minimum (5 MiB), common tool settings, and the console's decimal 16 MB / 8 MB.
COMMON_PART_SIZES: tuple[int, ...] = (
    8 * MiB,
    5 * MiB,
    16 * MiB,
    15 * MiB,
    64 * MiB,
    100 * MiB,
    128 * MiB,
    256 * MiB,
    512 * MiB,
    1 * GiB,
    16_000_000,
    8_000_000,
)
# s3transfer doubles its chunk size until an upload fits in 10,000 parts, so very large objects
# uploaded with the default end up with 8 MiB * 2**k parts.
_S3TRANSFER_DOUBLINGS: tuple[int, ...] = tuple(8 * MiB * 2**k for k in range(1, 10))

_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")
_MULTIPART = re.compile(r"^([0-9a-fA-F]{32})-([1-9][0-9]*)$")


class StreamHasher:
    """MD5 and CRC32C of a byte stream fed in order, both computed from the same pass. Either can
    be left out when nothing will be compared with it (S3 reports no CRC32C): hashing costs."""

    def __init__(self, md5: bool = True, crc32c: bool = True) -> None:
        self._md5 = hashlib.md5() if md5 else None
        self._crc = google_crc32c.Checksum() if crc32c else None
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self._md5 is not None:
            self._md5.update(data)
        if self._crc is not None:
            # google-crc32c's C extension accepts only `bytes`, not buffers.
            self._crc.update(data if isinstance(data, bytes) else bytes(data))
        self.size += len(data)

    @property
    def has_md5(self) -> bool:
        return self._md5 is not None

    @property
    def has_crc32c(self) -> bool:
        return self._crc is not None

    def md5_digest(self) -> bytes:
        assert self._md5 is not None, "MD5 was not computed"
        return self._md5.digest()

    def md5_hex(self) -> str:
        return self.md5_digest().hex()

    def md5_base64(self) -> str:
        return base64.b64encode(self.md5_digest()).decode("ascii")

    def crc32c_digest(self) -> bytes:
        """The 4-byte big-endian CRC32C."""
        assert self._crc is not None, "CRC32C was not computed"
        return self._crc.digest()

    def crc32c_base64(self) -> str:
        """GCS's form: base64 of the big-endian 4-byte CRC32C."""
        return base64.b64encode(self.crc32c_digest()).decode("ascii")


class PartDigester:
    """MD5 of each consecutive `part_size` slice of a stream fed in order."""

    def __init__(self, part_size: int) -> None:
        if part_size <= 0:
            raise ValueError(f"part size must be positive, got {part_size}")
        self.part_size = part_size
        self._digests: list[bytes] = []
        self._current = hashlib.md5()
        self._filled = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            take = min(len(view), self.part_size - self._filled)
            self._current.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self.part_size:
                self._digests.append(self._current.digest())
                self._current = hashlib.md5()
                self._filled = 0

    def digests(self) -> list[bytes]:
        """Digests of every part so far, the trailing short part included. An empty stream is
        one empty part, as S3 records a zero-byte multipart upload."""
        if self._filled or not self._digests:
            return [*self._digests, self._current.digest()]
        return list(self._digests)


def _scan(
    path: str | os.PathLike[str],
    sinks: Sequence[Callable[[bytes], None]],
    start: int = 0,
    end: int | None = None,
    chunk: int = READ_CHUNK,
) -> None:
    """Read `[start, end)` of a file once, handing each chunk to every sink."""
    with open(path, "rb") as f:
        f.seek(start)
        remaining = None if end is None else max(0, end - start)
        while remaining is None or remaining > 0:
            data = f.read(chunk if remaining is None else min(chunk, remaining))
            if not data:
                break
            if remaining is not None:
                remaining -= len(data)
            for sink in sinks:
                sink(data)


def hash_file(
    path: str | os.PathLike[str], start: int = 0, end: int | None = None, chunk: int = READ_CHUNK
) -> StreamHasher:
    """MD5 + CRC32C of bytes `[start, end)` of a local file (to EOF when `end` is None)."""
    hasher = StreamHasher()
    _scan(path, [hasher.update], start, end, chunk)
    return hasher


def part_md5s(path: str | os.PathLike[str], part_size: int) -> list[bytes]:
    """Raw 16-byte MD5 of each `part_size` part of a file, in order."""
    digester = PartDigester(part_size)
    _scan(path, [digester.update])
    return digester.digests()


def multipart_etag(part_digests: Sequence[bytes]) -> str:
    """The S3 ETag of a multipart upload whose parts had these MD5s."""
    return f"{hashlib.md5(b''.join(part_digests)).hexdigest()}-{len(part_digests)}"


class EtagKind(Enum):
    MD5 = "md5"  # 32 hex digits: the MD5 of the object (S3 single PUT)
    MULTIPART = "multipart"  # 32 hex digits and "-N": S3 multipart upload of N parts
    OPAQUE = "opaque"  # anything else (GCS, nginx, SeaweedFS, SSE-KMS): only an identity


def _unquote(etag: str) -> str:
    etag = etag.strip()
    if etag.startswith("W/"):
        return etag  # a weak validator is never a digest; keep it unmatchable
    return etag.strip('"')


def parse_etag(etag: str | None) -> EtagKind:
    """Classify an ETag (quoted or not)."""
    if not etag:
        return EtagKind.OPAQUE
    value = _unquote(etag)
    if _HEX32.match(value):
        return EtagKind.MD5
    if _MULTIPART.match(value):
        return EtagKind.MULTIPART
    return EtagKind.OPAQUE


def multipart_count(etag: str | None) -> int | None:
    """N of an S3 multipart ETag `hex-N`; None for any other ETag."""
    match = _MULTIPART.match(_unquote(etag)) if etag else None
    return int(match.group(2)) if match else None


def etag_md5_base64(etag: str | None) -> str | None:
    """The MD5 a plain S3 ETag stands for, in GCS's base64 form; None otherwise."""
    if etag is None or parse_etag(etag) is not EtagKind.MD5:
        return None
    return base64.b64encode(bytes.fromhex(_unquote(etag))).decode("ascii")


def _parts_for(size: int, part_size: int) -> int:
    return max(1, -(-size // part_size))  # an empty upload is still one (empty) part


def candidate_part_sizes(size: int, n_parts: int) -> list[int]:
    """Part sizes that split `size` bytes into exactly `n_parts` parts, most likely first."""
    if n_parts < 1 or size < 0:
        return []
    guesses: list[int] = [*COMMON_PART_SIZES, *_S3TRANSFER_DOUBLINGS]
    if size > 0:
        even = -(-size // n_parts)  # uploaders that split evenly, then round up to a MiB
        guesses += [-(-even // MiB) * MiB, even]
    if n_parts == 1:
        # Any part size >= size gives the same single part: one candidate is enough.
        fits = [p for p in guesses if p >= size]
        return [fits[0] if fits else size]
    found: list[int] = []
    for part in guesses:
        if part not in found and _parts_for(size, part) == n_parts:
            found.append(part)
    return found


@dataclass(frozen=True)
class Verification:
    """The outcome of checking one file: which check ran, whether it passed, and why."""

    method: str  # "md5" | "crc32c" | "md5+crc32c" | "s3-multipart-etag" | "size-only" | "size"
    ok: bool
    detail: str

    def require(self, label: str) -> None:
        """Raise `VerificationFailed` naming `label` when the check failed."""
        if not self.ok:
            raise VerificationFailed(f"{label}: {self.detail}")


def _same_b64(expected: str, actual: str) -> bool:
    try:
        return base64.b64decode(expected, validate=True) == base64.b64decode(actual)
    except (binascii.Error, ValueError):
        return expected == actual


def _human(n: int) -> str:
    if n % MiB == 0:
        return f"{n // MiB} MiB"
    return f"{n:,} bytes"


# CRC32C (Castagnoli), reflected polynomial: the CRC that GCS reports.
_CRC32C_POLY = 0x82F63B78


def written_checksum(data: bytes) -> str:
    """The checksum recorded for a file we wrote (cutout chunks), for `verify` to re-check.
    CRC32C: it catches what a later re-read must catch (bit rot, a truncated or replaced file)
    at about 1/30 of MD5's CPU, and a cutout writes hundreds of chunks in a fraction of a second."""
    return f"crc32c:{google_crc32c.value(data):08x}"


def matches_written(recorded: str, data: bytes) -> bool:
    """Whether `data` still has the checksum `written_checksum` recorded (or, in state files
    from before CRC32C, the "md5:<hex>" recorded then)."""
    algorithm, _, expected = recorded.partition(":")
    if algorithm == "crc32c":
        return expected == f"{google_crc32c.value(data):08x}"
    if algorithm == "md5":
        return expected == hashlib.md5(data).hexdigest()
    return False


def _gf2_times(matrix: Sequence[int], vector: int) -> int:
    total, row = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[row]
        vector >>= 1
        row += 1
    return total


def _gf2_square(matrix: Sequence[int]) -> list[int]:
    return [_gf2_times(matrix, matrix[n]) for n in range(32)]


def crc32c_combine(crc_a: int, crc_b: int, length_b: int) -> int:
    """The CRC32C of A followed by B, from the CRC32Cs of A and of B and B's length (zlib's
    `crc32_combine` method with the Castagnoli polynomial: appending B's length in zero bytes to
    A's CRC is a linear map over GF(2), applied by repeated squaring). Lets parts fetched in any
    order be checked against the object's CRC32C without reading the file again."""
    if length_b <= 0:
        return crc_a
    odd = [_CRC32C_POLY] + [1 << n for n in range(31)]  # one zero bit
    even = _gf2_square(odd)  # two zero bits
    odd = _gf2_square(even)  # four zero bits
    while True:
        even = _gf2_square(odd)  # first pass: one zero byte, then doubling
        if length_b & 1:
            crc_a = _gf2_times(even, crc_a)
        length_b >>= 1
        if not length_b:
            break
        odd = _gf2_square(even)
        if length_b & 1:
            crc_a = _gf2_times(odd, crc_a)
        length_b >>= 1
        if not length_b:
            break
    return crc_a ^ crc_b


def crc32c_of_parts(digests: Sequence[bytes], lengths: Sequence[int]) -> str:
    """The base64 CRC32C of the whole object from its parts' 4-byte CRC32Cs, in order."""
    crc = 0
    for digest, length in zip(digests, lengths, strict=True):
        crc = crc32c_combine(crc, int.from_bytes(digest, "big"), length)
    return base64.b64encode(crc.to_bytes(4, "big")).decode("ascii")


def verify_crc32c_parts(
    expected: ObjectInfo, digests: Sequence[bytes | None], lengths: Sequence[int]
) -> Verification | None:
    """Check the object's declared CRC32C from its parts' CRC32Cs; None when a part's CRC32C is
    unknown (fetched by an older run, or from a mirror that declares none): read the file then."""
    if not expected.crc32c_base64 or any(d is None or len(d) != 4 for d in digests):
        return None
    got = crc32c_of_parts([d for d in digests if d is not None], lengths)
    if not _same_b64(expected.crc32c_base64, got):
        return Verification(
            "crc32c", False, f"crc32c mismatch: expected {expected.crc32c_base64}, got {got}"
        )
    return Verification("crc32c", True, f"crc32c {got} matched (from the parts' CRC32Cs)")


def _verify_digests(
    path: str | os.PathLike[str],
    md5_want: str | None,
    crc_want: str | None,
    md5_known: str | None,
    crc_known: str | None,
) -> Verification:
    """Compare whole-object MD5 / CRC32C, reading the file only for what is not known yet."""
    if (md5_want and not md5_known) or (crc_want and not crc_known):
        hasher = hash_file(path)
        md5_known = md5_known or hasher.md5_base64()
        crc_known = crc_known or hasher.crc32c_base64()
    checks = [("md5", md5_want, md5_known), ("crc32c", crc_want, crc_known)]
    used = [(name, want, got) for name, want, got in checks if want]
    method = "+".join(name for name, _, _ in used)
    bad = [
        f"{name} mismatch: expected {want}, got {got}"
        for name, want, got in used
        if not _same_b64(want, got or "")
    ]
    if bad:
        return Verification(method, False, "; ".join(bad))
    return Verification(method, True, ", ".join(f"{n} {w}" for n, w, _ in used) + " matched")


def _scan_candidates(path: str | os.PathLike[str], sizes: Sequence[int]) -> dict[int, list[bytes]]:
    digesters = [PartDigester(size) for size in sizes]
    _scan(path, [d.update for d in digesters])
    return {d.part_size: d.digests() for d in digesters}


def _verify_multipart(
    path: str | os.PathLike[str],
    etag: str,
    size: int,
    precomputed: Mapping[int, Sequence[bytes | None]],
) -> Verification:
    """Try to reproduce an S3 multipart ETag: digests already at hand first, then the file."""
    want = _unquote(etag).lower()
    n_parts = multipart_count(etag) or 0
    tried: list[int] = []
    for part_size, digests in precomputed.items():
        complete = [d for d in digests if d is not None]
        if len(digests) == n_parts and len(complete) == n_parts:
            tried.append(part_size)
            if multipart_etag(complete) == want:
                return _multipart_ok(part_size, "digests recorded while downloading")
    remaining = [p for p in candidate_part_sizes(size, n_parts) if p not in tried]
    # Pass 1: the single most likely size. Pass 2 (only if needed): all the others at once.
    for batch in (remaining[:1], remaining[1:]):
        if not batch:
            continue
        for part_size, digests in _scan_candidates(path, batch).items():
            if multipart_etag(digests) == want:
                return _multipart_ok(part_size, "recomputed from the file")
        tried += batch
    sizes = ", ".join(_human(p) for p in tried) or "none"
    return Verification(
        "size-only",
        True,
        f"size matched; multipart ETag {want} (N={n_parts}) not reproduced by any candidate "
        f"part size ({sizes}): the uploader's part size is unknown, content not checked",
    )


def _multipart_ok(part_size: int, how: str) -> Verification:
    return Verification(
        "s3-multipart-etag",
        True,
        f"multipart ETag reproduced with part size {_human(part_size)} ({how})",
    )


def verify_object(
    path: str | os.PathLike[str],
    expected: ObjectInfo,
    known_md5_base64: str | None = None,
    part_md5_by_size: Mapping[int, Sequence[bytes | None]] | None = None,
    known_crc32c_base64: str | None = None,
    known_size: int | None = None,
) -> Verification:
    """Check a local file against the remote's declaration, with the strongest check available.

    `known_*` are digests hashed while streaming (they spare a read), and the size written (it
    spares a stat); `part_md5_by_size` maps a part size to the per-part MD5s recorded while
    downloading in parts of that size. A size mismatch always fails; with nothing to compare
    beyond size the result is "size-only", ok.
    """
    actual = os.path.getsize(path) if known_size is None else known_size
    if actual != expected.size:
        return Verification("size", False, f"size mismatch: expected {expected.size}, got {actual}")
    md5_want = expected.md5_base64 or etag_md5_base64(expected.etag)
    if md5_want or expected.crc32c_base64:
        return _verify_digests(
            path, md5_want, expected.crc32c_base64, known_md5_base64, known_crc32c_base64
        )
    if expected.etag and parse_etag(expected.etag) is EtagKind.MULTIPART:
        return _verify_multipart(path, expected.etag, expected.size, part_md5_by_size or {})
    why = f"ETag {expected.etag!r} is not a digest" if expected.etag else "no digest reported"
    return Verification("size-only", True, f"size matched; {why}, content not checked")
