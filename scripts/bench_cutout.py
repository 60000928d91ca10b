#!/usr/bin/env python3
"""Cutout benchmark: the same boxes read by microns-get, cloud-volume and tensorstore.

A synthetic EM-like layer in the MICrONS layout (uint8 raw, gzip, sharded with identity hash,
written by tensorstore) is served by nginx (or, without nginx, a Python static server) at the
layer's canonical path. Each tool reads two boxes, one shard's worth and one crossing 8 shards:
    microns-get fetch em --bbox ... --mirror http://127.0.0.1:PORT   (writes a local layer)
    cloud-volume  CloudVolume('precomputed://http://...')[box]        (into memory)
    tensorstore   ts.open({... 'kvstore': {'driver': 'http', ...}})[box].read()   (into memory)
    tensorstore-to-disk  local[box].write(remote[box]) into a new local unsharded raw layer
                         (`file` kvstore: temp file, fsync, rename per chunk), i.e. the result
                         microns-get gives
Times are of whole processes (imports included), median of --repeat runs after one untimed
warm-up run per tool and box. The warm-up fills the page cache and compiles each tool's bytecode
into a cache of the run's own, even under PYTHONDONTWRITEBYTECODE: an installed package carries
its .pyc files, and a checkout would otherwise recompile every module on every run. Requests and
bytes are counted in a separate, untimed pass through a counting proxy, and set against the minimum:
the needed chunks' bytes plus the shard and minishard indexes they need.

    python scripts/bench_cutout.py [--size 1024,1024,128] [--repeat 3] [--out scripts/bench_results]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

LAYER = "iarpa_microns/minnie/minnie65/em"  # the `em` dataset's canonical path
CHUNK = (64, 64, 16)
RESOLUTION = (8, 8, 40)
# tensorstore-to-disk: tensorstore making what microns-get makes (a local unsharded raw layer,
# each chunk written to a temp file, fsynced, renamed), the fair peer for the time to a result
TOOLS = ("microns-get", "tensorstore", "tensorstore-to-disk", "cloud-volume")


def write_layer(root: Path, size: tuple[int, int, int]) -> None:
    """An EM-like volume: smooth structure plus noise, so gzip behaves like it does on EM."""
    import numpy as np
    import tensorstore as ts

    grid = [s // c for s, c in zip(size, CHUNK)]
    bits = sum(max(0, (g - 1).bit_length()) for g in grid)
    shard_bits, minishard_bits = 3, 2  # 8 shards: the top bit of each axis picks the shard
    spec = {
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "file", "path": str(root / LAYER) + "/"},
        "multiscale_metadata": {"type": "image", "data_type": "uint8", "num_channels": 1},
        "scale_metadata": {
            "size": list(size),
            "resolution": list(RESOLUTION),
            "encoding": "raw",
            "chunk_size": list(CHUNK),
            "key": "8_8_40",
            "sharding": {
                "@type": "neuroglancer_uint64_sharded_v1",
                "hash": "identity",
                "preshift_bits": bits - shard_bits - minishard_bits,
                "minishard_bits": minishard_bits,
                "shard_bits": shard_bits,
                "minishard_index_encoding": "gzip",
                "data_encoding": "gzip",
            },
        },
        "create": True,
        "delete_existing": True,
    }
    store = ts.open(spec).result()
    rng = np.random.default_rng(0)
    x, y = np.meshgrid(np.arange(size[0]), np.arange(size[1]), indexing="ij")
    for z0 in range(0, size[2], CHUNK[2]):
        z = np.arange(z0, z0 + CHUNK[2])
        base = np.sin(x[..., None] / 23.0 + z / 11.0) * np.cos(y[..., None] / 17.0) * 60 + 128
        noise = rng.integers(0, 24, size=(size[0], size[1], CHUNK[2]))
        block = (base + noise).clip(0, 255).astype("uint8")
        store[:, :, z0 : z0 + CHUNK[2], 0] = block
    print(f"layer written: {size} uint8, {len(list((root / LAYER / '8_8_40').iterdir()))} shards")


def boxes(size: tuple[int, int, int]) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    half = [s // 2 for s in size]
    quarter = [s // 4 for s in size]
    return {
        # the first octant: exactly the chunks of shard 0
        "one-shard": ((0, 0, 0), tuple(half)),
        # a box around the centre touches all 8 shards, and is not chunk-aligned
        "8-shards": (
            tuple(h - q + 7 for h, q in zip(half, quarter)),
            tuple(h + q - 5 for h, q in zip(half, quarter)),
        ),
    }


def minimum_bytes(root: Path, lo: tuple[int, ...], hi: tuple[int, ...]) -> tuple[int, int]:
    """Needed chunk bytes + index bytes, and the number of chunks, from the shard files."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from microns_get.precomputed import grid, sharding
    from microns_get.precomputed.info import parse_volume_info

    info = parse_volume_info((root / LAYER / "info").read_bytes())
    scale = info.scales[0]
    spec = scale.sharding
    chunks = grid.chunks_for(scale, grid.Box(lo, hi))
    by_shard: dict[str, set[int]] = {}
    ids: dict[str, list[int]] = {}
    for chunk in chunks:
        cid = sharding.volume_chunk_id(scale, chunk.grid)
        where = sharding.locate_chunk(spec, cid)
        by_shard.setdefault(where.filename, set()).add(where.minishard)
        ids.setdefault(where.filename, []).append(cid)
    total = 0
    for name, minishards in by_shard.items():
        data = (root / LAYER / "8_8_40" / name).read_bytes()
        length = sharding.index_length(spec)
        entries = sharding.decode_shard_index(data[:length], spec)
        total += length
        ranges = {}
        for m in minishards:
            start, end = sharding.minishard_index_range(spec, entries[m], len(data))
            total += end - start
            for r in sharding.decode_minishard_index(data[start:end], spec, len(data)):
                ranges[r.chunk_id] = r
        total += sum(ranges[c].end - ranges[c].start for c in ids[name] if c in ranges)
    return total, len(chunks)


