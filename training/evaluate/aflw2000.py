"""AFLW2000-3D protocol (3DDFA's): 68-landmark NME by yaw bin, normalised by sqrt(w * h) of the
ground-truth landmark box, with the face box derived from the ground-truth landmarks.

Predictors are callables ``(image RGB uint8 (H, W, 3), box (x0, y0, x1, y1)) -> (68, 2 or 3)`` in
image pixels. Built in: the service over HTTP (``service_predictor``), dlib's 68-point predictor
on the same box, and the mean face placed in the box (both baselines).
"""

from __future__ import annotations

import importlib.util
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.io as sio
from PIL import Image

from service.engine.recrop import landmark_box

from .metrics import nme_2d, nme_3d, yaw_bin

Predictor = Callable[[np.ndarray, tuple[float, float, float, float]], np.ndarray]
BINS = ("[0,30)", "[30,60)", "[60,90]")
# iBUG-68's groups. The jaw is where 2D annotations (Helen, AFW, dlib's 300-W) and AFLW2000-3D's
# fitted 3D landmarks disagree most, so its share of the NME is reported apart.
PARTS = {"jaw": range(0, 17), "brows": range(17, 27), "nose": range(27, 36), "eyes": range(36, 48),
         "mouth": range(48, 68)}
# The jaw's two halves (chin left out) differ in kind once the head turns: the side turned away is
# hidden, where AFLW2000-3D's points lie on the fitted 3D jaw and 2D annotations on the silhouette.
JAW_SIDES = ("jaw turned away", "jaw facing")


def jaw_sides(landmarks: np.ndarray) -> dict[str, range]:
    """``JAW_SIDES`` -> the jaw points of each side of a (68, 3) ground truth (z away from the camera):
    the turned-away half is the one farther from the camera."""
    image_left, image_right = range(0, 8), range(9, 17)
    if landmarks[image_left, 2].mean() < landmarks[image_right, 2].mean():
        image_left, image_right = image_right, image_left
    return dict(zip(JAW_SIDES, (image_left, image_right)))


@dataclass(frozen=True)
class Sample:
    name: str
    image: np.ndarray  # (H, W, 3) uint8
    landmarks: np.ndarray  # (68, 3) pixels, z in the same scale, positive away from the camera (as the service's)
    yaw_degrees: float

    @property
    def box(self) -> tuple[float, float, float, float]:
        return landmark_box(self.landmarks)


def load_samples(folder: Path, limit: int | None = None) -> list[Sample]:
    """Each ``imageNNNNN.jpg`` with its ``.mat``: ``pt3d_68`` (3, 68), ``Pose_Para`` (pitch, yaw, roll, ...)."""
    out = []
    for jpg in sorted(Path(folder).glob("*.jpg"))[:limit]:
        mat = sio.loadmat(jpg.with_suffix(".mat"))
        landmarks = mat["pt3d_68"].T.astype(np.float64)
        landmarks[:, 2] *= -1  # pt3d_68's z grows towards the camera; the service's (and ours here) away from it
        out.append(Sample(jpg.stem, np.asarray(Image.open(jpg).convert("RGB")), landmarks,
                          float(np.rad2deg(mat["Pose_Para"][0, 1]))))
    return out


def evaluate(predict: Predictor, samples: list[Sample], fallback: Predictor | None = None) -> dict:
    """NME (2D, and 3D where the predictor gives z) overall, per yaw bin and the mean of the bins;
    the 2D NME also per facial part (``PARTS``, then ``JAW_SIDES``) and yaw bin.

    A photo where ``predict`` raises LookupError (no face found) is a failure, listed in ``failures``;
    without ``fallback`` it is not scored, with it it is scored with ``fallback``'s landmarks given the
    whole photo as the box (``whole_photo_box``): what a client without a face box can ask for, so that
    every photo is scored and a miss weighs as the failure it is (``per_photo`` marks it ``missed``)."""
    per_bin: dict[str, list[float]] = {b: [] for b in BINS}
    per_part: dict[str, dict[str, list[float]]] = {part: {b: [] for b in BINS} for part in (*PARTS, *JAW_SIDES)}
    per_bin_3d: dict[str, list[float]] = {b: [] for b in BINS}
    per_photo: dict[str, dict] = {}  # for paired comparisons of two models (training.evaluate.compare)
    failures = []
    for s in samples:
        missed = False
        try:
            pred = np.asarray(predict(s.image, s.box), np.float64)
        except LookupError as error:  # no face found: a failure, scored only from the fallback
            failures.append(f"{s.name}: {error}")
            if fallback is None:
                continue
            pred, missed = np.asarray(fallback(s.image, whole_photo_box(s.image)), np.float64), True
        bin_, nme = yaw_bin(s.yaw_degrees), nme_2d(pred, s.landmarks)
        per_bin[bin_].append(nme)
        per_photo[s.name] = {"yaw_bin": bin_, "nme_2d": nme, **({"missed": True} if missed else {})}
        for part, index in (PARTS | jaw_sides(s.landmarks)).items():
            per_part[part][bin_].append(nme_2d(pred[index], s.landmarks[index], s.landmarks))
        if pred.shape[1] == 3:
            per_bin_3d[bin_].append(nme_3d(pred, s.landmarks))

    return {"nme_2d": nme_table(per_bin), "nme_3d": nme_table(per_bin_3d), "failures": failures,
            "nme_2d_by_part": {part: nme_table(groups) for part, groups in per_part.items()}, "per_photo": per_photo}


