"""Stage ``detect``: face boxes from YuNet (OpenCV's ``FaceDetectorYN``, the default) or dlib (HOG, CNN).

Both run on a scaled copy of the photo (:func:`detection_scale`). Each face carries the detector's
box (returned to the caller) and ``crop_box``, the box the first crop is cut around: for YuNet its
box moved and scaled by :data:`YUNET_TO_LANDMARK_BOX` to where the 68-landmark box (the box the
network learnt on) lies on average, and by :data:`YUNET_TURN` as the head turns; for dlib its own
box, which the recrop (``recrop.py``) corrects.
docs/detection.md has the measurements behind every constant here.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import cv2
import dlib
import numpy as np

from .assets import read_verified

Box = tuple[float, float, float, float]
DetectorName = Literal["yunet", "hog", "cnn"]

YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
# The face sizes (68-landmark box side, in pixels of YuNet's input) YuNet finds reliably: on 60
# AFLW2000-3D dev photos scaled to each size, 87 % at 32 px (58 % at 20 px), 93-97 % from 64 to 400 px,
# 87 % at 600 px and 58 % at 900 px.
YUNET_MIN_PX, YUNET_MAX_PX = 32, 400
# Where the 68-landmark box lies against YuNet's box, in units of YuNet's box side (the longer one):
# its side, and its centre's offset (dx, dy; dy > 0: lower). Medians over the 199 of 200 AFLW2000-3D
# dev photos YuNet finds: side 0.783, dx -0.005 (taken as 0: a face is as often turned either way),
# dy +0.116; the same within 0.013 by yaw (< 30°, >= 30°) and within 0.025 fitted on either half of
# the photos. YuNet's box reaches from the brows' top to below the chin, a quarter larger than the
# landmark box and centred higher (docs/detection.md).
YUNET_TO_LANDMARK_BOX = {"side": 0.783, "dx": 0.0, "dy": 0.116}
# And by the head's turn t (yunet_turn: the nose's offset from the eyes' midpoint across the face, in
# eye distances; median |t| 0.09 below 15° of yaw, 0.41 at 30-45°, 0.86 at 60-75°, 1.76 beyond): the
# crop box moves ``dx`` * t of the calibrated side towards the nose and shrinks by ``side`` * |t|, |t|
# clipped at ``max_turn`` (the 97th percentile there): a turned head's YuNet box reaches over the hair
# behind the face. Fitted to the NME of the AFLW2000-3D dev photos YuNet finds (199; a grid of dx 0 to
# 0.075, side 0 to -0.1): mean of the bins 7.81 -> 7.24 %, median 3.85 -> 3.83 %. Cross-validated:
# fitted on the even-numbered photos (0.025, -0.05) it takes the odd ones from 9.44 to 8.74 %; fitted
# on the odd ones (0.05, -0.1, these) the even ones from 6.22 to 6.21 %. Three quarters of the gain is
# one profile, image03283 (51.6 -> 15.3 %; 19.5 % from the ground truth's box): docs/detection.md.
YUNET_TURN = {"dx": 0.05, "side": -0.1, "max_turn": 2.0}


class DetectorAssetError(RuntimeError):
    """The detector's model file is missing or not the file this code was calibrated with."""


@dataclass(frozen=True)
class Face:
    """A face: ``box`` (x0, y0, x1, y1) in input-image pixels as the detector drew it, its score
    (None for a caller's box), the detector's name, and ``crop_box``, the box the first crop is cut
    around (defaults to ``box``). ``landmarks5``: YuNet's five points (5, 2) in input pixels (right
    eye, left eye, nose tip, right and left mouth corners, as seen by the subject), or None."""

    box: Box
    score: float | None
    detector: str
    crop_box: Box | None = None
    landmarks5: np.ndarray | None = None

    def __post_init__(self):
        if self.crop_box is None:
            object.__setattr__(self, "crop_box", self.box)

    @property
    def side(self) -> float:
        x0, y0, x1, y1 = self.box
        return min(x1 - x0, y1 - y0)

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return (x1 - x0) * (y1 - y0)


class Detector(Protocol):
    name: str

    def __call__(self, rgb: np.ndarray) -> list[Face]: ...

    def smallest_face(self, height: int, width: int) -> float:
        """The smallest face side (input pixels) found reliably in a ``height`` x ``width`` photo."""


