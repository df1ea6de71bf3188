"""Stage ``relight``: the SH lighting refitted to the photo under the texture stream's albedo.

The geometry stream reads p_l off the crop before any albedo exists, and a model whose albedo is kept
delit (issue 22) puts the photo's exposure and tint into the light, where p_l only guesses at it. With
the albedo known, the light that best explains the seen skin is a linear least-squares problem per
colour channel (photo = albedo x SH basis(normal) . l), solved in microseconds. A ridge towards p_l
keeps it stable when little skin is seen; the vertices the first fit explains worst (hair, occluders,
highlights, background where the mesh overhangs the face) are dropped and the fit is made once more.
"""

from __future__ import annotations

import cv2
import numpy as np

from .asm_decode import FaceGeometry
from .texture import sh_basis
from .topology import MeshTopology
from .unwrap import Unwrap

RIDGE = 0.05  # per seen vertex, towards p_l
KEEP = 0.8  # share of the seen vertices the second fit keeps (those the first explains best)
MIN_FACING = 0.2  # cosine of the surface to the camera below which a vertex's colour is not trusted
MIN_VERTICES = 50  # fewer seen vertices than this: p_l is kept


def fit_sh_lighting(photo: np.ndarray, albedo: np.ndarray, normals: np.ndarray, prior: np.ndarray,
                    ridge: float = RIDGE, keep: float = KEEP, basis: np.ndarray | None = None) -> np.ndarray:
    """(9, 3) SH lighting l minimising sum |photo - albedo * (sh_basis(normals) @ l)|^2 + ridge * n * |l - prior|^2.

    photo, albedo: (N, 3) colours in [0, 1] of N seen surface points; normals: (N, 3) unit, view frame;
    prior: (9, 3); basis: sh_basis(normals) when the caller has it. With ``keep`` < 1 the fit is repeated
    on the ``keep`` share of points it explains best.
    """
    basis = sh_basis(normals) if basis is None else basis  # (N, 9)

    def solve(b: np.ndarray, k: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The three channels' 9 x 9 ridge systems: channel c's design is the basis scaled by its albedo,
        so its normal matrix is b.T diag(k_c^2) b, two plain BLAS products on the (9, n) transpose (half
        the time of one batched product of the (3, n, 9) designs at n = 8,000)."""
        n = max(len(b), 1)
        bt = np.ascontiguousarray(b.T)
        light = np.empty((9, 3))
        for c in range(3):
            kc = k[:, c]
            gram = (bt * (kc * kc)) @ b + ridge * n * np.eye(9)
            light[:, c] = np.linalg.solve(gram, bt @ (kc * y[:, c]) + ridge * n * prior[:, c])
        return light

    light = solve(basis, albedo, photo)
    if keep < 1.0:
        residual = np.abs(photo - albedo * (basis @ light)).mean(1)
        rows = residual <= np.quantile(residual, keep)
        light = solve(basis[rows], albedo[rows], photo[rows])
    return light


def seen_vertices(geo: FaceGeometry, unwrapped: Unwrap, topo: MeshTopology,
                  among: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The vertices whose colour the photo shows, of all V or of the (M,) indices ``among``: (V,) or (M,)
    bool, seen and facing the camera, and (N, 3) float64 the crop's colour at their projections (N seen)."""
    among = slice(None) if among is None else among
    rows, cols, normals = topo.rows[among], topo.cols[among], unwrapped.normals_view[among]
    seen = unwrapped.visibility[rows, cols] & (normals[:, 2] > MIN_FACING)
    if not seen.any():  # cv2.remap refuses an empty map
        return seen, np.zeros((0, 3))
    xy = geo.screen[among][seen, :2].astype(np.float32) - 0.5  # crop pixel centres sit at +0.5
    crop = np.ascontiguousarray(geo.crop.image.transpose(1, 2, 0))
    photo = cv2.remap(crop, xy[:, None, 0], xy[:, None, 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[:, 0]
    return seen, photo.reshape(-1, 3).astype(np.float64)


def relight(geo: FaceGeometry, unwrapped: Unwrap, albedo: np.ndarray, topo: MeshTopology) -> np.ndarray:
    """(9, 3) lighting for one face: ``fit_sh_lighting`` over its seen, camera-facing vertices, the photo's
    colour read from the crop at their projections and the albedo (3, S, S) at their UV pixels; p_l when
    too few are seen."""
    seen, photo = seen_vertices(geo, unwrapped, topo)
    if seen.sum() < MIN_VERTICES:
        return geo.lighting
    colours = albedo[:, topo.rows[seen], topo.cols[seen]].T
    return fit_sh_lighting(photo, colours.astype(np.float64), unwrapped.normals_view[seen], geo.lighting)
