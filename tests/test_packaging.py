"""The package list in pyproject.toml must name every subpackage, or `pip install .` drops it."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "microns_get").rglob("__init__.py")
    }
    on_disk.add("microns_get.manifests")  # mapped from the top-level manifests/ folder
    assert on_disk == listed


def test_manifests_ship_as_package_data() -> None:
    from importlib import resources

    names = [e.name for e in resources.files("microns_get.manifests").iterdir()]
    assert any(n.endswith(".yaml") for n in names)
