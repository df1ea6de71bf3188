"""How visible the ``photo`` texture's seam is: where the photo gives way to the albedo fill.

The seam runs along the edge of the unwrap's visibility (inside the UV mask, away from its border).
Two figures per texture, each against a reference inside the same texture:

* edge contrast: the mean colour gradient within ``reach`` texels of the seam line over the mean
  gradient of the seen texels farther away (1: the seam band is no sharper than the face's own detail);
* step: the mean absolute colour difference between the texels ``reach`` texels either side of the
  seam, across it (what remains once the edge itself is softened: a brightness or colour mismatch),
  beside the same difference between seen texels ``2 reach`` apart away from the seam (the photo's own).
"""

from __future__ import annotations

import cv2
import numpy as np

from service.engine.texture import resize


def seam_figures(texture: np.ndarray, visibility: np.ndarray, uv_mask: np.ndarray, reach: int = 16,
                 margin: int = 6) -> dict[str, float] | None:
    """texture: (T, T, 3) uint8 or float in [0, 1]; visibility, uv_mask: (S, S) bool at the unwrap's
    resolution. None when the visibility has no edge inside the mask (a face seen whole)."""
    t = texture.shape[0]
    colour = texture.astype(np.float32) / (255.0 if texture.dtype == np.uint8 else 1.0)
    seen = resize(visibility.astype(np.float64), t) > 0.5
    kernel = np.ones((3, 3), np.uint8)
    inside = cv2.erode((resize(uv_mask.astype(np.float64), t) > 0.5).astype(np.uint8), kernel,
                       iterations=margin).astype(bool)
    line = seen & ~cv2.erode(seen.astype(np.uint8), kernel).astype(bool) & inside
    if line.sum() < 10:
        return None
    gx = cv2.Sobel(colour, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(colour, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    gradient = np.hypot(gx, gy).mean(-1)  # (T, T) colour change per texel
    near = cv2.dilate(line.astype(np.uint8), kernel, iterations=reach).astype(bool) & inside
    away = seen & inside & ~cv2.dilate(near.astype(np.uint8), kernel, iterations=reach).astype(bool)
    pairs = away[:, : t - 2 * reach] & away[:, 2 * reach:]
    if not pairs.any():
        return None
    own_step = np.abs(colour[:, : t - 2 * reach] - colour[:, 2 * reach:])[pairs].mean()
    # Across the seam: along the normal of the (blurred) visibility edge, reach texels each way.
    soft = cv2.GaussianBlur(seen.astype(np.float32), (0, 0), 2.0)
    ny, nx = np.gradient(soft)
    rows, cols = np.nonzero(line)
    norm = np.maximum(np.hypot(nx[rows, cols], ny[rows, cols]), 1e-6)
    dx, dy = nx[rows, cols] / norm, ny[rows, cols] / norm
    a = _sample(colour, cols + reach * dx, rows + reach * dy)
    b = _sample(colour, cols - reach * dx, rows - reach * dy)
    return {"edge_contrast": float(gradient[near].mean() / max(gradient[away].mean(), 1e-6)),
            "step": float(np.abs(a - b).mean()), "own_step": float(own_step), "seam_texels": int(line.sum())}


def _sample(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N, 3) colours at continuous (x, y) texel positions (centres at integers), nearest texel."""
    t = image.shape[0]
    return image[np.clip(np.round(y).astype(int), 0, t - 1), np.clip(np.round(x).astype(int), 0, t - 1)]
