"""Stage 1 with the shape from landmarks (``GeometryConfig.shape_from_landmarks``, issue 21).

    python -m training.train landmarks --config cpu-small --geometry-from model_store/facerecon-cpu-small/0.8.0 \\
        --albedo data/albedo/albedo-k80.npz --fitted data/fitted --out runs/landmarks

Grows the landmark head and ``LandmarkToFace`` onto a trained geometry stream (its encoder, PSN and
appearance head kept; its attribute decoders dropped) and trains in three phases, each resumable:

1. ``regressor``: ``LandmarkToFace`` alone on the synthetic generator's draws, no rendering
   (``SynthFaceGenerator.landmark_draws``): the true 68 landmarks with noise of up to
   ``landmark_noise`` of the box, against ICT's vertices decoded from the true coefficients (mean
   distance over the UV mesh, canonical units), the landmarks reprojected under the predicted pose
   (NME) and the head's angles.
2. ``landmarks``: the encoder and the landmark head on rendered synthetic faces (a quarter occluded,
   half on photo backgrounds) and on fitted photos (their annotated inner landmarks 17-67; the jaw,
   annotated on the silhouette, from the fit's fixed ICT vertices, as the head is taught on synthetic
   faces). The regressor keeps learning beside it, on the head's own landmarks (detached: its 3D loss
   does not bend them) and on drawn ones.
3. ``appearance``: the encoder moved, so p_t and p_l, which the texture stream and the lighting refit
   read, are taught back: the appearance head alone (encoder frozen) is trained to give what the
   start's network gave for the same synthetic faces and photos (mean squared error).

``log.csv`` has each phase's losses; ``checkpoint.pt`` holds model, optimiser, config, phase and step.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from training.checkpoints import load_checkpoint, save_checkpoint, stream_weights
from training.export.from_store import FOLDED, freeze_batchnorm
from training.facemodel import UVFaceModel
from training.fitting.crops import FittedPhotos
from training.models import GeometryStream, NetworkConfig
from training.models.basis import decode_basis
from training.models.landmarks import landmark_nme
from training.models.pose import pose_to_camera
from training.prefetch import Deadline, step_inputs
from training.stages.common import VALIDATION_SEED, grown_geometry_weights, project_landmarks, start_checkpoint, to_device
from training.synth import SynthFaceGenerator, SynthSettings
from training.synth.clutter import photo_patches

PHASES = ("regressor", "landmarks", "appearance")
DONE = "done"
JAW = slice(0, 17)  # annotated on the silhouette in photos, fixed ICT vertices in the head's targets
DRAW_SEED_OFFSET = 7  # the regressor's drawn faces, a seed apart from the rendered ones


@dataclass(frozen=True)
class LandmarkStageSettings:
    regressor_steps: int = 4000
    steps: int = 2000  # phase 2
    appearance_steps: int = 300
    batch_size: int = 32  # rendered synthetic faces per step
    real_batch_size: int = 8  # fitted photos per step
    draw_batch_size: int = 256  # drawn landmark sets per regressor step
    landmark_noise: float = 0.05  # the drawn landmarks' noise, up to this fraction of the box (uniform)
    occluder_fraction: float = 0.25
    frontal_fraction: float = SynthSettings.frontal_fraction  # of the rendered and drawn training faces
    model_albedo_fraction: float = SynthSettings.model_albedo_fraction  # of the rendered ones; the rest procedural
    background_patches: int = 1000
    lr: float = 1e-3
    regressor_lr: float = 1e-3
    seed: int = 0
    log_every: int = 25
    checkpoint_every: int = 100
    validate_every: int = 200
    validation_faces: int = 256
    workers: int = 1
    minutes: float | None = None


class FaceBasisTargets:
    """ICT's basis where the regressor's losses read it, canonical units: every ``stride``-th valid UV
    pixel (for the 3D error) and the 68 landmarks, sampled from the basis maps at the UV landmarks as
    ``common.project_landmarks`` samples A (for the reprojection, without decoding whole maps)."""

    def __init__(self, net: GeometryStream, face_model: UVFaceModel, stride: int = 4):
        b = net.basis
        pick = torch.arange(0, b.mean.numel() // 3, stride)
        self.mean = b.mean.view(-1, 3)[pick]
        self.identity = b.identity.view(b.identity.shape[0], -1, 3)[:, pick]
        self.expression = b.expression.view(b.expression.shape[0], -1, 3)[:, pick]
        uv = torch.from_numpy(face_model.topology.landmarks_uv).float()
        grid = ((uv + 0.5) / b.size * 2 - 1)[None, None]

        def at_landmarks(maps: torch.Tensor) -> torch.Tensor:  # (K, 3, S, S) -> (K, 68, 3)
            return F.grid_sample(maps, grid.expand(len(maps), 1, 68, 2), align_corners=False)[:, :, 0].permute(0, 2, 1)

        with torch.no_grad():
            self.landmark_mean = at_landmarks(decode_basis(torch.zeros(1, len(b.identity)), b.identity, b.mean, b.gather, b.size))[0]
            self.landmark_identity = at_landmarks(decode_basis(torch.eye(len(b.identity)), b.identity, None, b.gather, b.size))
            self.landmark_expression = at_landmarks(decode_basis(torch.eye(len(b.expression)), b.expression, None, b.gather, b.size))

    def vertices(self, id_coeffs: torch.Tensor, exp_weights: torch.Tensor) -> torch.Tensor:
        """(B, 100), (B, 53) -> (B, P', 3)."""
        return (self.mean + torch.einsum("bk,kpc->bpc", id_coeffs, self.identity)
                + torch.einsum("bk,kpc->bpc", exp_weights, self.expression))

    def landmarks(self, id_coeffs: torch.Tensor, exp_weights: torch.Tensor, p_h: torch.Tensor, image_size: int) -> torch.Tensor:
        """(B, 100), (B, 53), (B, 6) -> (B, 68, 2) the landmarks projected into the crop, pixels."""
        points = (self.landmark_mean + torch.einsum("bk,klc->blc", id_coeffs, self.landmark_identity)
                  + torch.einsum("bk,klc->blc", exp_weights, self.landmark_expression))
        return pose_to_camera(p_h, image_size).transform_points_screen(points)[..., :2]


def regressor_loss(net: GeometryStream, targets: FaceBasisTargets, landmarks: torch.Tensor, truth: tuple,
                   image_size: int) -> dict[str, torch.Tensor]:
    """``LandmarkToFace`` on ``landmarks`` (B, 68, 2) against ``truth`` = (true landmarks (B, 68, 2),
    id_coeffs (B, 100), exp_weights (B, 53), p_h (B, 6)): 3D error + reprojection NME + 0.01 x angles."""
    true_lm, ids, exp, p_h = truth
    id_pred, exp_pred, p_h_pred = net.landmarks_to_face(landmarks, image_size)
    vertex = (targets.vertices(id_pred, exp_pred) - targets.vertices(ids, exp)).norm(dim=-1).mean()
    reprojection = landmark_nme(targets.landmarks(id_pred, exp_pred, p_h_pred, image_size), true_lm).mean()
    angles = (p_h_pred[:, :3] - p_h[:, :3]).abs().mean()
    return {"vertex": vertex, "reprojection": reprojection, "angles": angles,
            "total": vertex + reprojection + 0.01 * angles}


def real_targets(batch, landmarks_uv: torch.Tensor, image_size: int) -> torch.Tensor:
    """A fitted photo's targets (B, 68, 2): the annotated inner landmarks, the jaw from the fit."""
    fitted = project_landmarks(batch.a_id + batch.a_exp, batch.p_h, landmarks_uv, image_size)
    target = batch.landmarks.clone()
    target[:, JAW] = fitted[:, JAW]
    return target


def noisy(landmarks: torch.Tensor, most: float, generator: torch.Generator) -> torch.Tensor:
    """Each set of (B, 68, 2) landmarks moved by Gaussian noise of a random scale up to ``most`` NME."""
    span = landmarks.amax(1) - landmarks.amin(1)
    box = (span[:, 0] * span[:, 1]).sqrt()[:, None, None]
    scale = torch.rand(len(landmarks), 1, 1, generator=generator) * most * box / np.sqrt(2)
    return landmarks + torch.randn(landmarks.shape, generator=generator) * scale


@torch.no_grad()
def validate(net: GeometryStream, gen: SynthFaceGenerator, real_val: FittedPhotos | None, landmarks_uv: torch.Tensor,
             settings: LandmarkStageSettings, face_model: UVFaceModel) -> dict[str, float]:
    """Held-out synthetic faces (the validation seed): the head's landmark NME and the 3D error after a
    similarity alignment, in mm, beside the mean face's; the held-out fitted photos' landmark NME."""
    from training.evaluate.metrics import similarity_vertex_error

    net.eval()
    n, size = settings.validation_faces, gen.settings.image_size
    rows, cols = face_model.layout.pixels[:, 0], face_model.layout.pixels[:, 1]
    mean_face = face_model.identity_map()[rows, cols]
    mm = face_model.frame.scale * 10.0
    nmes, errors, baseline = [], [], []
    for start in range(0, n, 32):
        batch = gen.batch(VALIDATION_SEED, start // 32, min(32, n - start))
        out = net(batch.image)
        nmes += landmark_nme(out.landmarks, batch.landmarks).tolist()
        pred = (out.a_id + out.a_exp).numpy().transpose(0, 2, 3, 1)[:, rows, cols]
        truth = (batch.a_id + batch.a_exp).numpy().transpose(0, 2, 3, 1)[:, rows, cols]
        errors += [similarity_vertex_error(p * mm, t * mm) for p, t in zip(pred, truth)]
        baseline += [similarity_vertex_error(mean_face * mm, t * mm) for t in truth]
    result = {"val_landmark_nme": float(np.mean(nmes)), "val_similarity_mm": float(np.mean(errors)),
              "val_mean_face_mm": float(np.mean(baseline))}
    if real_val is not None and len(real_val):
        real_nmes = []
        for start in range(0, len(real_val), 32):
            batch = real_val.batch(range(start, min(start + 32, len(real_val))), None)
            real_nmes += landmark_nme(net(batch.image).landmarks, real_targets(batch, landmarks_uv, size)).tolist()
        result["val_real_landmark_nme"] = float(np.mean(real_nmes))
    net.train()
    return result


def train_landmarks(cfg: NetworkConfig, out: Path, settings: LandmarkStageSettings, start_from: Path,
                    fitted: Path | None = None, photos: Path | None = None, albedo: Path | None = None,
                    device: str = "cpu") -> Path:
    """Run (or resume) the three phases into ``out``; returns the checkpoint path. ``start_from``: a
    stage-1 or 3 checkpoint or a model-store folder of the network ``cfg`` grows from."""
    if not cfg.geometry.shape_from_landmarks:
        raise ValueError("the landmark stage trains a network with shape_from_landmarks")
    torch.manual_seed(settings.seed)
    dev = torch.device(device)
    out.mkdir(parents=True, exist_ok=True)
    size = cfg.geometry.image_size
    face_model = UVFaceModel.build(cfg.geometry.uv_size)
    backgrounds = photo_patches(photos, settings.background_patches, size, settings.seed) if photos else None
    gen = SynthFaceGenerator(face_model, SynthSettings(image_size=size, occluder_fraction=settings.occluder_fraction,
                                                    frontal_fraction=settings.frontal_fraction,
                                                    model_albedo_fraction=settings.model_albedo_fraction),
                             albedo, cfg.geometry.albedo_dim, backgrounds=backgrounds)
    plain = SynthFaceGenerator(face_model, SynthSettings(image_size=size), albedo, cfg.geometry.albedo_dim)
    real = FittedPhotos(fitted, photos, size) if fitted else None
    real_val = FittedPhotos(fitted, photos, size, split="validation") if fitted else None

    net = GeometryStream(cfg.geometry, face_model).to(dev)
    ckpt_path = out / "checkpoint.pt"
    ckpt = load_checkpoint(ckpt_path, cfg, dev)
    start = start_checkpoint(start_from, cfg, dev)
    folded = start.get("batchnorm") == FOLDED
    # The start's network, frozen, is phase 3's teacher for p_t and p_l.
    teacher = GeometryStream(NetworkConfig.from_dict(start["config"]).geometry, face_model).to(dev)
    teacher.load_state_dict(stream_weights(start, "geometry"))
    teacher.eval().requires_grad_(False)
    if folded:
        freeze_batchnorm(net)
        freeze_batchnorm(teacher)
    phase, step = PHASES[0], 0
    if ckpt is not None:
        net.load_state_dict(ckpt["model"])
        phase, step = ckpt["phase"], ckpt["step"]
    else:
        net.load_state_dict({k: v for k, v in grown_geometry_weights(net, start).items() if k in net.state_dict()})
    if phase == DONE:
        return ckpt_path
    targets = FaceBasisTargets(net, face_model)
    landmarks_uv = torch.from_numpy(face_model.topology.landmarks_uv).float().to(dev)
    draws = torch.Generator().manual_seed(settings.seed)

    def optimiser(phase_name: str) -> torch.optim.Optimizer:
        if phase_name == "regressor":
            return torch.optim.AdamW(net.landmarks_to_face.parameters(), settings.regressor_lr, weight_decay=1e-4)
        if phase_name == "landmarks":
            return torch.optim.AdamW([
                {"params": [*net.encoder.parameters(), *net.landmark_head.parameters()], "lr": settings.lr},
                {"params": net.landmarks_to_face.parameters(), "lr": settings.regressor_lr / 10}], weight_decay=1e-4)
        return torch.optim.AdamW(net.appearance.parameters(), 1e-4)

    def drawn(k: int) -> dict[str, torch.Tensor]:
        truth = tuple(t.to(dev) for t in gen.landmark_draws(settings.seed + DRAW_SEED_OFFSET, k, settings.draw_batch_size))
        return regressor_loss(net, targets, noisy(truth[0], settings.landmark_noise, draws), truth, size)

    log_path = out / "log.csv"
    new_log = not log_path.exists()
    deadline, started = Deadline(settings.minutes), time.time()
    with log_path.open("a", newline="") as log_file:
        log = csv.writer(log_file)
        if new_log:
            log.writerow(["phase", "step", "seconds", "loss", "terms", "validation"])
        phase_steps = (settings.regressor_steps, settings.steps, settings.appearance_steps)
        last_phase = PHASES[max((i for i, n in enumerate(phase_steps) if n), default=0)]
        for phase_name, steps in zip(PHASES, phase_steps):
            if PHASES.index(phase_name) < PHASES.index(phase):
                continue
            first = step if phase_name == phase else 0
            opt = optimiser(phase_name)
            if ckpt is not None and phase_name == ckpt["phase"] and "optimizer" in ckpt:
                opt.load_state_dict(ckpt["optimizer"])
            net.train()
            if phase_name == "appearance":
                net.encoder.eval()  # frozen: only the appearance head moves
            bar = tqdm(total=steps, initial=first, desc=f"landmarks: {phase_name}", unit="step")

            def make(k: int, phase_name=phase_name):
                if phase_name == "regressor":
                    return None
                rng = np.random.default_rng([settings.seed, k, PHASES.index(phase_name)])
                real_batch = real.batch(rng.choice(len(real), settings.real_batch_size, replace=False), rng) if real else None
                return gen.batch(settings.seed + PHASES.index(phase_name), k, settings.batch_size), real_batch

            workers = 0 if phase_name == "regressor" else settings.workers
            for k, inputs in step_inputs(make, first, steps, workers):
                if phase_name == "regressor":
                    terms = drawn(k)
                elif phase_name == "landmarks":
                    for group, base in zip(opt.param_groups, (settings.lr, settings.regressor_lr / 10)):
                        group["lr"] = base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * k / steps)))
                    terms = landmark_step(net, targets, inputs, landmarks_uv, size, dev)
                    terms["total"] = terms["total"] + drawn(k)["total"]
                else:
                    terms = appearance_step(net, teacher, inputs, dev)
                opt.zero_grad(set_to_none=True)
                terms["total"].backward()
                opt.step()
                step = k + 1
                bar.update(1)
                out_of_time = deadline.passed()
                val = {}
                if phase_name != "regressor" and (step % settings.validate_every == 0 or step == steps):
                    val = validate(net, plain, real_val, landmarks_uv, settings, face_model)
                    bar.set_postfix({k2: f"{v:.4f}" for k2, v in val.items()})
                if step % settings.log_every == 0 or val:
                    log.writerow([phase_name, step, round(time.time() - started, 1), f"{terms['total'].item():.5f}",
                                  " ".join(f"{k2}={v.item():.5f}" for k2, v in terms.items() if k2 != "total"),
                                  " ".join(f"{k2}={v:.5f}" for k2, v in val.items())])
                    log_file.flush()
                if step % settings.checkpoint_every == 0 or step == steps or out_of_time:
                    done = step == steps
                    finished = done and phase_name == last_phase  # the phases after it have no steps
                    save_checkpoint(ckpt_path, model=net.state_dict(), config=cfg.as_dict(),
                                    phase=DONE if finished else (*PHASES, DONE)[PHASES.index(phase_name) + 1]
                                    if done else phase_name,
                                    # at the end: every phase's steps, as other stages' files give theirs
                                    step=sum(phase_steps) if finished else 0 if done else step,
                                    stage="landmarks", settings=asdict(settings), started_from=str(start_from),
                                    batchnorm=FOLDED if folded else "trained",
                                    **({} if done else {"optimizer": opt.state_dict()}))
                if out_of_time:
                    bar.close()
                    return ckpt_path
            bar.close()
    return ckpt_path


