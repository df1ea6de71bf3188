"""Which box the geometry stream gets: the service's detector box against AFLW2000-3D's 68-landmark
box, and what a recrop (``service.engine.recrop``) does from each.

    python -m training.evaluate boxes --model model_store/<name>/<version> [--data DIR] [--limit N]

The network learnt on crops around 68-landmark boxes. The first table says how dlib's box sits
against the ground truth's landmark box (medians, by yaw); the second scores the model from each
box with one pass and with the recrop, the figures behind the service recropping detected faces and
taking a caller's box as given.
"""

from __future__ import annotations

import numpy as np

from . import aflw2000
from .inprocess import InProcessModel

YAW_GROUPS = {"yaw < 30°": (0.0, 30.0), "yaw ≥ 30°": (30.0, 90.1)}


def box_offset(detected: tuple, truth: tuple) -> tuple[float, float, float]:
    """(side ratio, centre dy, centre dx) of ``detected`` against ``truth``, (x0, y0, x1, y1) boxes;
    sides are the longer ones, offsets in units of the truth's side, dy < 0 when detected sits higher."""
    side = max(truth[2] - truth[0], truth[3] - truth[1])
    ratio = max(detected[2] - detected[0], detected[3] - detected[1]) / side
    dx = ((detected[0] + detected[2]) - (truth[0] + truth[2])) / 2 / side
    dy = ((detected[1] + detected[3]) - (truth[1] + truth[3])) / 2 / side
    return float(ratio), float(dy), float(dx)


def detected_boxes(model: InProcessModel, samples: list[aflw2000.Sample]) -> dict[int, tuple | None]:
    """The service detector's box for each sample (None where it finds no face), keyed by
    ``id(sample.image)``: found once and used by every table below."""
    boxes = {}
    for s in samples:
        try:
            boxes[id(s.image)] = model.detect(s.image)[0]
        except LookupError:
            boxes[id(s.image)] = None
    return boxes


def detector_offsets(boxes: dict[int, tuple | None], samples: list[aflw2000.Sample]) -> dict:
    """Medians of :func:`box_offset` per yaw group over the samples the detector found (``boxes``)."""
    rows = {name: [] for name in YAW_GROUPS}
    for s in samples:
        box = boxes[id(s.image)]
        if box is None:
            continue
        for name, (lo, hi) in YAW_GROUPS.items():
            if lo <= abs(s.yaw_degrees) < hi:
                rows[name].append(box_offset(box, s.box))
    out = {}
    for name, values in rows.items():
        v = np.array(values).reshape(-1, 3)
        out[name] = {"n": len(values),
                     **({"side_ratio": float(np.median(v[:, 0])), "centre_dy": float(np.median(v[:, 1])),
                         "centre_dx_abs": float(np.median(np.abs(v[:, 2])))} if len(values) else {})}
    return out


def from_detected(model: InProcessModel, boxes: dict[int, tuple | None], recrop_box: bool):
    """An ``aflw2000.Predictor`` that starts from the detector's box (``boxes``) instead of the one given."""

    def predict(image, _truth_box):
        box = boxes[id(image)]
        if box is None:
            raise LookupError(f"no face found in the {image.shape[1]}x{image.shape[0]} image")
        return model.geometry(image, box, recrop_box)[3].landmarks_photo

    return predict


def evaluate(model: InProcessModel, samples: list[aflw2000.Sample]) -> dict:
    """The detector offsets, and ``aflw2000.evaluate`` from each box with one pass and recropped."""
    boxes = detected_boxes(model, samples)
    predictors = {"ground truth's landmark box": lambda recropped: model.landmark_predictor(False, recropped),
                  "service's detector box": lambda recropped: from_detected(model, boxes, recropped)}
    scores = {}
    for label, predictor in predictors.items():
        for recropped in (False, True):
            name = f"{label}, " + ("recropped" if recropped else "one pass")
            scores[name] = aflw2000.evaluate(predictor(recropped), samples)
    return {"detector_offsets": detector_offsets(boxes, samples), "nme": scores}


def markdown(result: dict) -> str:
    lines = ["dlib's box against the ground truth's 68-landmark box (medians; offsets in the landmark box's "
             "side, dy < 0: dlib's sits higher):", "",
             "| photos | found | side ratio | centre dy | centre abs(dx) |", "| --- | --- | --- | --- | --- |"]
    for name, r in result["detector_offsets"].items():
        if r["n"]:
            lines.append(f"| {name} | {r['n']} | {r['side_ratio']:.2f} | {r['centre_dy']:+.3f} | {r['centre_dx_abs']:.3f} |")
        else:
            lines.append(f"| {name} | 0 | – | – | – |")
    lines += ["", aflw2000.markdown(result["nme"])]
    return "\n".join(lines)
