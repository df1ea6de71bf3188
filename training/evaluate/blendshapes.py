"""Blendshape weights against the truth (held-out synthetic faces) and their plausibility (real photos).

    python -m training.evaluate blendshapes --model model_store/<name>/<version> [--size N] [--limit N]

Synthetic: the generator draws each face's 53 weights, so the service's weights (``FaceGeometry.blendshapes``:
the network's own, or ICT's bounded joint fit to A) are scored by their mean absolute error, per weight and
overall. Baselines beside them: the old weights (unbounded least squares of A_exp on the expression basis,
then clipped to [0, 1]) and all-zero weights. Real photos (eval/photos, AFLW2000-3D dev) have no true
weights, so there the count of mutually exclusive pairs (``EXCLUSIVE_PAIRS``) both above 0.3 per face is
reported, for the same two estimates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from service.engine.align import crop_face
from service.engine.asm_decode import decode_asm

from .inprocess import InProcessModel
from .synthetic import HELD_OUT_SEED, SET_SIZE, held_out_design

# Weights a face cannot show both of at once.
EXCLUSIVE_PAIRS = (
    ("jawLeft", "jawRight"), ("mouthLeft", "mouthRight"),
    ("eyeLookUp_L", "eyeLookDown_L"), ("eyeLookUp_R", "eyeLookDown_R"),
    ("eyeLookIn_L", "eyeLookOut_L"), ("eyeLookIn_R", "eyeLookOut_R"),
    ("eyeBlink_L", "eyeWide_L"), ("eyeBlink_R", "eyeWide_R"),
    ("mouthSmile_L", "mouthFrown_L"), ("mouthSmile_R", "mouthFrown_R"),
    ("browDown_L", "browOuterUp_L"), ("browDown_R", "browOuterUp_R"),
)
PAIR_THRESHOLD = 0.3


def clipped_least_squares(model: InProcessModel, a_exp: np.ndarray) -> np.ndarray:
    """The baseline: (3, S, S) A_exp -> (53,) unbounded least squares on the store's expression basis, clipped."""
    topo = model.topology
    basis = topo.expression_basis.reshape(len(topo.expression_basis), -1).T.astype(np.float64)
    delta = a_exp[:, topo.rows, topo.cols].T.reshape(-1)
    return np.clip(np.linalg.lstsq(basis, delta, rcond=None)[0], 0.0, 1.0)


def exclusive_pairs(weights: np.ndarray, names: list[str]) -> int:
    """How many of ``EXCLUSIVE_PAIRS`` have both weights above ``PAIR_THRESHOLD``."""
    index = {n: i for i, n in enumerate(names)}
    return sum(int(weights[index[a]] > PAIR_THRESHOLD and weights[index[b]] > PAIR_THRESHOLD) for a, b in EXCLUSIVE_PAIRS)


