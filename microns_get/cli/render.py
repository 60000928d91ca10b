"""Turning catalogue entries and live facts into rich tables (TTY) or JSON (`--json`).

Owns: presentation only. Must not fetch anything or decide anything.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from microns_get.catalog import Dataset
    from microns_get.config import Settings
    from microns_get.plan.discover import RemoteFacts

# Off a terminal (pipes, cron logs) rich would wrap at 80 columns; tables read better wider.
console = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 160)


def print_json(value: Any) -> None:
    """Indented JSON, streamed in batches: `json.dumps` of a large plan first holds every piece
    of the text in a list (millions of small strings), then the joined text as well."""
    batch: list[str] = []
    for piece in json.JSONEncoder(indent=2, default=str).iterencode(value):
        batch.append(piece)
        if len(batch) >= 65536:
            sys.stdout.write("".join(batch))
            batch.clear()
    batch.append("\n")
    sys.stdout.write("".join(batch))


def human_bytes(n: int | None) -> str:
    """Decimal units, as the MICrONS catalogue writes sizes (117 TB = 117e12 bytes)."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if value < 1000 or unit == "PB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def _providers(dataset: Dataset) -> str:
    names = {"s3": "S3", "gcs": "GCS", "https": "HTTPS", "graphene": "graphene"}
    seen: list[str] = []
    for mirror in dataset.mirrors():
        label = names.get(mirror.provider, mirror.provider)
        if label not in seen:
            seen.append(label)
    return " ".join(seen)


def _versions(dataset: Dataset) -> str:
    labels = []
    for version in dataset.versions:
        label = version.name or "-"
        if version.name == dataset.default_version and len(dataset.versions) > 1:
            label += "*"
        parts = [p.name for p in version.parts if p.name]
        if parts:
            label += f" ({', '.join(parts)})"
        labels.append(label)
    return ", ".join(labels)


def datasets_table(datasets: Iterable[Dataset]) -> Table:
    table = Table(title="MICrONS datasets (* = default version)", show_lines=False)
    table.add_column("dataset", no_wrap=True)
    for name in ("volume", "versions", "mirrors", "size", "format"):
        table.add_column(name, overflow="fold")
    for d in datasets:
        size = human_bytes(d.size_bytes) if d.size_bytes else (d.size_text or "-")
        volume = ", ".join(d.volumes) if d.volumes else "functional"
        table.add_row(d.id, volume, _versions(d), _providers(d), size, d.format)
    return table


def dataset_summary(dataset: Dataset) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("dataset", f"{dataset.id} ({', '.join(dataset.volumes) or 'functional'})")
    table.add_row("title", dataset.title)
    table.add_row("kind", dataset.kind)
    table.add_row("format", dataset.format)
    table.add_row("size", f"{dataset.size_text or '-'} ({dataset.size_bytes or '?'} bytes)")
    table.add_row("description", dataset.description)
    for version in dataset.versions:
        for part in version.parts:
            label = "version " + (version.name or "-") + (f" / {part.name}" if part.name else "")
            urls = "\n".join(m.url for m in part.mirrors)
            table.add_row(label, urls)
    if dataset.access:
        table.add_row("access", dataset.access)
    if dataset.nearest_static:
        table.add_row("nearest static seg", f"version {dataset.nearest_static}")
    for note in dataset.notes:
        table.add_row("note", note)
    return table


def columns_table(dataset: Dataset) -> Table | None:
    if not dataset.columns:
        return None
    table = Table(title="columns")
    table.add_column("column", style="bold")
    table.add_column("meaning", overflow="fold")
    for name, text in dataset.columns.items():
        table.add_row(name, text)
    return table


def _sharding_text(scale_json: dict[str, Any]) -> str:
    spec = scale_json.get("sharding")
    if not spec:
        return "unsharded"
    return (
        f"{spec['hash']} p{spec['preshift_bits']}/m{spec['minishard_bits']}/s{spec['shard_bits']}"
        f" idx:{spec['minishard_index_encoding']} data:{spec['data_encoding']}"
    )


def facts_tables(facts: RemoteFacts) -> list[Table]:
    tables: list[Table] = []
    head = Table(show_header=False, box=None, pad_edge=False)
    head.add_column(style="bold")
    head.add_column(overflow="fold")
    head.add_row("live from", facts.fetched_from)
    for attempt in facts.failed_mirrors:
        head.add_row("skipped mirror", f"{attempt.mirror}: {attempt.error}")
    if facts.volume is not None:
        v = facts.volume
        head.add_row("layer", f"{v.type}, {v.data_type}, {v.num_channels} channel(s)")
        if facts.mesh_dir:
            mesh_type = facts.mesh.type if facts.mesh else "neuroglancer_legacy_mesh"
            sharded = " (sharded)" if facts.mesh and facts.mesh.sharding else ""
            head.add_row("mesh", f"{facts.mesh_dir}: {mesh_type}{sharded}")
        if v.skeletons:
            skel = facts.skeletons.type if facts.skeletons else "no info"
            head.add_row("skeletons", f"{v.skeletons}: {skel}")
        tables.append(head)
        tables.append(scales_table(facts))
        return tables
    if facts.object is not None:
        for name, value in facts.object.to_json().items():
            head.add_row(name, str(value))
    if facts.object_count is not None:
        head.add_row("objects", str(facts.object_count))
        head.add_row("bytes", f"{facts.total_bytes} ({human_bytes(facts.total_bytes)})")
    tables.append(head)
    return tables


def scales_table(facts: RemoteFacts) -> Table:
    table = Table(title="scales")
    for name in ("key", "resolution", "size", "voxel offset", "chunk", "encoding", "sharding"):
        table.add_column(name, overflow="fold")
    for scale in facts.volume.to_json()["scales"]:
        table.add_row(
            scale["key"],
            ",".join(f"{r:g}" for r in scale["resolution"]),
            "x".join(map(str, scale["size"])),
            ",".join(map(str, scale["voxel_offset"])),
            " ".join("x".join(map(str, c)) for c in scale["chunk_sizes"]),
            scale["encoding"],
            _sharding_text(scale),
        )
    return table


def settings_table(settings: Settings) -> Table:
    table = Table(title=f"settings (config file: {settings.config_path or 'none'})")
    for name in ("setting", "value", "from"):
        table.add_column(name, overflow="fold")
    for name, resolved in settings.values.items():
        table.add_row(name, _setting_text(resolved.value), resolved.origin)
    return table


def _setting_text(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    return "-" if value is None else str(value)


def settings_json(settings: Settings) -> dict[str, Any]:
    return {
        "config_file": str(settings.config_path) if settings.config_path else None,
        "settings": {
            name: {
                "value": r.value if not hasattr(r.value, "__fspath__") else str(r.value),
                "from": r.origin,
            }
            for name, r in settings.values.items()
        },
    }
