"""Helpers shared by the fetch tests: a scratch S3 server the tests may change, and readers of
what landed under DEST."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from microns_get.testing.servers import public_read_policy, s3_client

BUCKET = "bossdb-open-data"
STACKS = "iarpa_microns/minnie/functional_data/two_photon_structural_stacks/"
TEMP_SUFFIX = ".microns-get-partial"


def random_bytes(n: int, seed: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest() * 64
        counter += 1
    return bytes(out[:n])


class ScratchS3:
    """A moto server whose bucket each test fills as it needs (reset between tests)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.client = s3_client(endpoint)

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=30).read()
        self.client.create_bucket(Bucket=BUCKET)
        self.client.put_bucket_policy(Bucket=BUCKET, Policy=public_read_policy(BUCKET))

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=BUCKET, Key=key, Body=data)


def local_files(dest: Path) -> dict[str, bytes]:
    """Every file under DEST by relative path, state and temp files excluded."""
    out = {}
    for path in dest.rglob("*"):
        if (
            path.is_file()
            and ".microns-get" not in path.parts
            and not path.name.endswith(TEMP_SUFFIX)
        ):
            out[path.relative_to(dest).as_posix()] = path.read_bytes()
    return out


def temp_files(dest: Path) -> list[Path]:
    return [p for p in dest.rglob(f"*{TEMP_SUFFIX}")]


def done_parts(dest: Path) -> int:
    """Finished parts recorded in DEST's checkpoint (read-only; the fetch may be running)."""
    db = dest / ".microns-get" / "state.sqlite"
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
        try:
            return con.execute("select count(*) from parts where done = 1").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def done_items(dest: Path) -> int:
    db = dest / ".microns-get" / "state.sqlite"
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
        try:
            return con.execute("select count(*) from items where state = 'done'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def ranged_bytes(log, key_fragment: str) -> int:
    return sum(r.bytes_sent for r in log if key_fragment in r.path and r.range)


def env_without_config(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICRONS_GET_")}
    return {**env, **extra}


def iter_seed(tree, bucket: str, prefix: str) -> Iterator[tuple[str, bytes]]:
    for key in tree.keys(bucket, prefix):
        yield key, tree.read(bucket, key)
