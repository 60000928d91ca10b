"""Checks of what fetches left on disk: the library behind `microns-get verify PATH`.

Owns: deciding what PATH is (a local precomputed layer, a DEST with its resume state, or one
file) and the checks: info schemas (layer, mesh, skeletons), the chunks recorded cutout plans
expect, each chunk file decoding on its scale's grid inside the volume, shard and minishard
indexes of locally kept shards (with a few sampled chunks decoded), and the recorded sizes and
checksums of whole-object items. Findings go into a `Report`.
Must not: write or repair anything, touch the network, or print (the CLI renders the report).
Files are read one at a time and only a bounded sample of findings per kind is kept, because a
layer can hold millions of chunk files.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from microns_get.checkpoint import STATE_FILE, CheckpointStore
from microns_get.errors import BadInput, InfoError
from microns_get.precomputed import codecs
from microns_get.precomputed import info as pinfo
from microns_get.precomputed import sharding as sh
from microns_get.precomputed.grid import chunk_at, grid_shape
from microns_get.precomputed.info import AuxInfo, Scale, ShardingSpec, VolumeInfo
from microns_get.precomputed.sharding import ChunkRange, CorruptIndex
from microns_get.sources.base import ObjectInfo
from microns_get.verify.digests import matches_written, verify_object

FINDINGS_KEPT = 200  # per kind: enough to act on, bounded for a layer that is all corrupt
SAMPLED_CHUNKS = 3  # chunks decoded per shard: proves the data encoding without reading it all
NOTES = ("extra", "unchecked")  # finding kinds that are not failures
DIGEST_FIELDS = ("etag", "md5_base64", "crc32c_base64", "generation", "content_encoding")

Vec3 = tuple[int, int, int]


class Finding(NamedTuple):
    path: str
    kind: str  # schema, missing, incomplete, decode, grid, shard, size, checksum; extra, unchecked
    detail: str

    @property
    def failure(self) -> bool:
        return self.kind not in NOTES


@dataclass
class Report:
    root: Path
    what: str  # "dest" | "layer" | "file"
    findings: list[Finding] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)  # findings by kind, all of them
    checked: Counter[str] = field(default_factory=Counter)  # what was looked at, by label

    def add(self, path: Path, kind: str, detail: str) -> None:
        self.counts[kind] += 1
        base = self.root if self.root.is_dir() else self.root.parent
        shown = path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)
        if self.counts[kind] <= FINDINGS_KEPT:
            self.findings.append(Finding(shown, kind, detail))

    @property
    def failures(self) -> int:
        return sum(n for kind, n in self.counts.items() if kind not in NOTES)

    @property
    def ok(self) -> bool:
        return self.failures == 0

    def to_json(self) -> dict[str, Any]:
        kept = sum(min(n, FINDINGS_KEPT) for n in self.counts.values())
        return {
            "path": str(self.root),
            "what": self.what,
            "ok": self.ok,
            "failures": self.failures,
            "checked": dict(self.checked),
            "counts": dict(self.counts),
            "findings": [{**f._asdict(), "failure": f.failure} for f in self.findings],
            "findings_truncated": kept < sum(self.counts.values()),
        }


def verify_path(path: Path | str, checksums: bool = True) -> Report:
    """Verify a layer directory, a DEST root or one file; bad paths raise `BadInput`."""
    path = Path(path).absolute()
    if not path.exists():
        raise BadInput(f"{path}: no such file or directory")
    if path.is_dir() and (path / STATE_FILE).is_file():
        what = "dest"
    elif path.is_dir() and (path / "info").is_file():
        what = "layer"
    elif path.is_file():
        what = "file"
    else:
        raise BadInput(f"{path}: neither a precomputed layer (no info) nor a DEST ({STATE_FILE})")
    dest = next((d for d in [path, *path.parents] if (d / STATE_FILE).is_file()), None)
    store = CheckpointStore(dest / STATE_FILE, readonly=True) if dest else None
    try:
        checker = Checker(Report(path, what), dest, store, checksums)
        getattr(checker, f"check_{what}")(path)
        return checker.report
    finally:
        if store is not None:
            store.close()


def parse_chunk_name(name: str) -> tuple[Vec3, Vec3] | None:
    """`x0-x1_y0-y1_z0-z1` (a `.gz` suffix allowed) -> (lo, hi); None for any other name."""
    spans = name.removesuffix(".gz").split("_")
    try:
        pairs = [tuple(int(v) for v in span.split("-")) for span in spans]
    except ValueError:
        return None
    if len(pairs) != 3 or any(len(p) != 2 for p in pairs):
        return None
    lo, hi = zip(*pairs)
    return tuple(lo), tuple(hi)  # type: ignore[return-value]


def grid_problem(scale: Scale, lo: Vec3, hi: Vec3) -> str | None:
    """Why a chunk named [lo, hi) is not a cell of the scale's grid (None: it is one)."""
    off, size = scale.voxel_offset, scale.size
    end = tuple(o + s for o, s in zip(off, size))
    if any(a < o or b > e or b <= a for a, b, o, e in zip(lo, hi, off, end)):
        return f"[{lo}, {hi}) is not inside the volume [{off}, {end})"
    for chunk in scale.chunk_sizes:
        aligned = all((a - o) % c == 0 for a, o, c in zip(lo, off, chunk))
        if aligned and all(b == min(a + c, e) for a, b, c, e in zip(lo, hi, chunk, end)):
            return None
    sizes = " or ".join("x".join(map(str, c)) for c in scale.chunk_sizes)
    return f"[{lo}, {hi}) is not a cell of the {sizes} chunk grid"


