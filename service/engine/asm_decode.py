"""Stage ``decode_asm``: the Attribute Spatial Maps and p_h -> vertices, landmarks, pose, blendshapes.

All positions come out in photo pixels (x right, y down) with z in the same pixel scale, positive
away from the camera (so x, y, z is right-handed), relative to the head origin's depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .align import Crop
from .camera import Camera
from .head import Coefficients
from .topology import MeshTopology


@dataclass(frozen=True)
class FaceGeometry:
    a_full: np.ndarray  # (3, S, S) canonical A = A_id + A_exp
    a_id: np.ndarray  # (3, S, S) canonical A_id
    vertices_id: np.ndarray  # (V, 3) canonical A_id at the vertices
    vertices_exp: np.ndarray  # (V, 3) canonical A_exp at the vertices
    camera: Camera  # in crop pixels
    crop: Crop
    screen: np.ndarray  # (V, 3) crop pixels + canonical depth of every vertex of A
    landmarks_photo: np.ndarray  # (68, 3) photo pixels
    landmarks_crop: np.ndarray  # (68, 2) crop pixels
    blendshapes: np.ndarray | None  # (53,) in [0, 1]
    coefficients: Coefficients | None  # ICT identity coefficients and blendshape weights (None without ICT taps)
    pose_degrees: tuple[float, float, float]  # yaw, pitch, roll
    translation_px: tuple[float, float]  # photo position of the canonical origin
    pixels_per_metre: float
    lighting: np.ndarray  # (9, 3) SH coefficients

    @property
    def vertices_full(self) -> np.ndarray:
        return self.vertices_id + self.vertices_exp


def decode_asm(outputs: dict[str, np.ndarray], crop: Crop, topo: MeshTopology,
               pose_fields: list[str] | None = None) -> FaceGeometry:
    """``outputs``: one face's geometry-graph outputs without the batch axis. A graph with a linear
    basis or the shape from landmarks gives its own coefficients (``id_coeffs``, ``exp_weights``), used
    only where the store has no ICT taps; otherwise ICT's identity and expression are fitted to A
    together (``HeadFit.fit``: weights in [0, 1]), whatever the graph."""
    a_id, a_exp = outputs["a_id"].astype(np.float64), outputs["a_exp"].astype(np.float64)
    a_full = a_id + a_exp
    vid = a_id[:, topo.rows, topo.cols].T
    vexp = a_exp[:, topo.rows, topo.cols].T
    camera = Camera.from_pose(outputs["p_h"], crop.size, pose_fields)
    screen = camera.project(vid + vexp)

    lm_screen = project_landmarks(a_full, camera, topo)
    # Crop pixels -> photo pixels; depth: canonical units -> the same pixels as x and y.
    pixels_per_canonical = crop.size / 2.0 * camera.scale * crop.step
    landmarks_photo = np.concatenate([crop.to_photo(lm_screen[:, :2]), lm_screen[:, 2:] * pixels_per_canonical], 1)

    origin = camera.project(np.zeros(3))
    metres_per_canonical = topo.units_per_canonical * topo.metres_per_unit
    yaw, pitch, roll = (float(np.degrees(v)) for v in outputs["p_h"][:3])
    coefficients = None
    # The bounded joint fit first, even where the graph gives coefficients: a network that learns them
    # through the shape they decode to (0.9.0) does not learn which of the blendshapes that give the
    # same shape is meant (its own weights: MAE 0.150 against the zeros' 0.080 on held-out synthetic
    # faces; fitted: 0.075, with no mutually exclusive pair both above 0.3).
    if topo.head is not None:
        coefficients = topo.head.fit(a_full)
    elif "exp_weights" in outputs:
        coefficients = Coefficients(identity=outputs["id_coeffs"].astype(np.float64),
                                    expression=outputs["exp_weights"].astype(np.float64))
    return FaceGeometry(
        a_full=a_full, a_id=a_id, vertices_id=vid, vertices_exp=vexp, camera=camera, crop=crop, screen=screen,
        landmarks_photo=landmarks_photo, landmarks_crop=lm_screen[:, :2],
        blendshapes=None if coefficients is None else coefficients.expression, coefficients=coefficients,
        pose_degrees=(yaw, pitch, roll),
        translation_px=tuple(float(v) for v in crop.to_photo(origin[:2])),
        pixels_per_metre=pixels_per_canonical / metres_per_canonical,
        lighting=outputs["p_l"].reshape(9, 3).astype(np.float64),
    )


def project_landmarks(a_full: np.ndarray, camera: Camera, topo: MeshTopology) -> np.ndarray:
    """(3, S, S) canonical A -> (68, 3): the landmarks in crop pixels and canonical depth."""
    return camera.project(sample_bilinear(a_full, topo.landmarks_uv))


def sample_bilinear(maps: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(C, S, S) maps at (N, 2) continuous (x = col, y = row) points, pixel centres at integers -> (N, C)."""
    size = maps.shape[-1]
    x = np.clip(xy[:, 0], 0, size - 1)
    y = np.clip(xy[:, 1], 0, size - 1)
    x0 = np.minimum(np.floor(x).astype(np.intp), size - 2)
    y0 = np.minimum(np.floor(y).astype(np.intp), size - 2)
    fx, fy = x - x0, y - y0
    top = maps[:, y0, x0] * (1 - fx) + maps[:, y0, x0 + 1] * fx
    bottom = maps[:, y0 + 1, x0] * (1 - fx) + maps[:, y0 + 1, x0 + 1] * fx
    return (top * (1 - fy) + bottom * fy).T
