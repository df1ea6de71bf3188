"""Expression-wise geometry error on a fixed held-out synthetic set (the paper's Fig. 9 measure).

The set is a pure function of its seed: ``SET_SIZE`` faces balanced over the seven expression
categories and the three yaw bins. Error = mean per-vertex distance over the UV mesh after rigid
alignment, in mm, and the same divided by the ground truth's outer inter-ocular distance; and after
a similarity alignment (scale fitted too), in mm. Every figure has its baseline beside it: the mean
face (``mean_face_predictor``: ICT's neutral mean identity, no expression) under the same alignment.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from pathlib import Path
from typing import Callable

import numpy as np

from service.engine.albedo_basis import TOPOLOGY_KEYS as ALBEDO_FIT_KEYS
from training.facemodel import UVFaceModel
from training.synth import CATEGORIES, SynthBatch, SynthFaceGenerator, SynthSettings

from .metrics import aligned_vertex_error, level_gain, similarity_vertex_error, texture_mae, yaw_bin

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


AlbedoPredictor = Callable[[SynthBatch], tuple[np.ndarray, np.ndarray]]
"""Held-out synthetic faces -> (the texture stream's albedo, the linear albedo from p_t), each (B, 3, S, S):
from inputs built from the ground truth (the stream alone) or from the model's own geometry (as served)."""

MEAN_ALBEDO = "mean albedo (p_t = 0; baseline)"
FITTED = "as served, p_t fitted to the photo"
OCCLUDED_FACES = 128  # faces with an occluder, for the error over the texels it hides
LIT_FACES, LIGHTINGS = 32, 8  # faces rendered under each of LIGHTINGS SH lightings, for the invariance


def evaluate_albedo(predictors: dict[str, AlbedoPredictor], model: UVFaceModel, image_size: int, albedo_model,
                    components: int, size: int = SET_SIZE, batch_size: int = 32) -> dict:
    """For each predictor (its name says where its inputs come from), the texture stream's and the linear
    albedo's mean absolute error (colour in [0, 1]) against the true albedo, on held-out faces drawn with
    albedos from ``albedo_model`` (an npz of ``python -m training.albedo``; its first ``components``):

    * over the UV face mask, its visible part and its unseen part (``size`` plain faces, by yaw bin too);
    * over the texels an occluder (a hand, hair, glasses) hides: ``OCCLUDED_FACES`` faces (at most
      ``size``) each with one, against the same faces without it;
    * lighting invariance: ``LIT_FACES`` faces (at most ``size``) each rendered under the same ``LIGHTINGS`` SH lightings,
      the mean absolute difference between the albedos returned for two lightings of a face;
    * ``level_free``: the face, unseen and occluded errors again, each albedo first scaled by the one gain
      that fits it best to its truth over the face (``metrics.level_gain``). Exposure invariance leaves an
      albedo's overall level unobservable from the photo; this is the error without it.
    """
    gen = SynthFaceGenerator(model, SynthSettings(image_size=image_size), albedo_model=albedo_model,
                             albedo_components=components)
    hidden_gen = SynthFaceGenerator(model, SynthSettings(image_size=image_size, occluder_fraction=1.0),
                                    albedo_model=albedo_model, albedo_components=components)
    cats, yaws = held_out_design(size)
    mask = model.layout.mask
    n_occluded, n_lit = min(OCCLUDED_FACES, size), min(LIT_FACES, size)
    with np.load(albedo_model) as d:
        mean_albedo = d["mean"].astype(np.float32)  # (3, S, S): the albedo model at p_t = 0

    def rows_of(batch: SynthBatch) -> dict[str, np.ndarray]:
        """Each row's (B, 3, S, S) albedos for the batch."""
        out = {}
        for name, predict in predictors.items():
            out[f"texture stream, {name}"], out[f"linear albedo (p_t), {name}"] = predict(batch)
        out[MEAN_ALBEDO] = np.broadcast_to(mean_albedo, batch.albedo.shape)
        return out

    rows = [f"{kind}, {name}" for name in predictors for kind in ("texture stream", "linear albedo (p_t)")] + [MEAN_ALBEDO]
    records = []  # (row, yaw bin, MAE over the face, its visible part, its unseen part; the face and its unseen part levelled)
    for start in range(0, size, batch_size):
        n = min(batch_size, size - start)
        batch = gen.batch(HELD_OUT_SEED, start, n, categories=cats[start:start + n], yaw_degrees=yaws[start:start + n])
        truth = batch.albedo.numpy().transpose(0, 2, 3, 1)
        visible = batch.uv_visible.numpy()
        for row, maps in rows_of(batch).items():
            pred = maps.transpose(0, 2, 3, 1)
            for i in range(n):
                # the same errors once the face's overall level is set from the truth (``level_gain``)
                levelled = pred[i] * level_gain(pred[i], truth[i], mask)
                records.append((row, yaw_bin(yaws[start + i]), texture_mae(pred[i], truth[i], mask),
                                texture_mae(pred[i], truth[i], mask & visible[i]),
                                texture_mae(pred[i], truth[i], mask & ~visible[i]), texture_mae(levelled, truth[i], mask),
                                texture_mae(levelled, truth[i], mask & ~visible[i])))
    occluded = {row: [] for row in rows}  # MAE over the texels the occluder hides, per face
    occluded_levelled = {row: [] for row in rows}  # the same after the face's level gain
    for start in range(0, n_occluded, batch_size):
        n = min(batch_size, n_occluded - start)
        plain, hidden = (g.batch(HELD_OUT_SEED + 1, start, n) for g in (gen, hidden_gen))
        behind = mask & plain.uv_visible.numpy() & ~hidden.uv_visible.numpy()  # (n, S, S)
        truth = hidden.albedo.numpy().transpose(0, 2, 3, 1)
        for row, maps in rows_of(hidden).items():
            pred = maps.transpose(0, 2, 3, 1)
            occluded[row] += [texture_mae(pred[i], truth[i], behind[i]) for i in range(n) if behind[i].any()]
            occluded_levelled[row] += [texture_mae(pred[i] * level_gain(pred[i], truth[i], mask), truth[i], behind[i])
                                       for i in range(n) if behind[i].any()]
    lightings = SynthFaceGenerator.sample_lighting(np.random.default_rng(HELD_OUT_SEED + 2), LIGHTINGS)
    changes = {row: [] for row in rows}
    for start in range(0, n_lit, batch_size):
        n = min(batch_size, n_lit - start)
        lit = [gen.batch(HELD_OUT_SEED + 2, start, n, lighting=light.expand(n, -1)) for light in lightings]
        outputs = [rows_of(b) for b in lit]  # per lighting: each row's albedos
        for row in rows:
            maps = np.stack([o[row] for o in outputs]).transpose(0, 1, 3, 4, 2)  # (L, n, S, S, 3)
            changes[row] += [float(np.abs(maps[a, i] - maps[b, i])[mask].mean())
                             for i in range(n) for a, b in combinations(range(LIGHTINGS), 2)]

    def summary(row):
        mine = [r for r in records if r[0] == row]
        bins = sorted({r[1] for r in mine})
        return {"face": float(np.mean([r[2] for r in mine])), "visible": float(np.nanmean([r[3] for r in mine])),
                "unseen": float(np.nanmean([r[4] for r in mine])), "occluded": float(np.mean(occluded[row])),
                "lighting_change": float(np.mean(changes[row])),
                "level_free": {"face": float(np.mean([r[5] for r in mine])), "unseen": float(np.nanmean([r[6] for r in mine])),
                               "occluded": float(np.mean(occluded_levelled[row]))},
                "face_by_yaw": {b: float(np.mean([r[2] for r in mine if r[1] == b])) for b in bins}, "n": len(mine),
                "n_occluded": len(occluded[row]), "n_lit": n_lit, "lightings": LIGHTINGS}

    return {row: summary(row) for row in rows}


def truth_fed_albedo_predictor(run: Callable[[dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray]]) -> AlbedoPredictor:
    """texture.onnx's feeds (p_t, image, heatmaps, uv_grid, uv_visibility) -> (albedo, linear_albedo), fed
    from the ground truth (geometry, visibility and the true p_t): the texture stream alone."""
    from training.stages.texture import texture_inputs

    def predict(batch: SynthBatch):
        inputs = texture_inputs(batch)
        return run({name: getattr(inputs, name).numpy().astype(np.float32)
                    for name in ("p_t", "image", "heatmaps", "uv_grid", "uv_visibility")})

    return predict


def served_albedo_predictor(model_dir: Path, albedo_model: Path | None = None,
                            fit_solver: dict[str, float] | None = None) -> AlbedoPredictor:
    """A model store's albedo as the service computes it from the face crop alone: geometry.onnx, ASM
    decode, unwrap, texture.onnx (``InProcessModel.crop_albedo``); the synthetic image is the crop. With
    ``albedo_model`` texture.onnx gets p_t fitted to the crop's seen skin instead of the geometry stream's;
    ``fit_solver``: that fit's settings where they differ from the service's."""
    from .inprocess import InProcessModel

    model = InProcessModel(model_dir, albedo_model=albedo_model, fit_solver=fit_solver)

    def predict(batch: SynthBatch):
        maps = [model.crop_albedo(image) for image in batch.image.numpy().astype(np.float32)]
        return np.stack([m[0] for m in maps]), np.stack([m[1] for m in maps])

    return predict


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
    """A model store's albedo table (or None) and a sentence saying what it is or why it is missing."""
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
    predictors = {"true inputs": truth_fed_albedo_predictor(lambda feeds: session.run(["albedo", "linear_albedo"], feeds)),
                  "as served": served_albedo_predictor(model_dir)}
    with np.load(model_dir / "topology.npz") as topology:
        fits_p_t = ALBEDO_FIT_KEYS[0] in topology.files
    if not fits_p_t:  # what the albedo fit would do for this store (service.engine.albedo_fit)
        predictors[FITTED] = served_albedo_predictor(model_dir, albedo)
    results = evaluate_albedo(predictors, face_model, manifest["input_size"], albedo, k, size=n)
    first = next(iter(results.values()))
    note = (f"Mean absolute error (colour in [0, 1]) against the true albedo; albedos drawn from `{albedo}` ({k} "
            f"components) plus detail. *True inputs*: the texture graph fed from the ground-truth geometry and the "
            f"true p_t (the stream alone); *as served*: the service's path from the face crop alone (geometry.onnx, "
            f"ASM decode, unwrap, {'the albedo fit, ' if fits_p_t else ''}texture.onnx)"
            + ("" if fits_p_t else f"; *{FITTED}*: the same with texture.onnx's p_t fitted to the crop's seen skin "
               "under the SH light (`service.engine.albedo_fit`, issue 22; the store carries no basis for it)")
            + f". Face region, its visible and unseen parts on {n} plain faces; "
            f"*occluded*: the texels a hand, hair or glasses hides, {first['n_occluded']} faces; "
            f"*lighting change*: {first['n_lit']} faces each under the same {LIGHTINGS} SH lightings, the mean absolute difference between "
            f"two lightings' albedos (0 for a perfectly delit albedo).")
    return results, note
