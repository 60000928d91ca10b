"""Loading the catalogue: finding the manifest files, reading them, checking them as a whole.

Owns: `load_catalog` (the packaged manifests by default, cached; or any directory of `*.yaml`),
the on-disk cache of the parsed packaged catalogue (a pickle in `$MICRONS_GET_CACHE_DIR`, else
`$XDG_CACHE_HOME/microns-get`, else `~/.cache/microns-get`, keyed by the package version, this
package's code and every manifest's name and text), and the checks that span entries: one entry
per (id, volume), each catalogue cloudpath listed once, and a graphene entry's `nearest_static`
naming a real `seg` version. Every problem is a one-line `ManifestError` "file:line: what was
expected". The per-entry schema is in `schema`.
"""

from __future__ import annotations

import contextlib
import copyreg
import functools
import hashlib
import importlib.util
import os
import pickle
import stat
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

from microns_get import __version__
from microns_get.catalog.index import Catalog
from microns_get.catalog.model import Dataset, Mirror, Part, Version
from microns_get.errors import ManifestError

PACKAGE = "microns_get.manifests"
SOURCE_DIR = Path(__file__).resolve().parents[2] / "manifests"  # running from a checkout
CACHE_DIR_ENV = "MICRONS_GET_CACHE_DIR"
# Unpickling may call only these: a tampered cache can build catalogue records and nothing else.
_PICKLED_CLASSES = {
    (c.__module__, c.__qualname__): c for c in (Catalog, Dataset, Version, Part, Mirror)
}


def load_catalog(directory: Path | None = None) -> Catalog:
    """The catalogue from `directory`'s `*.yaml` files; None: the packaged manifests (cached)."""
    if directory is None:
        return _packaged_catalog()
    return catalog_from_texts(_read_directory(Path(directory)))


def catalog_from_texts(files: list[tuple[str, str]]) -> Catalog:
    """The catalogue from (file name, YAML text) pairs, checked."""
    # here, not at the top: they import PyYAML, which a run on the cached catalogue never needs
    from microns_get.catalog.schema import datasets_of
    from microns_get.catalog.yamllines import Problem, parse_yaml

    datasets: list[Dataset] = []
    for name, text in files:
        try:
            datasets.extend(datasets_of(parse_yaml(text), name))
        except Problem as problem:
            raise ManifestError(f"{name}:{problem.line}: {problem.message}") from None
    _check_unique_entries(datasets)
    _check_unique_urls(datasets)
    _check_nearest_static(datasets)
    return Catalog(tuple(datasets))


@functools.lru_cache(maxsize=1)
def _packaged_catalog() -> Catalog:
    """Parsed once per process, and once per manifest/code change on disk (see `_cache_key`)."""
    texts = _packaged_texts()
    path = _cache_file(texts)
    cached = _read_cache(path) if path is not None else None
    if cached is not None:
        return cached
    catalog = catalog_from_texts(texts)
    if path is not None:
        _write_cache(path, catalog)
    return catalog


def _cache_key(files: list[tuple[str, str]], version: str = __version__) -> str:
    """sha256 of the version, this package's code and each manifest's name and text: any edit
    (a checkout keeps its version while its manifests or record classes change) misses."""
    digest = hashlib.sha256()
    for piece in (version, _code_fingerprint(), *(s for pair in files for s in pair)):
        data = piece.encode("utf-8")
        digest.update(len(data).to_bytes(8, "big") + data)  # length-framed: no ambiguous joins
    return digest.hexdigest()


def _code_fingerprint() -> str:
    """sha256 of `microns_get/catalog/*.py`: a pickle of records whose classes or checks have
    since changed must not be loaded. "" where the source is not on disk (the version decides)."""
    digest = hashlib.sha256()
    try:
        for path in sorted(Path(__file__).parent.glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    except OSError:
        return ""
    return digest.hexdigest()


def _cache_file(files: list[tuple[str, str]]) -> Path | None:
    """Where this catalogue's pickle goes; None if there is no home to put it in."""
    try:
        return _cache_dir() / f"catalog-{_cache_key(files)[:16]}.pickle"
    except (RuntimeError, KeyError, OSError):  # Path.home(): no HOME and no passwd entry
        return None


def _cache_dir() -> Path:
    """An environment variable only: the catalogue loads before the settings (and config file)."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"  # XDG: abs only
    return base / "microns-get"


def _read_cache(path: Path) -> Catalog | None:
    """The pickled catalogue at `path`, or None: missing, not safely ours, unreadable, wrong."""
    try:
        with open(path, "rb") as file:
            if not _safe_to_unpickle(os.fstat(file.fileno())):
                return None
            catalog = _RecordUnpickler(file).load()
    except Exception:  # noqa: BLE001 - any failure: parse instead, and the cache is rewritten
        return None
    return catalog if isinstance(catalog, Catalog) else None


def _safe_to_unpickle(info: os.stat_result) -> bool:
    """Unpickling runs code: only a regular file of ours that nobody else can have written."""
    return (
        stat.S_ISREG(info.st_mode)
        and info.st_uid == os.getuid()
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


class _RecordUnpickler(pickle.Unpickler):
    """Resolves only the catalogue's own classes (see `_PICKLED_CLASSES`)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == (__name__, _frozen_mapping.__name__):
            return _frozen_mapping
        if (module, name) in _PICKLED_CLASSES:
            return _PICKLED_CLASSES[module, name]
        raise pickle.UnpicklingError(f"not a catalogue record: {module}.{name}")


def _write_cache(path: Path, catalog: Catalog) -> None:
    """Write atomically (a reader sees the old file or the whole new one), 0o600 in a 0o700 dir;
    any failure (read-only home, full disk, no permission) leaves the run on the parsed one."""
    import tempfile  # here: only the run that writes the cache needs it

    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".catalog-", suffix=".tmp", dir=path.parent)  # 0o600
    except Exception:  # noqa: BLE001 - no cache this run; the next run tries again
        return
    try:
        with os.fdopen(fd, "wb") as file:
            _dump(catalog, file)
        os.replace(temp, path)
    except Exception:  # noqa: BLE001 - e.g. a full disk: drop the partial file, keep going
        with contextlib.suppress(OSError):
            os.unlink(temp)


