"""The reconstructed region: ICT's face part without ears, neck and the back of the head.

The paper reconstructs the face without ears and neck. ICT's ``face`` part (vertices 0..9408)
also holds the ears and the front of the neck; its UV layout (tile 0) is exactly left-right
symmetric about u = 0.5 with the ears as bumps at the left and right edges and the neck along the
bottom. So the region is defined once, in UV: face-part triangles whose UV centroid lies in
``U_RANGE`` x ``V_MIN..1``. That keeps forehead to chin and cheeks back to the temples.

The nostril interiors (UV scale ~6 % of the face's typical one) and the inner rims of the lids
and lips are squeezed into strips of UV far smaller than their surface, so no UV map of practical
size holds their shape; triangles squeezed below ``MIN_UV_SCALE`` of the median linear scale are
left out. They are hardly ever seen in a photo.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .facekit import FaceKit

U_RANGE = (0.10, 0.90)  # drops the ears at the tile's left and right edges
V_MIN = 0.15  # drops the neck below the chin (the chin landmark sits at v ~ 0.22)
MIN_UV_SCALE = 0.5  # sqrt(UV area / 3D area), relative to the region's median


@dataclass(frozen=True, eq=False)
class FaceRegion:
    """The region as a sub-mesh of the ICT head.

    Attributes (Tr region triangles, Nr region vertices):
        triangles: (Tr, 3) int64 ICT vertex ids.
        triangles_uv: (Tr, 3) int64 ids into ``FaceKit.uv``.
        vertex_ids: (Nr,) int64 sorted ICT vertex ids used by the region.
        tri_uv: (Tr, 3, 2) float64 texture coordinates of each triangle's corners.
        vertex_ids: (Nr,) int64 sorted ICT vertex ids used by the region.
        vertex_uv: (Nr, 2) float32 one texture coordinate per region vertex (the first seen; ICT
            splits a few vertices along UV seams, and one coordinate is enough to sample at).
    """

    triangles: np.ndarray
    triangles_uv: np.ndarray
    tri_uv: np.ndarray
    vertex_ids: np.ndarray
    vertex_uv: np.ndarray

    @classmethod
    def build(cls, kit: FaceKit) -> "FaceRegion":
        start, end = kit.parts["face"]
        tris, tris_uv = kit.triangles, kit.triangles_uv
        in_part = np.all((tris >= start) & (tris < end), axis=1)
        corner_uv = kit.uv[tris_uv]  # (T, 3, 2)
        in_tile0 = np.all((corner_uv[..., 0] >= 0) & (corner_uv[..., 0] <= 1), axis=1)
        centroid = corner_uv.mean(1)
        inside = (centroid[:, 0] > U_RANGE[0]) & (centroid[:, 0] < U_RANGE[1]) & (centroid[:, 1] > V_MIN)
        keep = in_part & in_tile0 & inside
        keep[keep] = _uv_scale(kit.neutral[tris[keep]], corner_uv[keep]) >= MIN_UV_SCALE
        triangles, triangles_uv = tris[keep], tris_uv[keep]
        vertex_ids, first = np.unique(triangles.ravel(), return_index=True)
        vertex_uv = kit.uv[triangles_uv.ravel()[first]]
        tri_uv = kit.uv[triangles_uv].astype(np.float64)
        return cls(triangles, triangles_uv, tri_uv, vertex_ids, vertex_uv.astype(np.float32))


def _uv_scale(tri_xyz: np.ndarray, tri_uv: np.ndarray) -> np.ndarray:
    """(T, 3, 3) and (T, 3, 2) -> (T,) linear UV scale of each triangle relative to the median."""
    area3 = 0.5 * np.linalg.norm(np.cross(tri_xyz[:, 1] - tri_xyz[:, 0], tri_xyz[:, 2] - tri_xyz[:, 0]), axis=1)
    e1, e2 = tri_uv[:, 1] - tri_uv[:, 0], tri_uv[:, 2] - tri_uv[:, 0]
    area2 = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    scale = np.sqrt(area2 / np.maximum(area3, 1e-12))
    return scale / np.median(scale)
