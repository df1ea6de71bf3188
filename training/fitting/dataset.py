"""Fit every photo of a landmark folder and write the pseudo-ground truth in shards.

Layout under ``out``: ``shard-00000.npz`` ... (``shard_size`` photos each, compressed) and
``index.json``. Shard keys (n photos, S = UV size):

    name (n,) str              image_size (n, 2) int32 (H, W)
    landmarks (n, 68, 2) f32   ground truth, renderer pixel convention (``pts.py``)
    fitted_landmarks (n, 68, 2) f32  the fitted model's projected landmarks
    landmark_vertices (n, 68) int32  ICT vertex per landmark (jaw contour marched)
    id_coeffs (n, 100) f32     exp_weights (n, 53) f32 in [0, 1]
    pose (n, 6) f32            (yaw, pitch, roll, tx, ty, scale), ``fitter`` module docstring
    a_id, a_exp (n, S, S, 3) f16   the Attribute Spatial Maps, canonical units, 0 outside the UV mask
    texture (n, S, S, 3) uint8 the photo unwrapped into UV, 0 where not visible
    visible (n, S, S) bool     nme (n,) f32

``index.json`` holds the conventions, the shard list and one entry per photo (name, image path,
shard, row, size, NME, yaw / pitch / roll in degrees).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from training.facemodel import UVFaceModel

from .fitter import FitResult, FitSettings, LandmarkFitter
from .pts import Sample
from .report import pick_for_sheet, shaded_overlay
from .unwrap import UVUnwrapper

POSE_CONVENTION = (
    "pose = (yaw, pitch, roll, tx, ty, scale); R = Rz(roll) Ry(yaw) Rx(pitch) (training.render.euler_to_rotation); "
    "a canonical point X lands at x = W/2 + scale (R X)_x + tx, y = H/2 - scale (R X)_y + ty "
    "(pixels, y down, pixel (i, j) centred at (j + 0.5, i + 0.5)); canonical = (ICT cm - frame.center) / frame.scale"
)
LANDMARK_CONVENTION = "renderer pixels: x = pts_x - 0.5, y = pts_y - 0.5 (iBUG 1-based pixel centres)"


def load_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def image_sizes(samples: list[Sample]) -> np.ndarray:
    """(n, 2) (H, W) read from the image headers."""
    out = []
    for s in samples:
        with Image.open(s.image) as im:
            out.append((im.height, im.width))
    return np.array(out, np.int32)


def fit_samples(samples: list[Sample], model: UVFaceModel, settings: FitSettings = FitSettings(),
                desc: str = "fit") -> FitResult:
    """Landmark-fit every sample (batched), with a progress bar."""
    fitter = LandmarkFitter(model, settings)
    sizes = image_sizes(samples)
    with tqdm(total=len(samples), desc=desc, unit="photo") as bar:
        return fitter.fit(np.stack([s.landmarks for s in samples]), sizes, progress=bar.update)


def write_dataset(samples: list[Sample], fit: FitResult, model: UVFaceModel, out: str | Path,
                  shard_size: int = 256, sheet_count: int = 16) -> tuple[dict, list[dict]]:
    """Unwrap every photo and write the shards and ``index.json``.

    Returns the index (as written) and the contact-sheet panels of ``sheet_count`` photos spread
    over |yaw| (see ``report.save_sheet``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unwrapper = UVUnwrapper(model)
    sizes = image_sizes(samples)
    yaw_deg = np.rad2deg(fit.pose[:, 0])
    sheet_ids = set(pick_for_sheet(yaw_deg, sheet_count).tolist()) if sheet_count else set()
    panels, photos, shards = {}, [], []
    bar = tqdm(total=len(samples), desc="unwrap", unit="photo")
    for k, start in enumerate(range(0, len(samples), shard_size)):
        rows = np.arange(start, min(start + shard_size, len(samples)))
        a_id, a_exp = unwrapper.pixel_points(fit.id_coeffs[rows], fit.exp_weights[rows])
        textures, visible = [], []
        for j, i in enumerate(rows):
            photo = load_rgb(samples[i].image)
            points = a_id[j] + a_exp[j]
            tex, vis = unwrapper.unwrap(photo, points, fit.pose[i])
            textures.append(tex)
            visible.append(vis)
            if i in sheet_ids:
                p = np.rad2deg(fit.pose[i, :3])
                panels[i] = {
                    "overlay": shaded_overlay(photo, points, unwrapper.faces, fit.pose[i]),
                    "texture": tex, "visible": vis, "landmarks": samples[i].landmarks, "fitted": fit.landmarks[i],
                    "title": f"{samples[i].name}\nyaw {p[0]:.0f} pitch {p[1]:.0f} roll {p[2]:.0f}  NME {fit.nme[i] * 100:.1f}%",
                }
            bar.update()
        name = f"shard-{k:05d}.npz"
        np.savez_compressed(
            out / name,
            name=np.array([samples[i].name for i in rows]),
            image_size=sizes[rows],
            landmarks=np.stack([samples[i].landmarks for i in rows]).astype(np.float32),
            fitted_landmarks=fit.landmarks[rows],
            landmark_vertices=fit.vertices[rows].astype(np.int32),
            id_coeffs=fit.id_coeffs[rows],
            exp_weights=fit.exp_weights[rows],
            pose=fit.pose[rows],
            a_id=unwrapper.to_map(a_id.numpy()).astype(np.float16),
            a_exp=unwrapper.to_map(a_exp.numpy()).astype(np.float16),
            texture=np.stack(textures),
            visible=np.stack(visible),
            nme=fit.nme[rows],
        )
        shards.append(name)
        for row, i in enumerate(rows):
            angles = np.rad2deg(fit.pose[i, :3])
            photos.append({
                "name": samples[i].name, "image": str(samples[i].image), "shard": name, "row": int(row),
                "height": int(sizes[i, 0]), "width": int(sizes[i, 1]), "nme": round(float(fit.nme[i]), 6),
                "yaw": round(float(angles[0]), 3), "pitch": round(float(angles[1]), 3), "roll": round(float(angles[2]), 3),
            })
    bar.close()
    index = {
        "format": "training.fitting/1", "uv_size": model.size, "count": len(samples), "shard_size": shard_size,
        "pose_convention": POSE_CONVENTION, "landmark_convention": LANDMARK_CONVENTION,
        "frame": model.frame.as_dict(), "shards": shards, "photos": photos,
    }
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return index, [panels[i] for i in sorted(panels, key=lambda i: abs(yaw_deg[i]))]


def load_shard(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of one shard (see the module docstring)."""
    with np.load(path) as d:
        return {k: d[k] for k in d.files}

