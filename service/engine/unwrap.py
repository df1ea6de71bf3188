"""Stage ``unwrap``: where each UV pixel lands in the crop (``uv_grid``) and whether it is seen there.

A UV pixel is visible when its vertex faces the camera and nothing of the mesh lies in front of it
(a z-buffer of the mesh's own triangles, rasterized here in numpy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from .asm_decode import FaceGeometry
from .topology import MeshTopology, corner_sum

DEPTH_TOLERANCE = 0.05  # canonical units (~1 cm), as the synthetic ground truth uses


@dataclass(frozen=True)
class Unwrap:
    uv_grid: np.ndarray  # (S, S, 2) float32, grid_sample's [-1, 1] (align_corners=False) in the crop
    visibility: np.ndarray  # (S, S) bool
    normals_view: np.ndarray  # (V, 3) unit vertex normals in the view frame (z towards the camera)

    @property
    def coverage(self) -> float:
        return float(self.visibility.sum())


def unwrap(geo: FaceGeometry, topo: MeshTopology) -> Unwrap:
    s, n = topo.size, geo.crop.size
    everywhere = geo.camera.project(geo.a_full.reshape(3, -1).T)  # every UV pixel, masked or not
    uv_grid = (2.0 * everywhere[:, :2] / n - 1.0).reshape(s, s, 2).astype(np.float32)

    normals = geo.camera.view(vertex_normals(geo.vertices_full, topo.triangles, topo.corner_sum))
    res = max(n, s)
    cells = geo.screen.copy()
    cells[:, :2] *= res / n
    buffer = zbuffer(cells, topo.triangles, res)
    col = np.floor(cells[:, 0]).astype(np.intp)
    row = np.floor(cells[:, 1]).astype(np.intp)
    inside = (col >= 0) & (col < res) & (row >= 0) & (row < res)
    nearest = np.full(len(cells), np.inf)
    nearest[inside] = buffer[row[inside], col[inside]]
    # A cell's depth comes from its centre; on a slope a vertex sits up to a cell's worth deeper.
    cell_canonical = 2.0 / (res * geo.camera.scale)
    tolerance = DEPTH_TOLERANCE + 2.0 * cell_canonical
    seen = inside & (normals[:, 2] > 0) & (cells[:, 2] <= nearest + tolerance)
    visibility = np.zeros((s, s), bool)
    visibility[topo.rows, topo.cols] = seen
    return Unwrap(uv_grid=uv_grid, visibility=visibility, normals_view=normals)


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray, corners: sparse.csr_matrix | None = None) -> np.ndarray:
    """(V, 3) area-weighted unit normals; triangles are counter-clockwise seen from outside. ``corners``:
    ``corner_sum(triangles, V)``, which a mesh's requests share (``MeshTopology.corner_sum``); made here
    when not given."""
    x, y, z = (np.ascontiguousarray(vertices[:, i])[triangles.T] for i in range(3))  # (3, F): as zbuffer
    ux, uy, uz, vx, vy, vz = x[1] - x[0], y[1] - y[0], z[1] - z[0], x[2] - x[0], y[2] - y[0], z[2] - z[0]
    face = np.stack([uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx], 1)  # np.cross's terms, in its order
    summed = (corner_sum(triangles, len(vertices)) if corners is None else corners) @ face
    return summed / np.maximum(np.linalg.norm(summed, axis=1, keepdims=True), 1e-12)


def zbuffer(points: np.ndarray, triangles: np.ndarray, res: int) -> np.ndarray:
    """(res, res) nearest depth at each cell centre over the triangles; inf where none covers it.

    ``points``: (V, 3) x, y in cell units (cell (i, j) covers [j, j+1) x [i, i+1)), depth (smaller =
    nearer). Triangles are grouped by how many cells their bounding box spans so that each group is
    one vectorised barycentric test over a k x k window. Each corner's x, y and depth are kept as
    contiguous (F,) rows, which numpy works through faster than the strided columns of an (F, 3, 3)
    array."""
    buffer = np.full(res * res, np.inf)
    corners = triangles.T  # (3, F): a fancy index of this shape gathers contiguous rows
    x, y, z = (np.ascontiguousarray(points[:, i])[corners] for i in range(3))  # (3, F) each
    lo_x = np.maximum(np.ceil(np.minimum(np.minimum(x[0], x[1]), x[2]) - 0.5).astype(np.int64), 0)
    lo_y = np.maximum(np.ceil(np.minimum(np.minimum(y[0], y[1]), y[2]) - 0.5).astype(np.int64), 0)
    hi_x = np.minimum(np.floor(np.maximum(np.maximum(x[0], x[1]), x[2]) - 0.5).astype(np.int64), res - 1)
    hi_y = np.minimum(np.floor(np.maximum(np.maximum(y[0], y[1]), y[2]) - 0.5).astype(np.int64), res - 1)
    span = np.maximum(hi_x - lo_x, hi_y - lo_y) + 1
    widest, k = int(span.max(initial=0)), 1
    while True:
        group = np.flatnonzero((span > k // 2) & (span <= k)) if k > 1 else np.flatnonzero(span == 1)
        if len(group):
            _rasterize_group(buffer, x[:, group], y[:, group], z[:, group], lo_x[group], lo_y[group], k, res)
        if k >= widest:
            break
        k *= 2
    return buffer.reshape(res, res)


def _rasterize_group(buffer: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray, lo_x: np.ndarray,
                     lo_y: np.ndarray, k: int, res: int) -> None:
    """G triangles, their corners' (3, G) ``x``, ``y`` and depth ``z``, each tested at the k x k cell
    centres from (``lo_x``, ``lo_y``) (G,): the depth wherever a centre is inside, folded into ``buffer``."""
    off_x, off_y = np.meshgrid(np.arange(k), np.arange(k), indexing="xy")
    col = lo_x[:, None] + off_x.reshape(1, -1)  # (G, k*k)
    row = lo_y[:, None] + off_y.reshape(1, -1)
    px, py = col + 0.5, row + 0.5
    (ax, bx, cx), (ay, by, cy) = (x[:, :, None]), (y[:, :, None])  # each (G, 1)
    area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    ok = np.abs(area) > 1e-12
    safe = np.where(ok, area, 1.0)
    w0 = ((bx - px) * (cy - py) - (by - py) * (cx - px)) / safe
    w1 = ((cx - px) * (ay - py) - (cy - py) * (ax - px)) / safe
    w2 = 1.0 - w0 - w1
    inside = ok & (w0 >= 0) & (w1 >= 0) & (w2 >= 0) & (col < res) & (row < res)
    depth = w0 * z[0][:, None] + w1 * z[1][:, None] + w2 * z[2][:, None]
    flat = row * res + col
    np.minimum.at(buffer, flat[inside], depth[inside])


def heatmaps(landmarks_crop: np.ndarray, size: int, sigma_at_128: float = 1.5) -> np.ndarray:
    """(68, N, N) float32 Gaussians (peak 1) at the landmarks, in crop pixels; sigma scales with N."""
    sigma = sigma_at_128 * size / 128.0
    centres = np.arange(size) + 0.5
    # (68, 2, N): each landmark's Gaussian along x and along y; a map is the outer product of the two.
    g = np.exp(-((centres - landmarks_crop[:, :2, None]) ** 2) / (2 * sigma**2)).astype(np.float32)
    # Tails below float32's smallest normal number would become denormals, and every multiply that
    # touches a denormal is slow on x86: they took texture.onnx from 32 to 63 ms on 2 cores. Each
    # factor under its square root is zeroed, so no product of two is a denormal; what this drops
    # is below 1e-19 (docs/service.md#latency).
    g[g < _SQRT_TINY] = 0.0
    return g[:, 1, :, None] * g[:, 0, None, :]


_SQRT_TINY = np.float32(np.sqrt(np.finfo(np.float32).tiny))
