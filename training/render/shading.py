"""Vertex normals and second-order spherical-harmonics Lambertian shading.

Irradiance under distant lighting L with SH coefficients l_k (Ramamoorthi & Hanrahan 2001),
as parameterised by Deep3DFaceRecon / 3DDFA:

    shading(n) = sum_{k=0}^{8} gamma_k * Y_k(n),      colour = albedo * shading

with the Lambertian convolution factors a0 = pi, a1 = 2 pi / sqrt(3), a2 = 2 pi / sqrt(8) and
the real SH normalisations c0 = 1 / sqrt(4 pi), c1 = sqrt(3) / sqrt(4 pi),
c2 = 3 sqrt(5) / sqrt(12 pi), folded into the basis (n = (x, y, z), unit length):

    Y0 = a0 c0
    Y1 = -a1 c1 y        Y2 = a1 c1 z        Y3 = -a1 c1 x
    Y4 = a2 c2 x y       Y5 = -a2 c2 y z     Y6 = a2 c2 / (2 sqrt 3) (3 z^2 - 1)
    Y7 = -a2 c2 x z      Y8 = a2 c2 / 2 (x^2 - y^2)

(the sign pattern and order are Deep3DFaceRecon's). Coefficients are (B, 9, C), one column per
colour channel. Unlike Deep3DFaceRecon, no 0.8 is added to gamma_0 here: pass it in the
coefficients. Normals are taken in the view frame (x right, y up, z towards the camera), so
lighting is fixed relative to the camera.
"""

from __future__ import annotations

import math

import torch

SH_A = (math.pi, 2 * math.pi / math.sqrt(3.0), 2 * math.pi / math.sqrt(8.0))
SH_C = (
    1 / math.sqrt(4 * math.pi),
    math.sqrt(3.0) / math.sqrt(4 * math.pi),
    3 * math.sqrt(5.0) / math.sqrt(12 * math.pi),
)


def face_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(B, V, 3), (F, 3) -> (B, F, 3) unnormalised ``(v1 - v0) x (v2 - v0)`` (length = 2 area)."""
    tri = verts[:, faces.long()]
    return torch.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Area-weighted unit vertex normals.

    Args:
        verts: (B, V, 3); faces: (F, 3) int64, counter-clockwise seen from outside.

    Returns:
        (B, V, 3) normalised sums of the unnormalised normals of the adjacent faces (the cross
        product's length is twice the area, hence area weighting). Isolated vertices get 0.
    """
    fn = face_normals(verts, faces)  # (B, F, 3)
    b, v = verts.shape[:2]
    idx = faces.long().reshape(-1)  # corner order: face 0's three corners, face 1's, ...
    per_corner = fn.unsqueeze(2).expand(-1, -1, 3, -1).reshape(b, -1, 3)
    summed = verts.new_zeros(b, v, 3).index_add(1, idx, per_corner)
    return summed / summed.norm(dim=-1, keepdim=True).clamp_min(eps)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """(..., 3) unit normals -> (..., 9) Lambertian-convolved SH basis (module docstring)."""
    x, y, z = normals.unbind(-1)
    a0c0 = SH_A[0] * SH_C[0]
    a1c1 = SH_A[1] * SH_C[1]
    a2c2 = SH_A[2] * SH_C[2]
    return torch.stack(
        [
            torch.full_like(x, a0c0),
            -a1c1 * y,
            a1c1 * z,
            -a1c1 * x,
            a2c2 * x * y,
            -a2c2 * y * z,
            0.5 * a2c2 / math.sqrt(3.0) * (3 * z * z - 1),
            -a2c2 * x * z,
            0.5 * a2c2 * (x * x - y * y),
        ],
        dim=-1,
    )


def sh_shading(normals: torch.Tensor, sh_coeffs: torch.Tensor) -> torch.Tensor:
    """Lambertian SH irradiance.

    Args:
        normals: (B, ..., 3) unit normals (any number of middle dims, e.g. (B, H, W, 3)).
        sh_coeffs: (B, 9, C).

    Returns:
        (B, ..., C) ``sum_k sh_coeffs[:, k] * Y_k(n)``.
    """
    basis = sh_basis(normals)
    b = normals.shape[0]
    flat = basis.reshape(b, -1, 9) @ sh_coeffs
    return flat.reshape(*normals.shape[:-1], sh_coeffs.shape[-1])
