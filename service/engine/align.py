"""Stage ``align``: a square crop around a face box, resized to the network's input size.

Coordinates are continuous pixels with pixel (row i, col j) covering [j, j+1) x [i, i+1), as the
camera in the manifest uses them, so crop -> photo is exactly ``photo = origin + crop * step``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Crop:
    """image: (3, N, N) float32 RGB in [0, 1], the geometry graph's input layout.
    origin: (x, y) of the crop's top-left corner in photo pixels; step: photo pixels per crop pixel."""

    image: np.ndarray
    origin: tuple[float, float]
    step: float

    @property
    def size(self) -> int:
        return self.image.shape[-1]

    def to_photo(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) crop pixels -> photo pixels."""
        return np.asarray(self.origin) + xy * self.step


def crop_face(rgb: np.ndarray, box: tuple[float, float, float, float], size: int, scale: float) -> Crop:
    """The square of side ``scale`` x the box's longer side, centred on the box, as a size x size crop.

    Parts of the square outside the photo are black, as the synthetic training backgrounds' edges are.
    """
    x0, y0, x1, y1 = box
    side = max(1, int(round(max(x1 - x0, y1 - y0) * scale)))
    left = int(round((x0 + x1) / 2 - side / 2))
    top = int(round((y0 + y1) / 2 - side / 2))
    h, w = rgb.shape[:2]
    canvas = np.zeros((side, side, 3), np.uint8)
    sx0, sy0, sx1, sy1 = max(left, 0), max(top, 0), min(left + side, w), min(top + side, h)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = rgb[sy0:sy1, sx0:sx1]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    resized = cv2.resize(canvas, (size, size), interpolation=interpolation)
    image = np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.float32) / 255.0
    return Crop(image=image, origin=(float(left), float(top)), step=side / size)
