"""Which box the geometry stream gets: the service's detector box against AFLW2000-3D's 68-landmark
box, and what a recrop (``service.engine.recrop``) does from each.

    python -m training.evaluate boxes --model model_store/<name>/<version> [--data DIR] [--limit N]

The network learnt on crops around 68-landmark boxes. The first tables say how the detector's box
(``FACERECON_DETECTOR``, YuNet by default) and the first crop's box it gives sit against the ground
truth's landmark box (medians, by yaw): the detector's medians are the calibration of
``service.engine.detect.YUNET_TO_LANDMARK_BOX``. The last scores the model from each box with one
pass and with the recrop, the figures behind the service's recrop setting and taking a caller's box
as given.
"""

from __future__ import annotations

import numpy as np

from service.engine.detect import Face

from . import aflw2000
from .inprocess import InProcessModel

YAW_GROUPS = {"yaw < 30°": (0.0, 30.0), "yaw ≥ 30°": (30.0, 90.1)}
ALL_YAW_GROUPS = {**YAW_GROUPS, "all": (0.0, 90.1)}


def box_offset(detected: tuple, truth: tuple) -> tuple[float, float, float]:
    """(side ratio, centre dy, centre dx) of ``detected`` against ``truth``, (x0, y0, x1, y1) boxes;
    sides are the longer ones, offsets in units of the truth's side, dy < 0 when detected sits higher."""
    side = max(truth[2] - truth[0], truth[3] - truth[1])
    ratio = max(detected[2] - detected[0], detected[3] - detected[1]) / side
    dx = ((detected[0] + detected[2]) - (truth[0] + truth[2])) / 2 / side
    dy = ((detected[1] + detected[3]) - (truth[1] + truth[3])) / 2 / side
    return float(ratio), float(dy), float(dx)


def detected_faces(model: InProcessModel, samples: list[aflw2000.Sample]) -> dict[int, Face | None]:
    """The service detector's largest face for each sample (None where it finds none), keyed by
    ``id(sample.image)``: found once and used by every table below."""
    faces = {}
    for s in samples:
        try:
            faces[id(s.image)] = model.detect(s.image)
        except LookupError:
            faces[id(s.image)] = None
    return faces


def detector_offsets(faces: dict[int, Face | None], samples: list[aflw2000.Sample], which: str = "box") -> dict:
    """Medians of :func:`box_offset` per yaw group (and over all) of each found face's ``which`` box
    ("box": the detector's, "crop_box": where the first crop goes) against the ground truth's."""
    rows = {name: [] for name in ALL_YAW_GROUPS}
    for s in samples:
        face = faces[id(s.image)]
        if face is None:
            continue
        for name, (lo, hi) in ALL_YAW_GROUPS.items():
            if lo <= abs(s.yaw_degrees) < hi:
                rows[name].append(box_offset(getattr(face, which), s.box))
    out = {}
    for name, values in rows.items():
        v = np.array(values).reshape(-1, 3)
        out[name] = {"n": len(values),
                     **({"side_ratio": float(np.median(v[:, 0])), "centre_dy": float(np.median(v[:, 1])),
                         "centre_dx": float(np.median(v[:, 2])),
                         "centre_dx_abs": float(np.median(np.abs(v[:, 2])))} if len(values) else {})}
    return out


def from_detected(model: InProcessModel, faces: dict[int, Face | None], recrop_box: bool):
    """An ``aflw2000.Predictor`` that starts from the detected face (``faces``: its first crop around
    its ``crop_box``) instead of the box given."""

    def predict(image, _truth_box):
        face = faces[id(image)]
        if face is None:
            raise LookupError(f"no face found in the {image.shape[1]}x{image.shape[0]} image")
        return model.geometry_of(image, face, recrop_box)[3].landmarks_photo

    return predict


def evaluate(model: InProcessModel, samples: list[aflw2000.Sample]) -> dict:
    """The detector offsets, and ``aflw2000.evaluate`` from each box with one pass and recropped."""
    faces = detected_faces(model, samples)
    predictors = {"ground truth's landmark box": lambda recropped: model.landmark_predictor(False, recropped),
                  f"service's detector ({model.settings.detector})": lambda recropped: from_detected(model, faces, recropped)}
    scores = {}
    for label, predictor in predictors.items():
        for recropped in (False, True):
            name = f"{label}, " + ("recropped" if recropped else "one pass")
            scores[name] = aflw2000.evaluate(predictor(recropped), samples)
    return {"detector": model.settings.detector, "found": sum(f is not None for f in faces.values()),
            "photos": len(samples), "detector_offsets": detector_offsets(faces, samples),
            "crop_box_offsets": detector_offsets(faces, samples, "crop_box"), "nme": scores}


def markdown(result: dict) -> str:
    detector = result.get("detector", "the detector")
    lines = [f"{detector} found {result.get('found', '?')} of {result.get('photos', '?')} photos.", ""]
    for key, what in (("detector_offsets", f"{detector}'s box"), ("crop_box_offsets", "the first crop's box")):
        lines += [f"{what} against the ground truth's 68-landmark box (medians; offsets in the landmark box's "
                  "side, dy < 0: it sits higher, dx < 0: to the left):", "",
                  "| photos | found | side ratio | centre dy | centre dx | centre abs(dx) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for name, r in result[key].items():
            if r["n"]:
                lines.append(f"| {name} | {r['n']} | {r['side_ratio']:.3f} | {r['centre_dy']:+.3f} | "
                             f"{r['centre_dx']:+.3f} | {r['centre_dx_abs']:.3f} |")
            else:
                lines.append(f"| {name} | 0 | – | – | – | – |")
        lines.append("")
    lines.append(aflw2000.markdown(result["nme"]))
    return "\n".join(lines)
