"""Fetch the meshes and skeletons of chosen segment ids, reading only the bytes they need.

Public API (the CLI's `fetch seg --segments ... --meshes` and `fetch skeletons --segments ...`):
* `fetch_segment_meshes(session, settings, layer_url, local_layer, segment_ids, emit=None)`;
* `fetch_skeletons(session, settings, dataset_version, parts, segment_ids, dest,
  nucleus_ids=None, emit=None)`;
* `layer_mirror_urls(part, settings, dataset_id)` / `local_root(dest, part)`: the catalogue
  part's mirror URLs in `--mirror` order, and where the part lands under DEST;
* `SegmentsResult`: per id what was written, read (requests, bytes) and why not.
Modules: `result` (reports), `remote` (counted, retried reads; atomic writes), `layer` (mesh
format per mirror, failover, local info files), `shardfile` (pure sharded-mesh math and local
shard files), `sharded` / `meshes` (mesh readers), `skeletons`.
Must not decide exit codes or hold DEST's lock: the caller does both.
"""

from __future__ import annotations

from microns_get.segments.meshes import fetch_segment_meshes
from microns_get.segments.remote import local_root
from microns_get.segments.remote import part_mirror_urls as layer_mirror_urls
from microns_get.segments.result import SegmentReport, SegmentsResult, Tally
from microns_get.segments.skeletons import fetch_skeletons

__all__ = [
    "SegmentReport",
    "SegmentsResult",
    "Tally",
    "fetch_segment_meshes",
    "fetch_skeletons",
    "layer_mirror_urls",
    "local_root",
]
