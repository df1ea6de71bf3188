"""Stage 1: the geometry stream on synthetic faces with exact ground truth (paper Sec. IV-B).

    python -m training.train geometry --config cpu-small --steps 3000 --out runs/geometry

Stage 1 learns A_id, A_exp and the parameters on synthetic faces (``training.synth``), and, given
``--fitted``, on real photos with pseudo-ground truth from ``training.fitting`` (300W-LP's role), with
L_gs = 0.5 L_p + 1 L_asm + 0.5 L_sym + 1e-3 L_reg (Eq. 8, ``common.geometry_loss``), Adam at 2e-4,
batch 8. Every run logs losses to ``log.csv``, writes ``checkpoint.pt`` (model, optimiser, config,
step) every ``--checkpoint-every`` steps and at the end, and resumes from it when restarted.
"""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from training.checkpoints import load_checkpoint, save_checkpoint
from training.export.from_store import FOLDED, freeze_batchnorm
from training.evaluate.probe import encoder_latents, fit_ridge
from training.facemodel import N_IDENTITY, UVFaceModel
from training.fitting.crops import FittedPhotos
from training.models import GeometryStream, NetworkConfig
from training.prefetch import Deadline, step_inputs
from training.stages.common import (VALIDATION_SEED, GeometryLossWeights, GeometryTargets, geometry_loss,
                                    grown_geometry_weights, landmark_nmes, start_checkpoint,
                                    to_device)
from training.synth import SynthFaceGenerator, SynthSettings
from training.synth.profiling import ProfiledFaces, profile_generator


LOGGED_TERMS = ("total", "parametric", "asm", "symmetry", "laplacian")
COEFFICIENT_TERMS = ("expression_weights", "identity_coefficients", "residual")  # with a linear basis


@dataclass(frozen=True)
class StageSettings:
    steps: int = 3000
    batch_size: int = 8
    lr: float = 2e-4
    seed: int = 0
    log_every: int = 25
    checkpoint_every: int = 250
    validate_every: int = 250
    validation_batches: int = 4
    real_batch_size: int = 4  # fitted real photos per step, when a fitted set is given
    profiled_batch_size: int = 0  # fitted photos turned to 45-85° of yaw per step (training.synth.profiling)
    workers: int = 0  # processes making each step's inputs ahead (training.prefetch); 0: inline
    minutes: float | None = None  # stop (checkpointing) after this much wall time
    # With a linear basis: before the first step, the coefficient head's last layer is solved by ridge
    # regression on this many synthetic faces (``probe_coefficient_head``); 0 leaves it at zero.
    probe_faces: int = 0


@torch.no_grad()
def validate(net: GeometryStream, gen: SynthFaceGenerator, targets: GeometryTargets, settings: StageSettings,
             device: torch.device, real: FittedPhotos | None = None) -> dict[str, float]:
    """Landmark NME and L_asm (with W, whatever the run trains with, so runs compare) on fixed faces."""
    net.eval()
    size = gen.settings.image_size
    batches = [to_device(gen.batch(VALIDATION_SEED, i, settings.batch_size), device) for i in range(settings.validation_batches)]
    out = {}
    for label, group in (("val", batches), ("val_real", _real_batches(real, settings.batch_size, device))):
        nmes, asm = [], []
        for batch in group:
            pred_out = net(batch.image)
            asm.append(float(geometry_loss(pred_out, batch, targets, GeometryLossWeights())["asm"]))
            nmes += landmark_nmes(pred_out, batch.landmarks, targets.landmarks_uv, size)
        if nmes:
            out[f"{label}_asm"], out[f"{label}_landmark_nme"] = float(np.mean(asm)), float(np.mean(nmes))
    net.train()
    return out


def _real_batches(real: FittedPhotos | None, batch_size: int, device):
    """The held-out fitted photos, cropped without jitter (empty without a fitted set)."""
    if real is None:
        return []
    return [to_device(real.batch(range(i, min(i + batch_size, len(real))), None), device) for i in range(0, len(real), batch_size)]


