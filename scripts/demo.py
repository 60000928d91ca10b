#!/usr/bin/env python3
"""`make demo`: the main job on an embedded default.

The public buckets are out of reach here, so this generates a small mini-MICrONS (real bucket
names, prefixes and layouts, written by tensorstore / cloud-volume), serves it from local S3
(moto), GCS (fake-gcs-server) and HTTP servers on 127.0.0.1, points microns-get at them with the
MICRONS_GET_* environment variables, and runs the commands a user would.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(args: list[str], env: dict[str, str]) -> None:
    print(f"\n$ microns-get {shlex.join(args)}", flush=True)
    command = [sys.executable, "-m", "microns_get", *args]
    result = subprocess.run(command, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(f"demo step failed with exit code {result.returncode}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "demo-output"), help="where data lands")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    os.environ.setdefault("CLOUD_VOLUME_DIR", tempfile.mkdtemp(prefix="cv-"))
    os.environ.setdefault("CLOUD_FILES_DIR", os.environ["CLOUD_VOLUME_DIR"])

    from microns_get.testing.minimicrons import generate
    from microns_get.testing.servers import local_mirrors

    with tempfile.TemporaryDirectory(prefix="mini-microns-") as seed_dir:
        print("generating mini-MICrONS (tensorstore + cloud-volume writers) ...", flush=True)
        seed = generate(Path(seed_dir))
        with local_mirrors(seed) as mirrors:
            env = {**os.environ, **mirrors.env(), "MICRONS_GET_DEST": str(out)}
            env.pop("MICRONS_GET_CONFIG", None)
            print("local mirrors:", ", ".join(f"{k}={v}" for k, v in mirrors.env().items()))
            run(["list", "--volume", "minnie65"], env)
            run(["info", "seg", "--version", "1300"], env)
            run(["info", "em"], env)
            run(["info", "nucleus-detection"], env)
            run(["fetch", "nucleus-detection"], env)
            run(["fetch", "skeletons", "--version", "1300", "--part", "proofread"], env)
            # A cutout, in the 4,4,40 nm frame of every MICrONS table: EM and its segmentation.
            box = "27700,27700,14822,28000,27950,14850"
            run(["plan", "seg", "--version", "1300", "--bbox", box], env)
            run(["fetch", "em", "--bbox", box], env)
            run(["fetch", "seg", "--version", "1300", "--bbox", box], env)
            mesh_id = str(seed.meta["m1300_mesh_ids"][0])
            run(["fetch", "seg", "--version", "1300", "--segments", mesh_id, "--meshes"], env)
            run(["verify", str(out)], env)
            layers = out / "iarpa_microns/minnie/minnie65"
            preview = out / "preview.png"
            run(
                [
                    "preview",
                    str(layers / "em"),
                    "--seg",
                    str(layers / "seg_m1300"),
                    "--out",
                    str(preview),
                ],
                env,
            )
    print(f"\noutput: {out}")
    files = sorted(p for p in out.rglob("*") if p.is_file() and ".microns-get" not in p.parts)
    for path in files[:12]:
        print(f"  {path.relative_to(out)}  ({path.stat().st_size} bytes)")
    if len(files) > 12:
        print(f"  ... and {len(files) - 12} more files")
    print(f"open the cutout: CloudVolume('file://{out}/iarpa_microns/minnie/minnie65/em')")


if __name__ == "__main__":
    main()