def tool_commands(name: str, base: str, lo, hi, dest: Path) -> list[str]:
    box = ",".join(map(str, (*lo, *hi)))
    if name == "microns-get":
        return [
            sys.executable,
            "-m",
            "microns_get",
            "fetch",
            "em",
            "--bbox",
            box,
            "--bbox-resolution",
            "8,8,40",
            "--mirror",
            base,
            "--dest",
            str(dest),
            "--quiet",
        ]
    sl = f"[{lo[0]}:{hi[0]}, {lo[1]}:{hi[1]}, {lo[2]}:{hi[2]}]"
    if name == "cloud-volume":
        code = (
            "from cloudvolume import CloudVolume\n"
            f"cv = CloudVolume('precomputed://{base}/{LAYER}', mip=0, progress=False, "
            "parallel=1, cache=False)\n"
            f"a = cv{sl}\n"
            "print(a.shape, int(a.sum()))\n"
        )
    elif name == "tensorstore":
        code = (
            "import tensorstore as ts\n"
            "s = ts.open({'driver': 'neuroglancer_precomputed', 'kvstore': {'driver': 'http', "
            f"'base_url': '{base}/{LAYER}/'}}}}).result()\n"
            f"a = s{sl[:-1]}, 0].read().result()\n"
            "print(a.shape, int(a.sum()))\n"
        )
    else:  # tensorstore-to-disk: the result microns-get gives, a local unsharded raw layer
        code = (
            "import json, urllib.request\n"
            "import tensorstore as ts\n"
            f"info = json.load(urllib.request.urlopen('{base}/{LAYER}/info'))\n"
            "top = info['scales'][0]\n"
            "scale = {k: top[k] for k in ('key', 'size', 'resolution', 'voxel_offset')}\n"
            "scale.update(encoding='raw', chunk_size=top['chunk_sizes'][0])\n"
            "s = ts.open({'driver': 'neuroglancer_precomputed', 'kvstore': {'driver': 'http', "
            f"'base_url': '{base}/{LAYER}/'}}}}).result()\n"
            "d = ts.open({'driver': 'neuroglancer_precomputed', 'kvstore': {'driver': 'file', "
            f"'path': '{dest}/{LAYER}/'}}, 'create': True, 'scale_metadata': scale, "
            "'multiscale_metadata': {'type': info['type'], 'data_type': info['data_type'], "
            "'num_channels': info['num_channels']}}).result()\n"
            f"d{sl[:-1]}, 0].write(s{sl[:-1]}, 0]).result()\n"
        )
    return [sys.executable, "-c", code]


def counted_pass(name: str, upstream: str, lo, hi, work: Path, env: dict[str, str]) -> dict:
    """One untimed run through a counting proxy: requests and bytes the tool asked for."""
    from microns_get.testing.faultproxy import FaultProxy

    with FaultProxy(upstream) as proxy:
        dest = Path(tempfile.mkdtemp(dir=work))
        result = subprocess.run(
            tool_commands(name, proxy.url, lo, hi, dest), env=env, capture_output=True, text=True
        )
        proxy.wait_idle()
        stats = proxy.stats
    if result.returncode != 0:
        return {"ok": False, "error": result.stderr[-500:]}
    return {"ok": True, "requests": stats.requests, "bytes": stats.bytes_sent}