def evaluate_synthetic(model: InProcessModel, size: int = SET_SIZE, batch_size: int = 16) -> dict:
    """MAE of the service's weights and the baselines against the generator's, on the held-out faces."""
    from training.facemodel import UVFaceModel
    from training.synth import SynthFaceGenerator, SynthSettings

    face_model = UVFaceModel.build(model.topology.size)
    n = model.model.store.input_size
    gen = SynthFaceGenerator(face_model, SynthSettings(image_size=n))
    cats, yaws = held_out_design(SET_SIZE)
    errors = {"service": [], "clipped least squares": [], "zeros": []}
    pairs = {"service": [], "clipped least squares": [], "truth": []}
    names = model.topology.blendshape_names
    for start in range(0, size, batch_size):
        count = min(batch_size, size - start)
        batch = gen.batch(HELD_OUT_SEED, start, count, categories=cats[start:start + count],
                          yaw_degrees=yaws[start:start + count])
        images = (batch.image.numpy().transpose(0, 2, 3, 1) * 255.0 + 0.5).astype(np.uint8)
        truth = batch.exp_weights.numpy().astype(np.float64)
        for image, true in zip(images, truth):
            # The synthetic image is the crop itself (as in training): no detection, no recrop.
            crop = crop_face(image, (0.0, 0.0, float(n), float(n)), n, 1.0)
            outputs = model.model.run_geometry({"image": crop.image[None]})
            one = {k: out[0] for k, out in zip(model.model.geometry_outputs, outputs)}
            geo = decode_asm(one, crop, model.topology, model.pose_fields)
            baseline = clipped_least_squares(model, one["a_exp"].astype(np.float64))
            errors["service"].append(np.abs(geo.blendshapes - true))
            errors["clipped least squares"].append(np.abs(baseline - true))
            errors["zeros"].append(np.abs(true))
            pairs["service"].append(exclusive_pairs(geo.blendshapes, names))
            pairs["clipped least squares"].append(exclusive_pairs(baseline, names))
            pairs["truth"].append(exclusive_pairs(true, names))
    return {
        "n": len(errors["service"]),
        "mae": {k: float(np.mean(v)) for k, v in errors.items()},
        "mae_per_weight": {k: dict(zip(names, np.mean(v, 0).round(4).tolist())) for k, v in errors.items()},
        "exclusive_pairs_per_face": {k: float(np.mean(v)) for k, v in pairs.items()},
    }


def photo_paths(photos: Path | None, aflw: Path | None, limit: int | None) -> dict[str, list[Path]]:
    out = {}
    if photos is not None:
        out["eval/photos"] = sorted(p for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".png", ".ppm"))[:limit]
    if aflw is not None:
        out["AFLW2000-3D dev"] = sorted(aflw.glob("*.jpg"))[:limit]
    return out


def evaluate_photos(model: InProcessModel, sets: dict[str, list[Path]]) -> dict:
    """Exclusive pairs both above 0.3 per face (the detected largest face of each photo)."""
    names = model.topology.blendshape_names
    out = {}
    for label, paths in sets.items():
        counts = {"service": [], "clipped least squares": []}
        above_half = []
        for path in paths:
            photo = np.asarray(Image.open(path).convert("RGB"))
            try:
                _, _, outputs, geo = model.geometry(photo)
            except LookupError:
                continue
            a_exp = outputs[model.model.geometry_outputs.index("a_exp")][0].astype(np.float64)
            counts["service"].append(exclusive_pairs(geo.blendshapes, names))
            counts["clipped least squares"].append(exclusive_pairs(clipped_least_squares(model, a_exp), names))
            above_half.append(int((geo.blendshapes > 0.5).sum()))
        out[label] = {"faces": len(counts["service"]),
                      "exclusive_pairs_per_face": {k: float(np.mean(v)) if v else None for k, v in counts.items()},
                      "weights_above_half_per_face": float(np.mean(above_half)) if above_half else None}
    return out


def markdown(result: dict) -> str:
    s = result["synthetic"]
    lines = [f"Held-out synthetic faces ({s['n']}): blendshape MAE",
             "", "| weights | MAE | exclusive pairs > 0.3 per face |", "| --- | --- | --- |"]
    for k, v in s["mae"].items():
        pairs = s["exclusive_pairs_per_face"].get(k)
        lines.append(f"| {k} | {v:.4f} | {'' if pairs is None else f'{pairs:.3f}'} |")
    lines.append(f"| truth | 0 | {s['exclusive_pairs_per_face']['truth']:.3f} |")
    lines += ["", "Real photos: exclusive pairs both above 0.3 per face", "",
              "| set | faces | service | clipped least squares | service weights > 0.5 per face |", "| --- | --- | --- | --- | --- |"]
    for label, r in result["photos"].items():
        p = r["exclusive_pairs_per_face"]
        lines.append(f"| {label} | {r['faces']} | {p['service']:.3f} | {p['clipped least squares']:.3f} | "
                     f"{r['weights_above_half_per_face']:.2f} |")
    return "\n".join(lines) + "\n"
