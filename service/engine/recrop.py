"""Stage ``recrop``: for a detected face, a second geometry pass on a crop around the first pass's landmarks.

The network learnt on crops of ``crop_scale`` x the 68-landmark box (``training.photos``), which is
not the box dlib's detector draws. On the AFLW2000-3D dev photos dlib finds, its box has about the
landmark box's size (median ratio 1.01 below 30° of yaw) but sits higher (its centre 6 % of the side
above at the median; 14 % for yaw >= 30°) and, for a turned head, off to one side (8 % below 30°,
24 % above), so the first pass sees the face off centre, the more so the more the head is turned.
Its landmarks, rough as they may be, give the box the network knows, and the second pass on that
crop is what the service returns: 0.7.0's NME on those photos fell from 8.96 to 6.40 % (mean of the
yaw bins) and from 4.96 to 4.28 % overall. A caller's box is taken to be the landmark box already
(the evaluation protocol's) and is not recropped: from the ground truth's box a second pass only
adds the first pass's error (6.99 → 8.45 %). All of it: ``python -m training.evaluate boxes --model …``.
YuNet's box is calibrated to the landmark box instead (``detect.YUNET_TO_LANDMARK_BOX``, ``YUNET_TURN``),
and after it the recrop costs 0.78 points (7.72 → 8.50 %, every photo scored), so by default only dlib's
detectors recrop (``Settings.recrops``; docs/detection.md).
"""

from __future__ import annotations

import numpy as np

from .align import Crop, crop_face
from .asm_decode import project_landmarks
from .camera import Camera
from .runtime import GEOMETRY_OUTPUTS
from .topology import MeshTopology

Box = tuple[float, float, float, float]

# A landmark box this many times larger or smaller than the detector's says the first pass failed
# (no face in the box, or an untrained network): its crop would help nobody, so the first one stays.
PLAUSIBLE_SIDE_RATIO = 4.0


def landmark_box(landmarks: np.ndarray) -> Box:
    """The 2D bounding box (x0, y0, x1, y1) of (68, 2+) landmarks: the face box of the 3DDFA protocol."""
    lo, hi = landmarks[:, :2].min(0), landmarks[:, :2].max(0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def landmarks_in_photo(outputs: dict[str, np.ndarray], crop: Crop, topo: MeshTopology,
                       pose_fields: list[str] | None = None) -> np.ndarray:
    """One face's geometry-graph outputs (no batch axis) -> its 68 landmarks (68, 2) in photo pixels."""
    a_full = outputs["a_id"].astype(np.float64) + outputs["a_exp"].astype(np.float64)
    camera = Camera.from_pose(outputs["p_h"], crop.size, pose_fields)
    return crop.to_photo(project_landmarks(a_full, camera, topo)[:, :2])


def recrop(photo: np.ndarray, boxes: list[Box], crops: list[Crop], outputs: list[np.ndarray], topo: MeshTopology,
           scale: float, pose_fields: list[str] | None = None) -> list[Crop]:
    """The second pass's crops: for face i (its detector box, first crop and row i of the first pass's
    ``GEOMETRY_OUTPUTS``), the crop around its predicted landmarks' box, or its first crop where that
    box is implausible (not finite, or over ``PLAUSIBLE_SIDE_RATIO`` times off the detector's size)."""
    out = []
    for i, (box, crop) in enumerate(zip(boxes, crops)):
        row = {name: value[i] for name, value in zip(GEOMETRY_OUTPUTS, outputs)}
        new = landmark_box(landmarks_in_photo(row, crop, topo, pose_fields))
        side, detected = max(new[2] - new[0], new[3] - new[1]), max(box[2] - box[0], box[3] - box[1])
        plausible = np.isfinite(new).all() and detected / PLAUSIBLE_SIDE_RATIO <= side <= detected * PLAUSIBLE_SIDE_RATIO
        out.append(crop_face(photo, new, crop.size, scale) if plausible else crop)
    return out
