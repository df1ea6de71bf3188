"""Everything about the S x S UV layout that the network, the losses and the service share.

The UV map *is* the output mesh: its vertices are the valid UV pixels (row-major), its triangles a
grid triangulation of the mask, its texture coordinates the pixel centres. These arrays are what
``topology.npz`` of the model-store contract holds (see ``model_store/README.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.path import Path as Polygon

from .facekit import FaceKit
from .frame import CanonicalFrame
from .region import FaceRegion
from .sampling import UVSampler
from .uvmap import UVLayout, pixel_to_uv, rasterize_uv, uv_to_pixel

# iBUG's "right" is the subject's right: the image's left, ICT's -x.
REGION_NAMES = ("outside", "skin", "brow_right", "brow_left", "eye_right", "eye_left", "nose", "mouth")
# PRNet's weight mask: landmarks : eyes, nose, mouth : rest of the face = 16 : 4 : 3.
REGION_WEIGHTS = {"outside": 0.0, "skin": 3.0, "brow_right": 3.0, "brow_left": 3.0,
                  "eye_right": 4.0, "eye_left": 4.0, "nose": 4.0, "mouth": 4.0}
LANDMARK_WEIGHT = 16.0
LANDMARK_RADIUS = 1.0 / 64  # of the map side


@dataclass(frozen=True, eq=False)
class Topology:
    """The shared UV topology at one resolution S (V valid pixels, F grid triangles).

    Attributes:
        size: S.
        uv_mask: (S, S) bool valid pixels.
        vertex_pixels: (V, 2) int32 (row, col) of each mesh vertex, row-major.
        uv_coords: (V, 2) float32 texture coordinates of the pixel centres (v up).
        triangles: (F, 3) int32 grid triangles, counter-clockwise seen from the front (+z).
        landmarks_uv: (68, 2) float32 landmark positions in pixel coordinates (x = col, y = row).
        region_labels: (S, S) uint8 indices into ``REGION_NAMES``.
        weight_mask: (S, S) float32 the facial loss weight W.
        mirror_map: (S, S) int32 flat index of the left-right mirrored pixel, -1 where none.
        expression_basis: (53, V, 3) float32 blendshape deltas at the vertices, canonical units.
        expression_names: the 53 ARKit names of ``expression_basis``'s rows.
        ict_vertex_ids: (Nr,) int32 ICT ids of the region's own vertices.
        ict_sample_index, ict_sample_weight: (Nr, 4) masked-bilinear taps that read an S x S map
            at those vertices' UVs, giving an ICT-topology mesh.
        ict_triangles: (Tr, 3) int32 the region's ICT triangles, indexing ``ict_vertex_ids``.
    """

    size: int
    uv_mask: np.ndarray
    vertex_pixels: np.ndarray
    uv_coords: np.ndarray
    triangles: np.ndarray
    landmarks_uv: np.ndarray
    region_labels: np.ndarray
    weight_mask: np.ndarray
    mirror_map: np.ndarray
    expression_basis: np.ndarray
    expression_names: tuple[str, ...]
    ict_vertex_ids: np.ndarray
    ict_sample_index: np.ndarray
    ict_sample_weight: np.ndarray
    ict_triangles: np.ndarray

    def landmark_mirror(self) -> tuple[int, ...]:
        """The 68 landmarks' left-right pairs: landmark i of a face is landmark ``[i]`` of its mirror
        image. Read off the layout's symmetry about its centre column (see ``mirror_map``)."""
        flipped = self.landmarks_uv * (-1.0, 1.0) + (self.size - 1, 0.0)
        distance = np.linalg.norm(flipped[:, None] - self.landmarks_uv[None], axis=-1)
        return tuple(int(j) for j in distance.argmin(1))

    def to_npz_dict(self) -> dict[str, np.ndarray]:
        """The arrays of ``topology.npz`` (key -> array)."""
        out = {k: v for k, v in vars(self).items() if k not in ("size", "expression_names")}
        out["region_names"] = np.array(REGION_NAMES)
        out["expression_names"] = np.array(self.expression_names)
        return out


def build_topology(kit: FaceKit, region: FaceRegion, layout: UVLayout, frame: CanonicalFrame) -> Topology:
    size, mask = layout.size, layout.mask
    rows, cols = layout.pixels[:, 0], layout.pixels[:, 1]
    uv_coords = pixel_to_uv(np.stack([cols, rows], 1), size).astype(np.float32)
    landmarks_uv = uv_to_pixel(landmark_uvs(kit), size).astype(np.float32)
    labels = region_labels(mask, landmarks_uv)
    pixel_triangle, _ = rasterize_uv(region.tri_uv, size)
    sampler = UVSampler.build(
        region.vertex_uv, mask, vertex_ids=region.vertex_ids, triangles=region.triangles,
        pixel_triangle=pixel_triangle,
    )
    local = np.searchsorted(region.vertex_ids, region.triangles)
    basis = layout.to_pixels(kit.expression) / np.float32(frame.scale)
    return Topology(
        size=size,
        uv_mask=mask,
        vertex_pixels=layout.pixels.astype(np.int32),
        uv_coords=uv_coords,
        triangles=grid_triangles(mask),
        landmarks_uv=landmarks_uv,
        region_labels=labels,
        weight_mask=weight_mask(labels, landmarks_uv),
        mirror_map=mirror_map(mask),
        expression_basis=basis.astype(np.float32),
        expression_names=kit.expression_names,
        ict_vertex_ids=region.vertex_ids.astype(np.int32),
        ict_sample_index=sampler.index.astype(np.int32),
        ict_sample_weight=sampler.weight,
        ict_triangles=local.astype(np.int32),
    )


