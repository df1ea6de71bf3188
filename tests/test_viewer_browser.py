"""The viewer page (GET /) in a real headless Chromium, driven by Playwright, against the real app over
HTTP with the tiny seeded model: a photo goes in, the GLB shows on the canvas, errors read well.

Chromium is Debian's (installed here with apt-get when missing and possible); WebGL runs on
SwiftShader, so no GPU is needed. FACERECON_VIEWER_SCREENSHOT=docs/viewer.png also saves a screenshot
of the whole page after the reconstruction, and FACERECON_VIEWER_MODEL_STORE=model_store serves the
shipped model instead of the tiny one; the README's picture is made with both:

    FACERECON_VIEWER_MODEL_STORE=model_store FACERECON_VIEWER_SCREENSHOT=docs/viewer.png \
        .venv/bin/python -m pytest tests/test_viewer_browser.py -k photo_becomes
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from service.app import create_app
from service.settings import Settings
from service_fixtures import apt_install, build_viewer, http_server, photo_path, tiny_store

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (dev extra) is not installed")

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_ARGS = [
    # Software WebGL (ANGLE on SwiftShader): the same pixels with or without a GPU.
    "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--no-sandbox",  # the tests run as root in CI, where Chromium's sandbox refuses to start
    # The machines' network is closed: keep Chromium from trying its own services at every start.
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
]
STATE = "document.body.dataset.state"
BLANK_STD = 1.0    # grey-level standard deviation of the empty canvas (one background colour)
FACE_STD = 5.0     # at least this with a face drawn on it
LOAD_TIMEOUT_MS = 45_000
CHANGED_GREY = 8.0         # a pixel counts as changed past this many grey levels (antialiasing noise is less)
# Share of the canvas that jaw open 0 -> 1 must change: measured 0.27 % (the tiny model, einstein.jpg, whose
# fitted jawOpen is ~0); 0 without the slider's move.
JAW_CHANGED_SHARE = 0.001
# Share of the canvas that region face -> head must change (the head framed whole: the whole picture moves).
REGION_CHANGED_SHARE = 0.05


def find_chromium() -> str | None:
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


@pytest.fixture(scope="module")
def chromium_path() -> str:
    path = find_chromium()
    if path is None:
        apt_install("chromium")
        path = find_chromium()
    if path is None:
        pytest.skip(f"no Chromium ({', '.join(CHROMIUM_NAMES)}) on PATH, and apt-get could not install it")
    return path


@pytest.fixture(scope="module")
def base_url(tmp_path_factory, kit):
    build_viewer()
    # Default detection settings (YuNet), as a user gets them.
    store = os.environ.get("FACERECON_VIEWER_MODEL_STORE") or tiny_store(tmp_path_factory, kit)
    app = create_app(Settings(model_store=store, default_texture_size=128,
                              job_store=str(tmp_path_factory.mktemp("viewer_jobs") / "jobs.db")))
    with http_server(app) as url:
        yield url


def unnamed_store(root: Path, store: Path) -> Path:
    """A copy of ``store`` whose topology has no expression names and no ICT taps (so the mesh is the UV
    grid, not ICT's, whose targets the service's head asset names): its GLBs cannot carry named morph
    targets, so the server refuses ``morph_targets=true`` (400), as for a store without an expression basis."""
    shutil.copytree(store, root, dirs_exist_ok=True)
    (manifest_path,) = root.rglob("manifest.json")
    topology_path = manifest_path.parent / "topology.npz"
    with np.load(topology_path) as topology:
        arrays = {key: topology[key] for key in topology.files
                  if key != "expression_names" and not key.startswith("ict_")}
    assert len(arrays) < len(topology.files), "the tiny store has no expression names to take away"
    np.savez(topology_path, **arrays)
    manifest = json.loads(manifest_path.read_text())
    data = topology_path.read_bytes()
    manifest["files"]["topology.npz"].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    manifest_path.write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def browser(chromium_path):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.messages = []  # console errors and uncaught exceptions, checked by each test
    page.on("console", lambda message: message.type == "error" and page.messages.append(message.text))
    page.on("pageerror", lambda error: page.messages.append(f"uncaught: {error}"))
    yield page
    page.close()


def grey(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)


def grey_std(png: bytes) -> float:
    return float(grey(png).std())


def open_viewer(page, base_url: str) -> None:
    page.goto(base_url + "/")
    page.wait_for_function(f"{STATE} === 'ready'", timeout=15_000)


def test_a_photo_becomes_a_face_on_the_canvas(page, base_url):
    einstein = photo_path("einstein.jpg")
    if not einstein.is_file():
        pytest.skip(f"real photo {einstein} absent")
    open_viewer(page, base_url)
    canvas = page.locator("#canvas")
    assert grey_std(canvas.screenshot()) < BLANK_STD  # the check below means something

    page.set_input_files("#image", str(einstein))
    page.select_option("#mesh", "expression")
    page.click("#submit")
    page.wait_for_function(f"['loaded', 'error'].includes({STATE})", timeout=LOAD_TIMEOUT_MS)
    assert page.evaluate(STATE) == "loaded", page.text_content("#status")

    assert grey_std(canvas.screenshot()) > FACE_STD
    facts = dict(zip(page.locator("#facts dt").all_text_contents(), page.locator("#facts dd").all_text_contents()))
    if not os.environ.get("FACERECON_VIEWER_MODEL_STORE"):
        assert facts["model"] == "tiny 0.0.1", facts
    assert facts["faces"] == "1" and facts["landmarks"] == "68", facts
    assert page.locator("#blendshapes li").count() == 5
    assert page.get_attribute("#download-glb", "href").startswith("blob:")
    with page.expect_download() as download:
        page.click("#download-obj")
    assert download.value.suggested_filename == "face.zip"
    assert not page.messages, page.messages

    if screenshot := os.environ.get("FACERECON_VIEWER_SCREENSHOT"):
        page.screenshot(path=screenshot, full_page=True)


def test_the_sliders_drive_the_morph_targets(page, base_url):
    einstein = photo_path("einstein.jpg")
    if not einstein.is_file():
        pytest.skip(f"real photo {einstein} absent")
    open_viewer(page, base_url)
    assert page.locator("#morphs").is_hidden()  # no GLB, no targets to drive
    page.set_input_files("#image", str(einstein))
    page.click("#submit")
    page.wait_for_function(f"['loaded', 'error'].includes({STATE})", timeout=LOAD_TIMEOUT_MS)
    assert page.evaluate(STATE) == "loaded", page.text_content("#status")

    # The page asked for the morph targets; each slider starts at the fitted weights (the GLB's defaults).
    assert page.locator("#morphs").is_visible() and page.locator("#morphs .morph:visible").count() == 3
    fitted = httpx.post(base_url + "/v1/reconstruct", files={"image": einstein.read_bytes()},
                        data={"format": "json"}, timeout=60).json()["faces"][0]["blendshapes"]
    for slider, names in [("jaw", ["jawOpen"]), ("smile", ["mouthSmile_L", "mouthSmile_R"]),
                          ("blink", ["eyeBlink_L", "eyeBlink_R"])]:
        value = float(page.input_value(f"#morph-{slider}"))
        assert abs(value - np.mean([fitted[name] for name in names])) <= 0.005, (slider, value, fitted)
    assert float(page.input_value("#morph-jaw")) <= 0.9  # so that moving it to 1 means something

    # Jaw open to 1 from the keyboard: the slider has a label to find it by, and the face on the canvas moves.
    canvas = page.locator("#canvas")
    before = grey(canvas.screenshot())
    assert np.array_equal(grey(canvas.screenshot()), before)  # nothing but the slider changes the pixels
    page.get_by_label("Jaw open").press("End")
    assert page.input_value("#morph-jaw") == "1" and page.text_content("output[for=morph-jaw]") == "1.00"
    changed = np.abs(grey(canvas.screenshot()) - before) > CHANGED_GREY
    assert changed.mean() > JAW_CHANGED_SHARE, f"{changed.mean():.4%} of the canvas changed"
    assert not page.messages, page.messages


def test_the_region_control_asks_for_the_head_and_the_canvas_changes(page, base_url):
    """Region "head" is sent as the ``region`` parameter of every request the page makes, and the head
    (ears, neck, back of the head: framed whole, so the face is drawn smaller) replaces the face."""
    einstein = photo_path("einstein.jpg")
    if not einstein.is_file():
        pytest.skip(f"real photo {einstein} absent")
    open_viewer(page, base_url)
    # What the page's requests carry as `region` (Playwright does not see a FormData body's parts).
    page.evaluate("""() => {
        window.sentRegions = [];
        const send = window.fetch;
        window.fetch = (url, init) => {
            // three.js fetches the GLB's textures too (blob: addresses, no body)
            if (init?.body instanceof FormData) window.sentRegions.push(init.body.get("region"));
            return send(url, init);
        };
    }""")
    sent = lambda: page.evaluate("window.sentRegions.splice(0)")  # noqa: E731
    canvas = page.locator("#canvas")
    page.set_input_files("#image", str(einstein))
    assert page.input_value("#region") == "face"  # the API's default
    page.click("#submit")
    page.wait_for_function(f"['loaded', 'error'].includes({STATE})", timeout=LOAD_TIMEOUT_MS)
    assert page.evaluate(STATE) == "loaded", page.text_content("#status")
    face = grey(canvas.screenshot())
    regions = sent()
    assert regions and set(regions) == {"face"}, regions

    page.get_by_label("Region").select_option("head")
    page.click("#submit")  # the submit handler sets "working" before its first await, so not "loaded" now
    page.wait_for_function(f"['loaded', 'error'].includes({STATE})", timeout=LOAD_TIMEOUT_MS)
    assert page.evaluate(STATE) == "loaded", page.text_content("#status")
    regions = sent()
    assert regions and set(regions) == {"head"}, regions
    head = grey(canvas.screenshot())
    assert float(head.std()) > FACE_STD
    changed = np.abs(head - face) > CHANGED_GREY
    assert changed.mean() > REGION_CHANGED_SHARE, f"{changed.mean():.4%} of the canvas changed"
    assert not page.messages, page.messages


def test_a_model_without_morph_targets_shows_no_sliders(page, tmp_path_factory, kit):
    einstein = photo_path("einstein.jpg")
    if not einstein.is_file():
        pytest.skip(f"real photo {einstein} absent")
    store = unnamed_store(tmp_path_factory.mktemp("unnamed_store"), tiny_store(tmp_path_factory, kit))
    app = create_app(Settings(model_store=store, default_texture_size=32,
                              job_store=str(tmp_path_factory.mktemp("unnamed_jobs") / "jobs.db")))
    with http_server(app) as url:
        open_viewer(page, url)
        page.set_input_files("#image", str(einstein))
        page.click("#submit")
        page.wait_for_function(f"['loaded', 'error'].includes({STATE})", timeout=LOAD_TIMEOUT_MS)
        assert page.evaluate(STATE) == "loaded", page.text_content("#status")
    # The page fell back on the plain GLB: the face is there, the sliders are not.
    assert grey_std(page.locator("#canvas").screenshot()) > FACE_STD
    assert page.locator("#morphs").is_hidden()
    # The browser logs the refused request (morph_targets=true) itself; nothing else may have gone wrong.
    assert page.messages and all("status of 400" in text for text in page.messages), page.messages


def test_a_dropped_file_that_is_no_image_gets_the_problem_title_and_detail(page, base_url):
    open_viewer(page, base_url)
    dropped = page.evaluate_handle("""() => {
        const data = new DataTransfer();
        data.items.add(new File(["not an image"], "notes.txt", { type: "text/plain" }));
        return data;
    }""")
    page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
    assert page.text_content("#drop-text") == "notes.txt"
    page.click("#submit")
    page.wait_for_function(f"{STATE} === 'error'", timeout=15_000)
    message = page.text_content("#status")
    assert "Not a supported image (415)" in message and "JPEG, PNG" in message, message
    # The browser logs the failed request itself; nothing else may have gone wrong.
    assert all("status of 415" in text for text in page.messages), page.messages
