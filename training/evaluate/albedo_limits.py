"""Where the served albedo's error comes from (issue 22): the linear albedo model at p_t obtained with
less and less of the truth, on held-out synthetic faces (the synthetic report's first plain faces).

Each row's p_t feeds the same float linear albedo (the albedo model's npz, not texture.onnx's int8
constants), scored over the UV face mask against the true albedo, plainly and level-free (after the one
gain that fits it best to the truth, ``metrics.level_gain``):

1. the true p_t: what the model can express at all;
2. fitted to the photo at the seen fit vertices under the photo's exact shading (photo / true albedo),
   one ridge least-squares system with the service's ridge: what the seen skin says of p_t;
3. the service's alternation of p_t and light (``service.engine.albedo_fit``, its exposure step and
   ridges) on the true normals: the SH basis rendered from the true mesh, one SH coefficient at a time,
   the light starting from plain ambient. What estimating the light costs;
4. as served: the same alternation on the geometry graph's mesh, from the crop alone;
5. the mean albedo (p_t = 0), the baseline.

    python -m training.evaluate albedo-limits --model model_store/facerecon-cpu-small/0.13.0 [--size 64]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from service.engine.albedo_basis import AlbedoBasis, topology_arrays
from service.engine.albedo_fit import COEFFICIENT_RIDGE, BOUND, fitted_albedo_coefficients
from training.facemodel import UVFaceModel, blend
from training.machine import describe as machine
from training.models.pose import pose_to_camera
from training.render import RenderSettings, render_mesh
from training.stages.texture import texture_inputs
from training.synth import SynthBatch, SynthFaceGenerator, SynthSettings

from .inprocess import InProcessModel
from .metrics import level_gain, texture_mae
from .report import write_report
from .synthetic import HELD_OUT_SEED, held_out_design

ROWS = ("true p_t", "fitted under the exact shading", "the service's fit on the true normals",
        "the service's fit, as served (the crop alone)", "mean albedo (p_t = 0; baseline)")
SH_TERMS = 9


def sh_basis_maps(gen: SynthFaceGenerator, batch: SynthBatch, uv_grid: torch.Tensor) -> np.ndarray:
    """(B, S, S, 9): each SH basis function at each UV texel of the batch's true meshes, as the generator's
    renderer shades them (white vertices lit by one SH coefficient at a time), read where the texel lands."""
    b, size = batch.image.shape[0], batch.image.shape[-1]
    verts = gen.neutral + blend(gen.identity, batch.id_coeffs) + blend(gen.expression, batch.exp_weights)
    camera = pose_to_camera(batch.p_h, size)
    maps = []
    for k in range(SH_TERMS):
        sh = torch.zeros(b, SH_TERMS, 3)
        sh[:, k] = 1.0
        out = render_mesh(verts, gen.faces, camera, RenderSettings(image_size=size),
                          vertex_colors=torch.ones(b, verts.shape[1], 3), sh_coeffs=sh)
        shaded = F.grid_sample(out.image.permute(0, 3, 1, 2), uv_grid, mode="bilinear", padding_mode="border",
                               align_corners=False)
        maps.append(shaded[:, 0].numpy())
    return np.stack(maps, -1)


def p_t_under_shading(basis: AlbedoBasis, seen: np.ndarray, photo: np.ndarray, shading: np.ndarray,
                      ridge: float = COEFFICIENT_RIDGE, bound: float = BOUND) -> np.ndarray:
    """(K,) p_t minimising sum |photo - (mean + p_t @ components) * shading|^2 + ridge * 3n |p_t|^2 over the
    ``seen`` (M,) fit vertices; ``photo``, ``shading`` (M, 3), the shading known."""
    k, n = basis.size, int(seen.sum())
    gram, rhs = ridge * 3 * n * np.eye(k), np.zeros(k)
    for c in range(3):
        design = basis.components[:, seen, c] * shading[seen, c]  # (K, n)
        gram += design @ design.T
        rhs += design @ (photo[seen, c] - basis.mean[seen, c] * shading[seen, c])
    return np.clip(np.linalg.solve(gram, rhs), -bound, bound)


def evaluate_albedo_limits(model: InProcessModel, albedo_model: Path, size: int, batch_size: int = 16) -> dict:
    """Each of ``ROWS``: the mean plain and level-free error over ``size`` held-out faces."""
    s = model.model.store.uv_size
    face_model = UVFaceModel.build(s)
    mask = face_model.layout.mask
    with np.load(albedo_model) as d:
        k = model.p_t_size
        mean, components, std = d["mean"].astype(np.float64), d["basis"][:k].astype(np.float64), d["std"][:k]
    # the fit's vertices and float16 basis exactly as an export writes them for the service
    basis = AlbedoBasis.from_topology(topology_arrays(mean, components, std, mask), int(mask.sum()))
    rows, cols = np.nonzero(mask)
    vr, vc = rows[basis.vertices], cols[basis.vertices]
    scaled = components * std[:, None, None, None]

    def linear(p_t: np.ndarray) -> np.ndarray:  # (S, S, 3)
        return (mean + np.tensordot(p_t, scaled, 1)).transpose(1, 2, 0)

    gen = SynthFaceGenerator(face_model, SynthSettings(image_size=model.model.store.input_size),
                             albedo_model=albedo_model, albedo_components=k)
    cats, yaws = held_out_design(size)
    ambient = np.zeros((SH_TERMS, 3))
    ambient[0] = 1.0
    scores: dict[str, list[tuple[float, float]]] = {row: [] for row in ROWS}
    for start in range(0, size, batch_size):
        n = min(batch_size, size - start)
        batch = gen.batch(HELD_OUT_SEED, start, n, categories=cats[start:start + n], yaw_degrees=yaws[start:start + n])
        inputs = texture_inputs(batch)
        photo_uv = F.grid_sample(inputs.image, inputs.uv_grid, mode="bilinear", padding_mode="border",
                                 align_corners=False).numpy()
        sh_maps = sh_basis_maps(gen, batch, inputs.uv_grid)
        truth, visible = batch.albedo.numpy(), batch.uv_visible.numpy()
        for i in range(n):
            target = truth[i].transpose(1, 2, 0)
            seen = visible[i][vr, vc]
            photo, albedo = photo_uv[i][:, vr, vc].T.astype(np.float64), truth[i][:, vr, vc].T.astype(np.float64)
            shading = photo / np.maximum(albedo, 1e-3)
            sh = sh_maps[i][vr, vc].astype(np.float64)  # (M, 9)
            crop = batch.image[i].numpy().astype(np.float32)
            p_t = {ROWS[0]: batch.p_t[i].numpy(),
                   ROWS[1]: p_t_under_shading(basis, seen, photo, shading),
                   ROWS[2]: fitted_albedo_coefficients(basis, seen, photo[seen], np.zeros((len(seen), 3)),
                                                       np.zeros(k), ambient, shading_basis=sh),
                   ROWS[3]: served_p_t(model, crop),
                   ROWS[4]: np.zeros(k)}
            for row, coefficients in p_t.items():
                pred = linear(np.asarray(coefficients, np.float64))
                scores[row].append((texture_mae(pred, target, mask),
                                    texture_mae(pred * level_gain(pred, target, mask), target, mask)))
    return {row: {"face": float(np.mean([v[0] for v in values])), "level_free": float(np.mean([v[1] for v in values])),
                  "n": len(values)} for row, values in scores.items()}


def served_p_t(model: InProcessModel, crop: np.ndarray) -> np.ndarray:
    """(K,) the p_t the service feeds texture.onnx for a (3, N, N) crop framed as the service frames one."""
    outputs, geo = model.crop_geometry(crop)
    return model.texture_feeds(outputs, geo)[1]["p_t"][0]


def albedo_limits_report(model_dir: Path, albedo_model: Path, size: int, out: Path) -> str:
    """Score the rows on ``size`` held-out faces; write JSON and Markdown into ``out``."""
    model = InProcessModel(model_dir)
    results = evaluate_albedo_limits(model, albedo_model, size)
    lines = [f"# Where the served albedo's error comes from, {model.label}", "",
             f"`python -m training.evaluate albedo-limits --model {model_dir} --size {size}`", "",
             f"Machine: {machine()}. {size} held-out synthetic faces (the synthetic report's first), albedos from "
             f"`{albedo_model}`. The albedo model's linear albedo at each row's p_t against the true albedo over the "
             "UV face mask (colours in [0, 1]); level-free: after the one gain that fits it best to the truth.", "",
             "| p_t | face region | level-free |", "|---|---|---|"]
    lines += [f"| {row} | {r['face']:.4f} | {r['level_free']:.4f} |" for row, r in results.items()]
    return write_report(out, "albedo-limits", results, lines)

