"""`Catalog`: every dataset entry, and lookup by id and volume.

Owns: how a user's `dataset [--volume]` is resolved to one entry (minnie65 by default), the error
messages for unknown ids and volumes (with close matches), and filtering for `list`.
"""

from __future__ import annotations

import difflib
from typing import Any

from microns_get.catalog.model import DEFAULT_VOLUME, KINDS, VOLUMES, Dataset
from microns_get.errors import BadInput, UnknownDataset, UnknownVersion


class Catalog:
    """The loaded catalogue: one `Dataset` per (id, volume set), in manifest order."""

    def __init__(self, datasets: tuple[Dataset, ...]) -> None:
        self.datasets = datasets
        self._by_id: dict[str, list[Dataset]] = {}
        for dataset in datasets:
            self._by_id.setdefault(dataset.id, []).append(dataset)

    def ids(self) -> list[str]:
        """Dataset ids in manifest order, each once."""
        return list(self._by_id)

    def find(self, dataset_id: str, volume: str | None = None) -> Dataset:
        """The entry for `dataset_id` on `volume` (None: minnie65, or the id's only entry)."""
        entries = self._entries(dataset_id)
        if volume is None:
            return _default_entry(dataset_id, entries)
        _check_volume(volume)
        for dataset in entries:
            if volume in dataset.volumes:
                return dataset
        raise UnknownVersion(f"dataset {dataset_id!r} is {_where(entries)}, not on {volume}")

    def select(self, volume: str | None = None, kind: str | None = None) -> list[Dataset]:
        """Entries on `volume` and of `kind` (None: any)."""
        if volume is not None:
            _check_volume(volume)
        if kind is not None and kind not in KINDS:
            raise BadInput(f"unknown kind {kind!r}; valid kinds: {', '.join(KINDS)}")
        return [
            d
            for d in self.datasets
            if (volume is None or volume in d.volumes) and (kind is None or d.kind == kind)
        ]

    def all_catalogue_urls(self) -> set[str]:
        """Every cloudpath as the catalogue writes it."""
        return {m.catalogue_url for d in self.datasets for m in d.mirrors()}

    def to_json(self) -> list[dict[str, Any]]:
        return [d.to_json() for d in self.datasets]

    def _entries(self, dataset_id: str) -> list[Dataset]:
        entries = self._by_id.get(dataset_id)
        if entries:
            return entries
        close = difflib.get_close_matches(dataset_id, self.ids(), n=3, cutoff=0.6)
        hint = f"did you mean: {', '.join(close)}?" if close else f"known: {', '.join(self.ids())}"
        raise UnknownDataset(f"unknown dataset {dataset_id!r}; {hint}")


def _default_entry(dataset_id: str, entries: list[Dataset]) -> Dataset:
    for dataset in entries:
        if DEFAULT_VOLUME in dataset.volumes:
            return dataset
    if len(entries) == 1:
        return entries[0]
    raise UnknownVersion(f"dataset {dataset_id!r} is {_where(entries)}; name the volume")


def _check_volume(volume: str) -> None:
    if volume not in VOLUMES:
        raise UnknownVersion(f"unknown volume {volume!r}; valid volumes: {', '.join(VOLUMES)}")


def _where(entries: list[Dataset]) -> str:
    """`on minnie65`, `on minnie65, minnie35`, or `functional data (no volume)`."""
    volumes = [v for d in entries for v in d.volumes]
    if not volumes:
        return "functional data (no volume)"
    return f"on {', '.join(volumes)} only" if len(volumes) == 1 else f"on {', '.join(volumes)}"