def grid_of_chunk_id(chunk_id: int, shape: Vec3) -> Vec3 | None:
    """Inverse of the compressed Morton code; None when the id lies outside the grid."""
    pos, j = [0, 0, 0], 0
    for i in range(max(shape).bit_length()):
        for d, n in enumerate(shape):
            if (1 << i) < n:
                pos[d] |= ((chunk_id >> j) & 1) << i
                j += 1
    if chunk_id >> j or any(p >= n for p, n in zip(pos, shape)):
        return None
    return (pos[0], pos[1], pos[2])


def read_range(f: BinaryIO, start: int, end: int) -> bytes:
    f.seek(start)
    data = f.read(end - start)
    if len(data) != end - start:
        raise CorruptIndex(f"bytes [{start}, {end}) run past the end of the file")
    return data


@dataclass
class Checker:
    """Runs the checks of one `verify` call, adding findings to `report`."""

    report: Report
    dest: Path | None
    store: CheckpointStore | None
    checksums: bool

    def rel(self, path: Path) -> str:
        return path.relative_to(self.dest).as_posix() if self.dest else path.name

    def check_dest(self, root: Path) -> None:
        cutouts, layers = self.plans(None)
        for layer in sorted(layers | set(cutouts)):
            if layer in cutouts or (root / layer / "info").is_file():
                self.layer(root / layer, cutouts.get(layer))

    def check_layer(self, layer: Path) -> None:
        only = self.rel(layer) if self.dest else None
        cutouts = self.plans(only)[0] if only is not None else {}
        self.layer(layer, cutouts.get(only or ""))

    def check_file(self, path: Path) -> None:
        record = self.store.item(self.rel(path)) if self.store else None
        plan = self.store.load_plan(record.plan_id) if self.store and record else None
        items = [i for i in (plan or {}).get("items", []) if i["path"] == self.rel(path)]
        for item in items:  # a whole-object item: its recorded size and checksums
            self.whole_object(record.plan_id, item)
        if path.name == "info":
            self.parsed(path, any_info)
            return
        layer_info = path.parent.parent / "info"
        info = self.parsed(layer_info, pinfo.parse_volume_info) if layer_info.is_file() else None
        scale = next((s for s in info.scales if s.key == path.parent.name), None) if info else None
        checked = self.scale_file(path, info, scale) if info else layer_info.is_file()
        if not checked and not items:  # a broken layer info was reported: not the user's typo
            raise BadInput(f"{path}: not a layer's chunk or shard, nor an item a DEST records")

    def plans(self, only: str | None) -> tuple[dict[str, dict[str, set[str]]], set[str]]:
        """Cutout chunk names by layer and scale, and the layers whole-object plans hold.
        Whole-object items (those under the layer `only`, when given) are checked on the way."""
        cutouts: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        infos: set[str] = set()
        for plan_id in self.store.plan_ids() if self.store else []:
            plan = self.store.load_plan(plan_id) or {}
            local = plan.get("local_layer")
            if local is not None and only in (None, local):
                for scale in plan.get("scales", []):
                    names = (c["name"] for r in scale["reads"] for c in r["chunks"])
                    cutouts[local][scale["key"]].update(names)
            for item in plan.get("items", []):
                if only is None or item["path"].startswith(only + "/"):
                    self.whole_object(plan_id, item)
                    if item["path"].endswith("/info"):
                        infos.add(item["path"].rsplit("/", 1)[0])
        # A mesh/ or skeletons/ info sits inside its layer: that layer's check covers it.
        layers = {p for p in infos if not any(p.startswith(q + "/") for q in infos)}
        return cutouts, layers

    def whole_object(self, plan_id: str, item: dict[str, Any]) -> None:
        assert self.store is not None and self.dest is not None
        path = self.dest / item["path"]
        record = self.store.item(item["path"])
        if record is not None and record.plan_id != plan_id:
            return  # a later plan fetched this path again: that plan's digests apply
        self.report.checked["items"] += 1
        if record is None or record.state not in ("done", "absent"):
            state = record.state if record else "never started"
            error = f" ({record.error})" if record and record.error else ""
            self.report.add(path, "incomplete", f"planned but not fetched: {state}{error}")
        elif record.state == "done" and not path.is_file():
            self.report.add(path, "missing", "recorded done, but the file is gone")
        elif record.state == "done" and (got := path.stat().st_size) != record.size:
            self.report.add(path, "size", f"recorded {record.size} bytes, the file has {got}")
        elif record.state == "done" and self.checksums:
            self.checksum(path, item, record.mirror, record.size)

    def checksum(self, path: Path, item: dict[str, Any], mirror: str | None, size: int) -> None:
        copies = [c for c in item["copies"] if c.get("size") == size]
        copies.sort(key=lambda c: c.get("provider") != mirror)  # the copy that served it first
        if not copies:
            self.report.checked["verified by size only"] += 1
            return
        c = copies[0]
        expected = ObjectInfo(key=item["path"], size=size, **{k: c.get(k) for k in DIGEST_FIELDS})
        result = verify_object(path, expected)
        self.report.checked[f"verified by {result.method}"] += 1
        if not result.ok:
            self.report.add(path, "checksum", f"{result.detail} (recorded for {c.get('url')})")

    def layer(self, layer: Path, expected: dict[str, set[str]] | None) -> None:
        self.report.checked["layers"] += 1
        wanted: dict[str, set[str]] = defaultdict(set, expected or {})
        info = self.parsed(layer / "info", pinfo.parse_volume_info)
        if info is not None:
            self.aux(layer, info)
            for scale in info.scales:
                if (layer / scale.key).is_dir():
                    self.scale(layer, info, scale, wanted[scale.key])
        for names in wanted.values():
            self.missing(layer, names)

    def parsed(self, path: Path, parse: Callable[[bytes], Any], quiet: bool = False) -> Any:
        """A parsed info file, or None with a schema finding (unless `quiet`) saying why not."""
        try:
            value = parse(codecs.maybe_gunzip(path.read_bytes()))
        except (InfoError, OSError) as exc:
            if not quiet:
                self.report.add(path, "schema", str(exc))
            return None
        self.report.checked["infos"] += 1
        return value

    def aux(self, layer: Path, info: VolumeInfo) -> None:
        for what, folder in (("mesh", info.mesh), ("skeletons", info.skeletons)):
            if folder is None or not (layer / folder / "info").is_file():
                continue
            aux = self.parsed(layer / folder / "info", lambda b, w=what: pinfo.parse_aux_info(b, w))
            for entry in files_in(layer / folder) if aux and aux.sharding else []:
                if entry.name.endswith(".shard"):
                    self.shard(Path(entry.path), aux.sharding, None, info)

    def scale(self, layer: Path, info: VolumeInfo, scale: Scale, wanted: set[str]) -> None:
        for entry in files_in(layer / scale.key):
            path = Path(entry.path)
            name = f"{scale.key}/{entry.name.removesuffix('.gz')}"
            expected = name in wanted
            wanted.discard(name)
            if not self.scale_file(path, info, scale):
                self.report.add(path, "extra", "not a chunk or shard file of this scale")
            elif not expected and self.store and self.store.item(self.rel(path)) is None:
                self.report.add(path, "extra", "on disk, but no recorded plan expects it")

    def scale_file(self, path: Path, info: VolumeInfo, scale: Scale | None) -> bool:
        """Check a chunk or shard file of `scale`; False when the name is neither."""
        if scale is not None and scale.sharding is not None and path.name.endswith(".shard"):
            self.shard(path, scale.sharding, scale, info)
        elif scale is not None and scale.sharding is None and parse_chunk_name(path.name):
            self.chunk(path, scale, info)
        else:
            return False
        return True

    def missing(self, layer: Path, names: set[str]) -> None:
        for name in sorted(names):
            if (layer / name).is_file():
                continue  # there, but its scale is not in the local info: nothing to check by
            record = self.store.item(self.rel(layer / name)) if self.store else None
            if record is not None and record.state == "absent":
                self.report.checked["absent chunks (never written remotely)"] += 1
                continue
            state = record.state if record else "nothing recorded"
            self.report.add(layer / name, "missing", f"a plan expects it; checkpoint: {state}")

    def chunk(self, path: Path, scale: Scale, info: VolumeInfo) -> None:
        lo, hi = parse_chunk_name(path.name) or ((0, 0, 0), (0, 0, 0))
        problem = grid_problem(scale, lo, hi)
        if problem:
            self.report.add(path, "grid", problem)
            return
        shape = tuple(b - a for a, b in zip(lo, hi))
        data = path.read_bytes()
        self.decode(path, data, shape, scale, info)
        self.report.checked["chunks decoded"] += 1
        record = self.store.item(self.rel(path)) if self.store else None
        if self.checksums and record is not None and record.checksum:
            if not matches_written(record.checksum, data):
                self.report.add(path, "checksum", "differs from the checksum recorded when written")
            else:
                self.report.checked["chunk checksums"] += 1

    def decode(
        self, path: Path, data: bytes, shape: Any, scale: Scale, info: VolumeInfo, what: str = ""
    ) -> None:
        try:
            codecs.decode_chunk(data, scale, info.data_type, info.num_channels, shape)
        except codecs.CorruptChunk as exc:
            self.report.add(path, "decode", f"{what}{exc}")
        except codecs.UnsupportedEncoding as exc:
            self.report.add(path, "unchecked", str(exc))

    def shard(self, path: Path, spec: ShardingSpec, scale: Scale | None, info: VolumeInfo) -> None:
        """Shard index, every minishard index, ids in the right shard, a few chunks decoded."""
        self.report.checked["shards"] += 1
        budget = SAMPLED_CHUNKS if scale is not None else 0
        try:
            with path.open("rb") as f:
                for ranges in minishards(f, spec, path):
                    self.report.checked["minishard indexes"] += 1
                    if budget and ranges and scale is not None:
                        budget -= 1
                        data, shape = sampled_chunk(f, scale, ranges[0])
                        label = f"chunk {ranges[0].chunk_id}: "
                        self.decode(path, data, shape, scale, info, label)
                        self.report.checked["sampled chunks decoded"] += 1
        except CorruptIndex as exc:
            self.report.add(path, "shard", str(exc))


