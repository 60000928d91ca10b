"""Generate the mini-MICrONS seed tree: `python scripts/make_mini_microns.py OUTDIR`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from microns_get.testing.minimicrons import generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("outdir", type=Path, help="directory to (re)create the seed tree in")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    tree = generate(args.outdir)
    size = sum(tree.path_of(o.bucket, o.key).stat().st_size for o in tree.objects)
    elapsed = time.perf_counter() - start
    print(f"{len(tree.objects)} objects, {size / 2**20:.1f} MiB in {tree.root} ({elapsed:.1f} s)")
    for provider in ("s3", "gcs", "https"):
        print(f"  {provider}: {', '.join(tree.buckets(provider))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
