"""Helpers for the service tests: a tiny seeded model store and test images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
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