def _dump(catalog: Catalog, file: IO[bytes]) -> None:
    pickler = pickle.Pickler(file, protocol=pickle.HIGHEST_PROTOCOL)
    # `Dataset.columns` is a read-only mappingproxy, which pickle cannot store by itself
    pickler.dispatch_table = {**copyreg.dispatch_table, MappingProxyType: _reduce_mapping}
    pickler.dump(catalog)


def _reduce_mapping(mapping: Mapping[str, Any]) -> tuple[Any, tuple[dict[str, Any]]]:
    return _frozen_mapping, (dict(mapping),)


def _frozen_mapping(items: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(items)


def _packaged_texts() -> list[tuple[str, str]]:
    """The installed `microns_get.manifests`, else the checkout's top-level `manifests/`."""
    directory = _package_directory(PACKAGE)
    if directory is not None and directory.is_dir():
        files = [(path.name, _read_text(path)) for path in sorted(directory.glob("*.yaml"))]
        if files:
            return files
    return _read_directory(SOURCE_DIR)


def _package_directory(name: str) -> Path | None:
    """Where a package's files are, from its import spec: not `importlib.resources`, whose
    import alone costs ~5 ms of every run (pip installs packages as plain directories)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None


def _read_directory(directory: Path) -> list[tuple[str, str]]:
    if not directory.is_dir():
        raise ManifestError(f"manifest directory not found: {directory}")
    paths = sorted(directory.glob("*.yaml"))
    if not paths:
        raise ManifestError(f"no manifest files (*.yaml) in {directory}")
    return [(path.name, _read_text(path)) for path in paths]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"{path.name}:1: not valid YAML: the file is not UTF-8 text") from None
    except OSError as exc:
        raise ManifestError(f"{path.name}: cannot read: {exc.strerror or exc}") from None


def _where(dataset: Dataset) -> str:
    return f"{dataset.source_file}:{dataset.line}"


def _check_unique_entries(datasets: list[Dataset]) -> None:
    seen: dict[tuple[str, str], Dataset] = {}
    for dataset in datasets:
        for volume in dataset.volumes or ("",):
            first = seen.setdefault((dataset.id, volume), dataset)
            if first is not dataset:
                on = f" on {volume}" if volume else ""
                raise ManifestError(
                    f"{_where(dataset)}: duplicate dataset {dataset.id!r}{on} "
                    f"(already defined at {_where(first)})"
                )


def _check_unique_urls(datasets: list[Dataset]) -> None:
    seen: dict[str, Dataset] = {}
    for dataset in datasets:
        for mirror in dataset.mirrors():
            first = seen.setdefault(mirror.catalogue_url, dataset)
            if first is not dataset or _count(dataset, mirror.catalogue_url) > 1:
                raise ManifestError(
                    f"{_where(dataset)}: catalogue_url {mirror.catalogue_url!r} is listed twice "
                    f"(also in {first.id} at {_where(first)})"
                )


def _count(dataset: Dataset, catalogue_url: str) -> int:
    return sum(m.catalogue_url == catalogue_url for m in dataset.mirrors())


def _check_nearest_static(datasets: list[Dataset]) -> None:
    for dataset in datasets:
        if dataset.nearest_static is None:
            continue
        for volume in dataset.volumes:
            seg = [d for d in datasets if d.id == "seg" and volume in d.volumes]
            valid = [v.name for d in seg for v in d.versions]
            if dataset.nearest_static not in valid:
                raise ManifestError(
                    f"{_where(dataset)}: field 'nearest_static': expected a version of seg on "
                    f"{volume} ({', '.join(valid) or 'none'}) (got {dataset.nearest_static!r})"
                )
