"""Loading the catalogue: finding the manifest files, reading them, checking them as a whole.

Owns: `load_catalog` (the packaged manifests by default, cached; or any directory of `*.yaml`),
and the checks that span entries: one entry per (id, volume), each catalogue cloudpath listed
once, and a graphene entry's `nearest_static` naming a real `seg` version. Every problem is a
one-line `ManifestError` "file:line: what was expected". The per-entry schema is in `schema`.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from microns_get.catalog.index import Catalog
from microns_get.catalog.model import Dataset
from microns_get.catalog.schema import datasets_of
from microns_get.catalog.yamllines import Problem, parse_yaml
from microns_get.errors import ManifestError

PACKAGE = "microns_get.manifests"
SOURCE_DIR = Path(__file__).resolve().parents[2] / "manifests"  # running from a checkout


def load_catalog(directory: Path | None = None) -> Catalog:
    """The catalogue from `directory`'s `*.yaml` files; None: the packaged manifests (cached)."""
    if directory is None:
        return _packaged_catalog()
    return catalog_from_texts(_read_directory(Path(directory)))


def catalog_from_texts(files: list[tuple[str, str]]) -> Catalog:
    """The catalogue from (file name, YAML text) pairs, checked."""
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
    return catalog_from_texts(_packaged_texts())


def _packaged_texts() -> list[tuple[str, str]]:
    """The installed `microns_get.manifests`, else the checkout's top-level `manifests/`."""
    try:
        root = resources.files(PACKAGE)
        files = sorted(
            (entry.name, entry.read_text(encoding="utf-8"))
            for entry in root.iterdir()
            if entry.name.endswith(".yaml")
        )
    except (ImportError, TypeError, OSError):  # not installed as a package: a source checkout
        files = []
    return files or _read_directory(SOURCE_DIR)


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
