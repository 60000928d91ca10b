"""A local directory as a source (`file:///path`): site caches and already-mirrored trees.

Owns: mapping keys to files under a root, ranged reads, sorted listing. Hashes are not
computed here (a listing must stay cheap); the verifier hashes what it needs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

from microns_get.errors import RemoteError, UnsafeKey
from microns_get.sources.base import ObjectInfo, Source

READ_CHUNK = 1 << 20


def _resolve_inside(root: Path, key: str) -> Path:
    path = (root / key).resolve()
    if path != root and root not in path.parents:
        raise UnsafeKey(f"key escapes the source directory: {key!r}")
    return path


def _info_for(key: str, path: Path) -> ObjectInfo:
    st = path.stat()
    return ObjectInfo(key=key, size=st.st_size, etag=f"{st.st_mtime_ns:x}-{st.st_size:x}")


class LocalSource(Source):
    scheme = "file"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.bucket = ""

    async def stat(self, key: str) -> ObjectInfo | None:
        path = _resolve_inside(self.root, key)
        return _info_for(key, path) if path.is_file() else None

    async def read(self, key: str, start: int = 0, end: int | None = None) -> bytes | None:
        path = _resolve_inside(self.root, key)
        if not path.is_file():
            return None
        return await asyncio.to_thread(_read_range, path, start, end)

    async def stream(
        self, key: str, start: int = 0, end: int | None = None, pin: ObjectInfo | None = None
    ) -> AsyncIterator[bytes]:
        path = _resolve_inside(self.root, key)
        if not path.is_file():
            raise RemoteError(f"not found: {path}", status=404)
        if pin is not None and pin.etag and _info_for(key, path).etag != pin.etag:
            raise RemoteError(f"changed since planned: {path}", status=412)
        position = start
        while end is None or position < end:
            size = READ_CHUNK if end is None else min(READ_CHUNK, end - position)
            chunk = await asyncio.to_thread(_read_range, path, position, position + size)
            if not chunk:
                break
            position += len(chunk)
            yield chunk

    async def list(self, prefix: str, delimiter: str | None = None):
        for item in await asyncio.to_thread(self._walk, prefix, delimiter):
            yield item

    def _walk(self, prefix: str, delimiter: str | None) -> list[ObjectInfo | str]:
        items: list[ObjectInfo | str] = []
        seen_prefixes: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for name in sorted(filenames):
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                rest = key[len(prefix) :]
                if delimiter and delimiter in rest:
                    common = prefix + rest.split(delimiter, 1)[0] + delimiter
                    if common not in seen_prefixes:
                        seen_prefixes.add(common)
                        items.append(common)
                    continue
                items.append(_info_for(key, Path(dirpath, name)))
        return sorted(items, key=lambda item: item if isinstance(item, str) else item.key)


def _read_range(path: Path, start: int, end: int | None) -> bytes:
    with path.open("rb") as handle:
        handle.seek(start)
        return handle.read() if end is None else handle.read(end - start)
