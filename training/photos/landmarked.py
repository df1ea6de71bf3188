"""Landmarks for photos by dlib, and training crops around them."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def crop_around_landmarks(photo: np.ndarray, landmarks: np.ndarray, image_size: int, crop_scale: float,
                          rng: np.random.Generator | None, scale_jitter=(0.85, 1.15), shift_std: float = 0.06):
    """The service's crop of a face: a square of ``crop_scale`` x the landmark box's longer side, centred
    on the box, with scale and shift jitter when ``rng`` is given (detector boxes are neither).

    Returns the crop (3, N, N) float32 in [0, 1], its (x0, y0, side) in the photo, and the landmarks
    (68, 2) in crop pixels.
    """
    lo, hi = landmarks.min(0), landmarks.max(0)
    side = (hi - lo).max() * crop_scale
    centre = (lo + hi) / 2
    if rng is not None:
        side *= rng.uniform(*scale_jitter)
        centre = centre + rng.normal(0, shift_std, 2) * side / 2
    x0, y0 = centre - side / 2
    k = image_size / side
    warp = np.array([[k, 0, -x0 * k], [0, k, -y0 * k]])
    crop = cv2.warpAffine(photo, warp, (image_size, image_size), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return crop.transpose(2, 0, 1).astype(np.float32) / 255.0, (float(x0), float(y0), float(side)), (landmarks - [x0, y0]) * k


def detect_landmarks(folder: str | Path, limit: int | None = None, min_face_px: int = 60) -> tuple[list[str], np.ndarray]:
    """dlib's 68 landmarks for the photos of ``folder`` (sorted by name, the first ``limit`` looked at).

    Returns the photo names kept and their landmarks (N, 68, 2) float32 in pixel-edge-origin
    coordinates (the centre of pixel (row i, col j) at (j + 0.5, i + 0.5), as ``training.render``).
    """
    import dlib

    models = Path(importlib.util.find_spec("face_recognition_models").origin).parent / "models"
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    names, marks = [], []
    for path in tqdm(paths, desc="dlib landmarks", unit="photo"):
        image = cv2.imread(str(path))
        if image is None:
            continue
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        faces = sorted(detector(rgb, 1), key=lambda r: r.width() * r.height(), reverse=True)
        if not faces or min(faces[0].width(), faces[0].height()) < min_face_px:
            continue
        shape = predictor(rgb, faces[0])
        names.append(path.name)
        marks.append([[p.x + 0.5, p.y + 0.5] for p in shape.parts()])  # dlib gives pixel indices
    return names, np.asarray(marks, np.float32).reshape(-1, 68, 2)


@dataclass
class PhotoBatch:
    """image (B, 3, H, H) in [0, 1]; landmarks (B, 68, 2) crop pixels."""

    image: torch.Tensor
    landmarks: torch.Tensor


class LandmarkedPhotos:
    """Photos and their 68 landmarks (a ``python -m training.photos`` npz) as training crops."""

    def __init__(self, landmarks_file: str | Path, photos: str | Path, image_size: int, crop_scale: float = 1.6):
        with np.load(landmarks_file) as d:
            self.names, self.landmarks = [str(n) for n in d["names"]], d["landmarks"].astype(np.float64)
        self.folder, self.image_size, self.crop_scale = Path(photos), image_size, crop_scale
        self._images: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.names)

    def _photo(self, i: int) -> np.ndarray:
        if i not in self._images:  # 200-px photos: a few thousand fit in memory easily
            self._images[i] = cv2.cvtColor(cv2.imread(str(self.folder / self.names[i])), cv2.COLOR_BGR2RGB)
        return self._images[i]

    def batch(self, indices, rng: np.random.Generator | None) -> PhotoBatch:
        parts = [crop_around_landmarks(self._photo(int(i)), self.landmarks[int(i)], self.image_size, self.crop_scale, rng)
                 for i in indices]
        return PhotoBatch(image=torch.from_numpy(np.stack([p[0] for p in parts])),
                          landmarks=torch.from_numpy(np.stack([p[2] for p in parts]).astype(np.float32)))
