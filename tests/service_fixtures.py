"""Helpers for the service tests: a tiny seeded model store and test images."""

from __future__ import annotations

import contextlib
import io
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


def tiny_store(tmp_path_factory, kit) -> Path:
    """The tiny store, built once per test session however many test modules ask for it."""
    if "tiny" not in _STORES:
        _STORES["tiny"] = build_tiny_store(tmp_path_factory.mktemp("service_store"), kit)
    return _STORES["tiny"]


@contextlib.contextmanager
def ready_client(app, timeout_s: float = 60.0) -> Iterator:
    """A TestClient inside the app's lifespan, once the model is loaded and warm."""
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client.get, app, timeout_s)
        yield client


def wait_ready(get, app, timeout_s: float = 60.0) -> None:
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


def noise_image(mode: str = "RGB", size: tuple[int, int] = (200, 160), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    return rgb if mode == "RGB" else rgb.convert(mode)
