"""Which box the geometry stream gets: the service's detector box against AFLW2000-3D's 68-landmark
box, and what a recrop (``service.engine.recrop``) does from each.

    python -m training.evaluate boxes --model model_store/<name>/<version> [--data DIR] [--limit N]

The network learnt on crops around 68-landmark boxes. The first tables say how the detector's box
(``FACERECON_DETECTOR``, YuNet by default) and the first crop's box it gives sit against the ground
truth's landmark box (medians, by yaw, of the face the ground truth annotates): the detector's medians
are the calibration of ``service.engine.detect.YUNET_TO_LANDMARK_BOX``. The last scores the model from
each box with one pass and with the recrop, the figures behind the service's recrop setting and taking
a caller's box as given. The detector is scored twice: from its largest face (``faces=largest``, what
the service returns) and from the face the ground truth annotates among all it finds (``faces=all``;
some photos hold a second, larger face), so that the second measures the crop and not the choice of
face. A photo where it finds nothing is a failure scored from the whole photo as the box
(``aflw2000.evaluate``'s ``fallback``): every photo is scored.
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


def detected_faces(model: InProcessModel, samples: list[aflw2000.Sample]) -> dict[int, list[Face]]:
    """Every face the service's detector finds in each sample, largest first (empty where it finds
    none), keyed by ``id(sample.image)``: found once and used by every table below."""
    faces = {}
    for s in samples:
        try:
            faces[id(s.image)] = model.detect_all(s.image)
        except LookupError:
            faces[id(s.image)] = []
    return faces


def annotated_face(faces: list[Face], truth: tuple) -> Face | None:
    """Of ``faces``, the one the ground truth's box ``truth`` (x0, y0, x1, y1) annotates: the one whose
    crop box's centre is nearest the truth's centre (None when there is no face)."""
    def distance(face: Face) -> float:
        x0, y0, x1, y1 = face.crop_box
        return float(np.hypot((x0 + x1 - truth[0] - truth[2]) / 2, (y0 + y1 - truth[1] - truth[3]) / 2))

    return min(faces, key=distance, default=None)


def chosen_faces(found: dict[int, list[Face]], samples: list[aflw2000.Sample], which: str) -> dict[int, Face | None]:
    """One face per sample (None where none was found): ``which`` "largest" (the service's
    ``faces=largest``) or "annotated" (:func:`annotated_face`)."""
    if which == "largest":
        return {id(s.image): (found[id(s.image)] or [None])[0] for s in samples}
    return {id(s.image): annotated_face(found[id(s.image)], s.box) for s in samples}


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
    """The detector offsets (of the annotated face), and ``aflw2000.evaluate`` from each box with one pass
    and recropped; a detector's miss is scored from the whole photo as the box."""
    found = detected_faces(model, samples)
    largest, annotated = (chosen_faces(found, samples, which) for which in ("largest", "annotated"))
    detector = f"service's detector ({model.settings.detector})"
    predictors = {"ground truth's landmark box": lambda recropped: model.landmark_predictor(False, recropped),
                  f"{detector}, largest face": lambda recropped: from_detected(model, largest, recropped),
                  f"{detector}, the annotated face": lambda recropped: from_detected(model, annotated, recropped)}
    # A miss: the geometry from the whole photo as a caller's box, one pass (aflw2000.evaluate's fallback).
    fallback = model.landmark_predictor(False, False)
    scores = {}
    for label, predictor in predictors.items():
        for recropped in (False, True):
            name = f"{label}, " + ("recropped" if recropped else "one pass")
            scores[name] = aflw2000.evaluate(predictor(recropped), samples, fallback)
    return {"detector": model.settings.detector, "found": sum(bool(f) for f in found.values()),
            "photos": len(samples), "second_face": sum(largest[k] is not annotated[k] for k in largest),
            "detector_offsets": detector_offsets(annotated, samples),
            "crop_box_offsets": detector_offsets(annotated, samples, "crop_box"), "nme": scores}


def markdown(result: dict) -> str:
    detector = result.get("detector", "the detector")
    lines = [f"{detector} found {result.get('found', '?')} of {result.get('photos', '?')} photos; in "
             f"{result.get('second_face', '?')} its largest face is not the one the ground truth annotates. "
             "A miss is scored from the whole photo as the box.", ""]
    for key, what in (("detector_offsets", f"{detector}'s box (the annotated face)"),
                      ("crop_box_offsets", "the first crop's box (the annotated face)")):
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
