"""Reading a manifest's YAML so that every mapping and list remembers its line numbers.

Owns: `parse_yaml` (PyYAML's safe loader, plus line numbers and a duplicate-key check) and
`Problem`, the "line N: what was expected" error the manifest checks raise before the loader
turns it into a `ManifestError` naming the file.
"""

from __future__ import annotations

from typing import Any

import yaml


class Problem(Exception):
    """A manifest problem at one line (1-based) of the file being read."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class LineMap(dict):  # type: ignore[type-arg]
    """A YAML mapping; `line` is where it starts, `lines[key]` where each key is written."""

    line: int
    lines: dict[str, int]


class LineList(list):  # type: ignore[type-arg]
    """A YAML list; `line` is where it starts, `lines[i]` where item i starts."""

    line: int
    lines: list[int]


# libyaml's C parser when PyYAML was built with it (5-10x faster: the catalogue is parsed at
# every start-up); the pure-Python one otherwise. Both are safe loaders.
_SafeBase = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _LineLoader(_SafeBase):  # type: ignore[misc, valid-type]
    """A safe loader that builds `LineMap` / `LineList` (same safety: plain data only)."""


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> LineMap:
    loader.flatten_mapping(node)
    result = LineMap()
    result.line = node.start_mark.line + 1
    result.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        key_line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            raise Problem(key_line, f"field names must be text (got {key!r})")
        if key in result:
            raise Problem(key_line, f"field {key!r} is given twice")
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = key_line
    return result


def _construct_list(loader: _LineLoader, node: yaml.SequenceNode) -> LineList:
    result = LineList(loader.construct_object(item, deep=True) for item in node.value)
    result.line = node.start_mark.line + 1
    result.lines = [item.start_mark.line + 1 for item in node.value]
    return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_list)


def parse_yaml(text: str) -> Any:
    """The document in `text`, mappings as `LineMap` and lists as `LineList`.

    Raises `Problem` for text that is not YAML (with the line of the fault).
    """
    try:
        return yaml.load(text, Loader=_LineLoader)  # a SafeLoader subclass: plain data only
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        what = " ".join(str(exc.problem or exc.context or "syntax error").split())
        raise Problem(line, f"not valid YAML: {what}") from None
    except yaml.YAMLError as exc:
        raise Problem(1, f"not valid YAML: {' '.join(str(exc).split())}") from None
