"""The rules of an incremental mirror: what changed, what may be deleted, whether it fits. Pure.

Owns: `classify` (a listed item against the checkpoint record of its last verified download and
the local file's size: unchanged, added, changed, or "verify" when only a hash can tell), the
delete rule (`delete_decision`: never after an incomplete listing, never more than a share of the
tree without --force) and the quota rule (`quota_problem`: free bytes and inodes against what
the run will write). No I/O: the runner (`mirror.runner`) reads the listing, the checkpoint,
`os.stat` and `os.statvfs`, and hands the facts in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from microns_get.checkpoint.store import ItemRecord
from microns_get.plan.model import PlanItem
from microns_get.plan.objects import matches
from microns_get.transfer.engine import content_identity


class Change(StrEnum):
    UNCHANGED = "unchanged"
    ADDED = "added"
    CHANGED = "changed"
    VERIFY = "verify"  # hash the local file before deciding (--checksum, or no record of it)


TO_FETCH = (Change.ADDED, Change.CHANGED)


def classify(
    item: PlanItem, record: ItemRecord | None, local_size: int | None, checksum: bool
) -> Change:
    """An unchanged item is known by its record alone (no re-hash) unless `checksum` asks."""
    if local_size is None:
        return Change.ADDED
    recorded = (
        record is not None
        and record.state == "done"
        and record.identity == content_identity(item.primary)
        and record.size == local_size
    )
    if recorded:
        return Change.VERIFY if checksum else Change.UNCHANGED
    if local_size == item.size and (record is None or record.state != "done"):
        # A file we never recorded (another tool, a cluster run): adopt it if its hash agrees.
        return Change.VERIFY
    return Change.CHANGED


def after_verify(ok: bool, method: str, recorded: bool) -> Change:
    """After hashing a local copy. A copy we never recorded is adopted only on a real digest
    match (size alone proves nothing); a recorded copy the remote gives no digest for stays
    unchanged (refetching it on every --checksum run would prove nothing either)."""
    if not ok:
        return Change.CHANGED
    if method not in ("size", "size-only"):
        return Change.UNCHANGED
    return Change.UNCHANGED if recorded else Change.CHANGED


# -- delete ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeleteDecision:
    paths: tuple[str, ...]  # relative to DEST
    in_scope: int  # local files the job's filters cover
    allowed: bool
    reason: str = ""


def in_scope(rel_to_root: str, include: Iterable[str], exclude: Iterable[str]) -> bool:
    """Files the job's filters exclude are not the job's to delete (as rsync protects them)."""
    return matches(rel_to_root, tuple(include), tuple(exclude))


def delete_decision(
    candidates: Iterable[str],
    in_scope_count: int,
    *,
    listing_complete: bool,
    max_fraction: float,
    force: bool,
) -> DeleteDecision:
    paths = tuple(sorted(candidates))
    if not listing_complete:
        return DeleteDecision((), in_scope_count, False, "the remote listing failed or stopped")
    if not paths:
        return DeleteDecision((), in_scope_count, True)
    share = len(paths) / max(1, in_scope_count)
    if share > max_fraction and not force:
        reason = (
            f"refusing to delete {len(paths)} of {in_scope_count} local files "
            f"({share:.0%} > delete_max_fraction {max_fraction:g}); check the remote, then "
            "rerun with --force"
        )
        return DeleteDecision(paths, in_scope_count, False, reason)
    return DeleteDecision(paths, in_scope_count, True)


# -- quota -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Space:
    """What `os.statvfs` says is free for an unprivileged writer; inodes None when unknown."""

    free_bytes: int
    free_inodes: int | None


def quota_problem(dest: str, need_bytes: int, need_files: int, space: Space) -> str | None:
    """The refusal message when the run cannot fit, else None."""
    short = []
    if need_bytes > space.free_bytes:
        short.append(f"{need_bytes} bytes needed, {space.free_bytes} free")
    if space.free_inodes is not None and need_files > space.free_inodes:
        short.append(f"{need_files} files needed, {space.free_inodes} inodes free")
    if not short:
        return None
    return (
        f"not enough space in {dest}: {'; '.join(short)} (nothing was written; free space, or "
        "rerun with --ignore-quota)"
    )


def space_from_statvfs(stat: object) -> Space:
    """Blocks available to non-root writers; file systems that report no inode counts (f_files
    of 0, e.g. btrfs) have no inode limit we can check."""
    free_bytes = stat.f_bavail * stat.f_frsize  # type: ignore[attr-defined]
    inodes = stat.f_favail if stat.f_files else None  # type: ignore[attr-defined]
    return Space(free_bytes, inodes)
