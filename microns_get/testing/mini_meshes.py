"""Meshes of the mini-MICrONS, made by igneous / zmesh / cloud-volume (no hand-written formats).

* Legacy single-resolution meshes for `nuclei` (`mesh_mip_0_err_40/<id>:0` JSON manifests plus
  gzip fragments): igneous `MeshTask` + `MeshManifestFilesystemTask` run with a LocalTaskQueue.
  The mesh directory is left without an `info` file, as in the real bucket.
* A sharded multi-resolution Draco mesh for `seg_m1300/mesh`: zmesh meshes the 16,16,40 scale,
  igneous' `process_mesh` builds the LODs, fragments and manifest, and cloud-volume's
  `synthesize_shard_files` lays out the shard files. The sharding spec is the real one
  (murmurhash3_x86_128, preshift 6, minishard 8, shard 13, gzip minishard indices, gzip data).
  Per the neuroglancer spec, `data_encoding` applies to the manifest only, so each manifest is
  gzipped before it is handed (after its Draco fragments) to the shard writer with a raw spec.
"""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np

M1300_MESH_SHARDING: dict[str, Any] = {
    "@type": "neuroglancer_uint64_sharded_v1",
    "hash": "murmurhash3_x86_128",
    "preshift_bits": 6,
    "minishard_bits": 8,
    "shard_bits": 13,
    "minishard_index_encoding": "gzip",
    "data_encoding": "gzip",
}


def legacy_meshes(layer: Path, object_ids: list[int], mesh_dir: str) -> None:
    """Mesh `object_ids` of an unsharded local layer into legacy fragments + `<id>:0` manifests."""
    import igneous.task_creation as tc
    from taskqueue import LocalTaskQueue

    cloudpath = f"file://{layer}"
    tasks = tc.create_meshing_tasks(
        cloudpath,
        mip=0,
        shape=(48, 48, 20),
        mesh_dir=mesh_dir,
        object_ids=object_ids,
        spatial_index=False,
        sharded=False,
        compress="gzip",
        max_simplification_error=40,
        fill_missing=True,
    )
    queue = LocalTaskQueue(parallel=1, progress=False)
    queue.insert(tasks)
    queue.insert(tc.create_mesh_manifest_tasks(cloudpath, mesh_dir=mesh_dir))
    queue.execute(progress=False)
    (layer / mesh_dir / "info").unlink(missing_ok=True)
    (layer / "provenance").unlink(missing_ok=True)


def _zmesh_meshes(
    labels: np.ndarray, resolution: tuple[int, ...], origin_nm: np.ndarray, ids: list[int]
) -> dict[int, Any]:
    """zmesh meshes (cloud-volume `Mesh`, absolute nm) of `ids` in an `[x, y, z]` label array."""
    import zmesh
    from cloudvolume import Mesh

    mesher = zmesh.Mesher(resolution)
    mesher.mesh(np.asfortranarray(labels))
    meshes = {}
    for segid in ids:
        m = mesher.get(int(segid), normals=False, reduction_factor=4, max_error=40)
        vertices = m.vertices.astype(np.float32) + origin_nm.astype(np.float32)
        meshes[int(segid)] = Mesh(vertices, m.faces, segid=int(segid))
    mesher.clear()
    return meshes


def write_mesh_info(layer: Path, mip: int, resolution: tuple[int, ...]) -> dict[str, Any]:
    """`mesh/info` of a multi-LOD Draco mesh in stored-model units of scale `mip`."""
    res = [int(r) for r in resolution]
    info = {
        "@type": "neuroglancer_multilod_draco",
        "vertex_quantization_bits": 16,
        "transform": [res[0], 0, 0, 0, 0, res[1], 0, 0, 0, 0, res[2], 0],
        "lod_scale_multiplier": 1.0,
        "mip": mip,
        "sharding": M1300_MESH_SHARDING,
    }
    (layer / "mesh").mkdir(parents=True, exist_ok=True)
    (layer / "mesh" / "info").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def multires_sharded_meshes(layer: Path, mip: int, labels: np.ndarray, ids: list[int]) -> None:
    """Write `mesh/info` and the `mesh/*.shard` files for `ids` of a local sharded seg layer."""
    from cloudvolume import CloudVolume
    from cloudvolume.datasource.precomputed.sharding import (
        ShardingSpecification,
        synthesize_shard_files,
    )
    from igneous.tasks.mesh.multires import process_mesh

    info = json.loads((layer / "info").read_text())
    scale = info["scales"][mip]
    write_mesh_info(layer, mip, scale["resolution"])
    origin = np.array(scale["voxel_offset"]) * np.array(scale["resolution"])
    meshes = _zmesh_meshes(labels, tuple(scale["resolution"]), origin, ids)
    cv = CloudVolume(f"file://{layer}", mip=mip)
    blobs: dict[int, bytes] = {}
    manifest_sizes: dict[int, int] = {}
    for segid, mesh in meshes.items():
        manifest, fragments = process_mesh(cv, segid, mesh, num_lod=3, min_chunk_size=(4, 4, 2))
        packed = gzip.compress(manifest.to_binary(), compresslevel=6, mtime=0)
        blobs[segid] = fragments + packed
        manifest_sizes[segid] = len(packed)
    raw_spec = copy.deepcopy(M1300_MESH_SHARDING)
    raw_spec["data_encoding"] = "raw"  # manifests are already gzipped, fragments stay Draco
    shard_files = synthesize_shard_files(
        ShardingSpecification.from_dict(raw_spec), blobs, manifest_sizes
    )
    for name, data in shard_files.items():
        (layer / "mesh" / name).write_bytes(data)
