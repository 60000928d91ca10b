"""Plain files of the mini-MICrONS: CSV tables, SWC skeletons and metadata, functional data.

CSV headers are the column names of the official catalogue; positions are in 4,4,40 nm voxels
inside the segmentation and root ids are the labels found there, so tables and volumes agree.
Binary stand-ins (AVI, TIF, netCDF, HDF5) carry the right magic bytes and little else; the zip
and tar.gz archives are real. Everything is a pure function of its random generator.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import tarfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from microns_get.testing.mini_world import Nucleus, supervoxel_id

XYZ = ("x", "y", "z")
STATUSES = ("non", "clean", "extended")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def pos_cols(prefix: str) -> list[str]:
    return [f"{prefix}_{a}" for a in XYZ]


NUCLEUS_DETECTION_COLS = ["id", "valid", *pos_cols("pt_position"), "pt_supervoxel_id"]
NUCLEUS_DETECTION_COLS += ["pt_root_id", "volume"]
BASE_PT_COLS = ["id", "valid", *pos_cols("pt_position"), "pt_supervoxel_id", "pt_root_id"]
NEURON_SVM_COLS = [*BASE_PT_COLS, "classification_system", "cell_type"]
PROOFREADING_COLS = [*BASE_PT_COLS, "valid_id", "status_dendrite", "status_axon"]
COREG_COLS = [*BASE_PT_COLS, "session", "scan_idx", "unit_id"]
SYNAPSE_COLS = ["id", "valid", *pos_cols("pre_pt_position"), *pos_cols("post_pt_position")]
SYNAPSE_COLS += [*pos_cols("ctr_pt_position"), "pre_pt_supervoxel_id", "post_pt_supervoxel_id"]
SYNAPSE_COLS += ["pre_pt_root_id", "post_pt_root_id", "size"]
UNITS_COLS = ["session", "scan_idx", "unit_id", "pref_ori", "pref_dir", "gOSI", "gDSI"]
UNITS_COLS += ["readout_location_x", "readout_location_y", "cc_abs", "cc_max"]
UNITS_COLS += ["oracle_scan_set_hash", "ori_scan_set_hash", "dynamic_model_scan_set_hash"]


@dataclass(frozen=True)
class SegRegion:
    """A segmentation array `[x, y, z]` at 8,8,40 nm and its global voxel offset."""

    labels: np.ndarray
    offset: tuple[int, int, int]

    def pos4(self, idx: Sequence[int]) -> list[int]:
        """Local 8 nm index -> global position in 4,4,40 nm voxels."""
        return [
            2 * (self.offset[0] + idx[0]),
            2 * (self.offset[1] + idx[1]),
            self.offset[2] + idx[2],
        ]

    def root(self, idx: Sequence[int]) -> int:
        return int(self.labels[idx[0], idx[1], idx[2]])

    def random_idx(self, rng: np.random.Generator, margin: int = 4) -> tuple[int, int, int]:
        sx, sy, sz = self.labels.shape
        lo = (margin, margin, 1)
        hi = (sx - margin, sy - margin, sz - 1)
        return tuple(int(rng.integers(a, b)) for a, b in zip(lo, hi, strict=True))


def csv_bytes(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()


def _f(x: float, digits: int = 6) -> str:
    return repr(round(float(x), digits))


def _pt_row(rng: np.random.Generator, seg: SegRegion, row_id: int, idx: Sequence[int]) -> list:
    return [row_id, "t", *seg.pos4(idx), supervoxel_id(rng), seg.root(idx)]


def _sample_points(
    rng: np.random.Generator, seg: SegRegion, nuclei: list[Nucleus], n: int, local: Sequence[int]
) -> list[tuple[int, int, int]]:
    """Nucleus centres first (shifted to seg-local indices), then random points."""
    pts = [tuple(c - o for c, o in zip(nuc.center, local, strict=True)) for nuc in nuclei]
    while len(pts) < n:
        pts.append(seg.random_idx(rng))
    return pts[:n]


def nucleus_tables(
    rng: np.random.Generator, seg: SegRegion, nuclei: list[Nucleus], local: Sequence[int]
) -> tuple[bytes, bytes]:
    """`nucleus_detection_v0.csv` and `nucleus_neuron_svm.csv` (same ids and points)."""
    pts = _sample_points(rng, seg, nuclei, 30, local)
    ids = [n.nucleus_id for n in nuclei]
    ids += sorted(int(i) for i in rng.choice(np.arange(100000, 700000), 30 - len(ids), False))
    det, svm = [], []
    for nid, idx in zip(ids, pts, strict=True):
        base = _pt_row(rng, seg, nid, idx)
        det.append([*base, _f(rng.uniform(25.0, 400.0), 4)])
        svm.append([*base, "is_neuron", "neuron" if rng.random() < 0.8 else "not-neuron"])
    return csv_bytes(NUCLEUS_DETECTION_COLS, det), csv_bytes(NEURON_SVM_COLS, svm)


def _synapse_pair(rng: np.random.Generator, seg: SegRegion) -> tuple[tuple, tuple]:
    while True:
        pre = seg.random_idx(rng, margin=8)
        step = rng.integers(-4, 5, size=2)
        post = (pre[0] + int(step[0]), pre[1] + int(step[1]), pre[2])
        a, b = seg.root(pre), seg.root(post)
        if a and b and a != b:
            return pre, post


def synapse_table(
    rng: np.random.Generator, seg: SegRegion, n: int, first_id: int
) -> tuple[bytes, list[tuple[int, tuple[int, int, int]]]]:
    """The synapse CSV, and (synapse id, cleft centre as a seg-local 8 nm index) per row."""
    rows, clefts = [], []
    for i in range(n):
        pre, post = _synapse_pair(rng, seg)
        ctr = [(a + b) // 2 for a, b in zip(seg.pos4(pre), seg.pos4(post), strict=True)]
        sv = (supervoxel_id(rng), supervoxel_id(rng))
        roots = (seg.root(pre), seg.root(post))
        syn_id, size = first_id + 7 * i, int(rng.integers(40, 4000))
        rows.append([syn_id, "t", *seg.pos4(pre), *seg.pos4(post), *ctr, *sv, *roots, size])
        clefts.append((syn_id, tuple((a + b) // 2 for a, b in zip(pre, post, strict=True))))
    return csv_bytes(SYNAPSE_COLS, rows), clefts


def proofreading_table(
    rng: np.random.Generator, seg: SegRegion, nuclei: list[Nucleus], local: Sequence[int]
) -> bytes:
    rows = []
    for i, idx in enumerate(_sample_points(rng, seg, nuclei, 20, local)):
        base = _pt_row(rng, seg, i + 1, idx)
        status = [STATUSES[int(rng.integers(0, 3))] for _ in range(2)]
        rows.append([*base, base[-1], *status])
    return csv_bytes(PROOFREADING_COLS, rows)


def coreg_table(
    rng: np.random.Generator, seg: SegRegion, nuclei: list[Nucleus], local: Sequence[int]
) -> bytes:
    rows = []
    for i, idx in enumerate(_sample_points(rng, seg, nuclei, 24, local)):
        session, scan_idx = int(rng.choice([4, 5, 6, 7, 8, 9])), int(rng.integers(1, 10))
        rows.append([*_pt_row(rng, seg, i + 1, idx), session, scan_idx, int(rng.integers(1, 9000))])
    return csv_bytes(COREG_COLS, rows)


def units_table(rng: np.random.Generator, n: int = 30) -> bytes:
    rows = []
    for i in range(n):
        hashes = [f"{int(rng.integers(0, 2**63)):032x}"[:32] for _ in range(3)]
        vals = [rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi), rng.random(), rng.random()]
        vals += [rng.uniform(-1, 1), rng.uniform(-1, 1), rng.random(), rng.random()]
        rows.append([4 + i % 6, 1 + i % 9, 100 + i, *[_f(v) for v in vals], *hashes])
    return csv_bytes(UNITS_COLS, rows)


@dataclass(frozen=True)
class SwcNode:
    node_id: int
    kind: int  # 1 soma, 2 axon, 3 basal dendrite, 4 apical dendrite
    xyz: tuple[float, float, float]
    radius: float
    parent: int


def skeleton_nodes(
    rng: np.random.Generator, soma_nm: Sequence[float], with_axon: bool
) -> list[SwcNode]:
    """A soma and a few random-walk branches (apical up in y, basal around, axon down)."""
    nodes = [SwcNode(1, 1, tuple(float(v) for v in soma_nm), 5000.0, -1)]
    kinds = [4, 3, 3, 3] + ([2] if with_axon else [])
    for kind in kinds:
        parent, pos = 1, np.array(soma_nm, dtype=float)
        heading = {4: [0, -1, 0], 2: [0, 1, 0]}.get(kind, list(rng.normal(0, 1, 3)))
        heading = np.array(heading, dtype=float) / np.linalg.norm(heading)
        for _ in range(int(rng.integers(6, 14))):
            heading = heading + rng.normal(0, 0.25, 3)
            heading /= np.linalg.norm(heading)
            pos = pos + 1000.0 * heading
            node = SwcNode(len(nodes) + 1, kind, tuple(pos.round(1)), _r(rng), parent)
            nodes.append(node)
            parent = node.node_id
    return nodes


def _r(rng: np.random.Generator) -> float:
    return round(float(rng.uniform(150.0, 900.0)), 1)


def swc_text(nodes: list[SwcNode], title: str) -> bytes:
    lines = [f"# {title}", "# id type x y z radius parent"]
    for n in nodes:
        x, y, z = (f"{v:.1f}" for v in n.xyz)
        lines.append(f"{n.node_id} {n.kind} {x} {y} {z} {n.radius:.1f} {n.parent}")
    return ("\n".join(lines) + "\n").encode()


def _lengths(nodes: list[SwcNode]) -> dict[int, float]:
    by_id = {n.node_id: n for n in nodes}
    out = {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0}
    for n in nodes:
        if n.parent > 0:
            out[n.kind] += float(np.linalg.norm(np.subtract(n.xyz, by_id[n.parent].xyz)))
    return out


def skeleton_metadata(
    nodes: list[SwcNode], nuc: Nucleus, soma_vx: Sequence[int], sv_id: int, with_axon: bool
) -> bytes:
    """v661 metadata JSON with the catalogue's fields, consistent with the SWC."""
    lengths = _lengths(nodes)
    total = sum(lengths.values())
    idx = {k: [n.node_id - 1 for n in nodes if n.kind == k] for k in (2, 3, 4)}
    meta: dict[str, Any] = {
        "soma_location": [int(v) for v in soma_vx],
        "soma_id": nuc.nucleus_id,
        "root_id": nuc.root_id,
        "supervoxel_id": sv_id,
        "version": 661,
        "apical_nodes": idx[4],
        "basal_nodes": idx[3],
        "true_axon_nodes": idx[2],
        "total_skeleton_path_length": round(total, 3),
        "apical_length": round(lengths[4], 3),
        "basal_length": round(lengths[3], 3),
        "axon_length": round(lengths[2], 3),
        "percent_apical_pathlength": round(100 * lengths[4] / total, 4),
        "percent_basal_pathlength": round(100 * lengths[3] / total, 4),
        "percent_axon_pathlength": round(100 * lengths[2] / total, 4),
        "classified_axon_nodes": [],
        "length_remaining_classified_axon": 0.0,
        "percent_remaining_classified_axon_pathlength": 0.0,
        "tracing_status_dendrite": "extended" if with_axon else "clean",
        "tracing_status_axon": "clean" if with_axon else "non",
        "tracing_pipeline": "clean_axon_included" if with_axon else "all_axon_removed",
    }
    return (json.dumps(meta, indent=1) + "\n").encode()


def fake_binary(rng: np.random.Generator, magic: bytes, size: int) -> bytes:
    return magic + rng.bytes(max(0, size - len(magic)))


def avi_bytes(rng: np.random.Generator, size: int) -> bytes:
    body = b"AVI LIST" + rng.bytes(size - 16)
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def tif_bytes(rng: np.random.Generator, size: int) -> bytes:
    return fake_binary(rng, b"II*\x00\x08\x00\x00\x00", size)


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(files.items()):
            zf.writestr(zipfile.ZipInfo(name, date_time=(2021, 7, 1, 0, 0, 0)), data)
    return buf.getvalue()


def tar_bytes(files: dict[str, bytes]) -> bytes:
    """A real (uncompressed) tar archive with fixed timestamps."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1638316800, 0o644
            tf.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def targz_bytes(files: dict[str, bytes]) -> bytes:
    return gzip.compress(tar_bytes(files), compresslevel=6, mtime=0)
