"""Shared fixtures: the generated mini-MICrONS and local S3/GCS/HTTP servers seeded with it.

* `mini_microns` (session): a `SeedTree`, generated once into a session temp dir. Set
  `MICRONS_GET_MINI_DIR=/some/dir` to reuse a tree made by `scripts/make_mini_microns.py`
  (it is regenerated there if missing or from another generator version).
* `mirrors` (session): `Mirrors` with `s3_endpoint`, `gcs_endpoint`, `http_base` and `env()`.
* `mirror_env` (function): the `mirrors.env()` variables set, `MICRONS_GET_CONFIG` unset and
  `HOME` pointed at a temp dir so no user config leaks in; returns the `Mirrors`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# CloudVolume creates ~/.cloudvolume/secrets on import: keep it in a scratch dir. This must run
# before anything imports cloudvolume, which is why it is at conftest import time.
_CV_DIR = Path(tempfile.gettempdir()) / "microns-get-tests-cloudvolume"
os.environ.setdefault("CLOUD_VOLUME_DIR", str(_CV_DIR))
os.environ.setdefault("CLOUD_FILES_DIR", str(_CV_DIR))

from microns_get.testing.minimicrons import GENERATOR_VERSION, generate  # noqa: E402
from microns_get.testing.seedtree import SeedTree  # noqa: E402
from microns_get.testing.servers import Mirrors, local_mirrors  # noqa: E402

PROXY_VARIABLES = [
    f"{name}{suffix}" for name in ("http", "https", "all", "no") for suffix in ("_proxy", "_PROXY")
]


@pytest.fixture(autouse=True)
def no_proxy_from_the_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests talk to servers on 127.0.0.1: a proxy set on the machine must not come between
    (tests/test_http_proxy.py sets its own)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session", autouse=True)
def catalog_cache_of_the_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The parsed-catalogue cache goes to a directory of this test session (every CLI run in a
    subprocess inherits it), not to the user's ~/.cache."""
    saved = os.environ.get("MICRONS_GET_CACHE_DIR")
    os.environ["MICRONS_GET_CACHE_DIR"] = str(tmp_path_factory.mktemp("catalog-cache"))
    yield
    if saved is None:
        os.environ.pop("MICRONS_GET_CACHE_DIR", None)
    else:
        os.environ["MICRONS_GET_CACHE_DIR"] = saved


def _reusable(root: Path) -> bool:
    try:
        meta = json.loads((root / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("generator_version") == GENERATOR_VERSION and (root / "objects.json").exists()


@pytest.fixture(scope="session")
def mini_microns(tmp_path_factory: pytest.TempPathFactory) -> SeedTree:
    """The generated mini-MICrONS (objects, expected arrays, metadata)."""
    cached = os.environ.get("MICRONS_GET_MINI_DIR")
    if cached:
        root = Path(cached)
        return SeedTree.load(root) if _reusable(root) else generate(root)
    return generate(tmp_path_factory.mktemp("mini-microns"))


@pytest.fixture(scope="session")
def mirrors(mini_microns: SeedTree) -> Iterator[Mirrors]:
    """moto (S3), fake-gcs-server (GCS) and a static HTTP server, seeded with `mini_microns`."""
    with local_mirrors(mini_microns) as running:
        yield running


@pytest.fixture
def mirror_env(mirrors: Mirrors, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Mirrors:
    """Point microns-get at the local mirrors, with no user config in reach."""
    for name, value in mirrors.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MICRONS_GET_CONFIG", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return mirrors


@pytest.fixture(scope="session")
def scratch_endpoint() -> Iterator[str]:
    """A moto S3 server that tests may change (each test module's `scratch` fixture resets and
    seeds it); the session's `mirrors` stay read-only."""
    from microns_get.testing.servers import moto_server

    with moto_server() as url:
        yield url


@pytest.fixture
def upstream_proxy(upstream: str):
    """A fault proxy in front of the module's own `upstream` server (a URL fixture)."""
    from microns_get.testing.faultproxy import FaultProxy

    with FaultProxy(upstream) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def proxy(scratch, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A fault proxy in front of the module's `scratch` S3, with microns-get pointed at it."""
    from microns_get.testing.faultproxy import FaultProxy

    with FaultProxy(scratch.endpoint) as fault_proxy:
        monkeypatch.setenv("MICRONS_GET_S3_ENDPOINT", fault_proxy.url)
        monkeypatch.delenv("MICRONS_GET_CONFIG", raising=False)
        monkeypatch.delenv("MICRONS_GET_STATE_DIR", raising=False)
        monkeypatch.setenv("HOME", str(tmp_path))
        yield fault_proxy
