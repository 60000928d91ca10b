"""Generate a small "mini-MICrONS" in the real bucket layouts: `generate(outdir) -> SeedTree`.

Buckets and prefixes are the real ones (`bossdb-open-data/iarpa_microns/minnie/...` on S3,
`iarpa_microns/minnie/...`, `microns-static-links`, `microns_phase3` on GCS, and
`zenodo.org/record/5760218/files/minnie.tar.gz` over HTTPS). Volumes are written by TensorStore
(sharded) and CloudVolume (unsharded), meshes by igneous/zmesh. Modules: `mini_world` (synthetic
tissue), `mini_layers` (layer geometry and writers), `mini_meshes`, `mini_files` (tables,
skeletons, functional files), `seedtree` (the result: `SeedTree`). Output is deterministic.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from microns_get.testing import mini_files as mf
from microns_get.testing import mini_layers as ml
from microns_get.testing import mini_meshes
from microns_get.testing import mini_world as mw
from microns_get.testing.seedtree import SeedObject, SeedTree, TreeWriter

__all__ = ["GENERATOR_VERSION", "SeedObject", "SeedTree", "generate"]

GENERATOR_VERSION = 1
S3 = "bossdb-open-data"
S3_ROOT = "iarpa_microns/minnie"
GCS = "iarpa_microns"
GCS_ROOT = "minnie"
STATIC = "microns-static-links"
PHASE3 = "microns_phase3"
ZENODO = "zenodo.org"
ZENODO_KEY = "record/5760218/files/minnie.tar.gz"
PART_SIZE = 5 * 1024 * 1024
NUCLEI_AT: list[ml.Vec3] = [(60, 50, 12), (110, 52, 24), (150, 60, 14)]
NUCLEI_AT += [(64, 120, 26), (112, 118, 12), (152, 126, 22)]
NUCLEUS_IDS = [mw.SKELETON_NUCLEUS, 255177, 301431, 338220, 512345, 489012]


def quiet_cloudvolume_home() -> None:
    """CloudVolume creates ~/.cloudvolume/secrets on import: point it at a scratch dir."""
    scratch = Path(tempfile.gettempdir()) / "microns-get-cloudvolume"
    os.environ.setdefault("CLOUD_VOLUME_DIR", str(scratch))
    os.environ.setdefault("CLOUD_FILES_DIR", str(scratch))


def _save_arrays(root: Path, name: str, spec: ml.LayerSpec, arrays: list[np.ndarray]) -> None:
    folder = root / "arrays" / name
    folder.mkdir(parents=True, exist_ok=True)
    for scale, arr in zip(spec.scales, arrays, strict=True):
        np.save(folder / f"{scale.key}.npy", arr.astype(spec.data_type))


def _seg_crop(world: mw.World, local: ml.Vec3, size: ml.Vec3) -> np.ndarray:
    window = tuple(slice(a, a + s) for a, s in zip(local, size, strict=True))
    return np.ascontiguousarray(world.labels[window])


class _Build:
    """State shared by the generation steps."""

    def __init__(self, outdir: Path, work: Path) -> None:
        self.out, self.work = outdir, work
        self.writer = TreeWriter(outdir)
        self.layers: dict[str, str] = {}
        self.meta: dict[str, Any] = {"generator_version": GENERATOR_VERSION}

    def layer(self, name: str, spec: ml.LayerSpec, finest: np.ndarray, sharded: bool) -> Path:
        arrays = ml.scale_arrays(spec, finest)
        path = self.work / name
        (ml.write_tensorstore if sharded else ml.write_cloudvolume)(path, spec, arrays)
        _save_arrays(self.out, name, spec, arrays)
        return path

    def publish(self, name: str, path: Path, *places: tuple[str, str]) -> None:
        """Upload a local layer to its first place and copy it (same bytes) to the others."""
        (bucket, prefix), rest = places[0], places[1:]
        self.writer.put_layer(bucket, prefix, path)
        self.layers[f"{bucket}/{prefix}"] = name
        for place in rest:
            self.alias(name, (bucket, prefix), place)

    def alias(self, name: str, src: tuple[str, str], dest: tuple[str, str]) -> None:
        """Copy a published layer to another place (same bytes)."""
        self.writer.copy_prefix(*src, *dest)
        self.layers["/".join(dest)] = name


def _minnie65_layers(b: _Build, world: mw.World) -> np.ndarray:
    em = b.layer("minnie65_em", ml.em65_spec(), world.em, sharded=True)
    b.publish("minnie65_em", em, (S3, f"{S3_ROOT}/minnie65/em"), (GCS, f"{GCS_ROOT}/minnie65/em"))
    seg = _seg_crop(world, ml.SEG65_LOCAL, ml.SEG65_SIZE)
    path = b.layer("minnie65_seg", ml.seg65_spec(), seg, sharded=True)
    b.publish(
        "minnie65_seg",
        path,
        (S3, f"{S3_ROOT}/minnie65/seg"),
        (GCS, f"{GCS_ROOT}/minnie65/seg"),
        (GCS, f"{GCS_ROOT}/minnie65/seg_m343"),
        (GCS, f"{GCS_ROOT}/minnie65/seg_m943"),
    )
    nuc_ids = [n.nucleus_id for n in world.nucleus_list[:4]]
    path = b.layer("minnie65_nuclei", ml.nuclei_spec(), world.nuclei, sharded=False)
    mini_meshes.legacy_meshes(path, nuc_ids, "mesh_mip_0_err_40")
    nuclei_places = ((S3, f"{S3_ROOT}/minnie65/nuclei"), (GCS, f"{GCS_ROOT}/minnie65/nuclei"))
    b.publish("minnie65_nuclei", path, *nuclei_places)
    b.meta["nuclei_mesh_ids"] = nuc_ids
    return seg


def _m1300_layer(b: _Build, world: mw.World, seg: np.ndarray) -> dict[int, int]:
    mapping = mw.m1300_mapping(world, 1300)
    spec = ml.seg_m1300_spec()
    path = b.layer("minnie65_seg_m1300", spec, mw.relabel(seg, mapping), sharded=True)
    mesh_ids = [*mw.M1300_ROOTS, mw.M1300_ROOTS[0] ^ 1, mw.SKELETON_ROOT]
    mip1 = np.load(b.out / "arrays" / "minnie65_seg_m1300" / f"{spec.scales[1].key}.npy")
    mini_meshes.multires_sharded_meshes(path, 1, mip1, mesh_ids)
    b.publish("minnie65_seg_m1300", path, (GCS, f"{GCS_ROOT}/minnie65/seg_m1300"))
    b.meta["m1300_mesh_ids"] = mesh_ids
    b.meta["m1300_mapping"] = {str(k): v for k, v in mapping.items()}
    return mapping


def _minnie35_layers(b: _Build) -> np.ndarray:
    world = mw.build_world(35, ml.EM35_SIZE, 150, [], [])
    em = b.layer("minnie35_em", ml.em35_spec(), world.em, sharded=True)
    b.publish("minnie35_em", em, (S3, f"{S3_ROOT}/minnie35/em"), (GCS, f"{GCS_ROOT}/minnie35/em"))
    seg = _seg_crop(world, ml.SEG35_LOCAL, ml.SEG35_SIZE)
    path = b.layer("minnie35_seg", ml.seg35_spec(), seg, sharded=True)
    places = ((S3, f"{S3_ROOT}/minnie35/seg"), (PHASE3, "minnie/minnie35/seg"))
    b.publish("minnie35_seg", path, *places)
    return seg


def _offset(spec: ml.LayerSpec) -> ml.Vec3:
    return spec.scales[0].voxel_offset


def _tables(b: _Build, world: mw.World, seg65: np.ndarray, seg35: np.ndarray) -> tuple[list, list]:
    """The CSV tables; returns the cleft (synapse id, centre) lists of minnie65 and minnie35."""
    rng = np.random.default_rng(117)
    region = mf.SegRegion(seg65, _offset(ml.seg65_spec()))
    nuclei, local = world.nucleus_list, ml.SEG65_LOCAL
    det, svm = mf.nucleus_tables(rng, region, nuclei, local)
    put = b.writer.put
    put(S3, f"{S3_ROOT}/minnie65/nucleus_detection/nucleus_detection_v0.csv", det)
    put(S3, f"{S3_ROOT}/minnie65/nucleus_neuron_classification/nucleus_neuron_svm.csv", svm)
    syn, clefts65 = mf.synapse_table(rng, region, 40, 150_000_001)
    put(S3, f"{S3_ROOT}/minnie65/synapse_graph/synapses_pni_2.csv", syn)
    region35 = mf.SegRegion(seg35, _offset(ml.seg35_spec()))
    syn35, clefts35 = mf.synapse_table(rng, region35, 30, 2_000_001)
    packed = gzip.compress(syn35, compresslevel=6, mtime=0)
    put(S3, f"{S3_ROOT}/minnie35/synapse_graph/assigned.csv.gz", packed)
    status = mf.proofreading_table(rng, region, nuclei, local)
    put(S3, f"{S3_ROOT}/proofreading_status/proofreading_status_public_release.csv", status)
    coreg = mf.coreg_table(rng, region, nuclei, local)
    put(S3, f"{S3_ROOT}/functional_coregistration/func_unit_em_match_release.csv", coreg)
    return clefts65, clefts35


def _derived_layers(b: _Build, segs: dict[str, np.ndarray], clefts: dict[str, list]) -> None:
    """ws (supervoxels), autoseg (a copy of seg) and clefts (unsharded) for both volumes."""
    specs = {"minnie65": ml.seg65_spec, "minnie35": ml.seg35_spec}
    for vol, spec_fn in specs.items():
        ws = b.layer(f"{vol}_ws", spec_fn(), mw.supervoxels(segs[vol]), sharded=True)
        b.publish(f"{vol}_ws", ws, (S3, f"{S3_ROOT}/{vol}/ws"))
        b.alias(f"{vol}_seg", (S3, f"{S3_ROOT}/{vol}/seg"), (S3, f"{S3_ROOT}/{vol}/autoseg"))
        cleft_vol = mw.paint_clefts(segs[vol].shape, clefts[vol])
        path = b.layer(f"{vol}_clefts", ml.clefts_spec(spec_fn()), cleft_vol, sharded=False)
        b.publish(f"{vol}_clefts", path, (S3, f"{S3_ROOT}/{vol}/clefts"))


def _soma(nuc: mw.Nucleus) -> tuple[np.ndarray, list[int]]:
    """Soma centre in nm and in 4,4,40 nm voxels."""
    vx = np.add(ml.EM65_OFFSET, nuc.center)
    return vx * mw.RES_NM, [int(2 * vx[0]), int(2 * vx[1]), int(vx[2])]


def _skeletons_v661(b: _Build, world: mw.World) -> None:
    rng = np.random.default_rng(661)
    base = f"{S3_ROOT}/minnie65/skeletons/v661"
    pairs = []
    for i, nuc in enumerate(world.nucleus_list[:4]):
        name = f"{nuc.root_id}_{nuc.nucleus_id}"
        soma_nm, soma_vx = _soma(nuc)
        nodes = mf.skeleton_nodes(rng, soma_nm, with_axon=i < 2)
        b.writer.put(S3, f"{base}/skeletons/{name}.swc", mf.swc_text(nodes, f"v661 {name}"))
        meta = mf.skeleton_metadata(nodes, nuc, soma_vx, mw.supervoxel_id(rng), i < 2)
        b.writer.put(S3, f"{base}/metadata/{name}.json", meta)
        h5 = mf.fake_binary(rng, mf.HDF5_MAGIC, int(rng.integers(3000, 9000)))
        b.writer.put(S3, f"{base}/meshworks/{name}.h5", h5)
        pairs.append([nuc.root_id, nuc.nucleus_id])
    b.meta["v661_skeletons"] = pairs


def _skeletons_v1300(b: _Build, world: mw.World, mapping: dict[int, int]) -> None:
    rng = np.random.default_rng(1300)
    cells = [(mapping.get(n.root_id, n.root_id), n) for n in world.nucleus_list]
    proofread, dendrite = cells[:4], cells[1:]
    for folder, group, axon in (("proofread", proofread, True), ("dendrite", dendrite, False)):
        for root, nuc in group:
            nodes = mf.skeleton_nodes(rng, _soma(nuc)[0], with_axon=axon)
            text = mf.swc_text(nodes, f"v1300 {folder} {root}")
            b.writer.put(STATIC, f"skel/swc/{folder}/{root}.swc", text)
        b.meta[f"swc_{folder}"] = [root for root, _ in group]


def _functional(b: _Build) -> None:
    rng = np.random.default_rng(2020)
    fd = f"{S3_ROOT}/functional_data"
    put = b.writer.put
    for session, scan in ((4, 7), (5, 3), (6, 2)):
        avi = mf.avi_bytes(rng, int(rng.integers(20_000, 40_000)))
        put(S3, f"{fd}/stimulus_movies/stimulus_{session}_{scan}.avi", avi)
    for session, scan in ((4, 7), (5, 3)):
        tif = mf.tif_bytes(rng, int(rng.integers(40_000, 60_000)))
        put(S3, f"{fd}/two_photon_functional_scans/scan_{session}_{scan}.tif", tif)
    stack = mf.tif_bytes(rng, 12 * 1024 * 1024)
    put(S3, f"{fd}/two_photon_structural_stacks/stack_small.tif", stack, part_size=PART_SIZE)
    dt = f"{fd}/digital_twin_properties/v2"
    put(S3, f"{dt}/README.md", b"# Digital twin properties (mini-MICrONS stand-in)\n")
    put(S3, f"{dt}/digital_twin_properties.nc", mf.fake_binary(rng, mf.HDF5_MAGIC, 24_000))
    weights = rng.normal(size=(30, 16)).astype(np.float32)
    put(S3, f"{dt}/readout/readout_weights.npy", mf.npy_bytes(weights))
    uv = f"{fd}/units_visual_properties/v2"
    put(S3, f"{uv}/anatomy/units.csv", mf.units_table(rng))
    locations = rng.uniform(-1, 1, size=(30, 2)).astype(np.float32)
    put(S3, f"{uv}/readout/readout_locations.npy", mf.npy_bytes(locations))
    dj = f"{fd}/two_photon_processed_data_and_metadata/database_v8"
    image = mf.tar_bytes({"manifest.json": b"{}\n", "layer.tar": rng.bytes(20_000)})
    put(S3, f"{dj}/functional_data_database_container_image_v8.tar", image)
    ct = {"microCT/README.txt": b"mini microCT\n", "microCT/slice_000.tif": mf.tif_bytes(rng, 9000)}
    put(S3, f"{S3_ROOT}/microCT/minnie_microCT.zip", mf.zip_bytes(ct))


def _zenodo(b: _Build) -> None:
    rng = np.random.default_rng(5760218)
    files = {
        "minnie/README.txt": b"Manual ground truth labels (mini-MICrONS stand-in).\n",
        "minnie/ground_truth.h5": mf.fake_binary(rng, mf.HDF5_MAGIC, 30_000),
    }
    b.writer.put(ZENODO, ZENODO_KEY, mf.targz_bytes(files))


def _nuclei_meta(world: mw.World) -> list[dict[str, Any]]:
    return [
        {
            "nucleus_id": n.nucleus_id,
            "root_id_v117": n.root_id,
            "center_8nm": [int(c + o) for c, o in zip(n.center, ml.EM65_OFFSET, strict=True)],
        }
        for n in world.nucleus_list
    ]


def generate(outdir: Path) -> SeedTree:
    """Write the mini-MICrONS objects under `outdir` (replacing a previous tree) and return it."""
    outdir = Path(outdir).resolve()
    for sub in ("objects", "arrays"):
        shutil.rmtree(outdir / sub, ignore_errors=True)
    outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="minimicrons-", dir=outdir) as tmp:
        work = Path(tmp)
        quiet_cloudvolume_home()
        b = _Build(outdir, work / "layers")
        world = mw.build_world(65, ml.EM65_SIZE, 400, NUCLEI_AT, NUCLEUS_IDS)
        seg65 = _minnie65_layers(b, world)
        mapping = _m1300_layer(b, world, seg65)
        seg35 = _minnie35_layers(b)
        clefts65, clefts35 = _tables(b, world, seg65, seg35)
        segs = {"minnie65": seg65, "minnie35": seg35}
        _derived_layers(b, segs, {"minnie65": clefts65, "minnie35": clefts35})
        _skeletons_v661(b, world)
        _skeletons_v1300(b, world, mapping)
        _functional(b)
        _zenodo(b)
    b.meta.update(layers=b.layers, nuclei=_nuclei_meta(world), zenodo_key=ZENODO_KEY)
    tree = b.writer.tree(b.meta)
    tree.save()
    return tree