PROBE_SEED = 31_337  # the faces the coefficient head is probed on, apart from the training seeds
PROBE_RIDGE = (1e-3, 1e-2, 1e-1, 1.0, 10.0)  # ridge strengths tried, times the features' mean square
LOGIT_CLIP = 0.01  # blendshape weights of 0 or 1 have no logit: the probe aims at 0.01 and 0.99


@torch.no_grad()
def probe_coefficient_head(net: GeometryStream, gen: SynthFaceGenerator, count: int, device: torch.device,
                           batch_size: int = 32) -> tuple[float, float]:
    """Solve the coefficient head's last layer in closed form: ridge regression from its hidden
    features to the true identity coefficients and blendshape logits of ``count`` synthetic faces
    (linear probing before fine-tuning). A head trained from zero first learns the mean and reads the
    latent only slowly; the probe starts it from what the latent already says. The ridge strength is
    chosen on a fifth of the faces held out, for the identity and the blendshapes apart; returns their
    held-out mean squared errors (identity coefficients, blendshape weights)."""
    net.eval()
    head = net.coefficients.net
    latents, coefficients = encoder_latents(net.encoder, gen, max(count // batch_size, 2) * batch_size, batch_size,
                                            PROBE_SEED, device)
    with torch.no_grad():
        x = head[1](head[0](torch.from_numpy(latents).to(device))).cpu().double().numpy()
    weights = np.clip(coefficients[:, N_IDENTITY:].astype(np.float64), LOGIT_CLIP, 1 - LOGIT_CLIP)
    y = np.concatenate([coefficients[:, :N_IDENTITY], np.log(weights / (1 - weights))], 1)
    split = len(x) * 4 // 5
    scale = float(np.square(x[:split] - x[:split].mean(0)).mean())

    def sigmoid(v: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-v))

    def solve(rows: slice, columns: slice, strength: float) -> np.ndarray:
        return fit_ridge(x[rows], y[rows, columns], strength * scale * len(x[rows]))

    # The identity coefficients and the blendshape weights each get the strength that predicts the
    # held-out fifth best: a latent that says nothing of the identity gets a ridge strong enough to
    # predict its mean rather than noise.
    w, errors = [], []
    for columns, squash in ((slice(0, N_IDENTITY), lambda v: v), (slice(N_IDENTITY, None), sigmoid)):
        trial = {}
        for strength in PROBE_RIDGE:
            fit = solve(slice(0, split), columns, strength)
            trial[strength] = float(np.square(squash(x[split:] @ fit[:-1] + fit[-1]) - squash(y[split:, columns])).mean())
        best = min(trial, key=trial.get)
        w.append(solve(slice(0, None), columns, best))
        errors.append(trial[best])
    w = torch.from_numpy(np.concatenate(w, 1))
    head[-1].weight.copy_(w[:-1].T.to(head[-1].weight))
    head[-1].bias.copy_(w[-1].to(head[-1].bias))
    net.train()
    return errors[0], errors[1]


