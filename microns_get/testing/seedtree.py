"""The on-disk result of the mini-MICrONS generator, and the writer that fills it.

Layout of a seed tree directory:
* `objects/<bucket>/<key>`: each object's bytes exactly as stored in its bucket (gzip bytes for
  objects with `content_encoding: gzip`);
* `objects.json`: a list of `{"bucket", "key", "path", "content_encoding", "providers"}` (plus
  `"multipart_part_size"` for objects to be uploaded to S3 in parts), sorted by bucket and key;
* `arrays/<name>/<scale key>.npy`: the voxel arrays written to each layer (`[x, y, z]`, relative
  to the scale's voxel_offset), and `meta.json` (ids, layers, what was meshed).
"""

from __future__ import annotations

import gzip
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PROVIDER_OF_BUCKET = {
    "bossdb-open-data": "s3",
    "iarpa_microns": "gcs",
    "microns-static-links": "gcs",
    "microns_phase3": "gcs",
    "zenodo.org": "https",
}


@dataclass(frozen=True)
class SeedObject:
    """One object of a bucket (or of an HTTPS host, for provider `https`)."""

    bucket: str
    key: str
    path: str
    content_encoding: str | None
    providers: tuple[str, ...]
    multipart_part_size: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "bucket": self.bucket,
            "key": self.key,
            "path": self.path,
            "content_encoding": self.content_encoding,
            "providers": list(self.providers),
        }
        if self.multipart_part_size:
            out["multipart_part_size"] = self.multipart_part_size
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SeedObject:
        return cls(
            d["bucket"],
            d["key"],
            d["path"],
            d.get("content_encoding"),
            tuple(d["providers"]),
            d.get("multipart_part_size"),
        )


@dataclass
class SeedTree:
    """A generated mini-MICrONS: objects to seed the servers with, and what they contain."""

    root: Path
    objects: list[SeedObject]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._index = {(o.bucket, o.key): o for o in self.objects}

    @classmethod
    def load(cls, root: Path) -> SeedTree:
        objects = [SeedObject.from_json(d) for d in json.loads((root / "objects.json").read_text())]
        meta = json.loads((root / "meta.json").read_text())
        return cls(root, objects, meta)

    def save(self) -> None:
        rows = [o.to_json() for o in sorted(self.objects, key=lambda o: (o.bucket, o.key))]
        (self.root / "objects.json").write_text(json.dumps(rows, indent=1) + "\n")
        (self.root / "meta.json").write_text(json.dumps(self.meta, indent=1, sort_keys=True) + "\n")

    def entry(self, bucket: str, key: str) -> SeedObject:
        return self._index[(bucket, key)]

    def has(self, bucket: str, key: str) -> bool:
        return (bucket, key) in self._index

    def path_of(self, bucket: str, key: str) -> Path:
        """Local file holding the stored bytes of `bucket/key`."""
        return self.root / self.entry(bucket, key).path

    def read(self, bucket: str, key: str) -> bytes:
        """The bytes as stored in the bucket (still gzip for `content_encoding: gzip`)."""
        return self.path_of(bucket, key).read_bytes()

    def read_decoded(self, bucket: str, key: str) -> bytes:
        """The bytes a client sees after undoing the content encoding."""
        data = self.read(bucket, key)
        return gzip.decompress(data) if self.entry(bucket, key).content_encoding == "gzip" else data

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Sorted keys of `bucket` under `prefix`."""
        return sorted(
            o.key for o in self.objects if o.bucket == bucket and o.key.startswith(prefix)
        )

    def for_provider(self, provider: str) -> list[SeedObject]:
        return [o for o in self.objects if provider in o.providers]

    def buckets(self, provider: str) -> list[str]:
        return sorted({o.bucket for o in self.for_provider(provider)})

    def info(self, bucket: str, prefix: str, name: str = "info") -> dict[str, Any]:
        """A layer's `info` (or e.g. `mesh/info`) as stored, decoded."""
        return json.loads(self.read_decoded(bucket, f"{prefix.strip('/')}/{name}"))

    def expected_array(self, bucket: str, prefix: str, scale_key: str) -> np.ndarray:
        """The `[x, y, z]` array written at `scale_key` of the layer `bucket/prefix`."""
        name = self.meta["layers"][f"{bucket}/{prefix.strip('/')}"]
        return np.load(self.root / "arrays" / name / f"{scale_key}.npy")


class TreeWriter:
    """Collects objects into `root/objects/<bucket>/<key>` as the generator produces them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects: dict[tuple[str, str], SeedObject] = {}

    def _register(self, bucket: str, key: str, encoding: str | None, part: int | None) -> Path:
        if (bucket, key) in self.objects:
            raise ValueError(f"object written twice: {bucket}/{key}")
        rel = f"objects/{bucket}/{key}"
        provider = PROVIDER_OF_BUCKET[bucket]
        self.objects[(bucket, key)] = SeedObject(bucket, key, rel, encoding, (provider,), part)
        dest = self.root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        return dest

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        content_encoding: str | None = None,
        part_size: int | None = None,
    ) -> None:
        self._register(bucket, key, content_encoding, part_size).write_bytes(data)

    def put_layer(self, bucket: str, prefix: str, layer_dir: Path) -> None:
        """Upload a local layer: CloudVolume's `name.gz` becomes `name` with gzip encoding."""
        for src in sorted(p for p in layer_dir.rglob("*") if p.is_file()):
            rel = src.relative_to(layer_dir).as_posix()
            encoding = None
            if rel.endswith(".gz"):
                rel, encoding = rel[:-3], "gzip"
            shutil.copyfile(src, self._register(bucket, f"{prefix}/{rel}", encoding, None))

    def copy_prefix(self, src_bucket: str, src_prefix: str, bucket: str, prefix: str) -> None:
        """Server-side-copy style duplicate of every object under a prefix (same bytes)."""
        for (b, key), obj in sorted(self.objects.items()):
            if b == src_bucket and key.startswith(src_prefix + "/"):
                dest = self._register(
                    bucket, prefix + key[len(src_prefix) :], obj.content_encoding, None
                )
                shutil.copyfile(self.root / obj.path, dest)

    def tree(self, meta: dict[str, Any]) -> SeedTree:
        objects = sorted(self.objects.values(), key=lambda o: (o.bucket, o.key))
        return SeedTree(self.root, objects, meta)
