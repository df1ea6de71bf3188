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


@dataclass(frozen=True)
class CropJitter:
    """How a training crop varies from the service's crop of the same face.

    Scale and shift stand in for detector boxes, which are neither centred nor sized as the landmark
    box. A turn in the image plane and a left-right mirror image add faces the photos lack (more
    roll, the other side turned away); they change the pose, so only training that needs nothing of
    the photo but its pixels and landmarks may ask for them.
    """

    scale: tuple[float, float] = (0.85, 1.15)  # x the side, uniform
    shift_std: float = 0.06  # x half the side, each axis
    roll_degrees: float = 0.0  # uniform in [-roll_degrees, roll_degrees]
    mirror: tuple[int, ...] | None = None  # half the crops mirrored, landmarks re-paired (Topology.landmark_mirror)


def crop_around_landmarks(photo: np.ndarray, landmarks: np.ndarray, image_size: int, crop_scale: float,
                          rng: np.random.Generator | None, jitter: CropJitter = CropJitter()):
    """The service's crop of a face: a square of ``crop_scale`` x the landmark box's longer side, centred
    on the box, varied by ``jitter`` when ``rng`` is given.

    Returns the crop (3, N, N) float32 in [0, 1], its (x0, y0, side) in the photo before any turn or
    mirroring, and the landmarks (68, 2) in crop pixels. Coordinates put pixel (row i, col j)'s centre
    at (j + 0.5, i + 0.5), in the photo and in the crop.
    """
    lo, hi = landmarks.min(0), landmarks.max(0)
    side = (hi - lo).max() * crop_scale
    centre = (lo + hi) / 2
    turn, mirrored = 0.0, False
    if rng is not None:
        side *= rng.uniform(*jitter.scale)
        centre = centre + rng.normal(0, jitter.shift_std, 2) * side / 2
        if jitter.roll_degrees:
            turn = np.deg2rad(rng.uniform(-jitter.roll_degrees, jitter.roll_degrees))
        if jitter.mirror is not None:
            mirrored = bool(rng.random() < 0.5)
    x0, y0 = centre - side / 2
    k = image_size / side
    warp = np.array([[k, 0, -x0 * k], [0, k, -y0 * k], [0, 0, 1]])  # photo -> crop
    half = image_size / 2
    if turn:  # about the crop's centre
        warp = np.vstack([cv2.getRotationMatrix2D((half, half), -np.rad2deg(turn), 1.0), [0, 0, 1]]) @ warp
    if mirrored:
        warp = np.array([[-1, 0, image_size], [0, 1, 0], [0, 0, 1]]) @ warp
    # OpenCV puts pixel centres at integers: conjugate by the half-pixel shift.
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    in_indices = (np.linalg.inv(shift) @ warp @ shift)[:2]
    crop = cv2.warpAffine(photo, in_indices, (image_size, image_size), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    marks = landmarks @ warp[:2, :2].T + warp[:2, 2]
    if mirrored:
        marks = marks[list(jitter.mirror)]
    return crop.transpose(2, 0, 1).astype(np.float32) / 255.0, (float(x0), float(y0), float(side)), marks


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

    def __init__(self, landmarks_file: str | Path, photos: str | Path, image_size: int, crop_scale: float = 1.6,
                 jitter: CropJitter = CropJitter()):
        with np.load(landmarks_file) as d:
            self.names, self.landmarks = [str(n) for n in d["names"]], d["landmarks"].astype(np.float64)
        self.folder, self.image_size, self.crop_scale, self.jitter = Path(photos), image_size, crop_scale, jitter
        self._images: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.names)

    def _photo(self, i: int) -> np.ndarray:
        if i not in self._images:  # 200-px photos: a few thousand fit in memory easily
            self._images[i] = cv2.cvtColor(cv2.imread(str(self.folder / self.names[i])), cv2.COLOR_BGR2RGB)
        return self._images[i]

    def batch(self, indices, rng: np.random.Generator | None) -> PhotoBatch:
        return crop_batch([(self._photo(int(i)), self.landmarks[int(i)]) for i in indices], self.image_size,
                          self.crop_scale, rng, self.jitter)


def crop_batch(faces, image_size: int, crop_scale: float, rng: np.random.Generator | None,
               jitter: CropJitter) -> PhotoBatch:
    """``crop_around_landmarks`` over (photo, landmarks (68, 2)) pairs, stacked."""
    parts = [crop_around_landmarks(photo, marks, image_size, crop_scale, rng, jitter) for photo, marks in faces]
    return PhotoBatch(image=torch.from_numpy(np.stack([p[0] for p in parts])),
                      landmarks=torch.from_numpy(np.stack([p[2] for p in parts]).astype(np.float32)))
