"""The unwrap stage's numpy z-buffer and vertex normals against slow, obvious references."""

import numpy as np

from service.engine.topology import corner_sum
from service.engine.unwrap import vertex_normals, zbuffer


def zbuffer_reference(points: np.ndarray, triangles: np.ndarray, res: int) -> np.ndarray:
    """Every cell centre tested against every triangle, one at a time."""
    buffer = np.full((res, res), np.inf)
    for tri in points[triangles]:
        (ax, ay, az), (bx, by, bz), (cx, cy, cz) = tri
        area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
        if abs(area) <= 1e-12:
            continue
        for row in range(res):
            for col in range(res):
                x, y = col + 0.5, row + 0.5
                w0 = ((bx - x) * (cy - y) - (by - y) * (cx - x)) / area
                w1 = ((cx - x) * (ay - y) - (cy - y) * (ax - x)) / area
                w2 = 1.0 - w0 - w1
                if w0 >= 0 and w1 >= 0 and w2 >= 0:
                    buffer[row, col] = min(buffer[row, col], w0 * az + w1 * bz + w2 * cz)
    return buffer


def test_zbuffer_matches_the_cell_by_cell_reference():
    rng = np.random.default_rng(3)
    res = 12
    # triangles of every size, some reaching past the grid, overlapping at random depths
    centres = rng.uniform(-2, res + 2, (40, 1, 2))
    corners = centres + rng.normal(0, 1, (40, 3, 2)) * rng.choice([0.3, 1.5, 4.0, 9.0], (40, 1, 1))
    points = np.concatenate([corners.reshape(-1, 2), rng.uniform(0, 1, (120, 1))], 1)
    triangles = np.arange(120).reshape(40, 3)
    fast = zbuffer(points, triangles, res)
    np.testing.assert_allclose(fast, zbuffer_reference(points, triangles, res), rtol=1e-12, atol=1e-12)
    assert np.isfinite(fast).sum() > res * res // 4  # the test covers a good part of the grid


def vertex_normals_reference(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Each triangle's area-weighted normal added to its three corners, one triangle at a time."""
    summed = np.zeros_like(vertices)
    for i, j, k in triangles:
        normal = np.cross(vertices[j] - vertices[i], vertices[k] - vertices[i])
        for corner in (i, j, k):
            summed[corner] += normal
    return summed / np.linalg.norm(summed, axis=1, keepdims=True)


def test_vertex_normals_by_the_corner_sum_match_the_triangle_by_triangle_reference():
    rng = np.random.default_rng(4)
    vertices = rng.normal(size=(30, 3))
    triangles = np.array([rng.choice(30, 3, replace=False) for _ in range(50)])
    expected = vertex_normals_reference(vertices, triangles)
    np.testing.assert_allclose(vertex_normals(vertices, triangles, corner_sum(triangles, 30)), expected, atol=1e-12)
    np.testing.assert_allclose(vertex_normals(vertices, triangles), expected, atol=1e-12)  # the sum made in place