def detection_scale(height: int, width: int, min_face_px: int, max_side: int) -> float:
    """The factor (<= 1) YuNet's copy of an ``height`` x ``width`` photo is scaled by: as small as
    keeps a ``min_face_px`` face at ``YUNET_MIN_PX`` (cost grows with the copy's pixels), but the
    copy's long side at most ``max_side``; past that, faces under ``YUNET_MIN_PX / factor`` may be missed."""
    return min(1.0, YUNET_MIN_PX / min_face_px, max_side / max(height, width))


class YuNetDetector:
    """OpenCV's YuNet on a scaled copy (:func:`detection_scale`). When it finds nothing, it looks again:
    on a copy whose short side is ``YUNET_MAX_PX`` if the photo could hold a face too large for the
    first, then on the copy mirrored (YuNet is not symmetric: a profile it scores 0.36 facing left
    scores 0.65 facing right), then turned a quarter each way (YuNet misses faces lying on their
    side). Only photos that would otherwise be refused pay for the retries."""

    name = "yunet"

    def __init__(self, path: Path, score_threshold: float = 0.5, min_face_px: int = 40,
                 max_side: int = 640, sha256: str = YUNET_SHA256):
        data = read_verified(path, sha256, DetectorAssetError, "detector model", "service/assets/")
        model = np.frombuffer(data, np.uint8)
        self.net = cv2.FaceDetectorYN.create("onnx", model, np.empty(0, np.uint8), (320, 320), score_threshold,
                                             0.3, 5000)
        self.min_face_px, self.max_side = min_face_px, max_side
        # One network object whose input size changes per call: one call at a time.
        self._lock = threading.Lock()

    def __call__(self, rgb: np.ndarray) -> list[Face]:
        """Faces in ``rgb`` (H, W, 3) uint8, largest box first."""
        h, w = rgb.shape[:2]
        factor = detection_scale(h, w, self.min_face_px, self.max_side)
        attempts = [(factor, None, False)]
        if min(h, w) * factor > YUNET_MAX_PX:
            attempts.append((YUNET_MAX_PX / min(h, w), None, False))
        attempts += [(factor, None, True), (factor, cv2.ROTATE_90_CLOCKWISE, False),
                     (factor, cv2.ROTATE_90_COUNTERCLOCKWISE, False)]
        for scale, turn, mirrored in attempts:
            rows = self._run(rgb, scale, turn, mirrored)
            if len(rows):
                break
        faces = [yunet_face(row, w, h, ACROSS[turn]) for row in rows]
        return sorted((f for f in faces if f is not None), key=lambda f: f.area, reverse=True)

    def smallest_face(self, height: int, width: int) -> float:
        return YUNET_MIN_PX / detection_scale(height, width, self.min_face_px, self.max_side)

    def _run(self, rgb: np.ndarray, factor: float, turn: int | None = None, mirrored: bool = False) -> np.ndarray:
        """YuNet's rows (N, 15) on the copy scaled by ``factor``, turned by ``turn`` (a cv2.ROTATE_90_*
        code or None) or ``mirrored`` left to right, coordinates back in the input's pixels and orientation."""
        small, factor = downscale(rgb, factor)
        bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
        if mirrored:
            bgr = np.ascontiguousarray(bgr[:, ::-1])
        if turn is not None:
            bgr = cv2.rotate(bgr, turn)
        with self._lock:
            self.net.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, rows = self.net.detect(bgr)
        if rows is None:
            return np.zeros((0, 15), np.float32)
        rows = rows.astype(np.float64)
        if turn is not None:
            rows = unturn(rows, turn, small.shape[0], small.shape[1])
        if mirrored:
            rows = unmirror(rows, small.shape[1])
        rows[:, :14] /= factor
        return rows


def unturn(rows: np.ndarray, turn: int, height: int, width: int) -> np.ndarray:
    """YuNet rows found on an image turned by ``turn`` (cv2.ROTATE_90_CLOCKWISE or _COUNTERCLOCKWISE)
    -> the same rows on the unturned ``height`` x ``width`` image: points mapped, boxes their corners' hull."""
    def back(x, y):
        return (y, height - x) if turn == cv2.ROTATE_90_CLOCKWISE else (width - y, x)

    out = rows.copy()
    for k in range(4, 14, 2):
        out[:, k], out[:, k + 1] = back(rows[:, k], rows[:, k + 1])
    ax, ay = back(rows[:, 0], rows[:, 1])
    bx, by = back(rows[:, 0] + rows[:, 2], rows[:, 1] + rows[:, 3])
    out[:, 0], out[:, 1] = np.minimum(ax, bx), np.minimum(ay, by)
    out[:, 2], out[:, 3] = np.abs(bx - ax), np.abs(by - ay)
    return out


