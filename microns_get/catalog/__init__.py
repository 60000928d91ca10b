"""The dataset catalogue: every public MICrONS dataset, its versions, parts and mirrors.

The data lives in the top-level `manifests/*.yaml` (packaged as `microns_get.manifests`), taken
from the official catalogue ("Static Repositories"). `load_catalog()` reads and checks them;
`Catalog.find(id, volume)` resolves what a user names.
"""

from __future__ import annotations

from microns_get.catalog.fields import parse_declared_size
from microns_get.catalog.index import Catalog
from microns_get.catalog.load import catalog_from_texts, load_catalog
from microns_get.catalog.model import (
    DEFAULT_VOLUME,
    KINDS,
    PROVIDERS,
    VOLUMES,
    Dataset,
    Mirror,
    Part,
    Version,
)

__all__ = [
    "DEFAULT_VOLUME",
    "KINDS",
    "PROVIDERS",
    "VOLUMES",
    "Catalog",
    "Dataset",
    "Mirror",
    "Part",
    "Version",
    "catalog_from_texts",
    "load_catalog",
    "parse_declared_size",
]
