"""Where a remote object lands under DEST: its canonical local path.

Owns: the mapping cloud URL -> relative local path (the same whichever mirror served it, so a
static web server over DEST is itself a valid GCS-style mirror), and the refusal of keys that
would escape DEST. Pure: no I/O.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from microns_get.errors import UnsafeKey
from microns_get.sources.base import CloudPath


def safe_relative(key: str) -> PurePosixPath:
    """`key` as a relative path that stays inside its root; hostile keys raise `UnsafeKey`."""
    if not key or "\x00" in key or "\\" in key:
        raise UnsafeKey(f"refusing unsafe object key {key!r}")
    path = PurePosixPath(key)
    if path.is_absolute() or any(part in ("..", ".", "") for part in key.split("/")[:-1]):
        raise UnsafeKey(f"refusing object key that escapes the destination: {key!r}")
    if path.name in ("..", "."):
        raise UnsafeKey(f"refusing object key that escapes the destination: {key!r}")
    return path


def canonical_path(path: CloudPath) -> PurePosixPath:
    """S3 keys already start with the dataset's top folder (`iarpa_microns/...`); GCS keys are
    kept with their bucket (`iarpa_microns/minnie/...`, `microns-static-links/skel/...`);
    web hosts keep the host (`zenodo.org/record/...`)."""
    if path.scheme == "s3":
        return safe_relative(path.key)
    if path.scheme == "file":
        return safe_relative(path.key)
    return safe_relative(f"{path.bucket}/{path.key}")
