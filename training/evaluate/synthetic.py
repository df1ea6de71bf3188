"""Expression-wise geometry error on a fixed held-out synthetic set (the paper's Fig. 9 measure).

The set is a pure function of its seed: ``SET_SIZE`` faces balanced over the seven expression
categories and the three yaw bins. Error = mean per-vertex distance over the UV mesh after rigid
alignment, in mm, and the same divided by the ground truth's outer inter-ocular distance; and after
a similarity alignment (scale fitted too), in mm. Every figure has its baseline beside it: the mean
face (``mean_face_predictor``: ICT's neutral mean identity, no expression) under the same alignment.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np

from training.facemodel import UVFaceModel
from training.synth import CATEGORIES, SynthFaceGenerator, SynthSettings

from .metrics import aligned_vertex_error, similarity_vertex_error, yaw_bin

HELD_OUT_SEED = 2_000_003  # never used for training
SET_SIZE = 2016  # 7 categories x 3 yaw bins x 96
YAW_BINS = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0))

Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""(B, 3, H, H) images in [0, 1] -> a_id, a_exp (B, 3, S, S) canonical maps."""


def held_out_design(size: int = SET_SIZE, seed: int = HELD_OUT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(size,) categories and (size,) yaw in degrees, balanced, in a fixed shuffled order."""
    rng = np.random.default_rng(seed)
    cells = [(c, b) for c in range(len(CATEGORIES)) for b in range(len(YAW_BINS))]
    cats = np.array([cells[i % len(cells)][0] for i in range(size)])
    bins = np.array([cells[i % len(cells)][1] for i in range(size)])
    lo, hi = np.array(YAW_BINS)[bins].T
    yaw = rng.uniform(lo, hi) * rng.choice([-1, 1], size)
    order = rng.permutation(size)
    return cats[order], yaw[order]


def evaluate_expressions(predict: Predictor, model: UVFaceModel, image_size: int, size: int = SET_SIZE,
                         batch_size: int = 32, with_expression: bool = True) -> dict:
    """Per-category and per-yaw-bin error of ``predict`` on the held-out set.

    ``with_expression=False`` scores A_id alone against the full ground truth: what A_exp buys.
    """
    gen = SynthFaceGenerator(model, SynthSettings(image_size=image_size))
    cats, yaws = held_out_design(size)
    rows, cols = model.layout.pixels[:, 0], model.layout.pixels[:, 1]
    lm_uv = np.round(model.topology.landmarks_uv).astype(int)
    scale_mm = model.frame.scale * 10.0
    by_cat, by_yaw = defaultdict(list), defaultdict(list)
    for start in range(0, size, batch_size):
        sl = slice(start, min(start + batch_size, size))
        batch = gen.batch(HELD_OUT_SEED, start, sl.stop - start, categories=cats[sl], yaw_degrees=yaws[sl])
        a_id, a_exp = predict(batch.image.numpy())
        pred_maps = a_id + a_exp if with_expression else a_id
        gt_maps = (batch.a_id + batch.a_exp).numpy()
        for i in range(sl.stop - start):
            pred = pred_maps[i].transpose(1, 2, 0)[rows, cols] * scale_mm
            gt = gt_maps[i].transpose(1, 2, 0)[rows, cols] * scale_mm
            err = aligned_vertex_error(pred, gt)
            eyes = gt_maps[i].transpose(1, 2, 0)[lm_uv[[36, 45], 1], lm_uv[[36, 45], 0]] * scale_mm
            iod = float(np.linalg.norm(eyes[0] - eyes[1]))
            record = (err, err / iod, similarity_vertex_error(pred, gt))
            by_cat[CATEGORIES[cats[start + i]]].append(record)
            by_yaw[yaw_bin(yaws[start + i])].append(record)

    def summary(records):
        rigid, normalised, similarity = np.mean(records, axis=0)
        return {"mm": float(rigid), "normalised": float(normalised), "similarity_mm": float(similarity), "n": len(records)}

    everything = [x for v in by_cat.values() for x in v]
    return {"by_category": {k: summary(v) for k, v in by_cat.items()}, "by_yaw": {k: summary(v) for k, v in by_yaw.items()},
            "overall": summary(everything)}


def mean_face_predictor(model: UVFaceModel) -> Predictor:
    """The baseline every 3D figure stands beside: ICT's neutral mean identity and no expression for
    every image, placed by the same alignment as the prediction it is compared with."""
    mean_face = model.identity_map().transpose(2, 0, 1)

    def predict(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a_id = np.broadcast_to(mean_face, (len(images), *mean_face.shape))
        return a_id, np.zeros_like(a_id)

    return predict


TexturePredictor = Callable[[dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray]]
"""texture.onnx's feeds (p_t, image, heatmaps, uv_grid, uv_visibility) -> albedo, linear_albedo (B, 3, S, S)."""


def evaluate_albedo(predict: TexturePredictor, model: UVFaceModel, image_size: int, albedo_model, components: int,
                    size: int = SET_SIZE, batch_size: int = 32) -> dict:
    """Albedo MAE (colour in [0, 1]) of the texture stream and of the linear albedo from the true p_t
    against the true albedo, over the UV face mask and over its visible part, on the held-out faces
    drawn with albedos from ``albedo_model`` (an npz of ``python -m training.albedo``; its first
    ``components`` components, as many as the graph's p_t).

    The graph's inputs come from the ground-truth geometry (``training.stages.texture.texture_inputs``),
    so the figure measures the texture stream alone, not the geometry stream's errors.
    """
    from training.stages.texture import texture_inputs

    from .metrics import texture_mae

    gen = SynthFaceGenerator(model, SynthSettings(image_size=image_size), albedo_model=albedo_model,
                             albedo_components=components)
    cats, yaws = held_out_design(size)
    mask = model.layout.mask
    kinds = ("texture stream", "linear albedo (p_t)")  # texture.onnx's two outputs, in order
    records = []  # (kind, yaw bin, MAE over the face, MAE over its visible part)
    for start in range(0, size, batch_size):
        n = min(batch_size, size - start)
        batch = gen.batch(HELD_OUT_SEED, start, n, categories=cats[start:start + n], yaw_degrees=yaws[start:start + n])
        inputs = texture_inputs(batch)
        feeds = {name: getattr(inputs, name).numpy().astype(np.float32)
                 for name in ("p_t", "image", "heatmaps", "uv_grid", "uv_visibility")}
        truth = batch.albedo.numpy().transpose(0, 2, 3, 1)
        visible = batch.uv_visible.numpy()
        for kind, maps in zip(kinds, predict(feeds)):
            pred = maps.transpose(0, 2, 3, 1)
            records += [(kind, yaw_bin(yaws[start + i]), texture_mae(pred[i], truth[i], mask),
                         texture_mae(pred[i], truth[i], mask & visible[i])) for i in range(n)]

    def summary(kind):
        mine = [r for r in records if r[0] == kind]
        bins = sorted({r[1] for r in mine})
        return {"face": float(np.mean([r[2] for r in mine])), "visible": float(np.nanmean([r[3] for r in mine])),
                "face_by_yaw": {b: float(np.mean([r[2] for r in mine if r[1] == b])) for b in bins}, "n": len(mine)}

    return {kind: summary(kind) for kind in kinds}


def checkpoint_geometry_predictor(path: Path) -> tuple[Predictor, dict]:
    """A training checkpoint's geometry stream (stage 1's ``model`` or stage 3's ``geometry_model``) as a
    ``Predictor`` (on the CPU), and its config dict, so that a run can be scored before it is exported."""
    import torch

    from training.models import GeometryStream, NetworkConfig

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    cfg = NetworkConfig.from_dict(ckpt["config"])
    net = GeometryStream(cfg.geometry)
    net.load_state_dict(ckpt["model"] if "model" in ckpt else ckpt["geometry_model"])
    net.eval()

    def predict(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            out = net(torch.from_numpy(images))
        return out.a_id.numpy(), out.a_exp.numpy()

    return predict, ckpt["config"]


def stored_geometry_predictor(model_dir: Path) -> Predictor:
    """A model store's geometry.onnx as a ``Predictor`` (on the CPU)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_dir / "geometry.onnx"), providers=["CPUExecutionProvider"])

    def predict(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a_id, a_exp = session.run(["a_id", "a_exp"], {"image": images.astype("float32")})
        return a_id, a_exp

    return predict


def stored_albedo_errors(model_dir: Path, manifest: dict, face_model, albedo: Path | None, n: int) -> tuple[dict | None, str]:
    """A model store's albedo MAE table (or None) and a sentence saying what it is or why it is missing."""
    if not (model_dir / "texture.onnx").is_file():
        return None, f"Skipped: {model_dir} has no texture.onnx."
    if albedo is None:
        return None, ("Skipped: the true albedos are drawn from the albedo model the texture stream was trained with; "
                      "pass it with `--albedo` (e.g. data/albedo/albedo-k80.npz).")
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_dir / "texture.onnx"), providers=["CPUExecutionProvider"])
    k = next(i["shape"][1] for i in manifest["onnx"]["texture"]["inputs"] if i["name"] == "p_t")
    with np.load(albedo) as d:
        have = len(d["std"])
    if have < k:
        raise ValueError(f"{albedo} holds {have} albedo components; the texture graph takes p_t of {k}")

    def predict(feeds):
        return session.run(["albedo", "linear_albedo"], feeds)

    results = evaluate_albedo(predict, face_model, manifest["input_size"], albedo, k, size=n)
    note = (f"Mean absolute error (colour in [0, 1]) against the true albedo, over the UV face mask and its visible "
            f"part; albedos drawn from `{albedo}` ({k} components) plus detail; the texture graph's inputs built "
            f"from the ground-truth geometry and the true p_t.")
    return results, note