def landmark_step(net: GeometryStream, targets: FaceBasisTargets, inputs, landmarks_uv: torch.Tensor, size: int,
                  dev: torch.device) -> dict[str, torch.Tensor]:
    """Phase 2's loss on one step's rendered faces and fitted photos: the head's landmark NME, and the
    regressor on the head's (detached) synthetic landmarks."""
    synthetic, real_batch = inputs
    synthetic = to_device(synthetic, dev)
    out = net(synthetic.image)
    synthetic_nme = landmark_nme(out.landmarks, synthetic.landmarks).mean()
    truth = (synthetic.landmarks, synthetic.id_coeffs, synthetic.exp_weights, synthetic.p_h)
    regressor = regressor_loss(net, targets, out.landmarks.detach(), truth, size)
    terms = {"synthetic_nme": synthetic_nme, "regressor_vertex": regressor["vertex"]}
    total = synthetic_nme + regressor["total"]
    if real_batch is not None:
        real_batch = to_device(real_batch, dev)
        terms["real_nme"] = landmark_nme(net(real_batch.image).landmarks, real_targets(real_batch, landmarks_uv, size)).mean()
        total = total + terms["real_nme"]
    terms["total"] = total
    return terms


def appearance_step(net: GeometryStream, teacher: GeometryStream, inputs, dev: torch.device) -> dict[str, torch.Tensor]:
    """Phase 3's loss: the appearance head's p_t and p_l against the start network's, on both kinds of image."""
    synthetic, real_batch = inputs
    images = [to_device(synthetic, dev).image] + ([to_device(real_batch, dev).image] if real_batch is not None else [])
    image = torch.cat(images)
    with torch.no_grad():  # the teacher's p_t and p_l only: its attribute decoders would double the step
        teacher_latent = teacher.encoder(image)
        want_t, want_l, _ = (teacher.appearance or teacher.psn)(teacher_latent)
        latent = net.encoder(image)
    p_t, p_l, _ = net.appearance(latent)
    terms = {"p_t": (p_t - want_t).square().mean(), "p_l": (p_l - want_l).square().mean()}
    terms["total"] = terms["p_t"] + terms["p_l"]
    return terms

