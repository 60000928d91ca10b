"""The local side of a mirror: walking a dataset's folder under DEST and removing files.

Owns: the walk the delete rule runs over (a stream of paths: nothing is collected), which
folders it never enters (other datasets' folders nested inside, state folders, the engine's temp
files), removing one file and the folders it leaves empty, and the nearest existing folder of a
path (DEST may not exist yet when its free space is checked). Must not decide what to delete.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from microns_get.catalog import Catalog
from microns_get.errors import BadInput
from microns_get.layout import canonical_path
from microns_get.sources import CloudPath
from microns_get.transfer.files import TEMP_SUFFIX

STATE_NAME = ".microns-get"


def nested_roots(catalog: Catalog, dest: Path, root: Path) -> set[Path]:
    """Other datasets' folders inside `root`: never a job of `root`'s to delete."""
    nested = set()
    for dataset in catalog.datasets:
        for version in dataset.versions:
            for part in version.parts:
                other = local_root(part)
                if other is not None and root in (dest / other).parents:
                    nested.add(dest / other)
    return nested


def walk_files(root: Path, skip: set[Path]) -> Iterator[Path]:
    """Every file under `root` (a stream: nothing is collected), pruning `skip`, state folders
    and the engine's temp files."""
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if here / d not in skip and d != STATE_NAME)
        for name in sorted(filenames):
            if not name.endswith(TEMP_SUFFIX):
                yield here / name


def remove_file(path: Path, root: Path) -> None:
    """Unlink one file, then its folders that are left empty, up to (not including) `root`."""
    path.unlink(missing_ok=True)
    parent = path.parent
    while parent != root and root in parent.parents:
        try:
            parent.rmdir()  # fails unless empty
        except OSError:
            break
        parent = parent.parent


def local_root(part: Any) -> PurePosixPath | None:
    if not part.is_prefix or not part.mirrors:
        return None
    try:
        return canonical_path(CloudPath.parse(part.mirrors[0].url))
    except BadInput:
        return None  # graphene and other non-file mirrors have no local folder


def nearest_existing(path: Path) -> Path:
    """The nearest existing folder: DEST itself may not exist before the first run."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")
