"""The catalogue's records: `Mirror`, `Part`, `Version` and `Dataset` (immutable, JSON-able).

Owns: the shape of one dataset entry and lookups inside one entry (a version by name, a part by
name). Records are built by `load` from the manifests; this module never reads files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from microns_get.errors import UnknownVersion

VOLUMES = ("minnie65", "minnie35")
DEFAULT_VOLUME = "minnie65"
KINDS = (
    "precomputed-image",
    "precomputed-segmentation",
    "table",
    "file-set",
    "archive",
    "database",
    "graphene",
)
PROVIDERS = ("s3", "gcs", "https", "graphene")  # also the preference order of mirrors


@dataclass(frozen=True)
class Mirror:
    """One place a part can be read from."""

    provider: str  # "s3" | "gcs" | "https" | "graphene"
    url: str  # working URL: s3://bucket/key, gs://bucket/key, https://host/path, graphene://...
    catalogue_url: str  # exactly as the catalogue writes it
    https_url: str | None  # public HTTPS form; None for graphene

    def to_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "url": self.url,
            "catalogue_url": self.catalogue_url,
            "https_url": self.https_url,
        }


@dataclass(frozen=True)
class Part:
    """One downloadable unit of a version: a precomputed layer, a file, or a set of files."""

    name: str  # "" when the version has a single unnamed part
    title: str
    mirrors: tuple[Mirror, ...]
    size_bytes: int | None
    size_text: str | None
    format: str
    is_prefix: bool  # True: a folder/prefix; False: one object

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "format": self.format,
            "size_bytes": self.size_bytes,
            "size_text": self.size_text,
            "is_prefix": self.is_prefix,
            "mirrors": [m.to_json() for m in self.mirrors],
        }


@dataclass(frozen=True)
class Version:
    """One version of a dataset ("" for unversioned datasets) and its parts."""

    name: str
    parts: tuple[Part, ...]
    notes: tuple[str, ...] = ()

    def part(self, name: str | None) -> Part:
        """The named part; `None` (or "") means the only part."""
        if not name and len(self.parts) == 1:
            return self.parts[0]
        names = ", ".join(p.name for p in self.parts)
        if not name:
            raise UnknownVersion(
                f"version {self.name or '(unversioned)'} has several parts ({names}); name one"
            )
        for part in self.parts:
            if part.name == name:
                return part
        raise UnknownVersion(
            f"unknown part {name!r} of version {self.name or '(unversioned)'}; "
            f"valid parts: {names or '(one unnamed part)'}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "notes": list(self.notes),
            "parts": [p.to_json() for p in self.parts],
        }


@dataclass(frozen=True)
class Dataset:
    """One catalogue entry: a dataset id on one set of volumes."""

    id: str
    volumes: tuple[str, ...]  # () for functional datasets
    title: str
    description: str
    kind: str
    format: str
    size_bytes: int | None
    size_text: str | None
    columns: Mapping[str, str] = field(hash=False)
    notes: tuple[str, ...]
    versions: tuple[Version, ...]
    default_version: str
    access: str | None  # graphene: how to reach it
    nearest_static: str | None  # graphene: the nearest static `seg` version
    source_file: str  # manifest file name
    line: int  # line of the entry in that file

    @property
    def label(self) -> str:
        """`seg (minnie65)`, `stimulus-movies`: how messages name this entry."""
        return f"{self.id} ({', '.join(self.volumes)})" if self.volumes else self.id

    def version_names(self) -> list[str]:
        return [v.name for v in self.versions]

    def version(self, name: str | None) -> Version:
        """The named version; `None` means the default. `v117` is accepted for `117`."""
        wanted = self.default_version if name is None else name
        for candidate in (wanted, wanted.removeprefix("v")):
            for version in self.versions:
                if version.name == candidate:
                    return version
        if self.version_names() == [""]:
            raise UnknownVersion(f"dataset {self.label} has no versions (got {name!r})")
        valid = ", ".join(self.version_names())
        raise UnknownVersion(
            f"dataset {self.label} has no version {name!r}; valid versions: {valid}"
        )

    def mirrors(self) -> tuple[Mirror, ...]:
        """Every mirror of every version and part, in order."""
        return tuple(m for v in self.versions for p in v.parts for m in p.mirrors)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "volumes": list(self.volumes),
            "title": self.title,
            "description": self.description,
            "kind": self.kind,
            "format": self.format,
            "size_bytes": self.size_bytes,
            "size_text": self.size_text,
            "columns": dict(self.columns),
            "notes": list(self.notes),
            "default_version": self.default_version,
            "access": self.access,
            "nearest_static": self.nearest_static,
            "versions": [v.to_json() for v in self.versions],
            "source": f"{self.source_file}:{self.line}",
        }
