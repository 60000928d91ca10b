"""The options of a mirror run and where each comes from: flag > jobs file > settings > default.

Owns: `MirrorOptions` and `mirror_options`, which combine command-line flags, a jobs file's
top-level defaults and the settings (`delete_max_fraction`, `bwlimit`, when `config.SETTINGS`
declares them). Pure: the CLI passes the parsed pieces in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from microns_get.errors import BadInput
from microns_get.mirror.bandwidth import Schedule, parse_bwlimit
from microns_get.mirror.jobs import DEFAULT_DELETE_MAX_FRACTION, JobsFile
from microns_get.mirror.lock import DEFAULT_TTL


@dataclass(frozen=True)
class MirrorOptions:
    delete: bool = False
    force: bool = False
    checksum: bool = False
    ignore_quota: bool = False
    delete_max_fraction: float = DEFAULT_DELETE_MAX_FRACTION
    bwlimit: Schedule | None = None
    lock_ttl: float = DEFAULT_TTL
    verify: bool = True


def mirror_options(
    settings: Any,
    jobs_file: JobsFile | None,
    *,
    delete: bool | None = None,
    force: bool = False,
    checksum: bool | None = None,
    bwlimit: str | None = None,
    ignore_quota: bool = False,
    delete_max_fraction: float | None = None,
) -> MirrorOptions:
    fraction = _first(
        delete_max_fraction,
        jobs_file.delete_max_fraction if jobs_file else None,
        getattr(settings, "delete_max_fraction", None),
        DEFAULT_DELETE_MAX_FRACTION,
    )
    if not 0 <= fraction <= 1:
        raise BadInput(f"--delete-max-fraction must be between 0 and 1 (got {fraction})")
    ttl = jobs_file.lock_ttl_hours * 3600 if jobs_file and jobs_file.lock_ttl_hours else None
    return MirrorOptions(
        delete=_first(delete, jobs_file.delete if jobs_file else None, False),
        force=force,
        checksum=_first(checksum, jobs_file.checksum if jobs_file else None, False),
        ignore_quota=ignore_quota,
        delete_max_fraction=fraction,
        bwlimit=bandwidth(settings, jobs_file, bwlimit),
        lock_ttl=ttl or DEFAULT_TTL,
    )


def bandwidth(settings: Any, jobs_file: JobsFile | None, flag: str | None) -> Schedule | None:
    if flag is not None:
        return parse_bwlimit(flag)
    if jobs_file is not None and jobs_file.bwlimit_given:
        return jobs_file.bwlimit
    declared = getattr(settings, "bwlimit", None)
    if declared is None or isinstance(declared, Schedule):
        return declared
    return parse_bwlimit(declared)


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)