def unmirror(rows: np.ndarray, width: int) -> np.ndarray:
    """YuNet rows found on a ``width``-wide image mirrored left to right -> the same rows on the image:
    x flipped, and the five points' left and right swapped back (the mirror's right eye is the face's left)."""
    out = rows.copy()
    out[:, 0] = width - rows[:, 0] - rows[:, 2]
    out[:, 4:14:2] = width - rows[:, 4:14:2]
    # points: right eye, left eye, nose tip, right mouth corner, left mouth corner
    for a, b in ((4, 6), (10, 12)):
        out[:, [a, a + 1, b, b + 1]] = out[:, [b, b + 1, a, a + 1]]
    return out


# The face's left-right axis in the photo for a face found on a copy turned by each cv2.ROTATE_90_* code
# (None: upright): the turned copy's x axis, mapped back as ``unturn`` maps points. Its down axis is
# this turned a quarter clockwise on screen, (-y, x).
ACROSS = {None: (1.0, 0.0), cv2.ROTATE_90_CLOCKWISE: (0.0, -1.0), cv2.ROTATE_90_COUNTERCLOCKWISE: (0.0, 1.0)}


def yunet_turn(landmarks5: np.ndarray, across: tuple[float, float] = (1.0, 0.0)) -> float:
    """The head's turn t from YuNet's five points (5, 2): the nose's offset from the eyes' midpoint
    along ``across`` (the face's left-right axis in the photo, +x for an upright face), in eye distances;
    0 when the eyes coincide. Along the detection's axis, not the eye line: on a profile YuNet puts the
    eyes one above the other, and the eye line's direction says nothing (measured: image03283's t is
    3.2 along x, -0.2 along its eye line)."""
    distance = float(np.hypot(*(landmarks5[1] - landmarks5[0])))
    if not np.isfinite(distance) or distance < 1e-6:
        return 0.0
    return float((landmarks5[2] - (landmarks5[0] + landmarks5[1]) / 2) @ np.asarray(across) / distance)


def yunet_face(row: np.ndarray, width: int, height: int, across: tuple[float, float] = (1.0, 0.0)) -> Face | None:
    """One YuNet row (x, y, w, h, 5 x (x, y) landmarks, score) in input pixels -> a Face, its box
    clipped to the photo (None if nothing is left), its crop box placed by ``YUNET_TO_LANDMARK_BOX``
    and moved and scaled by the head's turn (``YUNET_TURN``), both in the face's own axes: ``across``
    (``ACROSS``) and down, so that a face found by the turned retry is placed as an upright one."""
    x, y, bw, bh = (float(v) for v in row[:4])
    box = (max(x, 0.0), max(y, 0.0), min(x + bw, width), min(y + bh, height))
    if box[2] <= box[0] or box[3] <= box[1]:
        return None
    landmarks5 = row[4:14].reshape(5, 2).astype(np.float64)
    side = max(bw, bh)
    rule, turn = YUNET_TO_LANDMARK_BOX, YUNET_TURN
    t = float(np.clip(yunet_turn(landmarks5, across), -turn["max_turn"], turn["max_turn"]))
    u = np.asarray(across)
    down = np.array([-u[1], u[0]])
    calibrated = rule["side"] * side  # the landmark box's side, turn aside
    cx, cy = (np.array([x + bw / 2, y + bh / 2]) + (rule["dx"] * side + turn["dx"] * t * calibrated) * u
              + rule["dy"] * side * down)
    half = calibrated * (1.0 + turn["side"] * abs(t)) / 2
    crop_box = (float(cx - half), float(cy - half), float(cx + half), float(cy + half))
    return Face(box, float(row[14]), "yunet", crop_box, landmarks5)


