"""Stage ``detect``: face boxes from dlib (HOG on a downscaled copy, the CNN detector as a fallback)."""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import dlib
import numpy as np


@dataclass(frozen=True)
class Face:
    """A face box (x0, y0, x1, y1) in input-image pixels and the detector's score."""

    box: tuple[float, float, float, float]
    score: float
    detector: str

    @property
    def side(self) -> float:
        x0, y0, x1, y1 = self.box
        return min(x1 - x0, y1 - y0)

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return (x1 - x0) * (y1 - y0)


def dlib_model_path(name: str) -> Path | None:
    """A file of the face_recognition_models package, found without importing it (it needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    return path if path.is_file() else None


class FaceDetector:
    def __init__(self, max_side: int, upsample: int = 0, cnn_fallback: bool = False):
        self.max_side, self.upsample = max_side, upsample
        self.hog = dlib.get_frontal_face_detector()
        cnn_path = dlib_model_path("mmod_human_face_detector.dat") if cnn_fallback else None
        self.cnn = dlib.cnn_face_detection_model_v1(str(cnn_path)) if cnn_path else None
        # dlib's Python detectors hold the GIL and are not documented as thread-safe.
        self._lock = threading.Lock()

    def __call__(self, rgb: np.ndarray) -> list[Face]:
        """Faces in ``rgb`` (H, W, 3) uint8, largest first."""
        small, factor = downscale(rgb, self.max_side)
        with self._lock:
            rects, scores, _ = self.hog.run(small, self.upsample, 0.0)
            if not len(rects):
                # HOG misses faces under ~80 px; one retry at twice the size finds them at 4x the cost,
                # paid only by photos that would otherwise be refused.
                rects, scores, _ = self.hog.run(small, self.upsample + 1, 0.0)
            found = [(r, s, "hog") for r, s in zip(rects, scores)]
            if not found and self.cnn is not None:
                found = [(d.rect, d.confidence, "cnn") for d in self.cnn(small, self.upsample)]
        h, w = rgb.shape[:2]
        faces = []
        for rect, score, name in found:
            box = (max(rect.left(), 0) / factor, max(rect.top(), 0) / factor,
                   min(rect.right() + 1, small.shape[1]) / factor, min(rect.bottom() + 1, small.shape[0]) / factor)
            box = (min(box[0], w), min(box[1], h), min(box[2], w), min(box[3], h))
            if box[2] > box[0] and box[3] > box[1]:
                faces.append(Face(box, float(score), name))
        return sorted(faces, key=lambda f: f.area, reverse=True)


def downscale(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """A copy whose long side is at most ``max_side``, and its scale factor (<= 1)."""
    h, w = rgb.shape[:2]
    factor = min(1.0, max_side / max(h, w))
    if factor == 1.0:
        return rgb, 1.0
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), factor


class LandmarkPredictor:
    """dlib's 68-point shape predictor, used to check the model's landmarks (``quality``)."""

    def __init__(self, path: Path):
        self.predictor = dlib.shape_predictor(str(path))
        self._lock = threading.Lock()

    def __call__(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """(68, 2) float landmarks in input pixels."""
        rect = dlib.rectangle(*(int(round(v)) for v in box))
        with self._lock:
            shape = self.predictor(rgb, rect)
        return np.array([(p.x, p.y) for p in shape.parts()], np.float64)
