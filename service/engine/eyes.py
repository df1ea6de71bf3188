"""The eyeballs' texture: sclera, an iris whose colour is read off the photo, and a pupil.

ICT's eyeball UVs put the front of each eyeball in a unit square with the optical axis at (0.5, 0.5).
On its outer shell, points 2, 5 and 6 mm from the axis lie at UV radii 0.03, 0.106 and 0.35
(measured on ICT's neutral eyeball): the iris's rim (about 5.5 mm) is taken at 0.14, a 2 mm pupil at 0.035.

The iris colour is a stated, simple rule rather than a segmentation: inside each eye's six-landmark
outline in the photo, the pixels between the 5th and 30th percentile of luminance (an eye looking
aside shows a quarter of its opening as iris, one looking ahead half; the darkest twentieth is pupil
and lash line), averaged over both eyes. Where the outlines hold too few pixels (a small or closed
eye), a neutral brown.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

IRIS_UV_RADIUS = 0.14
PUPIL_UV_RADIUS = 0.035
SCLERA = np.array([0.84, 0.80, 0.77])  # an albedo: whiter than skin, not paper-white
DEFAULT_IRIS = np.array([0.36, 0.25, 0.17])
MIN_EYE_PIXELS = 12
EYE_TEXTURE_SIZE = 128


def iris_colour(photo: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(3,) sRGB colour in [0, 1]. ``photo``: (H, W, 3) uint8 RGB; ``landmarks``: (68, >= 2)
    photo pixels (iBUG order: 36..41 and 42..47 are the eyes)."""
    h, w = photo.shape[:2]
    picked = []
    for eye in (slice(36, 42), slice(42, 48)):
        outline = np.round(landmarks[eye, :2]).astype(np.int32)
        x0, y0 = np.clip(outline.min(0), 0, [w - 1, h - 1])
        x1, y1 = np.clip(outline.max(0) + 1, 0, [w, h])
        if x1 <= x0 or y1 <= y0:
            continue
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [outline - [x0, y0]], 1)
        pixels = photo[y0:y1, x0:x1][mask.astype(bool)].astype(np.float64) / 255.0
        if len(pixels) < MIN_EYE_PIXELS:
            continue
        luminance = pixels @ [0.299, 0.587, 0.114]
        low, high = np.percentile(luminance, [5, 30])
        picked.append(pixels[(luminance >= low) & (luminance <= high)])
    if not picked:
        return DEFAULT_IRIS.copy()
    return np.concatenate(picked).mean(0)


def eye_texture(iris: np.ndarray, size: int = EYE_TEXTURE_SIZE) -> np.ndarray:
    """(size, size, 3) uint8 texture in ICT's eyeball UV square (row 0 = v near 1): sclera, the iris
    disc in ``iris`` (3,) with a darker limbal ring and radial streaks, a black pupil."""
    shade, sclera_px, edge, pupil = _eye_layout(size)
    iris_px = np.clip(np.asarray(iris)[None, None] * shade, 0.0, 1.0)
    out = iris_px * (1.0 - edge) + sclera_px * edge
    out = np.where(pupil, 0.02, out)
    return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@functools.lru_cache(maxsize=4)
def _eye_layout(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What of the eye texture does not depend on the iris colour, computed once per size: the iris's
    shading (size, size, 1), the sclera's colour (size, size, 3), the iris-to-sclera blend (size, size, 1)
    and the pupil (size, size, 1) bool."""
    rows, cols = (np.mgrid[0:size, 0:size] + 0.5) / size
    du, dv = cols - 0.5, 0.5 - rows  # u = col, v = 1 - row
    r = np.hypot(du, dv)
    angle = np.arctan2(dv, du)
    t = np.clip((r - PUPIL_UV_RADIUS) / (IRIS_UV_RADIUS - PUPIL_UV_RADIUS), 0.0, 1.0)
    # Streaks and a limbal ring darken the iris towards its rim, as a real one does; its mean stays the iris colour.
    shade = (1.0 + 0.12 * np.sin(angle * 23.0) * np.sin(angle * 7.0)) * (1.15 - 0.45 * t**3)
    # The sclera greys a little towards the back of the eyeball, which the lids mostly hide.
    sclera_px = SCLERA[None, None] * np.clip(1.05 - 0.5 * r, 0.7, 1.0)[..., None]
    edge = np.clip((r - IRIS_UV_RADIUS) / 0.006 + 0.5, 0.0, 1.0)[..., None]  # a texel-wide soft rim
    layout = (shade[..., None], sclera_px, edge, (r < PUPIL_UV_RADIUS)[..., None])
    for array in layout:
        array.flags.writeable = False  # shared by every request
    return layout
