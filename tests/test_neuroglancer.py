"""Neuroglancer, driven in headless Chromium, opens a fetched cutout served statically.

An EM and a segmentation cutout are fetched from the local mirrors into DEST, DEST is served over
HTTP with CORS, and neuroglancer's own client (the PyPI package's bundled build, through its
Python `Viewer`) opens `precomputed://http://127.0.0.1:PORT/<canonical path>` for both layers.
Checked: both data sources load with no error, and the rendered pixels are the data. With a shader
that maps uint8 straight to grey, every EM voxel of the box is drawn at its own value; every
labelled voxel is drawn in neuroglancer's colour for its segment id. A wrong layer path must be
reported as an error by the same check (the negative control). The view is zoomed in (4 pixels per
voxel), where neuroglancer draws the fetched finest scale; zoomed out (4 voxels per pixel), it
must still draw it, as the local `info` leaves out the coarser scales that were not fetched.

Skipped when the `neuroglancer` / `selenium` packages or Debian's `chromium` + `chromium-driver`
are missing (`make install` installs them where it can). Set `MICRONS_GET_NG_SCREENSHOT=out.png`
to keep the screenshot of both layers.
"""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip(
    "neuroglancer", reason="the neuroglancer package is not installed (pip install '.[test]')"
)
pytest.importorskip(
    "selenium", reason="the selenium package is not installed (pip install '.[test]')"
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Chromium and ChromeDriver on PATH (Debian: apt-get install chromium "
    "chromium-driver; `make install` does it as root)",
)

import neuroglancer  # noqa: E402
import neuroglancer.segment_colors  # noqa: E402
import neuroglancer.webdriver  # noqa: E402
import tensorstore as ts  # noqa: E402
from PIL import Image  # noqa: E402

from microns_get.cli.app import run  # noqa: E402
from microns_get.testing.servers import handler_server  # noqa: E402

# The box, in 8,8,40 nm voxels: inside the mini EM (x 13824-14024, y 13824-13992, z 14816-14856)
# and the mini seg_m1300 (x 13848-14008, y 13840-13984, z 14820-14852), crossing chunks.
LO, HI = (13856, 13856, 14828), (13984, 13968, 14844)
BOX = ",".join(map(str, (*LO, *HI)))
Z = 14836  # the section drawn
ZOOM = 4  # screen pixels per voxel: the box fills 512 x 448 of the 800 x 600 viewport
SIZE = (800, 600)
CENTER = ((LO[0] + HI[0]) // 2, (LO[1] + HI[1]) // 2)
EM_PATH = "iarpa_microns/minnie/minnie65/em"  # canonical paths under DEST (README, Local layout)
SEG_PATH = "iarpa_microns/minnie/minnie65/seg_m1300"
GREY_SHADER = "void main() { emitGrayscale(toNormalized(getDataValue())); }"
TIMEOUT = 45.0  # generous upper bound for a load to finish; never asserted as a duration
CHROME_ARGS = [
    # what Chromium needs as root on a machine whose network is closed (no sandbox, no
    # background connections), plus software WebGL (SwiftShader) since there is no GPU
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]


class _CorsHandler(SimpleHTTPRequestHandler):
    """Static files with `Access-Control-Allow-Origin: *`: the viewer page is another origin."""

    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def dest(mirrors, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DEST after `microns-get fetch em --bbox` and `fetch seg --version 1300 --bbox`."""
    root = tmp_path_factory.mktemp("ng-dest")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in mirrors.env().items():
            mp.setenv(name, value)
        mp.delenv("MICRONS_GET_CONFIG", raising=False)
        mp.delenv("MICRONS_GET_STATE_DIR", raising=False)
        mp.setenv("HOME", str(tmp_path_factory.mktemp("ng-home")))
        for dataset in (["em"], ["seg", "--version", "1300"]):
            args = ["fetch", *dataset, "--bbox", BOX, "--bbox-resolution", "8,8,40"]
            assert run([*args, "--dest", str(root), "--quiet"]) == 0, dataset
    return root


@pytest.fixture(scope="module")
def served(dest: Path) -> Iterator[str]:
    """DEST over HTTP with CORS headers; yields the base URL."""
    with handler_server(functools.partial(_CorsHandler, directory=str(dest))) as url:
        yield url


class Browser:
    """A neuroglancer `Viewer` shown in headless Chromium, with the page's console kept."""

    def __init__(self, user_data_dir: Path) -> None:
        neuroglancer.set_server_bind_address("127.0.0.1")
        self.viewer = neuroglancer.Viewer()
        self.console: list[str] = []
        self.driver = neuroglancer.webdriver.Webdriver(
            self.viewer,
            headless=True,
            browser_binary_path=CHROMIUM,
            window_size=SIZE,
            print_logs=False,
            extra_command_line_args=[*CHROME_ARGS, f"--user-data-dir={user_data_dir}"],
        )
        self.driver.add_log_listener(lambda e: self.console.append(f"{e.level}: {e.text}"))

    def show(self, layers: dict[str, Any], zoom: float = ZOOM) -> None:
        """One xy section at `zoom` pixels per voxel, nothing drawn but the layers."""
        with self.viewer.txn() as s:
            s.dimensions = neuroglancer.CoordinateSpace(
                names=["x", "y", "z"], units="nm", scales=[8, 8, 40]
            )
            s.position = [CENTER[0], CENTER[1], Z + 0.5]  # the centre of section Z
            s.cross_section_scale = 1 / zoom
            s.layout = "xy"
            s.show_axis_lines = False
            s.show_scale_bar = False
            s.show_default_annotations = False
            s.layers.clear()
            for name, layer in layers.items():
                s.layers[name] = layer

    def layer_errors(self) -> dict[str, list[str]]:
        """Each layer's data-source errors ('' for a loaded source), once every source settled."""
        script = """
            return viewer.layerManager.managedLayers.map(m => [m.name, m.layer === null ? null :
              m.layer.dataSources.map(d => d.loadState === undefined ? null :
                (d.loadState.error ? String(d.loadState.error.message || d.loadState.error)
                                   : ''))]);
        """
        deadline = time.monotonic() + TIMEOUT
        while True:
            states = self.driver.driver.execute_script(script)
            settled = states and all(
                srcs is not None and srcs and all(e is not None for e in srcs) for _, srcs in states
            )
            if settled:
                return {name: srcs for name, srcs in states}
            if time.monotonic() > deadline:
                raise AssertionError(f"data sources never settled: {states}; {self.console}")
            time.sleep(0.1)

    def screenshot(self) -> tuple[np.ndarray, bytes]:
        """The viewport as RGB, taken by neuroglancer once every visible chunk has loaded."""
        with self.viewer.config_state.txn() as s:
            s.show_ui_controls = False
            s.show_panel_borders = False
            s.viewer_size = list(SIZE)
        for _ in range(5):  # the first one may still have the old canvas size
            shot = self._screenshot_once()
            if (shot.width, shot.height) == SIZE:
                break
        png = shot.image
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), png

    def _screenshot_once(self) -> Any:
        """neuroglancer's client answers a screenshot request when nothing is left to load;
        unlike `Viewer.screenshot`, give up after `TIMEOUT` rather than wait forever."""
        done, got = threading.Event(), []
        self.viewer.async_screenshot(lambda reply: (got.append(reply), done.set()))
        assert done.wait(TIMEOUT), f"neuroglancer never finished loading: {self.console}"
        return got[0].screenshot

    def close(self) -> None:
        self.driver.driver.quit()
        neuroglancer.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with pytest.MonkeyPatch.context() as mp:
        # the Debian driver, named to selenium: its Selenium Manager would look for one online
        mp.setenv("SE_CHROMEDRIVER", str(CHROMEDRIVER))
        b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield b
    finally:
        b.close()


def image(url: str) -> Any:
    return neuroglancer.ImageLayer(source=f"precomputed://{url}", shader=GREY_SHADER)


def segmentation(url: str, **kwargs: Any) -> Any:
    return neuroglancer.SegmentationLayer(source=f"precomputed://{url}", **kwargs)


def segment_rgb(segment_id: int) -> tuple[int, int, int]:
    """Neuroglancer's default colour of a segment (colour seed 0)."""
    hexa = neuroglancer.segment_colors.hex_string_from_segment_id(0, segment_id)
    return int(hexa[1:3], 16), int(hexa[3:5], 16), int(hexa[5:7], 16)


def expected_section(url: str) -> np.ndarray:
    """Section Z of the box (x, y), read by tensorstore from the remote the cutout came from."""
    spec = {"driver": "neuroglancer_precomputed", "kvstore": {"driver": "http", "base_url": url}}
    store = ts.open(spec, read=True).result()
    return store[LO[0] : HI[0], LO[1] : HI[1], Z, 0].read().result()


def drawn(rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The pixel at the middle of each voxel of the box's section: (x, y, 3)."""
    xs = SIZE[0] // 2 + (np.arange(LO[0], LO[0] + shape[0]) - CENTER[0]) * ZOOM + ZOOM // 2
    ys = SIZE[1] // 2 + (np.arange(LO[1], LO[1] + shape[1]) - CENTER[1]) * ZOOM + ZOOM // 2
    return rgb[ys[None, :], xs[:, None]].astype(int)


def test_neuroglancer_draws_the_fetched_em_and_segmentation(mirrors, served, browser) -> None:
    em_url, seg_url = f"{served}/{EM_PATH}", f"{served}/{SEG_PATH}"
    # the remote copies: S3 keeps the path under bucket bossdb-open-data, GCS's bucket is
    # iarpa_microns (README, Local layout)
    em_want = expected_section(f"{mirrors.s3_endpoint}/bossdb-open-data/{EM_PATH}/")
    seg_want = expected_section(f"{mirrors.gcs_endpoint}/{SEG_PATH}/")
    assert em_want.std() > 5 and len(np.unique(seg_want)) > 5, "the box should hold data"

    # EM alone: with the identity grey shader every voxel is drawn at its own value
    browser.show({"em": image(em_url)})
    assert browser.layer_errors() == {"em": [""]}
    em_rgb, _ = browser.screenshot()
    em_got = drawn(em_rgb, em_want.shape)
    assert (em_got[..., 0] == em_got[..., 1]).all() and (em_got[..., 1] == em_got[..., 2]).all()
    diff = np.abs(em_got[..., 0] - em_want.astype(int))
    assert diff.max() <= 1, f"{(diff > 1).mean():.1%} of EM voxels drawn wrong"

    # segmentation alone: every labelled voxel in neuroglancer's own colour for its id (the
    # colours hash 16 bits, so two ids may share one; the id -> colour map is what is checked)
    browser.show({"seg": segmentation(seg_url, selected_alpha=1.0)})
    assert browser.layer_errors() == {"seg": [""]}
    seg_rgb, _ = browser.screenshot()
    seg_got = drawn(seg_rgb, seg_want.shape)
    colour = {int(i): segment_rgb(int(i)) for i in np.unique(seg_want) if i != 0}
    assert len(colour) > 5
    want_rgb = np.array([[colour.get(int(i), (-1, -1, -1)) for i in col] for col in seg_want])
    labelled = seg_want != 0
    bad = np.abs(seg_got - want_rgb).max(axis=-1)[labelled] > 1
    assert not bad.any(), f"{bad.mean():.1%} of labelled voxels drawn in another colour"

    # both, as a person would open them: differs from each alone
    browser.show({"em": image(em_url), "seg": segmentation(seg_url)})
    assert browser.layer_errors() == {"em": [""], "seg": [""]}
    both_rgb, png = browser.screenshot()
    assert not np.array_equal(both_rgb, em_rgb) and not np.array_equal(both_rgb, seg_rgb)
    keep = os.environ.get("MICRONS_GET_NG_SCREENSHOT")
    if keep:
        Path(keep).write_bytes(png)


def test_zoomed_out_past_the_fetched_scale_the_data_still_shows(dest, served, browser) -> None:
    """At 4 voxels per pixel neuroglancer would draw a coarser scale of the remote, which was not
    fetched; the local info leaves such scales out, so it draws the fetched one instead of an
    empty one (black)."""
    info = json.loads((dest / EM_PATH / "info").read_text())
    assert [s["key"] for s in info["scales"]] == ["8_8_40"]
    browser.show({"em": image(f"{served}/{EM_PATH}")}, zoom=1 / 4)
    assert browser.layer_errors() == {"em": [""]}
    rgb, _ = browser.screenshot()
    # the box's section, 128 x 112 voxels, is 32 x 28 pixels around the viewport's centre
    middle = rgb[SIZE[1] // 2 - 12 : SIZE[1] // 2 + 12, SIZE[0] // 2 - 14 : SIZE[0] // 2 + 14, 0]
    assert (middle > 0).mean() > 0.9, "the fetched data is not drawn when zoomed out"


def test_a_wrong_layer_path_is_reported(served, browser) -> None:
    """The negative control: the error check above sees a layer that does not open. The path
    keeps the S3 bucket name, which the local layout drops."""
    browser.show(
        {"em": image(f"{served}/bossdb-open-data/{EM_PATH}"), "seg": segmentation(f"{served}/x")}
    )
    errors = browser.layer_errors()
    assert set(errors) == {"em", "seg"}
    for name, sources in errors.items():
        assert sources and all(sources), f"{name}: a wrong path loaded without error: {errors}"
