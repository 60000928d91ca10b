"""The manifest schema: checking one file's entries and building `Dataset` records from them.

A manifest is a mapping with one key, `datasets`, a list of entries:

    - id: seg                       # lower-case letters, digits, '-'
      volumes: [minnie65]           # subset of minnie65, minnie35; [] for functional data
      title: Proofread Segmentation
      description: ...              # the catalogue's paragraph
      kind: precomputed-segmentation   # one of model.KINDS
      format: Precomputed Sharded Compressed Segmentation
      size: 12 TB                   # optional, as the catalogue writes it
      prefix: true                  # optional; default by kind (precomputed, file-set, database)
      columns: {name: text}         # optional
      notes: [text, ...]            # optional
      access: ...                   # graphene only (required there)
      nearest_static: "1300"        # graphene only (required there): a version of `seg`
      default_version: "1300"       # optional: default is the only or the highest numeric version
      versions:                     # or `mirrors:` directly, for one unnamed version and part
        - name: "117"
          title: ...                # optional: title of its part (default: the dataset's title)
          notes: [text, ...]        # optional
          mirrors:                  # or `parts:`, a list of {name, title, format, size, prefix,
            - catalogue_url: ...    #   mirrors}; parts default to the dataset's values
              url: ...              # optional working URL when the catalogue's text is wrong

Owns: which fields exist, their types and defaults. Every problem is a `Problem` with the line
of the offending field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from microns_get.catalog.fields import check_url, make_mirror, mirror_rank, parse_declared_size
from microns_get.catalog.model import KINDS, VOLUMES, Dataset, Mirror, Part, Version
from microns_get.catalog.yamllines import LineList, LineMap, Problem

DATASET_FIELDS = (
    "id", "volumes", "title", "description", "kind", "format", "size", "prefix", "columns",
    "notes", "access", "nearest_static", "default_version", "versions", "mirrors",
)  # fmt: skip
VERSION_FIELDS = ("name", "title", "notes", "parts", "mirrors")
PART_FIELDS = ("name", "title", "format", "size", "prefix", "mirrors")
MIRROR_FIELDS = ("catalogue_url", "url")
PREFIX_KINDS = ("precomputed-image", "precomputed-segmentation", "file-set", "database")
GRAPHENE_ONLY = ("access", "nearest_static")
_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_ID_EXPECTED = "lower-case letters, digits and '-' (e.g. 'nucleus-detection')"
_NAME_EXPECTED = 'a string (quote numbers: "117")'
REQUIRED: Any = object()  # default of a required field


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Fields:
    """Typed access to one YAML mapping (an entry, a version, a part or a mirror)."""

    def __init__(self, data: object, what: str, allowed: tuple[str, ...], line: int) -> None:
        if not isinstance(data, LineMap):
            raise Problem(line, f"{what}: expected a mapping of fields (got {_shown(data)})")
        self.data, self.what, self.line = data, what, data.line
        for key in data:
            if key not in allowed:
                raise Problem(
                    data.lines[key],
                    f"unknown field {key!r} in {what} (expected one of: {', '.join(allowed)})",
                )

    def __contains__(self, name: str) -> bool:
        return name in self.data

    def line_of(self, name: str) -> int:
        return self.data.lines.get(name, self.line)

    def fail(self, name: str, expected: str) -> Problem:
        got = _shown(self.data.get(name))
        return Problem(self.line_of(name), f"field {name!r}: expected {expected} (got {got})")

    def get(
        self, name: str, check: Callable[[Any], bool], expected: str, default: Any = REQUIRED
    ) -> Any:
        """The field's value, or `default` when absent (a `REQUIRED` field must be present)."""
        if name not in self.data:
            if default is REQUIRED:
                raise Problem(self.line, f"{self.what} is missing field {name!r} ({expected})")
            return default
        value = self.data[name]
        if not check(value):
            raise self.fail(name, expected)
        return value

    def text(self, name: str, default: Any = REQUIRED) -> Any:
        return self.get(name, _is_text, "a non-empty string", default)

    def name(self, name: str, default: Any = REQUIRED) -> Any:
        return self.get(name, lambda v: isinstance(v, str), _NAME_EXPECTED, default)

    def flag(self, name: str, default: bool) -> bool:
        return bool(self.get(name, lambda v: isinstance(v, bool), "true or false", default))

    def texts(self, name: str) -> tuple[str, ...]:
        value = self.get(name, _is_text_list, "a list of non-empty strings", LineList())
        return tuple(value)

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        return self.get(name, lambda v: v in choices, f"one of {', '.join(choices)}")

    def items(self, name: str) -> list[tuple[object, int]]:
        """A required non-empty list, each item with its line."""
        value = self.get(name, lambda v: isinstance(v, LineList) and v, "a non-empty list")
        return list(zip(value, value.lines, strict=True))


