"""What stands around and in front of a synthetic face: photo backgrounds and occluders.

Backgrounds are square patches of real photos taken away from their annotated faces, so the
network sees real clutter next to the rendered head. Occluders are drawn over the render: a
hand-like blob, hair strands, or a glasses-like frame across the eyes, in a fraction of samples;
the pixels they cover leave the face mask and the visible-UV mask, so no loss asks the network to
reproduce what is hidden.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from training.fitting.pts import read_pts

OCCLUDER_KINDS = ("hand", "hair", "glasses")
SKIN_LIGHT = np.array([0.86, 0.68, 0.58], np.float32)  # the procedural albedo's range (generator.py)
SKIN_DARK = np.array([0.33, 0.21, 0.15], np.float32)


def photo_patches(folder: str | Path, count: int, size: int, seed: int = 0, min_side: int = 24) -> np.ndarray:
    """Up to ``count`` (size, size, 3) uint8 RGB patches from the photos of ``folder`` (each beside a
    68-point ``.pts``), each cut from a strip of the photo left of, right of, above or below its face
    (the landmark box grown by a quarter, and by half its height upwards for forehead and hair)."""
    rng = np.random.default_rng(seed)
    photos = sorted(p for p in Path(folder).glob("*.jpg") if p.with_suffix(".pts").is_file())
    patches = []
    for path in rng.permutation(photos):
        if len(patches) >= count:
            break
        image = cv2.imread(str(path))
        if image is None:
            continue
        h, w = image.shape[:2]
        lm = read_pts(path.with_suffix(".pts"))
        lo, hi = lm.min(0), lm.max(0)
        grow = (hi - lo) / 4
        x0, y0 = np.floor(np.maximum(lo - grow - [0, (hi - lo)[1] / 2], 0)).astype(int)
        x1, y1 = np.ceil(np.minimum(hi + grow, [w, h])).astype(int)
        strips = [(0, 0, x0, h), (x1, 0, w, h), (0, 0, w, y0), (0, y1, w, h)]  # x0, y0, x1, y1 clear of the face
        strips = [r for r in strips if min(r[2] - r[0], r[3] - r[1]) >= min_side]
        if not strips:
            continue
        sx0, sy0, sx1, sy1 = strips[rng.integers(len(strips))]
        # At most 2:1 so the resize to a square does not smear the clutter into streaks.
        pw = min(sx1 - sx0, 2 * (sy1 - sy0))
        ph = min(sy1 - sy0, 2 * pw)
        px, py = sx0 + rng.integers(0, sx1 - sx0 - pw + 1), sy0 + rng.integers(0, sy1 - sy0 - ph + 1)
        crop = image[py:py + ph, px:px + pw]
        if crop.std() < 4:  # padding some photos carry, not clutter
            continue
        patches.append(cv2.cvtColor(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
    return np.stack(patches) if patches else np.zeros((0, size, size, 3), np.uint8)


def draw_occluder(kind: str, size: int, landmarks: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One occluder over a ``size`` x ``size`` image whose face has 68 ``landmarks`` (pixels).

    Returns colour (size, size, 3) float32 in [0, 1] and coverage (size, size) float32 in [0, 1].
    """
    colour = np.zeros((size, size, 3), np.float32)
    cover = np.zeros((size, size), np.float32)
    lo, hi = landmarks.min(0), landmarks.max(0)
    face_side = float(max(hi - lo))
    if kind == "hand":
        tone = SKIN_LIGHT + rng.beta(2, 2) * (SKIN_DARK - SKIN_LIGHT)
        tone = tone * rng.uniform(0.9, 1.1, 3)
        centre = lo + rng.uniform(0.1, 0.9, 2) * (hi - lo) + rng.normal(0, 0.1, 2) * face_side
        axes = (face_side * rng.uniform(0.2, 0.35), face_side * rng.uniform(0.3, 0.5))
        angle = rng.uniform(0, 180)
        cv2.ellipse(cover, (int(centre[0]), int(centre[1])), (int(axes[0]), int(axes[1])), angle, 0, 360, 1.0, -1)
        for _ in range(4):  # fingers
            direction = np.deg2rad(angle + rng.uniform(-40, 40) - 90)
            tip = centre + np.array([np.cos(direction), np.sin(direction)]) * axes[1] * rng.uniform(1.2, 1.7)
            cv2.line(cover, (int(centre[0]), int(centre[1])), (int(tip[0]), int(tip[1])), 1.0, max(2, int(face_side * 0.08)))
        shade = 1.0 + 0.15 * (rng.random((size, size, 1)) - 0.5)
        colour[:] = tone * shade
    elif kind == "hair":
        tone = rng.uniform(0.02, 0.35) * rng.uniform(0.8, 1.2, 3)
        for _ in range(rng.integers(6, 20)):
            start = np.array([rng.uniform(lo[0], hi[0]), lo[1] - rng.uniform(0, 0.3) * face_side])
            points = [start]
            for _ in range(6):
                points.append(points[-1] + [rng.normal(0, 0.05) * face_side, rng.uniform(0.05, 0.15) * face_side])
            cv2.polylines(cover, [np.int32(points)], False, 1.0, int(rng.integers(1, 3)))
        colour[:] = tone
    elif kind == "glasses":
        tone = rng.uniform(0.0, 0.3, 3)
        eyes = landmarks[36:42].mean(0), landmarks[42:48].mean(0)
        radius = int(max(2, np.linalg.norm(eyes[1] - eyes[0]) * rng.uniform(0.3, 0.42)))
        thickness = max(1, int(face_side * rng.uniform(0.02, 0.05)))
        for eye in eyes:
            cv2.circle(cover, (int(eye[0]), int(eye[1])), radius, 1.0, thickness)
        cv2.line(cover, (int(eyes[0][0] + radius), int(eyes[0][1])), (int(eyes[1][0] - radius), int(eyes[1][1])), 1.0, thickness)
        colour[:] = tone
    else:
        raise ValueError(f"unknown occluder {kind!r}")
    return colour, cover
