"""Local files of a transfer: the temporary file, writes at offsets, and the atomic finish.

Owns: the rule that a file appears under its final name only when complete and verified
(temp name beside it, fsync, rename, fsync of the directory), space reservation up front, and
turning a full disk into one clear error. Must not know about remotes or checksums.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from pathlib import Path

from microns_get.errors import MicronsGetError

TEMP_SUFFIX = ".microns-get-partial"


class DiskFull(MicronsGetError):
    """No space left where the data lands; finished parts are kept for the next run."""


class LocalWriteError(MicronsGetError):
    """The destination cannot be written (permissions, read-only file system, ...)."""


def temp_path_for(final: Path) -> Path:
    """Hidden, beside the final file: the rename stays on one file system, so it is atomic."""
    return final.with_name(f".{final.name}{TEMP_SUFFIX}")


def wrap_os_error(exc: OSError, path: Path) -> MicronsGetError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(
            f"no space left on device writing {path}; free space and run again "
            "(finished parts are kept)"
        )
    return LocalWriteError(f"cannot write {path}: {exc.strerror or exc}")


def open_temp(final: Path, size: int, whole: bool = False) -> int:
    """Open (or reopen, to resume) the temp file and reserve `size` bytes for it. With `whole`
    the caller writes all of it at once: the file starts empty and nothing is reserved (a
    reservation costs more than writing a small file, and the write reports a full disk)."""
    temp = temp_path_for(final)
    flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if whole else 0)
    try:
        try:
            fd = os.open(temp, flags, 0o644)
        except FileNotFoundError:  # its directory is new: the rare case pays for the mkdir
            final.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(temp, flags, 0o644)
    except OSError as exc:
        raise wrap_os_error(exc, temp) from exc
    if whole:
        return fd
    try:
        reserve(fd, size)
    except OSError as exc:
        os.close(fd)
        raise wrap_os_error(exc, temp) from exc
    return fd


def reserve(fd: int, size: int) -> None:
    """Allocate the blocks now, so a full disk fails before any byte is fetched."""
    if os.fstat(fd).st_size != size:
        os.ftruncate(fd, size)
    if size == 0:
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        # Some cluster file systems do not implement fallocate; writing will tell instead.
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise


def write_at(fd: int, data: bytes | bytearray | memoryview, offset: int, path: Path) -> None:
    try:
        pwrite_all(fd, data, offset)
    except OSError as exc:
        raise wrap_os_error(exc, path) from exc


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """Every byte at `offset` (pwrite may write less than asked); OSError as raised."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def sync(fd: int, path: Path) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        raise wrap_os_error(exc, path) from exc


def finish(final: Path, sync_dir: bool = True) -> None:
    """Rename the verified (and fsynced) temp file to its final name. `sync_dir=False` leaves
    making the rename durable to a later `sync_dirs` over many files: a rename lost in a crash
    only means that file is fetched again, never a corrupt file under the final name."""
    temp = temp_path_for(final)
    try:
        os.replace(temp, final)
        if sync_dir:
            sync_dirs([final.parent])
    except OSError as exc:
        raise wrap_os_error(exc, final) from exc


def sync_dirs(directories: Iterable[Path]) -> None:
    """fsync each directory once, so the renames in it survive a crash."""
    for directory in directories:
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def discard_temp(final: Path) -> None:
    try:
        temp_path_for(final).unlink()
    except FileNotFoundError:
        pass


def write_file_atomic(final: Path, data: bytes | bytearray, sync_dir: bool = True) -> None:
    """A small file in one go: temp name, fsync, rename (for chunks, info files, meshes)."""
    fd = open_temp(final, len(data), whole=True)
    try:
        write_at(fd, data, 0, final)
        sync(fd, final)
    finally:
        os.close(fd)
    finish(final, sync_dir)
