"""Fitted real photos as training samples for the geometry stream (the 300W-LP role).

Each photo is cropped as the service crops a face: a square of ``crop_scale`` x the 68-landmark
box's longer side, centred on the box (with scale and shift jitter standing in for detector
boxes), resized to the network's input size. The fitted pose is re-expressed in that crop as
``p_h``; A_id and A_exp come from the fit's shards.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from training.photos import CropJitter, PhotoBatch, crop_around_landmarks, crop_batch

from .dataset import load_shard
from .fitter import pose_in_crop, pose_to_p_h


@dataclass
class RealBatch:
    """image (B, 3, H, H) in [0, 1]; a_id, a_exp (B, 3, S, S); p_h (B, 6); landmarks (B, 68, 2) crop pixels."""

    image: torch.Tensor
    a_id: torch.Tensor
    a_exp: torch.Tensor
    p_h: torch.Tensor
    landmarks: torch.Tensor


def is_validation(name: str, fraction: float = 0.05) -> bool:
    """A fixed, name-based split: the same photos are held out on every machine."""
    return zlib.crc32(name.encode()) % 1000 < fraction * 1000


def load_split(folder: str | Path, split: str) -> tuple[list[dict], Callable[[str], np.ndarray]]:
    """A ``python -m training.fitting`` folder's photos of one split ("train" or "validation"): their
    ``index.json`` entries, and ``gather(key)``, which stacks one shard array over them (an empty array
    when the split is empty, as it may be on small sets)."""
    folder = Path(folder)
    index = json.loads((folder / "index.json").read_text())
    shards = {name: load_shard(folder / name) for name in index["shards"]}
    keep = [p for p in index["photos"] if is_validation(p["name"]) == (split == "validation")]
    rows = [(shards[p["shard"]], p["row"]) for p in keep]
    first = next(iter(shards.values()))

    def gather(key: str) -> np.ndarray:
        return np.stack([s[key][r] for s, r in rows]) if rows else first[key][:0]

    return keep, gather


class FittedPhotos:
    def __init__(self, folder: str | Path, photos: str | Path, image_size: int, split: str = "train", crop_scale: float = 1.6,
                 jitter: CropJitter = CropJitter()):
        keep, gather = load_split(folder, split)
        # The index records the photo path as given to the fit; the photo folder may have moved since.
        self.paths = [Path(photos) / Path(p["image"]).name for p in keep]
        self.a_id, self.a_exp = gather("a_id"), gather("a_exp")  # (N, S, S, 3) float16
        self.pose = gather("pose").astype(np.float64)
        self.landmarks = gather("landmarks").astype(np.float64)
        self.image_size, self.crop_scale = image_size, crop_scale
        if jitter.roll_degrees or jitter.mirror is not None:
            raise ValueError("a fitted photo's pose and maps do not follow a turn or a mirror image; "
                             "ask photo_batch() for them, which gives pixels and landmarks only")
        self.jitter = jitter
        self._images: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def _photo(self, i: int) -> np.ndarray:
        if i not in self._images:  # ~1,200 photos of <= 512 px: keeping them decoded is cheap enough
            self._images[i] = cv2.cvtColor(cv2.imread(str(self.paths[i])), cv2.COLOR_BGR2RGB)
        return self._images[i]

    def sample(self, i: int, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One crop: image (3, H, H) float32, p_h (6,), landmarks (68, 2) in crop pixels."""
        photo = self._photo(i)
        crop, window, landmarks = crop_around_landmarks(photo, self.landmarks[i], self.image_size, self.crop_scale, rng,
                                                        self.jitter)
        p_h = pose_to_p_h(pose_in_crop(self.pose[i], photo.shape[:2], window, self.image_size), self.image_size)
        return crop, p_h, landmarks

    def batch(self, indices, rng: np.random.Generator | None) -> RealBatch:
        parts = [self.sample(int(i), rng) for i in indices]
        maps = lambda a: torch.from_numpy(a[list(indices)].astype(np.float32)).permute(0, 3, 1, 2)  # noqa: E731
        return RealBatch(
            image=torch.from_numpy(np.stack([p[0] for p in parts])),
            a_id=maps(self.a_id), a_exp=maps(self.a_exp),
            p_h=torch.from_numpy(np.stack([p[1] for p in parts]).astype(np.float32)),
            landmarks=torch.from_numpy(np.stack([p[2] for p in parts]).astype(np.float32)),
        )

    def photo_batch(self, indices, rng: np.random.Generator | None, jitter: CropJitter | None = None) -> PhotoBatch:
        """Crops and their landmarks only, varied by ``jitter`` (default: the dataset's), which unlike
        the dataset's own may turn and mirror: nothing here has to follow the pose."""
        return crop_batch([(self._photo(int(i)), self.landmarks[int(i)]) for i in indices], self.image_size,
                          self.crop_scale, rng, jitter or self.jitter)
