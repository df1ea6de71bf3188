"""Per-vertex attributes <-> S x S UV maps.

UV-pixel convention (shared with the model-store contract): pixel (row r, col c) of an S x S map
has its centre at ``u = (c + 0.5) / S``, ``v = 1 - (r + 0.5) / S`` -- u right, v up, row 0 at the top.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def uv_to_pixel(uv: np.ndarray, size: int) -> np.ndarray:
    """(..., 2) uv -> (..., 2) continuous pixel coordinates (x = col, y = row), centres at integers."""
    uv = np.asarray(uv, np.float64)
    return np.stack([uv[..., 0] * size - 0.5, (1.0 - uv[..., 1]) * size - 0.5], axis=-1)


def pixel_to_uv(xy: np.ndarray, size: int) -> np.ndarray:
    """Inverse of :func:`uv_to_pixel`."""
    xy = np.asarray(xy, np.float64)
    return np.stack([(xy[..., 0] + 0.5) / size, 1.0 - (xy[..., 1] + 0.5) / size], axis=-1)


def rasterize_uv(tri_uv: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Which triangle covers each pixel centre of an S x S UV map, and where.

    Args:
        tri_uv: (T, 3, 2) texture coordinates of each triangle's corners.
        size: S.
    Returns:
        tri_index: (S, S) int64, the covering triangle or -1; where triangles overlap (they should
            not in a UV layout), the lowest index wins.
        bary: (S, S, 3) float64 barycentric weights of the pixel centre in that triangle.
    """
    xy = uv_to_pixel(tri_uv, size)  # (T, 3, 2)
    lo = np.clip(np.ceil(xy.min(1) - 1e-9).astype(np.int64), 0, size - 1)
    hi = np.clip(np.floor(xy.max(1) + 1e-9).astype(np.int64), 0, size - 1)
    extent = hi - lo + 1  # (T, 2) as (nx, ny)
    tri_index = np.full(size * size, -1, np.int64)
    bary_out = np.zeros((size * size, 3))
    # Candidates are (triangle, pixel in its bounding box); triangles are grouped by box size so
    # one oversized triangle does not blow up the candidate count of all the others.
    for ext in np.unique(extent, axis=0):
        if np.any(ext <= 0):
            continue
        tris = np.flatnonzero(np.all(extent == ext, axis=1))
        oy, ox = np.mgrid[0 : ext[1], 0 : ext[0]]
        px = lo[tris, 0, None] + ox.ravel()[None]  # (t, k)
        py = lo[tris, 1, None] + oy.ravel()[None]
        b = _barycentric(xy[tris], px.astype(np.float64), py.astype(np.float64))  # (t, k, 3)
        inside = np.all(b >= -1e-9, axis=-1)
        t_id = np.broadcast_to(tris[:, None], px.shape)[inside]
        flat = (py * size + px)[inside]
        b = b[inside]
        if flat.size == 0:
            continue
        # Lowest triangle index wins, independent of group order.
        order = np.lexsort((t_id, flat))
        flat, t_id, b = flat[order], t_id[order], b[order]
        first = np.r_[True, flat[1:] != flat[:-1]]
        flat, t_id, b = flat[first], t_id[first], b[first]
        take = (tri_index[flat] == -1) | (t_id < tri_index[flat])
        tri_index[flat[take]] = t_id[take]
        bary_out[flat[take]] = b[take]
    return tri_index.reshape(size, size), bary_out.reshape(size, size, 3)


def _barycentric(tri_xy: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Barycentrics of points (t, k) in triangles (t, 3, 2) -> (t, k, 3); degenerate -> -1."""
    a, b, c = (tri_xy[:, i, None, :] for i in range(3))
    area = (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])
    safe = np.where(np.abs(area) < 1e-12, np.inf, area)
    w0 = ((b[..., 0] - px) * (c[..., 1] - py) - (b[..., 1] - py) * (c[..., 0] - px)) / safe
    w1 = ((c[..., 0] - px) * (a[..., 1] - py) - (c[..., 1] - py) * (a[..., 0] - px)) / safe
    w2 = 1.0 - w0 - w1
    out = np.stack([w0, w1, w2], axis=-1)
    out[np.broadcast_to(np.isinf(safe)[..., None], out.shape)] = -1.0
    return out


@dataclass(frozen=True, eq=False)
class UVLayout:
    """How an S x S UV map samples a triangle mesh.

    P = number of valid pixels (``mask.sum()``), listed in row-major order.

    Attributes:
        size: S.
        mask: (S, S) bool, pixel centres covered by a triangle.
        pixels: (P, 2) int64 (row, col) of the valid pixels.
        pixel_vertices: (P, 3) int64 mesh vertex ids of the covering triangle's corners.
        pixel_bary: (P, 3) float32 barycentric weights of the pixel centre.
        pixel_triangle: (P,) int64 index of the covering triangle.
    """

    size: int
    mask: np.ndarray
    pixels: np.ndarray
    pixel_vertices: np.ndarray
    pixel_bary: np.ndarray
    pixel_triangle: np.ndarray

    @classmethod
    def build(cls, triangles: np.ndarray, tri_uv: np.ndarray, size: int) -> "UVLayout":
        """triangles: (T, 3) vertex ids; tri_uv: (T, 3, 2) corner texture coordinates."""
        tri_index, bary = rasterize_uv(tri_uv, size)
        mask = tri_index >= 0
        rows, cols = np.nonzero(mask)
        t = tri_index[rows, cols]
        return cls(
            size=size,
            mask=mask,
            pixels=np.stack([rows, cols], 1),
            pixel_vertices=np.asarray(triangles)[t],
            pixel_bary=bary[rows, cols].astype(np.float32),
            pixel_triangle=t,
        )

    @property
    def flat_index(self) -> np.ndarray:
        """(P,) row * S + col of each valid pixel."""
        return self.pixels[:, 0] * self.size + self.pixels[:, 1]

    def to_pixels(self, attr: np.ndarray) -> np.ndarray:
        """(..., N, C) per-vertex attribute -> (..., P, C) values at the valid pixels."""
        corners = attr[..., self.pixel_vertices, :]  # (..., P, 3, C)
        return np.einsum("...pkc,pk->...pc", corners, self.pixel_bary)

    def to_map(self, attr: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """(..., N, C) per-vertex attribute -> (..., S, S, C) UV map; ``fill`` outside the mask."""
        values = self.to_pixels(attr)
        out = np.full((*values.shape[:-2], self.size * self.size, values.shape[-1]), fill, values.dtype)
        out[..., self.flat_index, :] = values
        return out.reshape(*values.shape[:-2], self.size, self.size, values.shape[-1])