def dlib_model_path(name: str) -> Path | None:
    """A file of the face_recognition_models package, found without importing it (it needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    return path if path.is_file() else None


class DlibDetector:
    """dlib's HOG detector on a copy whose long side is ``max_side`` (retried at twice the size when it
    finds nothing), or its CNN detector (``name="cnn"``, about 1 s a photo on a CPU)."""

    def __init__(self, name: Literal["hog", "cnn"] = "hog", max_side: int = 640, upsample: int = 0):
        self.name, self.max_side, self.upsample = name, max_side, upsample
        if name == "cnn":
            path = dlib_model_path("mmod_human_face_detector.dat")
            if path is None:
                raise DetectorAssetError("dlib's CNN detector needs the face-recognition-models package")
            self.cnn = dlib.cnn_face_detection_model_v1(str(path))
        else:
            self.hog = dlib.get_frontal_face_detector()
        # dlib's Python detectors hold the GIL and are not documented as thread-safe.
        self._lock = threading.Lock()

    def __call__(self, rgb: np.ndarray) -> list[Face]:
        """Faces in ``rgb`` (H, W, 3) uint8, largest first."""
        h, w = rgb.shape[:2]
        small, factor = downscale(rgb, self.max_side / max(h, w))
        with self._lock:
            if self.name == "cnn":
                found = [(d.rect, d.confidence) for d in self.cnn(small, self.upsample)]
            else:
                rects, scores, _ = self.hog.run(small, self.upsample, 0.0)
                if not len(rects):
                    # HOG misses faces under ~80 px; one retry at twice the size finds them at 4x the cost,
                    # paid only by photos that would otherwise be refused.
                    rects, scores, _ = self.hog.run(small, self.upsample + 1, 0.0)
                found = list(zip(rects, scores))
        faces = []
        for rect, score in found:
            box = (max(rect.left(), 0) / factor, max(rect.top(), 0) / factor,
                   min(rect.right() + 1, small.shape[1]) / factor, min(rect.bottom() + 1, small.shape[0]) / factor)
            box = (min(box[0], w), min(box[1], h), min(box[2], w), min(box[3], h))
            if box[2] > box[0] and box[3] > box[1]:
                faces.append(Face(box, float(score), self.name))
        return sorted(faces, key=lambda f: f.area, reverse=True)

    def smallest_face(self, height: int, width: int) -> float:
        # HOG's window is 80 px; its retry at twice the size reaches about 40 px of the copy.
        return 40 / min(1.0, self.max_side / max(height, width))


def make_detector(name: DetectorName, score_threshold: float, min_face_px: int, max_side: int,
                  upsample: int, yunet_path: Path) -> Detector:
    """The detector the settings name; raises DetectorAssetError when its model file is missing or altered."""
    if name == "yunet":
        return YuNetDetector(yunet_path, score_threshold, min_face_px, max_side)
    return DlibDetector(name, max_side, upsample)


def downscale(rgb: np.ndarray, factor: float) -> tuple[np.ndarray, float]:
    """A copy scaled by ``factor`` (<= 1, else the photo itself) and the factor actually applied.

    By a factor of 1/4 or less: bilinear to twice the target size, then area-averaging by 2 (2.6 ms
    from 4000x3000 to 640x480 on one core, against 7.9 ms area-averaging by the whole factor first;
    mean difference of the copies 2 grey levels of 255). Above 1/4: area-averaging by a whole factor
    first, then bilinear for the rest (a factor above 1/2, which cannot alias).
    """
    if factor >= 1.0:
        return rgb, 1.0
    h, w = rgb.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    if factor <= 0.25:
        twice = cv2.resize(rgb, (2 * size[0], 2 * size[1]), interpolation=cv2.INTER_LINEAR)
        return cv2.resize(twice, size, interpolation=cv2.INTER_AREA), size[0] / w
    whole = int(1.0 / factor)
    if whole >= 2:
        rgb = cv2.resize(rgb, (0, 0), fx=1 / whole, fy=1 / whole, interpolation=cv2.INTER_AREA)
    if (rgb.shape[1], rgb.shape[0]) != size:
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
    return rgb, size[0] / w


class LandmarkPredictor:
    """dlib's 68-point shape predictor, used to check the model's landmarks (``quality``)."""

    def __init__(self, path: Path):
        self.predictor = dlib.shape_predictor(str(path))
        self._lock = threading.Lock()

    def __call__(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """(68, 2) float landmarks in input pixels."""
        rect = dlib.rectangle(*(int(round(v)) for v in box))
        with self._lock:
            shape = self.predictor(rgb, rect)
        return np.array([(p.x, p.y) for p in shape.parts()], np.float64)
