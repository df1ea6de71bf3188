"""The paper's measurements as NumPy functions (AFLW2000-3D NME, aligned geometry error, texture).

Landmarks are (68, 2) or (68, 3) arrays in image pixels; meshes (N, 3); images (H, W, 3) in [0, 1].
"""

from __future__ import annotations

import numpy as np

OUTER_EYE_CORNERS = (36, 45)  # iBUG-68


def box_size(landmarks: np.ndarray) -> float:
    """sqrt(w * h) of the landmarks' 2D bounding box, the 3DDFA protocol's normaliser."""
    lo, hi = landmarks[:, :2].min(0), landmarks[:, :2].max(0)
    return float(np.sqrt(np.prod(hi - lo)))


def nme_2d(pred: np.ndarray, gt: np.ndarray, box_from: np.ndarray | None = None) -> float:
    """Mean 2D landmark distance divided by the box size of ``box_from`` (default: ``gt``; give
    all 68 ground-truth landmarks when scoring a subset of them)."""
    return float(np.linalg.norm(pred[:, :2] - gt[:, :2], axis=1).mean() / box_size(gt if box_from is None else box_from))


def align_scale_translation(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Least-squares s * pred + t onto gt (no rotation): removes the unknown depth offset and scale."""
    pc, gc = pred - pred.mean(0), gt - gt.mean(0)
    s = float((pc * gc).sum() / max((pc * pc).sum(), 1e-12))
    return s * pc + gt.mean(0)


def nme_3d(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean 3D landmark distance after scale-and-translation alignment, over the box size."""
    return float(np.linalg.norm(align_scale_translation(pred, gt) - gt, axis=1).mean() / box_size(gt))


def rigid_align(source: np.ndarray, target: np.ndarray, scale: bool = False) -> np.ndarray:
    """Umeyama: the rotation + translation (and scale if asked) that best maps source onto target."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    s0, t0 = source - mu_s, target - mu_t
    u, sig, vt = np.linalg.svd(t0.T @ s0)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.diag([1.0, 1.0, d])
    rot = u @ fix @ vt
    c = float((sig * np.diag(fix)).sum() / (s0 * s0).sum()) if scale else 1.0
    return c * s0 @ rot.T + mu_t


def aligned_vertex_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean per-vertex distance after rigid alignment, in the inputs' units."""
    return float(np.linalg.norm(rigid_align(pred, gt) - gt, axis=1).mean())


def similarity_vertex_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean per-vertex distance after a similarity alignment (rotation, translation and scale), in the
    inputs' units: the shape's error with its size taken out as well as its place."""
    return float(np.linalg.norm(rigid_align(pred, gt, scale=True) - gt, axis=1).mean())


def photometric_error(rendered: np.ndarray, photo: np.ndarray, mask: np.ndarray) -> float:
    """E_pho (paper Sec. IV-D): mean absolute RGB difference over the mask; images (H, W, 3) in [0, 1],
    mask (H, W). NaN for an empty mask."""
    m = mask.astype(bool)
    if not m.any():
        return float("nan")
    return float(np.abs(rendered[m] - photo[m]).mean())


def texture_mae(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute colour error over the mask, per channel averaged."""
    m = mask.astype(bool)
    return float(np.abs(pred[m] - target[m]).mean()) if m.any() else float("nan")


def level_gain(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """The one gain g that minimises ``texture_mae(g * pred, target, mask)``: the weighted median of
    ``target / pred`` over the masked values (all channels), weighted by ``pred``. ``pred``, ``target``
    (S, S, 3) colours in [0, 1]; ``mask`` (S, S). 1 where nothing is masked or ``pred`` is all zero."""
    p, t = pred[mask.astype(bool)].ravel(), target[mask.astype(bool)].ravel()
    keep = p > 1e-6
    if not keep.any():
        return 1.0
    ratio, weight = t[keep] / p[keep], p[keep]
    order = np.argsort(ratio)
    cumulative = np.cumsum(weight[order])
    return float(ratio[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def yaw_bin(yaw_degrees: float) -> str:
    """AFLW2000-3D's bins by absolute yaw: [0, 30), [30, 60), [60, 90]."""
    a = abs(yaw_degrees)
    return "[0,30)" if a < 30 else "[30,60)" if a < 60 else "[60,90]"
