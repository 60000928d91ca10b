"""The synthetic tissue behind the mini-MICrONS volumes (deterministic for a given seed).

A warped Voronoi tessellation gives blob-like cells with root ids of the 864691135... magnitude,
a blood vessel is background (0), a few cells carry a nucleus (uint32 nucleus ids, 292685 among
them) and the EM image is derived from the labels (dark membranes, darker nuclei, noise). All
arrays are `[x, y, z]` at 8,8,40 nm over the whole EM region.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Vec3 = tuple[int, int, int]
ROOT_BASE = 864691135000000000
SV_RANGE = (88_000_000_000_000_000, 112_000_000_000_000_000)
RES_NM = np.array([8.0, 8.0, 40.0])
SKELETON_ROOT = 864691135122603047  # v661 example cell of the official docs
SKELETON_NUCLEUS = 292685
# Roots whose seg_m1300 mesh shard locations are documented test vectors.
M1300_ROOTS = (864691136389585015, 864691135278214049, 864691135572530981)


@dataclass(frozen=True)
class Nucleus:
    """A nucleus: its id, centre (local 8 nm voxels in the region), radii and its cell's root."""

    nucleus_id: int
    center: Vec3
    root_id: int
    radius: Vec3 = (12, 12, 3)


@dataclass
class World:
    """Labels (uint64), nuclei (uint32) and EM (uint8) over one region, plus the nucleus list."""

    labels: np.ndarray
    nuclei: np.ndarray
    em: np.ndarray
    nucleus_list: list[Nucleus]