def _is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _is_text_list(value: object) -> bool:
    return isinstance(value, LineList) and all(_is_text(v) for v in value)


@dataclass(frozen=True)
class _PartDefaults:
    """What a part inherits from its dataset (the title also from its version)."""

    title: str
    format: str
    size_text: str | None
    size_bytes: int | None
    is_prefix: bool


def datasets_of(document: object, source_file: str) -> list[Dataset]:
    """Every entry of one parsed manifest, checked."""
    top = Fields(document, "manifest", ("datasets",), 1)
    return [_dataset(entry, line, source_file) for entry, line in top.items("datasets")]


def _dataset(entry: object, line: int, source_file: str) -> Dataset:
    f = Fields(entry, "dataset", DATASET_FIELDS, line)
    dataset_id = f.get("id", lambda v: isinstance(v, str) and bool(_ID.match(v)), _ID_EXPECTED)
    volumes = _volumes(f)
    kind = f.choice("kind", KINDS)
    size_text, size_bytes = _size(f)
    defaults = _PartDefaults(
        title=f.text("title"),
        format=f.text("format"),
        size_text=size_text,
        size_bytes=size_bytes,
        is_prefix=f.flag("prefix", kind in PREFIX_KINDS),
    )
    versions = _versions(f, defaults)
    access, nearest_static = _graphene_fields(f, kind)
    return Dataset(
        id=dataset_id,
        volumes=volumes,
        title=defaults.title,
        description=" ".join(f.text("description").split()),
        kind=kind,
        format=defaults.format,
        size_bytes=size_bytes,
        size_text=size_text,
        columns=MappingProxyType(_columns(f)),
        notes=f.texts("notes"),
        versions=versions,
        default_version=_default_version(f, versions),
        access=access,
        nearest_static=nearest_static,
        source_file=source_file,
        line=f.line,
    )


def _volumes(f: Fields) -> tuple[str, ...]:
    expected = f"a list of distinct volumes from {', '.join(VOLUMES)} ([] for functional data)"
    value = f.get("volumes", lambda v: isinstance(v, LineList), expected)
    if any(v not in VOLUMES for v in value) or len(set(value)) != len(value):
        raise f.fail("volumes", expected)
    return tuple(value)


def _size(f: Fields) -> tuple[str | None, int | None]:
    text = f.text("size", None)
    if text is None:
        return None, None
    try:
        return text, parse_declared_size(text)
    except ValueError as exc:
        raise f.fail("size", str(exc)) from None


def _columns(f: Fields) -> dict[str, str]:
    expected = "a mapping of column name to description"
    value = f.get("columns", lambda v: isinstance(v, LineMap), expected, LineMap())
    for name, text in value.items():
        if not _is_text(text):
            raise Problem(value.lines[name], f"column {name!r}: expected a non-empty description")
    return {name: " ".join(text.split()) for name, text in value.items()}