def warm_up(tool: str, base: str, lo, hi, dest: Path, env: dict[str, str]) -> None:
    """One untimed run: bytecode compiled, page cache warm, for every tool alike."""
    result = subprocess.run(tool_commands(tool, base, lo, hi, dest), env=env, capture_output=True)
    if result.returncode != 0:
        raise SystemExit(f"{tool} failed to warm up: {result.stderr[-500:]!r}")


def serve(root: Path, work: Path):
    nginx = bc.Nginx(root, work / "nginx")
    if Path("/usr/sbin/nginx").exists() or bc.shutil.which("nginx"):
        return nginx.start()
    raise SystemExit("nginx is needed: apt-get install -y nginx")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1024,1024,128", help="volume size x,y,z (voxels)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "bench_results"))
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split(","))
    work = Path(tempfile.mkdtemp(prefix="bench-cutout-"))
    work.chmod(0o755)  # nginx workers run as another user and must read the served tree
    env = {**os.environ, "CLOUD_VOLUME_DIR": str(work / "cv"), "CLOUD_FILES_DIR": str(work / "cv")}
    env = {k: v for k, v in env.items() if not k.startswith("MICRONS_GET_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    root = work / "served"
    write_layer(root, size)
    server = serve(root, work)
    rows, results = [], []
    try:
        for box_name, (lo, hi) in boxes(size).items():
            minimum, n_chunks = minimum_bytes(root, lo, hi)
            timings: dict[str, float] = {}
            for tool in TOOLS:
                warm_up(tool, server.url, lo, hi, work / f"{tool}-{box_name}-warm", env)
            runs: dict[str, list[bc.RunResult]] = {tool: [] for tool in TOOLS}
            for i in range(args.repeat):
                # the order rotates each repeat: no tool always runs right after another
                for tool in TOOLS[i % len(TOOLS) :] + TOOLS[: i % len(TOOLS)]:
                    dest = work / f"{tool}-{box_name}-{i}"
                    run = bc.run_measured(
                        tool_commands(tool, server.url, lo, hi, dest),
                        env=env,
                        log_dir=work / "logs",
                        name=f"{tool}-{box_name}-{i}",
                    )
                    if not run.ok:
                        raise SystemExit(f"{tool} failed on {box_name}: {run.stderr_tail}")
                    runs[tool].append(run)
            for tool in TOOLS:
                counted = counted_pass(tool, server.url, lo, hi, work, env)
                seconds = bc.median([r.seconds for r in runs[tool]])
                timings[tool] = seconds
                results.append(
                    {
                        "box": box_name,
                        "tool": tool,
                        "lo": lo,
                        "hi": hi,
                        "chunks": n_chunks,
                        "seconds": seconds,
                        "all_seconds": [r.seconds for r in runs[tool]],
                        "peak_rss_mb": max(r.peak_rss_mb for r in runs[tool]),
                        "requests": counted.get("requests"),
                        "bytes": counted.get("bytes"),
                        "minimum_bytes": minimum,
                    }
                )
            for r in results[-len(TOOLS) :]:
                r["time_ratio_to_microns_get"] = r["seconds"] / timings["microns-get"]
                rows.append(
                    [
                        r["box"],
                        r["tool"],
                        f"{r['seconds']:.2f}",
                        f"{min(r['all_seconds']):.2f}-{max(r['all_seconds']):.2f}",
                        f"{r['time_ratio_to_microns_get']:.2f}",
                        r["requests"],
                        r["bytes"],
                        f"{(r['bytes'] or 0) / minimum:.3f}",
                        f"{r['peak_rss_mb']:.0f}",
                    ]
                )
    finally:
        server.stop()
        bc.shutil.rmtree(work, ignore_errors=True)
    headers = [
        "box",
        "tool",
        "seconds",
        "min-max s",
        "time / microns-get",
        "requests",
        "bytes",
        "bytes / minimum",
        "peak RSS MB",
    ]
    table = bc.markdown_table(headers, rows)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d")
    facts = bc.machine_facts()
    (out / f"cutout-{stamp}.md").write_text(
        f"# Cutout benchmark, {stamp}\n\nvolume {size} uint8 raw gzip, chunks {CHUNK}, 8 shards; "
        f"served by nginx; median of {args.repeat} runs (tool order rotated each repeat), "
        f"whole processes.\n\n{table}\n\n"
        f"machine: {json.dumps(facts)}\n"
    )
    bc.dump_json(out / f"cutout-{stamp}.json", {"facts": facts, "results": results})
    print(f"results in {out}")


if __name__ == "__main__":
    main()