def random_roots(rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` distinct root ids of the real magnitude, sorted."""
    offsets = rng.choice(1_600_000_000, size=n, replace=False).astype(np.uint64)
    return np.sort(np.uint64(ROOT_BASE) + offsets)


def supervoxel_id(rng: np.random.Generator) -> int:
    return int(rng.integers(*SV_RANGE))


def smooth_field(rng: np.random.Generator, shape: Vec3, cell: int = 16) -> np.ndarray:
    """Low-frequency noise in about [-1, 1] (trilinear upsampling of a coarse random grid)."""
    from scipy.ndimage import zoom

    coarse_shape = tuple(max(2, s // cell + 2) for s in shape)
    coarse = rng.uniform(-1.0, 1.0, size=coarse_shape).astype(np.float32)
    factors = [s / c for s, c in zip(shape, coarse_shape, strict=True)]
    out = zoom(coarse, factors, order=1)
    return out[: shape[0], : shape[1], : shape[2]]


def voronoi_labels(rng: np.random.Generator, shape: Vec3, ids: np.ndarray) -> np.ndarray:
    """Warped Voronoi cells in nm space, one cell per id (ids may repeat-free cover the region)."""
    from scipy.spatial import cKDTree

    extent = np.array(shape) * RES_NM
    seeds = rng.uniform(0.0, 1.0, size=(len(ids), 3)) * extent
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)
    coords = (grid.astype(np.float32) + 0.5) * RES_NM.astype(np.float32)
    for axis in range(3):
        coords[..., axis] += 90.0 * smooth_field(rng, shape)
    _, nearest = cKDTree(seeds).query(coords.reshape(-1, 3), workers=2)
    return ids[nearest].reshape(shape)


def _ellipsoid(shape: Vec3, center: Vec3, radius: Vec3) -> np.ndarray:
    axes = [(np.arange(s) - c) / r for s, c, r in zip(shape, center, radius, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    return (x * x + y * y + z * z) <= 1.0


def paint_cells(labels: np.ndarray, nuclei: list[Nucleus]) -> np.ndarray:
    """Give each nucleated cell a soma around its nucleus; return the uint32 nucleus volume."""
    vol = np.zeros(labels.shape, dtype=np.uint32)
    for nuc in nuclei:
        soma_r = (nuc.radius[0] * 2, nuc.radius[1] * 2, nuc.radius[2] + 2)
        labels[_ellipsoid(labels.shape, nuc.center, soma_r)] = np.uint64(nuc.root_id)
        vol[_ellipsoid(labels.shape, nuc.center, nuc.radius)] = nuc.nucleus_id
    return vol


def paint_vessel(labels: np.ndarray, center_xy: tuple[int, int], radius: int) -> None:
    """A blood vessel along z: background (0) in the segmentation."""
    x = np.arange(labels.shape[0])[:, None] - center_xy[0]
    y = np.arange(labels.shape[1])[None, :] - center_xy[1]
    labels[(x * x + y * y) <= radius * radius, :] = 0


def em_from_labels(rng: np.random.Generator, labels: np.ndarray, nuclei: np.ndarray) -> np.ndarray:
    """An EM-like uint8 image: bright cytoplasm, dark membranes, darker nuclei, noise."""
    boundary = np.zeros(labels.shape, dtype=bool)
    for axis in (0, 1):
        diff = np.diff(labels, axis=axis) != 0
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        boundary[tuple(lo)] |= diff
        boundary[tuple(hi)] |= diff
    img = 165.0 + 25.0 * smooth_field(rng, labels.shape, 24)
    img -= 85.0 * boundary + 40.0 * (nuclei > 0) - 45.0 * (labels == 0)
    img += rng.normal(0.0, 9.0, size=labels.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def build_world(
    seed: int, shape: Vec3, n_cells: int, nuclei_at: list[Vec3], nucleus_ids: list[int]
) -> World:
    """Labels, nuclei and EM for one region; the first nucleated cell is the v661 example cell."""
    rng = np.random.default_rng(seed)
    ids = random_roots(rng, n_cells)
    labels = voronoi_labels(rng, shape, ids)
    roots = [SKELETON_ROOT] + [int(r) for r in random_roots(rng, len(nuclei_at))]
    nucleus_list = [
        Nucleus(nid, c, r) for nid, c, r in zip(nucleus_ids, nuclei_at, roots, strict=False)
    ]
    if nucleus_list:
        paint_vessel(labels, (shape[0] // 2 - 12, shape[1] // 2 + 4), 8)
    else:
        paint_vessel(labels, (shape[0] // 3, shape[1] // 2), 6)
    nuclei = paint_cells(labels, nucleus_list)
    em = em_from_labels(rng, labels, nuclei)
    return World(labels, nuclei, em, nucleus_list)


def m1300_mapping(world: World, seed: int) -> dict[int, int]:
    """Root id changes from v117 to v1300: renamed nucleated cells, renames and a merge."""
    rng = np.random.default_rng(seed)
    mapping = {n.root_id: new for n, new in zip(world.nucleus_list[1:], M1300_ROOTS, strict=False)}
    present = [int(v) for v in np.unique(world.labels) if v and int(v) not in mapping]
    present = [v for v in present if v != SKELETON_ROOT]
    picks = rng.choice(len(present), size=14, replace=False)
    renamed = [present[i] for i in picks]
    # Same id >> 6 as the first documented root: lands in the same mesh shard and minishard.
    mapping[renamed[0]] = M1300_ROOTS[0] ^ 1
    for old, new in zip(renamed[1:10], random_roots(rng, 9) + np.uint64(1 << 31), strict=True):
        mapping[old] = int(new)
    for old in renamed[10:]:  # merged into the first renamed cell
        mapping[old] = mapping[renamed[1]]
    return mapping


def relabel(labels: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    out = labels.copy()
    for old, new in mapping.items():
        out[labels == np.uint64(old)] = np.uint64(new)
    return out


def supervoxels(labels: np.ndarray, block: Vec3 = (24, 24, 8)) -> np.ndarray:
    """A watershed-like oversegmentation: each cell cut along a block grid, ids of the sv range."""
    x, y, z = np.meshgrid(*[np.arange(s) // b for s, b in zip(labels.shape, block)], indexing="ij")
    keys = np.stack([labels.ravel(), x.ravel(), y.ravel(), z.ravel()], axis=1)
    _, inverse = np.unique(keys, axis=0, return_inverse=True)
    ids = np.uint64(SV_RANGE[0]) + np.arange(inverse.max() + 1, dtype=np.uint64) * np.uint64(7919)
    out = ids[inverse.reshape(labels.shape)]
    out[labels == 0] = 0
    return out


def paint_clefts(shape: Vec3, clefts: list[tuple[int, Vec3]]) -> np.ndarray:
    """Small flat blobs (synaptic clefts) labelled with their synapse ids."""
    vol = np.zeros(shape, dtype=np.uint64)
    for synapse_id, center in clefts:
        vol[_ellipsoid(shape, center, (3, 3, 1))] = np.uint64(synapse_id)
    return vol