def any_info(data: bytes) -> VolumeInfo | AuxInfo:
    """A layer's info, or a mesh/skeletons info, told apart by its `@type`."""
    raw = pinfo.load_json(data)
    if raw.get("@type") in pinfo.MESH_TYPES:
        return pinfo.parse_aux_info(raw, "mesh")
    if raw.get("@type") == pinfo.SKELETON_TYPE:
        return pinfo.parse_aux_info(raw, "skeletons")
    return pinfo.parse_volume_info(raw)


def sampled_chunk(f: BinaryIO, scale: Scale, r: ChunkRange) -> tuple[bytes, Vec3]:
    """A chunk's stored bytes and its shape, from its minishard index entry. (`decode_chunk`
    undoes a gzip data_encoding itself, and says so when the gzip stream is corrupt.)"""
    pos = grid_of_chunk_id(r.chunk_id, grid_shape(scale))
    if pos is None:
        raise CorruptIndex(f"chunk id {r.chunk_id} lies outside the {scale.key} chunk grid")
    return read_range(f, r.start, r.end), chunk_at(scale, pos).shape


def minishards(f: BinaryIO, spec: ShardingSpec, path: Path) -> Iterator[list[ChunkRange]]:
    """The decoded index of every non-empty minishard of an open shard file, each chunk id
    checked to hash to this shard and minishard."""
    size, head = path.stat().st_size, sh.index_length(spec)
    if size < head:
        raise CorruptIndex(f"{size} bytes cannot hold the {head}-byte shard index")
    for minishard, entry in enumerate(sh.decode_shard_index(read_range(f, 0, head), spec)):
        if entry[0] == entry[1]:
            continue
        data = read_range(f, *sh.minishard_index_range(spec, entry, size))
        ranges = sh.decode_minishard_index(data, spec, size, f"minishard {minishard} index")
        for r in ranges:
            where = sh.locate_chunk(spec, r.chunk_id)
            if (where.filename, where.minishard) != (path.name, minishard):
                raise CorruptIndex(
                    f"minishard {minishard} lists chunk {r.chunk_id}, which belongs in "
                    f"{where.filename} minishard {where.minishard}"
                )
        yield ranges


def files_in(folder: Path) -> Iterator[os.DirEntry[str]]:
    """The files of a folder, streamed: a scale folder can hold millions of chunks."""
    with os.scandir(folder) as entries:
        yield from (e for e in entries if e.is_file())
