"""A statistical UV albedo model from photos unwrapped into UV (Booth et al.'s "3DMM in-the-wild" recipe).

Per photo: estimate second-order SH lighting from the unwrapped colours and the fitted surface
normals, divide the shading out, fill the unseen side from its mirror image. Over photos: a
masked (missing-data) PCA, so pixels nobody saw do not pull the model towards black.
Shapes: S x S UV maps; P = valid pixels; N photos; D = 3 P.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.render.shading import sh_basis

MIN_SHADING = 0.15  # below this the division amplifies noise: treat the pixel as unseen


def sh_matrix(normals: np.ndarray) -> np.ndarray:
    """(..., 3) unit normals -> (..., 9) the renderer's SH basis (same constants, same order)."""
    import torch

    return sh_basis(torch.from_numpy(np.ascontiguousarray(normals, np.float64))).numpy()


def estimate_sh(colours: np.ndarray, normals: np.ndarray, albedo: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """Least-squares SH lighting (9, 3) with colour = albedo * (Y(n) @ sh), per channel.

    colours, albedo: (P, 3) (albedo may be (3,)); normals: (P, 3).
    """
    y = sh_matrix(normals)  # (P, 9)
    albedo = np.broadcast_to(albedo, colours.shape)
    out = np.zeros((9, 3))
    for c in range(3):
        a = y * albedo[:, c : c + 1]
        out[:, c] = np.linalg.solve(a.T @ a + ridge * np.eye(9), a.T @ colours[:, c])
    return out


def delight(colours: np.ndarray, normals: np.ndarray, sh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Divide out the SH shading: (P, 3) colours -> (P, 3) albedo and (P,) bool where trustworthy."""
    shading = sh_matrix(normals) @ sh  # (P, 3)
    ok = np.all(shading > MIN_SHADING, axis=1)
    return colours / np.maximum(shading, MIN_SHADING), ok


def mirror_fill(values: np.ndarray, valid: np.ndarray, mirror: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill invalid entries from their mirror pixel where that one is valid.

    values: (P, C); valid: (P,) bool; mirror: (P,) index of the mirrored pixel or -1.
    Returns the filled values and the new validity.
    """
    out, ok = values.copy(), valid.copy()
    has = (~valid) & (mirror >= 0)
    src = mirror[has]
    take = valid[src]
    idx = np.flatnonzero(has)[take]
    out[idx] = values[src[take]]
    ok[idx] = True
    return out, ok


@dataclass
class PCAResult:
    """mean (D,), components (K, D) orthonormal rows, std (K,) per-component standard deviation,
    explained (K,) fraction of the total variance per component."""

    mean: np.ndarray
    components: np.ndarray
    std: np.ndarray
    explained: np.ndarray


def masked_pca(data: np.ndarray, observed: np.ndarray, k: int, iterations: int = 15) -> PCAResult:
    """PCA of (N, D) data where ``observed`` (N, D) bool marks the known entries.

    Alternates between a rank-k SVD of the completed matrix and refilling the unobserved entries
    from its reconstruction (EM for PCA with missing values). Columns nobody observed keep 0.
    """
    n = data.shape[0]
    k = min(k, n - 1)
    counts = observed.sum(0)
    mean = np.where(counts > 0, (data * observed).sum(0) / np.maximum(counts, 1), 0.0)
    filled = np.where(observed, data, mean)
    for _ in range(iterations):
        mean = filled.mean(0)
        u, s, vt = np.linalg.svd(filled - mean, full_matrices=False)
        recon = mean + (u[:, :k] * s[:k]) @ vt[:k]
        filled = np.where(observed, data, recon)
    mean = filled.mean(0)
    _, s, vt = np.linalg.svd(filled - mean, full_matrices=False)
    var = s**2 / max(n - 1, 1)
    return PCAResult(mean, vt[:k], np.sqrt(var[:k]), var[:k] / var.sum())


def reconstruction_error(model: PCAResult, data: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Per-row mean absolute error on the observed entries after projecting on the model (N,)."""
    coeffs = np.zeros((data.shape[0], len(model.std)))
    for i in range(data.shape[0]):
        m = observed[i]
        a = model.components[:, m].T  # fit the coefficients on the observed entries only
        coeffs[i] = np.linalg.lstsq(a, data[i, m] - model.mean[m], rcond=None)[0]
    recon = model.mean + coeffs @ model.components
    return np.array([np.abs(recon[i] - data[i])[observed[i]].mean() for i in range(data.shape[0])])
