"""Albedo coefficients p_t fitted to the photo's seen skin (issue 22), for the texture stream's input.

The geometry stream reads p_t off its shape latent, which holds little of the skin's colour: its linear
albedo scores as the mean albedo does on held-out synthetic faces. The photo itself shows the albedo
times the shading at every seen vertex, and both factors are linear models (the albedo model's mean plus
its std-scaled components, and the SH lighting), so the pair that explains the seen skin best is a
bilinear least-squares problem. It is solved by alternation: p_t with the light fixed (one K x K
system), then the light with p_t fixed (``relight.fit_sh_lighting``). A small ridge keeps p_t near the
model's mean where the photo says little; after the first round the vertices explained worst (hair,
hands, highlights) are dropped, as relight drops them. The photo's overall exposure is taken out first
(``fitted_albedo_coefficients``), so p_t carries the skin's pattern and colour, not how bright the photo is.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg
from scipy.linalg import blas

from .albedo_basis import AlbedoBasis
from .asm_decode import FaceGeometry
from .relight import MIN_VERTICES, fit_sh_lighting, seen_vertices
from .texture import sh_basis
from .topology import MeshTopology
from .unwrap import Unwrap

COEFFICIENT_RIDGE = 3e-5  # per colour sample, on p_t in units of each component's std
# Per seen vertex, towards the prior light: a tenth of relight's. A light held near the geometry's p_l
# leaves a side light's gradient across the face to p_t, which then follows the lighting; a freer light
# takes it (held-out synthetic faces: the albedos' change across 8 lightings 0.050 -> 0.028, the error
# over the face unchanged; docs/evaluation.md#the-albedo-fits-ridges).
LIGHT_RIDGE = 0.003
ROUNDS = 8  # alternations of p_t and the light
KEEP = 0.8  # share of the seen vertices kept after the first round (those explained best)
BOUND = 3.0  # |p_t| limit in stds: the albedo model's draws are clipped there too


def fit_albedo(photo: np.ndarray, normals: np.ndarray, mean: np.ndarray, by_channel: np.ndarray,
               prior_light: np.ndarray, ridge: float = COEFFICIENT_RIDGE, rounds: int = ROUNDS, keep: float = KEEP,
               bound: float = BOUND, light_ridge: float = LIGHT_RIDGE,
               shading_basis: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """p_t (K,) and SH lighting (9, 3) minimising
    sum_c |photo_c - (mean_c + p_t @ by_channel[c]) * (sh_basis(normals) @ l_c)|^2 + ridge * 3N * |p_t|^2
    + light_ridge * N * |l - prior_light|^2, with |p_t| <= ``bound``.

    photo, normals, mean: (N, 3) the seen points' colours in [0, 1], unit view-frame normals and the
    albedo model's mean there; by_channel: (3, K, N) float32, the components a colour channel at a time
    (``AlbedoBasis.by_channel``: float32 products run at twice float64's speed, and the stored basis is
    float16, so exact); prior_light: (9, 3). The K x K systems are solved in float64. ``shading_basis``
    (N, 9): the SH basis at the points when the caller has it otherwise than from ``normals`` (an
    evaluation renders the true mesh's, ``training.evaluate.albedo_limits``).
    """
    k = by_channel.shape[1]
    shading_basis = sh_basis(normals) if shading_basis is None else shading_basis  # (N, 9)
    light = fit_sh_lighting(photo, mean, normals, prior_light, ridge=light_ridge, keep=1.0, basis=shading_basis)
    kept, kept_mean, kept_photo, kept_basis, kept_normals = by_channel, mean, photo, shading_basis, normals
    p_t = np.zeros(k)
    for step in range(rounds):
        shade = kept_basis @ light  # (n, 3)
        gram = ridge * 3 * len(kept_photo) * np.eye(k)  # upper triangle used
        rhs = np.zeros(k)
        for c in range(3):  # the normal equations of the (3n, K) design, a channel's n rows at a time
            scaled = kept[c] * shade[:, c].astype(np.float32)  # (K, n)
            gram += blas.ssyrk(1.0, scaled)  # scaled @ scaled.T's upper triangle, half a product's work
            rhs += scaled @ (kept_photo[:, c] - kept_mean[:, c] * shade[:, c]).astype(np.float32)
        p_t = np.clip(linalg.cho_solve(linalg.cho_factor(gram), rhs), -bound, bound)
        if step == 0 and keep < 1.0:
            albedo = mean + np.stack([p_t.astype(np.float32) @ by_channel[c] for c in range(3)], 1)  # (N, 3)
            residual = np.abs(photo - albedo * (shading_basis @ light)).mean(1)
            rows = residual <= np.quantile(residual, keep)
            kept, kept_mean, kept_photo = by_channel[:, :, rows], mean[rows], photo[rows]
            kept_basis, kept_normals = shading_basis[rows], normals[rows]
        albedo = kept_mean + np.stack([p_t.astype(np.float32) @ kept[c] for c in range(3)], 1)
        light = fit_sh_lighting(kept_photo, albedo, kept_normals, prior_light, ridge=light_ridge, keep=1.0,
                                basis=kept_basis)
    return p_t, light


def fitted_albedo_coefficients(basis: AlbedoBasis, seen: np.ndarray, photo: np.ndarray, normals: np.ndarray,
                               prior_p_t: np.ndarray, prior_light: np.ndarray, shading_basis: np.ndarray | None = None,
                               **solver: float) -> np.ndarray:
    """p_t (K,) float32 for one face from the basis's M vertices: ``seen`` (M,) bool and ``photo`` (N, 3)
    the colours of the seen ones (``relight.seen_vertices`` over ``basis.vertices``), ``normals`` (M, 3)
    view-frame; ``prior_p_t`` (K,), the geometry stream's, when fewer than ``MIN_VERTICES`` are seen.

    The fit reads the skin's pattern, not its exposure: the seen colours are scaled to the albedo model's
    mean level there, and the light's prior (``prior_light`` (9, 3)) to shade the mean albedo at that
    level, so a photo darkened or brightened as a whole gets the same p_t. Left free, the fit puts a
    darker exposure into a darker albedo, which the albedo must not follow (issue 22). ``solver``: as for
    ``fit_face``; ``shading_basis`` (M, 9): as for ``fit_albedo``."""
    if seen.sum() < MIN_VERTICES:
        return prior_p_t.astype(np.float32)
    mean, normals = basis.mean[seen], normals[seen]
    shading_basis = sh_basis(normals) if shading_basis is None else shading_basis[seen]
    level = mean.mean()
    photo = photo * (level / max(photo.mean(), 1e-6))
    prior_light = prior_light * (level / max(float((mean * (shading_basis @ prior_light)).mean()), 1e-6))
    p_t, _ = fit_albedo(photo, normals, mean, basis.by_channel[:, :, seen], prior_light,
                        shading_basis=shading_basis, **solver)
    return p_t.astype(np.float32)


def fit_face(basis: AlbedoBasis, geo: FaceGeometry, unwrapped: Unwrap, topo: MeshTopology,
             prior_p_t: np.ndarray, **solver: float) -> np.ndarray:
    """p_t (K,) float32 fitted to one face's seen skin, its light starting from the geometry's p_l.
    ``solver``: ``fit_albedo``'s keyword settings (ridge, rounds, keep, bound, light_ridge) to try others
    than the service's (``training.evaluate albedo-fit``)."""
    seen, photo = seen_vertices(geo, unwrapped, topo, basis.vertices)
    return fitted_albedo_coefficients(basis, seen, photo, unwrapped.normals_view[basis.vertices], prior_p_t,
                                      geo.lighting, **solver)
