"""Planning whole-object transfers (files and object sets): listing in, plan out. Pure.

Owns: turning one mirror's listing of a dataset part into `PlanItem`s with their canonical local
paths and their addresses on every other mirror, include/exclude filtering, and the refusal of
listed keys that would escape DEST. No I/O: `discover` did the listing.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from microns_get.catalog import Mirror
from microns_get.errors import UnsafeKey
from microns_get.layout import canonical_path, safe_relative
from microns_get.plan.model import Plan, PlanItem, RemoteCopy
from microns_get.sources import CloudPath, ObjectInfo


def relative_key(root: CloudPath, key: str, is_prefix: bool) -> str:
    """The part of `key` below the dataset root; refuses keys outside it or with `..`."""
    if not is_prefix:
        if key != root.key:
            raise UnsafeKey(f"listing returned {key!r} for the single object {root.key!r}")
        return ""
    prefix = root.key.rstrip("/") + "/"
    if not key.startswith(prefix):
        raise UnsafeKey(f"listed key {key!r} is outside the requested prefix {prefix!r}")
    rel = key[len(prefix) :]
    safe_relative(rel)
    return rel


def matches(rel: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]

    def hit(patterns: Sequence[str]) -> bool:
        return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)

    if include and not hit(include):
        return False
    return not (exclude and hit(exclude))


def copy_from_listing(url: str, provider: str, info: ObjectInfo) -> RemoteCopy:
    return RemoteCopy(
        url=url,
        provider=provider,
        size=info.size,
        etag=info.etag,
        md5_base64=info.md5_base64,
        crc32c_base64=info.crc32c_base64,
        generation=info.generation,
        content_encoding=info.content_encoding,
    )


def _join(root: CloudPath, rel: str) -> CloudPath:
    return root.join(rel) if rel else root


def plan_objects(
    request: Mapping[str, Any],
    local_root: Mirror,
    mirrors: Sequence[Mirror],
    listing: Iterable[ObjectInfo],
    *,
    is_prefix: bool,
    part_size: int,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> Plan:
    """Items for every listed object of `mirrors[0]` that passes the filters. `local_root` is the
    catalogue's first mirror: its path decides where files land, whichever mirror serves them."""
    primary, others = mirrors[0], mirrors[1:]
    primary_root = CloudPath.parse(primary.url)
    local_base = CloudPath.parse(local_root.url)
    items: list[PlanItem] = []
    for info in listing:
        rel = relative_key(primary_root, info.key, is_prefix)
        if is_prefix and not matches(rel, include, exclude):
            continue
        copies = [copy_from_listing(_join(primary_root, rel).url, primary.provider, info)]
        for mirror in others:
            url = _join(CloudPath.parse(mirror.url), rel).url
            copies.append(RemoteCopy(url=url, provider=mirror.provider))
        local = canonical_path(_join(local_base, rel))
        items.append(PlanItem(path=str(local), size=info.size, copies=tuple(copies)))
    items.sort(key=lambda item: item.path)
    return Plan(request=request, items=tuple(items), part_size=part_size, mirror=primary.url)