def _graphene_fields(f: Fields, kind: str) -> tuple[str | None, str | None]:
    if kind != "graphene":
        for name in GRAPHENE_ONLY:
            if name in f:
                raise f.fail(name, "no such field unless kind is graphene")
        return None, None
    return " ".join(f.text("access").split()), f.name("nearest_static")


def _versions(f: Fields, defaults: _PartDefaults) -> tuple[Version, ...]:
    if ("versions" in f) == ("mirrors" in f):
        raise Problem(f.line, "dataset needs exactly one of the fields 'versions' or 'mirrors'")
    if "mirrors" in f:
        return (Version("", (_single_part(f, defaults),), ()),)
    versions = [_version(item, line, defaults) for item, line in f.items("versions")]
    _check_unique([v.name for v in versions], f, "versions", "version")
    return tuple(versions)


def _version(item: object, line: int, defaults: _PartDefaults) -> Version:
    f = Fields(item, "version", VERSION_FIELDS, line)
    name = f.name("name")
    if ("parts" in f) == ("mirrors" in f):
        raise Problem(f.line, "version needs exactly one of the fields 'parts' or 'mirrors'")
    defaults = replace(defaults, title=f.text("title", defaults.title))
    if "mirrors" in f:
        parts: tuple[Part, ...] = (_single_part(f, defaults),)
    else:
        parts = tuple(_part(p, pline, defaults) for p, pline in f.items("parts"))
        _check_unique([p.name for p in parts], f, "parts", "part")
    return Version(name, parts, f.texts("notes"))


def _single_part(f: Fields, defaults: _PartDefaults) -> Part:
    """The one unnamed part of a version (or dataset) given by its `mirrors` directly."""
    return Part(
        name="",
        title=defaults.title,
        mirrors=_mirrors(f),
        size_bytes=defaults.size_bytes,
        size_text=defaults.size_text,
        format=defaults.format,
        is_prefix=defaults.is_prefix,
    )


def _part(item: object, line: int, defaults: _PartDefaults) -> Part:
    f = Fields(item, "part", PART_FIELDS, line)
    size_text, size_bytes = _size(f) if "size" in f else (defaults.size_text, defaults.size_bytes)
    return Part(
        name=f.text("name"),
        title=f.text("title", defaults.title),
        mirrors=_mirrors(f),
        size_bytes=size_bytes,
        size_text=size_text,
        format=f.text("format", defaults.format),
        is_prefix=f.flag("prefix", defaults.is_prefix),
    )


def _mirrors(f: Fields) -> tuple[Mirror, ...]:
    mirrors = [_mirror(item, line) for item, line in f.items("mirrors")]
    return tuple(sorted(mirrors, key=mirror_rank))


def _mirror(item: object, line: int) -> Mirror:
    f = Fields(item, "mirror", MIRROR_FIELDS, line)
    catalogue_url = _url(f, "catalogue_url")
    url = _url(f, "url") if "url" in f else None
    try:
        return make_mirror(catalogue_url, url)
    except ValueError as exc:
        raise f.fail("url" if url else "catalogue_url", str(exc)) from None


def _url(f: Fields, name: str) -> str:
    value: str = f.text(name)
    try:
        check_url(value)
    except ValueError as exc:
        raise f.fail(name, str(exc)) from None
    return value


def _default_version(f: Fields, versions: tuple[Version, ...]) -> str:
    names = [v.name for v in versions]
    if "default_version" in f:
        return f.get("default_version", lambda v: v in names, f"one of {', '.join(names)}")
    if len(names) == 1:
        return names[0]
    if all(n.isdigit() for n in names):
        return max(names, key=int)
    raise Problem(f.line, f"dataset with versions {', '.join(names)} needs 'default_version'")


def _check_unique(names: list[str], f: Fields, field_name: str, what: str) -> None:
    for i, name in enumerate(names):
        if name in names[:i]:
            line = f.data[field_name].lines[i]
            raise Problem(line, f"{what} {name!r} is given twice in field {field_name!r}")