def train_geometry(cfg: NetworkConfig, out: Path, settings: StageSettings, device: str = "cpu",
                   fitted: Path | None = None, photos: Path | None = None, albedo: Path | None = None,
                   weights: GeometryLossWeights = GeometryLossWeights(), start_from: Path | None = None) -> Path:
    """Run (or resume) stage 1 into ``out``; returns the checkpoint path. ``fitted`` (a
    ``training.fitting`` output folder) and ``photos`` (its photo folder) add real photos;
    ``albedo`` (a ``training.albedo`` npz) draws the synthetic albedo from it and supervises p_t;
    ``weights`` are L_gs's (Table III's ablations switch terms off). ``start_from`` (a checkpoint or
    a model-store folder, ``start_checkpoint``) gives the first weights instead of a random start; its
    network may grow into ``cfg`` (``grown_geometry_weights``), and a model store's folded BatchNorm
    stays frozen, as in stage 3."""
    torch.manual_seed(settings.seed)
    dev = torch.device(device)
    out.mkdir(parents=True, exist_ok=True)
    face_model = UVFaceModel.build(cfg.geometry.uv_size)
    gen = SynthFaceGenerator(face_model, SynthSettings(image_size=cfg.geometry.image_size), albedo,
                             cfg.geometry.albedo_dim)
    targets = GeometryTargets(face_model, dev)
    real = FittedPhotos(fitted, photos, cfg.geometry.image_size) if fitted else None
    real_val = FittedPhotos(fitted, photos, cfg.geometry.image_size, split="validation") if fitted else None
    profiled = None
    if settings.profiled_batch_size:
        if fitted is None or photos is None:
            raise ValueError("profiled faces need the fitted set and its photos")
        profiled = ProfiledFaces(fitted, profile_generator(face_model, photos, cfg.geometry.image_size, settings.seed))
    net = GeometryStream(cfg.geometry, face_model).to(dev)
    ckpt_path = out / "checkpoint.pt"
    ckpt = load_checkpoint(ckpt_path, cfg, dev)
    start = start_checkpoint(start_from, cfg, dev) if ckpt is None and start_from is not None else None
    folded = (ckpt or start or {}).get("batchnorm") == FOLDED
    if folded:
        freeze_batchnorm(net)
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
    step = 0
    if ckpt is not None:
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step = ckpt["step"]
    elif start is not None:
        net.load_state_dict(grown_geometry_weights(net, start))
    if ckpt is None and cfg.geometry.linear_basis and settings.probe_faces:
        errors = probe_coefficient_head(net, gen, settings.probe_faces, dev)
        print(f"coefficient head probed on {settings.probe_faces} faces: held-out squared error {errors[0]:.4f} "
              f"(identity coefficients), {errors[1]:.4f} (blendshape weights)", flush=True)
    logged = LOGGED_TERMS + (COEFFICIENT_TERMS if cfg.geometry.linear_basis else ())
    log_path = out / "log.csv"
    new_log = not log_path.exists()
    with log_path.open("a", newline="") as log_file:
        log = csv.writer(log_file)
        if new_log:
            log.writerow(["step", "seconds", *logged, "val_asm", "val_landmark_nme", "val_real_asm", "val_real_landmark_nme"])
        started, deadline = time.time(), Deadline(settings.minutes)
        bar = tqdm(total=settings.steps, initial=step, desc="stage 1 geometry", unit="step")
        net.train()

        def make(k: int):
            """Step k's synthetic batch, fitted photos and profiled faces (None where not asked for)."""
            rng = np.random.default_rng([settings.seed, k, 1])
            real_batch = real.batch(rng.choice(len(real), settings.real_batch_size, replace=False), rng) if real else None
            turned = profiled.batch(settings.seed + 4, k, settings.profiled_batch_size) if profiled else None
            return gen.batch(settings.seed, k, settings.batch_size), real_batch, turned

        for step, (batch, *more) in step_inputs(make, step, settings.steps, settings.workers):
            terms = geometry_loss(net(to_device(batch, dev).image), batch, targets, weights)
            for extra in filter(None, more):
                extra_terms = geometry_loss(net(to_device(extra, dev).image), extra, targets, weights)
                terms = {k: terms[k] + extra_terms[k] for k in terms}
            opt.zero_grad(set_to_none=True)
            terms["total"].backward()
            opt.step()
            step += 1
            bar.update(1)
            out_of_time = deadline.passed()
            val = validate(net, gen, targets, settings, dev, real_val) if step % settings.validate_every == 0 else {}
            if step % settings.log_every == 0 or val:
                row = [step, round(time.time() - started, 1)] + [terms[k].item() for k in logged]
                log.writerow(row + [val.get(k, "") for k in ("val_asm", "val_landmark_nme", "val_real_asm", "val_real_landmark_nme")])
                log_file.flush()
                bar.set_postfix(loss=f"{terms['total'].item():.4f}", **({"val_nme": f"{val['val_landmark_nme']:.3f}"} if val else {}))
            if step % settings.checkpoint_every == 0 or step == settings.steps or out_of_time:
                save_checkpoint(ckpt_path, model=net.state_dict(), optimizer=opt.state_dict(), config=cfg.as_dict(),
                                step=step, stage="geometry", loss_weights=asdict(weights),
                                batchnorm=FOLDED if folded else "trained")
            if out_of_time:
                break
        bar.close()
    return ckpt_path