def whole_photo_box(image: np.ndarray) -> tuple[float, float, float, float]:
    """(0, 0, W, H) of an (H, W, 3) image: the box a miss is scored from (``evaluate``'s ``fallback``)."""
    return 0.0, 0.0, float(image.shape[1]), float(image.shape[0])


def nme_table(groups: dict[str, list[float]]) -> dict | None:
    """Per-sample NMEs grouped by yaw bin -> overall, per bin, the mean of the bins and counts (None: nothing scored)."""
    scored = [v for vs in groups.values() for v in vs]
    if not scored:
        return None
    bins = {b: (float(np.mean(v)) if v else None) for b, v in groups.items()}
    filled = [v for v in bins.values() if v is not None]
    return {"overall": float(np.mean(scored)), "bins": bins, "bin_mean": float(np.mean(filled)),
            "n": {b: len(v) for b, v in groups.items()}}


def mean_face_predictor(mean_landmarks: np.ndarray) -> Predictor:
    """Baseline: the mean face's frontal 68 landmarks (68, 2), y down, scaled and moved into the box."""
    lo, hi = mean_landmarks.min(0), mean_landmarks.max(0)

    def predict(image, box):
        x0, y0, x1, y1 = box
        unit = (mean_landmarks - lo) / (hi - lo)
        return np.c_[x0 + unit[:, 0] * (x1 - x0), y0 + unit[:, 1] * (y1 - y0)]

    return predict


def dlib_predictor() -> Predictor:
    """Baseline: dlib's 68-point shape predictor (from face_recognition_models) on the given box."""
    import dlib

    folder = Path(importlib.util.find_spec("face_recognition_models").origin).parent / "models"
    shape_predictor = dlib.shape_predictor(str(folder / "shape_predictor_68_face_landmarks.dat"))

    def predict(image, box):
        rect = dlib.rectangle(*(int(round(v)) for v in box))
        shape = shape_predictor(image, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], np.float64)

    return predict


def service_predictor(url: str, use_detector: bool = False, timeout: float = 60.0) -> Predictor:
    """The service's public API: ``POST {url}/v1/reconstruct`` with ``format=json`` (and the box)."""
    import httpx

    client = httpx.Client(base_url=url, timeout=timeout)

    def predict(image, box):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        data = {"format": "json", "faces": "largest"}
        if not use_detector:
            data["box"] = ",".join(f"{v:.1f}" for v in box)
        r = client.post("/v1/reconstruct", files={"image": ("image.png", buf.getvalue(), "image/png")}, data=data)
        if r.status_code == 422:
            raise LookupError(r.json().get("detail", "no face"))
        r.raise_for_status()
        return np.asarray(r.json()["faces"][0]["landmarks68"], np.float64)

    return predict


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def markdown(results: dict[str, dict]) -> str:
    lines = ["| method | NME 2D [0,30) | [30,60) | [60,90] | mean of bins | overall | NME 3D overall | misses |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        t, t3 = r["nme_2d"], r["nme_3d"]
        lines.append(f"| {name} | " + " | ".join(pct(t["bins"][b]) for b in BINS)
                     + f" | {pct(t['bin_mean'])} | {pct(t['overall'])} | {pct(t3['overall']) if t3 else '–'} | {len(r['failures'])} |")
    names = (*PARTS, *JAW_SIDES)
    lines += ["", "2D NME by facial part, [0,30) bin / mean of bins:", "",
              "| method | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for name, r in results.items():
        parts = r.get("nme_2d_by_part")
        if parts and all(parts.get(p) for p in names):
            lines.append(f"| {name} | " + " | ".join(f"{pct(parts[p]['bins']['[0,30)'])} / {pct(parts[p]['bin_mean'])}"
                                                    for p in names) + " |")
    return "\n".join(lines) + "\n"


def write_report(results: dict[str, dict], out: Path, header: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "aflw2000.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "aflw2000.md").write_text(f"# AFLW2000-3D (dev subset)\n\n{header}\n\n" + markdown(results))
