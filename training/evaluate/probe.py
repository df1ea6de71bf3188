"""Does a geometry stream's latent hold the face's shape? A linear probe (issue 21's diagnosis).

Ridge regression from the encoder's latent to the true ICT coefficients (100 identity, 53 blendshape)
over synthetic training faces, then the held-out faces scored with the probe's coefficients decoded
through ICT, beside the mean face. A latent that the dense decoders could turn into a face's own shape
must let a linear map recover at least part of the coefficients.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from training.facemodel import N_IDENTITY, UVFaceModel
from training.synth import SynthFaceGenerator, SynthSettings

from .synthetic import evaluate_expressions, mean_face_predictor

PROBE_SEED = 77  # training faces for the probe, disjoint from the held-out set's seed


def encoder_latents(encoder: torch.nn.Module, gen: SynthFaceGenerator, count: int, batch_size: int = 32,
                    seed: int = PROBE_SEED, device: torch.device | str = "cpu"):
    """(count, latent) latents of synthetic faces (``gen``'s batches of ``seed``, the encoder on
    ``device``) and their (count, 153) true coefficients, identity then blendshape weights."""
    latents, coefficients = [], []
    with torch.no_grad():
        for k in range(count // batch_size):
            batch = gen.batch(seed, k, batch_size)
            latents.append(encoder(batch.image.to(device)).cpu().numpy())
            coefficients.append(np.concatenate([batch.id_coeffs.numpy(), batch.exp_weights.numpy()], 1))
    return np.concatenate(latents), np.concatenate(coefficients)


def fit_ridge(x: np.ndarray, y: np.ndarray, strength: float) -> np.ndarray:
    """(D + 1, K) weights of ``[x, 1] @ w ~ y`` with an L2 penalty ``strength`` on the D weights (the
    intercept, last row, is not penalised: a strong ridge tends to the targets' mean)."""
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc = x - x_mean
    w = np.linalg.solve(xc.T @ xc + strength * np.eye(x.shape[1]), xc.T @ (y - y_mean))
    return np.concatenate([w, (y_mean - x_mean @ w)[None]], 0)


def explained(y: np.ndarray, pred: np.ndarray) -> float:
    """R^2 averaged over the columns' variance: 1 - residual variance / variance."""
    return float(1 - (y - pred).var(0).mean() / y.var(0).mean())


def linear_probe(model_dir: Path, train_faces: int = 3072, held_out: int = 126, strength: float = 1.0) -> dict:
    """The probe of a model store's geometry stream: R^2 of identity and expression coefficients on the
    training faces, and the held-out 3D error (rigid, similarity) of the probe and of the mean face."""
    from training.export.from_store import checkpoint_from_store
    from training.models import GeometryStream, NetworkConfig

    ckpt = checkpoint_from_store(Path(model_dir))
    cfg = NetworkConfig.from_dict(ckpt["config"]).geometry
    net = GeometryStream(cfg)
    net.load_state_dict(ckpt["geometry_model"])
    net.eval()
    face_model = UVFaceModel.build(cfg.uv_size)
    gen = SynthFaceGenerator(face_model, SynthSettings(image_size=cfg.image_size))
    x, y = encoder_latents(net.encoder, gen, train_faces)
    w = fit_ridge(x, y, strength)
    fitted = np.concatenate([x, np.ones((len(x), 1))], 1) @ w

    def predict(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            z = net.encoder(torch.from_numpy(images)).numpy()
        c = np.concatenate([z, np.ones((len(z), 1))], 1) @ w
        a_id = face_model.identity_map(c[:, :N_IDENTITY]).transpose(0, 3, 1, 2)
        a_exp = face_model.expression_map(np.clip(c[:, N_IDENTITY:], 0, 1)).transpose(0, 3, 1, 2)
        return a_id, a_exp

    probe = evaluate_expressions(predict, face_model, cfg.image_size, size=held_out)["overall"]
    base = evaluate_expressions(mean_face_predictor(face_model), face_model, cfg.image_size, size=held_out)["overall"]
    return {"train_faces": len(x), "held_out": held_out, "ridge": strength,
            "identity_r2": explained(y[:, :N_IDENTITY], fitted[:, :N_IDENTITY]),
            "expression_r2": explained(y[:, N_IDENTITY:], fitted[:, N_IDENTITY:]),
            "probe": probe, "mean_face": base}
