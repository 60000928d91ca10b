"""O_DIRECT writing of large objects' parts (`transfer.direct_io`): every byte lands where it
belongs whatever the alignment of the part, the pieces and the caller's buffer, and a file system
without O_DIRECT (refused at open, or at the first write) costs nothing but the page cache."""

from __future__ import annotations

import errno
import mmap
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from microns_get.transfer import direct_io, files
from microns_get.transfer.direct_io import BLOCK, STAGE, AlignedWriter, open_direct

DATA = random.Random(5).randbytes(3 * STAGE + 3 * BLOCK + 777)


@pytest.fixture
def target(tmp_path: Path) -> Iterator[tuple[Path, int, int | None]]:
    path = tmp_path / "object.partial"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(fd, len(DATA) + BLOCK)  # as `open_temp` reserves the object's size
    direct_fd = open_direct(path)
    yield path, fd, direct_fd
    os.close(fd)
    if direct_fd is not None:
        os.close(direct_fd)


def pieces(
    start: int, end: int, seed: int, aligned_buffers: bool
) -> Iterator[tuple[memoryview, int]]:
    """DATA[start:end] in random-sized pieces, from page-aligned buffers (as the direct reader
    hands them) or from plain bytes (never page-aligned)."""
    rng = random.Random(seed)
    position = start
    while position < end:
        n = min(end - position, rng.choice([1, 100, BLOCK, BLOCK + 1, 65_536, STAGE, STAGE + 5]))
        chunk = DATA[position : position + n]
        if aligned_buffers:
            buffer = mmap.mmap(-1, n)
            buffer[:] = chunk
            yield memoryview(buffer), position
        else:
            yield memoryview(chunk), position
        position += n


def write_part(writer: AlignedWriter, start: int, end: int, seed: int, aligned: bool) -> None:
    for view, position in pieces(start, end, seed, aligned):
        writer.write(view, position)
    writer.finish()


@pytest.mark.parametrize("aligned_buffers", [True, False], ids=["page-aligned", "plain-bytes"])
@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, len(DATA)),  # one part, an unaligned tail
        (BLOCK, 2 * STAGE + BLOCK),  # aligned both ends
        (123, 2 * STAGE + 45),  # an unaligned head and tail
        (5000, 5100),  # inside one block: head only
    ],
    ids=["whole", "aligned", "unaligned", "within-a-block"],
)
def test_a_part_lands_byte_for_byte(target, start: int, end: int, aligned_buffers: bool) -> None:
    path, fd, direct_fd = target
    assert direct_fd is not None, "pytest's tmp dir is expected to allow O_DIRECT"
    writer = AlignedWriter(direct_fd, fd, path, start)
    write_part(writer, start, end, 1, aligned_buffers)
    os.fsync(fd)
    assert path.read_bytes()[start:end] == DATA[start:end]
    # no fallback was needed: every whole block went direct (from the caller's buffer as it was,
    # when page-aligned at an aligned offset; else through the stage)
    assert writer.direct_fd == direct_fd
    whole_blocks = max(0, end // BLOCK - -(-start // BLOCK))
    assert writer.direct_bytes == whole_blocks * BLOCK
    if aligned_buffers and start % BLOCK == 0:
        assert writer.zero_copy


def test_parts_written_side_by_side_make_the_object(target) -> None:
    """Neighbouring parts share no block but the one their boundary falls in (written through
    the page cache by both)."""
    path, fd, direct_fd = target
    bounds = [0, 777, STAGE + 10, 2 * STAGE, len(DATA)]
    writers = [AlignedWriter(direct_fd, fd, path, a) for a in bounds[:-1]]
    feeds = [list(pieces(a, b, i, True)) for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]
    while any(feeds):  # interleaved, as parts arrive in parallel
        for writer, feed in zip(writers, feeds):
            if feed:
                writer.write(*feed.pop(0))
    for writer in writers:
        writer.finish()
    assert path.read_bytes()[: len(DATA)] == DATA


def test_pieces_out_of_order_are_refused(target) -> None:
    path, fd, direct_fd = target
    writer = AlignedWriter(direct_fd, fd, path, 0)
    writer.write(DATA[:100], 0)
    with pytest.raises(ValueError, match="out of order"):
        writer.write(DATA[200:300], 200)
    writer.close()


def test_no_o_direct_at_open_means_the_page_cache(tmp_path, monkeypatch) -> None:
    real_open = os.open

    def refusing(path, flags, *args):  # noqa: ANN001, ANN002
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(direct_io.os, "open", refusing)
    path = tmp_path / "f"
    path.write_bytes(b"")
    assert open_direct(path) is None
    fd = real_open(path, os.O_RDWR)
    try:
        write_part(AlignedWriter(None, fd, path, 0), 0, len(DATA), 2, True)
    finally:
        os.close(fd)
    assert path.read_bytes() == DATA


@pytest.mark.parametrize("aligned_buffers", [True, False], ids=["page-aligned", "plain-bytes"])
def test_direct_writes_refused_later_fall_back_to_the_page_cache(
    target, monkeypatch, aligned_buffers: bool
) -> None:
    """Some file systems accept O_DIRECT at open and refuse it at write (EINVAL)."""
    path, fd, direct_fd = target
    real = files.pwrite_all
    refused = []

    def refusing(out_fd: int, data, offset: int) -> None:  # noqa: ANN001
        if out_fd == direct_fd:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        real(out_fd, data, offset)

    monkeypatch.setattr(files, "pwrite_all", refusing)
    writer = AlignedWriter(direct_fd, fd, path, 0)
    write_part(writer, 0, len(DATA), 3, aligned_buffers)
    assert path.read_bytes()[: len(DATA)] == DATA
    assert refused and writer.direct_fd is None


def test_a_full_disk_on_a_direct_write_is_the_usual_clear_error(target, monkeypatch) -> None:
    path, fd, direct_fd = target

    def full(out_fd: int, data, offset: int) -> None:  # noqa: ANN001
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "pwrite_all", full)
    writer = AlignedWriter(direct_fd, fd, path, 0)
    with pytest.raises(files.DiskFull):
        write_part(writer, 0, len(DATA), 4, True)


def test_page_aligned_whole_blocks_go_straight_from_the_callers_buffer(target) -> None:
    """As the direct reader hands them (1 MiB mmap buffers at aligned offsets): nothing staged."""
    path, fd, direct_fd = target
    writer = AlignedWriter(direct_fd, fd, path, 0)
    for position in range(0, 3 * STAGE, STAGE):
        buffer = mmap.mmap(-1, STAGE)
        buffer[:] = DATA[position : position + STAGE]
        writer.write(memoryview(buffer), position)
        assert writer.filled == 0 and writer.zero_copy
    writer.write(DATA[3 * STAGE :], 3 * STAGE)  # the tail, from plain bytes: staged
    writer.finish()
    assert path.read_bytes()[: len(DATA)] == DATA
    assert writer.direct_bytes == len(DATA) - len(DATA) % BLOCK