def landmark_uvs(kit: FaceKit) -> np.ndarray:
    """(68, 2) texture coordinates of the landmark vertices (their tile-0 UV)."""
    corner_uv = kit.uv[kit.triangles_uv]  # (T, 3, 2)
    in_tile0 = (corner_uv[..., 0] >= 0) & (corner_uv[..., 0] <= 1)
    out = np.empty((68, 2), np.float64)
    for i, v in enumerate(kit.landmarks68):
        hit = (kit.triangles == v) & in_tile0
        out[i] = corner_uv[hit][0]
    return out


def grid_triangles(mask: np.ndarray) -> np.ndarray:
    """(F, 3) int32 triangles over the valid pixels of ``mask`` (vertex = row-major valid index).

    Each 2 x 2 block of pixels gives two triangles when all four are valid, one when three are.
    Corners go top-left, bottom-left, bottom-right, top-right: counter-clockwise in (u, v), which
    is counter-clockwise seen from the front because the layout is a frontal unwrap.
    """
    vid = np.full(mask.shape, -1, np.int64)
    vid[mask] = np.arange(int(mask.sum()))
    quad = np.stack([vid[:-1, :-1], vid[1:, :-1], vid[1:, 1:], vid[:-1, 1:]], -1).reshape(-1, 4)
    valid = quad >= 0
    full = quad[valid.all(1)]
    tris = [full[:, [0, 1, 3]], full[:, [3, 1, 2]]]
    three = quad[valid.sum(1) == 3]
    if len(three):
        ok = three >= 0
        # Dropping the missing corner keeps the remaining three in cyclic (CCW) order.
        tris.append(three[ok].reshape(-1, 3))
    return np.concatenate(tris).astype(np.int32)


def mirror_map(mask: np.ndarray) -> np.ndarray:
    """(S, S) int32: the ICT UV layout is symmetric about u = 0.5, so mirroring flips columns."""
    size = mask.shape[0]
    rows, cols = np.mgrid[0:size, 0:size]
    target = rows * size + (size - 1 - cols)
    return np.where(mask & mask[:, ::-1], target, -1).astype(np.int32)


def region_labels(mask: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(S, S) uint8 semantic regions from polygons around the 68 UV landmarks (pixel coords)."""
    size = mask.shape[0]
    yy, xx = np.mgrid[0:size, 0:size]
    points = np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float64)
    labels = np.where(mask, REGION_NAMES.index("skin"), 0).astype(np.uint8)
    eye_width = np.linalg.norm(landmarks[39] - landmarks[36])
    shapes = {
        "brow_right": _band(landmarks[17:22], 0.25 * eye_width),
        "brow_left": _band(landmarks[22:27], 0.25 * eye_width),
        # The eye is a slit in UV; the region takes in the lids above and below it.
        "eye_right": _grow(landmarks[36:42], 1.4, 4.0),
        "eye_left": _grow(landmarks[42:48], 1.4, 4.0),
        "nose": _grow(landmarks[[27, 31, 32, 33, 34, 35]], 1.3),
        "mouth": _grow(landmarks[48:60], 1.25),
    }
    for name, polygon in shapes.items():
        inside = Polygon(polygon).contains_points(points).reshape(size, size)
        labels[inside & mask] = REGION_NAMES.index(name)
    return labels


def weight_mask(labels: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(S, S) float32 W: region weights, and LANDMARK_WEIGHT on a small disc at each landmark."""
    size = labels.shape[0]
    weights = np.array([REGION_WEIGHTS[n] for n in REGION_NAMES], np.float32)[labels]
    yy, xx = np.mgrid[0:size, 0:size]
    radius = max(1.0, LANDMARK_RADIUS * size)
    for x, y in landmarks:
        near = (xx - x) ** 2 + (yy - y) ** 2 <= radius**2
        weights[near & (labels > 0)] = LANDMARK_WEIGHT
    return weights


def _grow(points: np.ndarray, factor: float, factor_y: float | None = None) -> np.ndarray:
    """The polygon through ``points`` scaled about its centroid (by ``factor_y`` along y if given)."""
    centre = points.mean(0)
    scale = np.array([factor, factor if factor_y is None else factor_y])
    return centre + (points - centre) * scale


def _band(polyline: np.ndarray, half_width: float) -> np.ndarray:
    """A closed polygon around an open polyline (rows ~ y grows down): its upper and lower offsets."""
    return np.concatenate([polyline - [0, half_width], polyline[::-1] + [0, half_width]])
