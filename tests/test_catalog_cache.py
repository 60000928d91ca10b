"""The on-disk cache of the packaged catalogue: it equals a fresh parse, any manifest edit misses
it, a damaged or unsafe file is never trusted, an unwritable place costs nothing, and a warm run
never imports PyYAML. Every test calls `_packaged_catalog.__wrapped__` (not the lru_cached
function, which other test modules share) with `MICRONS_GET_CACHE_DIR` in its own temp dir."""

from __future__ import annotations

import os
import pickle
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from microns_get.catalog import Catalog, load
from microns_get.catalog.load import SOURCE_DIR, _cache_key, _packaged_texts, load_catalog

load_uncached: Callable[[], Catalog] = load._packaged_catalog.__wrapped__
parse = load.catalog_from_texts  # the real one, before `parses` wraps it


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "cache"
    monkeypatch.setenv("MICRONS_GET_CACHE_DIR", str(directory))
    return directory


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the parses of the packaged catalogue (one entry per `catalog_from_texts` call)."""
    calls: list[int] = []

    def counting(files: list[tuple[str, str]]) -> Catalog:
        calls.append(1)
        return parse(files)

    monkeypatch.setattr(load, "catalog_from_texts", counting)
    return calls


def fresh() -> Catalog:
    return parse(_packaged_texts())


def cache_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("catalog-*.pickle"))


def test_a_warm_load_is_the_cached_catalogue_and_equals_a_fresh_parse(
    cache_dir: Path, parses: list[int]
) -> None:
    cold = load_uncached()
    [file] = cache_files(cache_dir)
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    assert list(cache_dir.glob(".catalog-*")) == []  # no temp file left behind
    warm = load_uncached()
    assert len(parses) == 1  # the second load read the pickle
    expected = fresh()
    assert warm.datasets == expected.datasets == cold.datasets
    assert warm.to_json() == expected.to_json()
    assert warm.find("seg", "minnie65") == expected.find("seg", "minnie65")


def test_the_key_changes_with_any_manifest_edit_and_with_the_version() -> None:
    texts = _packaged_texts()
    key = _cache_key(texts)
    name, text = texts[0]
    assert _cache_key(list(texts)) == key
    assert _cache_key([(name, text + "\n# edited\n"), *texts[1:]]) != key
    assert _cache_key([("renamed.yaml", text), *texts[1:]]) != key
    assert _cache_key(texts[1:]) != key
    assert _cache_key(texts, version="0.0.0-other") != key
    assert _cache_key([("a", "bc")]) != _cache_key([("ab", "c")])  # no ambiguous joins


def test_the_file_name_carries_the_key(cache_dir: Path) -> None:
    load_uncached()
    [file] = cache_files(cache_dir)
    assert file.name == f"catalog-{_cache_key(_packaged_texts())[:16]}.pickle"


class _Planted:
    """Unpickles as a call to os.mkdir: what a tampered cache could try."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.marker),)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "not a catalog", "planted"])
def test_a_damaged_cache_is_ignored_and_replaced(
    cache_dir: Path, parses: list[int], tmp_path: Path, damage: str
) -> None:
    load_uncached()
    [file] = cache_files(cache_dir)
    good = file.read_bytes()
    marker = tmp_path / "planted-code-ran"
    contents = {
        "garbage": b"this is not a pickle",
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "not a catalog": pickle.dumps({"datasets": ()}),
        "planted": pickle.dumps(_Planted(marker)),
    }[damage]
    file.write_bytes(contents)
    file.chmod(0o600)  # ours and private: only the contents are wrong
    catalog = load_uncached()
    assert len(parses) == 2  # parsed again
    assert catalog.datasets == fresh().datasets
    assert not marker.exists()
    assert file.read_bytes() != contents  # rewritten
    assert load._read_cache(file) is not None


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666], ids=oct)
def test_a_cache_others_can_write_is_not_loaded(
    cache_dir: Path, parses: list[int], mode: int
) -> None:
    load_uncached()
    [file] = cache_files(cache_dir)
    file.chmod(mode)
    assert load_uncached().datasets == fresh().datasets
    assert len(parses) == 2  # parsed, not unpickled
    assert stat.S_IMODE(file.stat().st_mode) == 0o600  # and replaced by a private file


def test_a_cache_owned_by_someone_else_is_not_loaded(
    cache_dir: Path, parses: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    load_uncached()
    uid = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: uid + 1)  # the file's owner is now "someone else"
    load_uncached()
    assert len(parses) == 2


def unwritable_under_a_file(tmp_path: Path) -> Path:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    return blocker / "cache"  # mkdir fails even for root


def unwritable_read_only_dir(tmp_path: Path) -> Path:
    if os.geteuid() == 0:
        pytest.skip("root writes into a 0o500 directory anyway")
    directory = tmp_path / "read-only"
    directory.mkdir(mode=0o500)
    return directory


@pytest.mark.parametrize("place", [unwritable_under_a_file, unwritable_read_only_dir])
def test_an_unwritable_cache_dir_still_loads_the_catalogue(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    parses: list[int],
    place: Callable[[Path], Path],
) -> None:
    directory = place(tmp_path)
    monkeypatch.setenv("MICRONS_GET_CACHE_DIR", str(directory))
    assert load_uncached().datasets == fresh().datasets
    assert load_uncached().datasets == fresh().datasets
    assert len(parses) == 2  # each run parses; none fails
    assert not directory.exists() or cache_files(directory) == []


def test_a_failed_write_leaves_no_temp_file(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(catalog: Catalog, file: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(load, "_dump", full_disk)
    assert load_uncached().datasets == fresh().datasets
    assert list(cache_dir.iterdir()) == []


def test_a_user_manifest_directory_is_never_cached(cache_dir: Path) -> None:
    assert load_catalog(SOURCE_DIR).datasets == fresh().datasets
    assert not cache_dir.exists()


def test_the_cache_dir_follows_xdg_then_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MICRONS_GET_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert load._cache_dir() == tmp_path / "xdg" / "microns-get"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/xdg")  # the XDG spec: ignore relative paths
    assert load._cache_dir() == tmp_path / "home" / ".cache" / "microns-get"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert load._cache_dir() == tmp_path / "home" / ".cache" / "microns-get"
    monkeypatch.setenv("MICRONS_GET_CACHE_DIR", str(tmp_path / "mine"))
    assert load._cache_dir() == tmp_path / "mine"


def test_a_warm_run_never_imports_yaml(tmp_path: Path) -> None:
    probe = (
        "from microns_get.catalog import load_catalog; load_catalog(); "
        "import sys; print('yaml' in sys.modules)"
    )
    env = {**os.environ, "MICRONS_GET_CACHE_DIR": str(tmp_path / "cache")}

    def yaml_imported() -> str:
        run = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
        )
        return run.stdout.strip()

    assert yaml_imported() == "True"  # the cold run parses (and shows the probe can tell)
    assert yaml_imported() == "False"
