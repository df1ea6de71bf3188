"""Stages ``heatmaps``/``texture`` inputs and the texture composition by option.

``albedo`` is the texture stream's delit output; ``shaded`` multiplies it by the estimated SH
lighting (p_l, fixed relative to the camera, so normals are taken in the view frame); ``photo`` is
the photo itself unwrapped into UV at the output resolution, with unseen texels from the albedo.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .asm_decode import FaceGeometry
from .topology import MeshTopology
from .unwrap import Unwrap

TEXTURE_KINDS = ("albedo", "shaded", "photo")

# Lambertian SH basis constants (Ramamoorthi & Hanrahan), the order and signs of training.render.shading.
_A = (math.pi, 2 * math.pi / math.sqrt(3.0), 2 * math.pi / math.sqrt(8.0))
_C = (1 / math.sqrt(4 * math.pi), math.sqrt(3.0) / math.sqrt(4 * math.pi), 3 * math.sqrt(5.0) / math.sqrt(12 * math.pi))


def sh_basis(normals: np.ndarray) -> np.ndarray:
    """(..., 3) unit normals -> (..., 9) Lambertian-convolved SH basis."""
    x, y, z = normals[..., 0], normals[..., 1], normals[..., 2]
    a0c0, a1c1, a2c2 = _A[0] * _C[0], _A[1] * _C[1], _A[2] * _C[2]
    return np.stack([np.full_like(x, a0c0), -a1c1 * y, a1c1 * z, -a1c1 * x, a2c2 * x * y, -a2c2 * y * z,
                     0.5 * a2c2 / math.sqrt(3.0) * (3 * z * z - 1), -a2c2 * x * z, 0.5 * a2c2 * (x * x - y * y)], -1)


def compose_texture(kind: str, albedo: np.ndarray, geo: FaceGeometry, unwrapped: Unwrap, topo: MeshTopology,
                    photo: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 3) uint8 texture in the UV layout (row 0 = top = v near 1).

    albedo: (3, S, S) float in [0, 1], the texture graph's output for this face.
    """
    base = resize(albedo.transpose(1, 2, 0), size)
    if kind == "albedo":
        out = base
    elif kind == "shaded":
        normals = np.zeros((topo.size, topo.size, 3))
        normals[..., 2] = 1.0  # outside the mask only bleeds into texture filtering; face the camera
        normals[topo.rows, topo.cols] = unwrapped.normals_view
        shading = sh_basis(normals) @ geo.lighting  # (S, S, 3)
        out = base * np.clip(resize(shading, size), 0.0, None)
    elif kind == "photo":
        out = unwrap_photo(photo, unwrapped, geo, size, base)
    else:
        raise ValueError(f"unknown texture kind {kind!r}")
    return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def unwrap_photo(photo: np.ndarray, unwrapped: Unwrap, geo: FaceGeometry, size: int, fill: np.ndarray) -> np.ndarray:
    """The full-resolution photo sampled at each texel's projected position; unseen texels from ``fill``."""
    photo_xy = photo_positions(unwrapped, geo, size).astype(np.float32)
    # cv2.remap indexes pixel centres at integers; ours sit at +0.5.
    sampled = cv2.remap(photo, photo_xy[..., 0] - 0.5, photo_xy[..., 1] - 0.5, cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE).astype(np.float64) / 255.0
    seen = resize(unwrapped.visibility.astype(np.float64), size)[..., None]
    return seen * sampled + (1.0 - seen) * fill


def photo_positions(unwrapped: Unwrap, geo: FaceGeometry, size: int) -> np.ndarray:
    """(size, size, 2) photo pixels (x, y) each texel projects to, the UV grid's positions resized
    (texel centres aligned) to the output resolution."""
    crop_xy = (unwrapped.uv_grid.astype(np.float64) + 1.0) * geo.crop.size / 2.0
    return resize(geo.crop.to_photo(crop_xy), size)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """(S, S, C) or (S, S) float map -> (size, size, ...) bilinear, pixel centres aligned."""
    if image.shape[0] == size:
        return image.astype(np.float64)
    return cv2.resize(image.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float64)
