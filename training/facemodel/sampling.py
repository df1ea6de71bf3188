"""Sampling an S x S UV map back at continuous UV positions (ICT vertex UVs, landmarks).

A plain bilinear lookup would mix in the zeros outside the UV mask along the region's border, so
the four neighbours are weighted by their validity and renormalised. A point with no valid
neighbour takes the nearest valid pixel.

Along the mouth and eye slits the two lips (or lids) are neighbours in UV but not on the surface;
when the query points are mesh vertices, a neighbour pixel counts only if the triangle covering
it lies within two rings of the vertex on the mesh, so a lip vertex never borrows from the other lip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.spatial import cKDTree

from .uvmap import uv_to_pixel


@dataclass(frozen=True, eq=False)
class UVSampler:
    """Precomputed masked-bilinear weights for Q query points.

    Attributes:
        size: S.
        index: (Q, 4) int64 flat pixel indices (row * S + col) of the neighbours.
        weight: (Q, 4) float32 weights, summing to 1 per row, zero for invalid neighbours.
    """

    size: int
    index: np.ndarray
    weight: np.ndarray

    @classmethod
    def build(
        cls,
        uv: np.ndarray,
        mask: np.ndarray,
        *,
        vertex_ids: np.ndarray | None = None,
        triangles: np.ndarray | None = None,
        pixel_triangle: np.ndarray | None = None,
    ) -> "UVSampler":
        """Precompute the weights.

        Args:
            uv: (Q, 2) texture coordinates of the query points.
            mask: (S, S) bool valid pixels.
            vertex_ids, triangles, pixel_triangle: for queries at mesh vertices: (Q,) vertex id of
                each query, (T, 3) the mesh's triangles and (S, S) int the triangle covering each
                pixel (-1 outside); neighbours off the vertex's two-ring are then ignored.
        """
        size = mask.shape[0]
        xy = uv_to_pixel(uv, size)
        x0 = np.floor(xy[:, 0]).astype(np.int64)
        y0 = np.floor(xy[:, 1]).astype(np.int64)
        fx, fy = xy[:, 0] - x0, xy[:, 1] - y0
        cols = np.stack([x0, x0 + 1, x0, x0 + 1], 1)
        rows = np.stack([y0, y0, y0 + 1, y0 + 1], 1)
        w = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], 1)
        inside = (cols >= 0) & (cols < size) & (rows >= 0) & (rows < size)
        rows_c, cols_c = np.clip(rows, 0, size - 1), np.clip(cols, 0, size - 1)
        valid = inside & mask[rows_c, cols_c]
        if vertex_ids is not None:
            near = _two_ring(triangles, int(pixel_triangle.max()) + 1, int(np.max(vertex_ids)) + 1)
            tri = np.maximum(pixel_triangle[rows_c, cols_c], 0)
            valid &= np.asarray(near[np.repeat(vertex_ids, 4), tri.ravel()]).reshape(tri.shape) > 0
        w = np.where(valid, w, 0.0)
        total = w.sum(1, keepdims=True)
        index = rows_c * size + cols_c
        lonely = total[:, 0] < 1e-6
        if lonely.any():
            vr, vc = np.nonzero(mask)
            _, nearest = cKDTree(np.stack([vc, vr], 1)).query(xy[lonely])
            index[lonely] = (vr[nearest] * size + vc[nearest])[:, None]
            w[lonely] = [1.0, 0.0, 0.0, 0.0]
            total[lonely] = 1.0
        return cls(size=size, index=index, weight=(w / total).astype(np.float32))

    def sample(self, uv_map: np.ndarray) -> np.ndarray:
        """(..., S, S, C) map -> (..., Q, C) values at the query points."""
        flat = uv_map.reshape(*uv_map.shape[:-3], self.size * self.size, uv_map.shape[-1])
        return np.einsum("...qkc,qk->...qc", flat[..., self.index, :], self.weight)


def _two_ring(triangles: np.ndarray, n_tri: int, n_vert: int) -> sparse.csr_matrix:
    """(n_vert, n_tri) sparse: > 0 where the triangle shares a vertex with one incident to the vertex."""
    t = np.asarray(triangles)[:n_tri]
    n = max(n_vert, int(t.max()) + 1)
    incidence = sparse.csr_matrix(
        (np.ones(t.size), (t.ravel(), np.repeat(np.arange(len(t)), 3))), shape=(n, len(t))
    )
    return (incidence @ incidence.T @ incidence).tocsr()
