"""Helpers for the service tests: a tiny seeded model store, test images, the viewer build, a real server."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "eval" / "photos"


def build_tiny_store(root: Path, kit) -> Path:
    """Export seeded tiny networks (meaningless outputs, right shapes) into ``root``; returns root."""
    import torch

    from training.export.onnx import export_model_store
    from training.facemodel import UVFaceModel
    from training.models import AlbedoModel, GeometryStream, TextureStream, tiny

    torch.manual_seed(0)
    cfg = tiny()
    geo = GeometryStream(cfg.geometry)
    tex = TextureStream(cfg.texture, AlbedoModel.placeholder(cfg.texture.albedo_dim, cfg.texture.uv_size))
    export_model_store(geo, tex, cfg, root, "tiny", "0.0.1", face_model=UVFaceModel.build(64, kit))
    return root


_STORES: dict[str, Path] = {}
# Loading a store (the head asset above all) took over 60 s on a 2-core machine at load average 5;
# a store that never loads fails on app.state.load_error at once, so a long wait costs nothing.
READY_TIMEOUT_S = 180.0


def tiny_store(tmp_path_factory, kit) -> Path:
    """The tiny store, built once per test session however many test modules ask for it."""
    if "tiny" not in _STORES:
        _STORES["tiny"] = build_tiny_store(tmp_path_factory.mktemp("service_store"), kit)
    return _STORES["tiny"]


@contextlib.contextmanager
def ready_client(app, timeout_s: float = READY_TIMEOUT_S) -> Iterator:
    """A TestClient inside the app's lifespan, once the model is loaded and warm."""
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client.get, app, timeout_s)
        yield client


@contextlib.contextmanager
def tiny_client(tmp_path_factory, kit, jobs: str, **settings) -> Iterator:
    """A ready client of the real app serving the tiny store, its job store in a fresh folder named
    ``jobs``; ``settings`` are further Settings fields."""
    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(model_store=tiny_store(tmp_path_factory, kit),
                              job_store=str(tmp_path_factory.mktemp(jobs) / "jobs.db"), **settings))
    with ready_client(app) as client:
        yield client


def wait_ready(get, app, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while get("/v2/health/ready").status_code != 200:
        assert app.state.load_error is None, app.state.load_error
        assert time.monotonic() < deadline, "model did not become ready"
        time.sleep(0.05)


def photo_bytes(name: str = "JianzhuGuo.jpg") -> bytes:
    path = photo_path(name)
    if not path.is_file():
        pytest.skip(f"real photo {path} absent (the shared eval photos are not checked out)")
    return path.read_bytes()


def photo_path(name: str = "JianzhuGuo.jpg") -> Path:
    return PHOTOS / name


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


PROBLEM = "application/problem+json"


def post(client, data: bytes, filename: str = "photo.jpg", **options):
    return client.post("/v1/reconstruct", files={"image": (filename, data, "application/octet-stream")},
                       data={k: str(v) for k, v in options.items()})


def assert_problem(response, status: int, slug: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    if slug:
        assert body["type"].endswith("/" + slug), body
    return body


def noise_image(mode: str = "RGB", size: tuple[int, int] = (200, 160), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    return rgb if mode == "RGB" else rgb.convert(mode)


VIEWER_DIR = Path(__file__).resolve().parents[1] / "service" / "viewer"
_VIEWER_BUILT: list[bool] = []


def _viewer_installed() -> bool:
    """Whether node_modules already holds exactly what package-lock.json pins (npm's own record of the
    install, node_modules/.package-lock.json, lists the same packages at the same versions)."""
    installed = VIEWER_DIR / "node_modules" / ".package-lock.json"
    if not installed.is_file():
        return False
    want = json.loads((VIEWER_DIR / "package-lock.json").read_text())["packages"]
    have = json.loads(installed.read_text())["packages"]
    pinned = {k: v.get("version") for k, v in want.items() if k.startswith("node_modules/")}
    return pinned == {k: v.get("version") for k, v in have.items() if k.startswith("node_modules/")}


def build_viewer() -> Path:
    """``npm ci`` in service/viewer (once per test session, unless the pinned packages are installed
    already): three.js as its lockfile pins it."""
    if not _VIEWER_BUILT and _viewer_installed():
        _VIEWER_BUILT.append(True)
    if not _VIEWER_BUILT:
        npm = shutil.which("npm")
        if not npm:
            pytest.skip("npm is needed to install the viewer's three.js (service/viewer/package.json)")
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=VIEWER_DIR, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, f"npm ci failed in {VIEWER_DIR}:\n{done.stderr}"
        _VIEWER_BUILT.append(True)
    return VIEWER_DIR / "node_modules"


@contextlib.contextmanager
def http_server(app, timeout_s: float = READY_TIMEOUT_S) -> Iterator[str]:
    """The app under a real uvicorn on a free port of 127.0.0.1, once ready; yields the base URL."""
    import httpx
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        url = "http://127.0.0.1:{}".format(server.servers[0].sockets[0].getsockname()[1])
        wait_ready(lambda path: httpx.get(url + path, timeout=5), app, timeout_s)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def free_port() -> int:
    """A TCP port of 127.0.0.1 free now, for a server the test starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def apt_install(package: str) -> None:
    """apt-get install ``package``, where we may (root on a Debian-like machine); silent when we may not,
    so the test that needs it skips with its own reason."""
    apt = shutil.which("apt-get")
    if not apt or os.geteuid() != 0:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([apt, "update", "-qq"], env=env, capture_output=True, timeout=300)
    subprocess.run([apt, "install", "-y", "-qq", package], env=env, capture_output=True, timeout=600)


def debian_tool(binary: str, package: str) -> str:
    """The path of ``binary``, installing Debian's ``package`` when it is missing and we may; skips the
    test with the reason when it stays missing."""
    path = shutil.which(binary)
    if path is None:
        apt_install(package)
        path = shutil.which(binary)
    if path is None:
        pytest.skip(f"no {binary} on PATH, and apt-get could not install Debian's {package}")
    return path
