"""Stage 2: the texture stream on synthetic faces with known albedo (the paper's FTD, Sec. IV-B).

    python -m training.train texture --config cpu-small --albedo data/albedo/albedo-k80.npz \\
        --features runs/geometry/checkpoint.pt --out runs/texture

Each synthetic face is drawn from our albedo model (its p_t known) plus detail the linear model
cannot hold; the stream sees the photo, the 68 landmark heatmaps, where each UV pixel lands in the
photo and whether it is seen there (from the ground-truth geometry, as the service computes them
from the geometry stream's), and p_t with noise standing in for the geometry stream's error.
A quarter of the faces have an occluder in front (a hand, hair strands, glasses) whose pixels count
as unseen, and half the backgrounds are patches of real photos cut away from their faces.
L = 100 L_rec + 3 L_con + 0.2 L_adv (L_rec's weight rescaled for colours in [0, 1]: see
``TextureLossWeights``), Adam at 1e-4. ``best.pt`` keeps the checkpoint with the lowest validation albedo error.

L_con needs a feature network. The paper uses an ImageNet VGG; none can be downloaded here, so it is
the first two stages of *our* stage-1 encoder (a VGG-style stack trained on face photos), frozen:
its early filters respond to skin colour, edges and fine texture, which is what L_con compares.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from training import losses
from training.checkpoints import BestCheckpoint, load_checkpoint, save_checkpoint, stream_weights
from training.facemodel import UVFaceModel
from training.models import AlbedoModel, GeometryStream, NetworkConfig, PatchDiscriminator, TextureStream
from training.prefetch import Deadline, step_inputs
from training.stages.common import VALIDATION_SEED, TextureInputs, landmark_heatmaps, to_device, uv_grid_from_geometry
from training.synth import SynthBatch, SynthFaceGenerator, SynthSettings
from training.synth.clutter import photo_patches


@dataclass(frozen=True)
class TextureLossWeights:
    """The issue's weights are 0.1 / 3 / 0.2 for colours in [0, 255]; ours are in [0, 1], which makes
    the squared L_rec 255^2 times smaller. With 0.1 here L_con and L_adv alone steer the stream and
    its albedo error grew past the linear albedo's (runs of 600 steps); 100 keeps L_rec comparable
    with them."""

    reconstruction: float = 100.0
    contextual: float = 3.0
    adversarial: float = 0.2


@dataclass(frozen=True)
class TextureStageSettings:
    steps: int = 3000
    batch_size: int = 8
    lr: float = 1e-4
    seed: int = 0
    p_t_noise: float = 0.3  # std added to the true p_t, in units of each component's sigma
    occluder_fraction: float = 0.25  # faces with a hand, hair or glasses in front (their pixels count as unseen)
    background_patches: int = 1000  # photo patches for backgrounds, cut from --photos away from the faces
    log_every: int = 25
    checkpoint_every: int = 250
    validate_every: int = 250
    validation_batches: int = 4
    workers: int = 0  # processes making each step's faces ahead (training.prefetch); 0: inline
    minutes: float | None = None  # stop (checkpointing) after this much wall time


def texture_inputs(batch: SynthBatch, p_t_noise: float = 0.0, generator: torch.Generator | None = None) -> TextureInputs:
    size = batch.image.shape[-1]
    p_t = batch.p_t
    if p_t_noise:
        p_t = p_t + p_t_noise * torch.randn(p_t.shape, generator=generator).to(p_t.device)
    return TextureInputs(
        p_t=p_t, image=batch.image, heatmaps=landmark_heatmaps(batch.landmarks, size),
        uv_grid=uv_grid_from_geometry(batch.a_id + batch.a_exp, batch.p_h, size),
        uv_visibility=batch.uv_visible[:, None].float(),
    )


class ContextualFeatures(nn.Module):
    """The first ``stages`` stages of a trained stage-1 encoder, frozen: (B, 3, S, S) in [0, 1] -> features."""

    def __init__(self, geometry: GeometryStream, stages: int = 2):
        super().__init__()
        per_stage = geometry.cfg.convs_per_stage + 1  # convs, then the pooling
        self.layers = geometry.encoder.features[: stages * per_stage]
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # always frozen, BatchNorm included
        return super().train(False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.layers(image * 2.0 - 1.0)


def load_feature_network(path: Path, cfg: NetworkConfig, device: torch.device) -> ContextualFeatures:
    ckpt = torch.load(path, map_location=device, weights_only=False)
    geometry = GeometryStream(cfg.geometry)
    geometry.load_state_dict(stream_weights(ckpt, "geometry"))
    return ContextualFeatures(geometry).to(device)


def albedo_errors(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, visible: torch.Tensor) -> tuple[float, float]:
    """Mean absolute colour error over the face region and over its visible part. Maps (B, 3, S, S)."""
    diff = (pred - target).abs().mean(1)  # (B, S, S)
    face = mask.expand_as(diff)
    seen = face & visible
    return float(diff[face].mean()), float(diff[seen].mean())


@torch.no_grad()
def validate_texture(net: TextureStream, gen: SynthFaceGenerator, settings: TextureStageSettings, mask: torch.Tensor,
                     device: torch.device) -> dict[str, float]:
    """Albedo MAE of the stream and of the linear albedo from the true p_t, on fixed synthetic faces."""
    net.eval()
    rows = []
    for i in range(settings.validation_batches):
        batch = to_device(gen.batch(VALIDATION_SEED, i, settings.batch_size), device)
        albedo, linear, _ = net(*texture_inputs(batch).as_args())
        rows.append(albedo_errors(albedo, batch.albedo, mask, batch.uv_visible) + albedo_errors(linear, batch.albedo, mask, batch.uv_visible))
    net.train()
    mean = np.mean(rows, 0)
    return {"val_mae": mean[0], "val_mae_visible": mean[1], "val_linear_mae": mean[2], "val_linear_mae_visible": mean[3]}


def train_texture(cfg: NetworkConfig, out: Path, settings: TextureStageSettings, albedo_path: Path, features_path: Path,
                  device: str = "cpu", photos: Path | None = None) -> Path:
    """Run (or resume) stage 2 into ``out``; returns the checkpoint path. ``photos`` (a folder of photos
    with 68-point .pts files) gives background patches; without it backgrounds are procedural."""
    torch.manual_seed(settings.seed)
    dev = torch.device(device)
    out.mkdir(parents=True, exist_ok=True)
    t = cfg.texture
    face_model = UVFaceModel.build(t.uv_size)
    patches = photo_patches(photos, settings.background_patches, t.image_size, settings.seed) if photos else None
    training_faces = SynthSettings(image_size=t.image_size, occluder_fraction=settings.occluder_fraction)
    gen = SynthFaceGenerator(face_model, training_faces, albedo_path, t.albedo_dim, backgrounds=patches)
    # Validation faces stay plain (no clutter), so the figures compare across runs and settings.
    val_gen = SynthFaceGenerator(face_model, SynthSettings(image_size=t.image_size), albedo_path, t.albedo_dim)
    mask = torch.from_numpy(face_model.layout.mask).to(dev)
    net = TextureStream(t, AlbedoModel.load(albedo_path, t.albedo_dim)).to(dev)
    disc = PatchDiscriminator(t).to(dev)
    features = load_feature_network(features_path, cfg, dev)
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=settings.lr, betas=(0.5, 0.999))
    weights = TextureLossWeights()
    ckpt_path = out / "checkpoint.pt"
    step = 0
    if (ckpt := load_checkpoint(ckpt_path, cfg, dev)) is not None:
        net.load_state_dict(ckpt["model"])
        disc.load_state_dict(ckpt["discriminator"])
        opt.load_state_dict(ckpt["optimizer"])
        opt_d.load_state_dict(ckpt["optimizer_discriminator"])
        step = ckpt["step"]
    best = BestCheckpoint(out, "val_mae")
    noise = torch.Generator().manual_seed(settings.seed)
    face = mask[None, None].float()
    log_path = out / "log.csv"
    new_log = not log_path.exists()
    with log_path.open("a", newline="") as log_file:
        log = csv.writer(log_file)
        if new_log:
            log.writerow(["step", "seconds", "total", "reconstruction", "contextual", "adversarial", "discriminator",
                          "val_mae", "val_mae_visible", "val_linear_mae", "val_linear_mae_visible"])
        start, deadline = time.time(), Deadline(settings.minutes)
        bar = tqdm(total=settings.steps, initial=step, desc="stage 2 texture", unit="step")
        net.train()
        faces = step_inputs(lambda k: gen.batch(settings.seed, k, settings.batch_size), step, settings.steps, settings.workers)
        for step, batch in faces:
            noise.manual_seed(settings.seed * 1_000_003 + step)  # a resumed run draws the same noise
            batch = to_device(batch, dev)
            albedo, _, _ = net(*texture_inputs(batch, settings.p_t_noise, noise).as_args())
            real, fake = batch.albedo * face, albedo * face

            opt_d.zero_grad(set_to_none=True)
            d_loss = 0.5 * (losses.adversarial_loss(disc(real), True) + losses.adversarial_loss(disc(fake.detach()), False))
            d_loss.backward()
            opt_d.step()

            terms = {
                "reconstruction": losses.reconstruction_loss(albedo, batch.albedo, face),
                "contextual": losses.contextual_loss(features(fake), features(real)),
                "adversarial": losses.adversarial_loss(disc(fake), True),
            }
            terms["total"] = sum(getattr(weights, k) * v for k, v in terms.items())
            opt.zero_grad(set_to_none=True)
            terms["total"].backward()
            opt.step()
            step += 1
            bar.update(1)
            out_of_time = deadline.passed()
            val = validate_texture(net, val_gen, settings, mask, dev) if step % settings.validate_every == 0 else {}
            if step % settings.log_every == 0 or val:
                row = [step, round(time.time() - start, 1)] + [terms[k].item() for k in ("total", "reconstruction", "contextual", "adversarial")]
                log.writerow(row + [d_loss.item()] + [val.get(k, "") for k in ("val_mae", "val_mae_visible", "val_linear_mae", "val_linear_mae_visible")])
                log_file.flush()
                bar.set_postfix(loss=f"{terms['total'].item():.4f}", **({"val_mae": f"{val['val_mae']:.4f}"} if val else {}))
            state = dict(model=net.state_dict(), discriminator=disc.state_dict(), optimizer=opt.state_dict(),
                         optimizer_discriminator=opt_d.state_dict(), config=cfg.as_dict(), step=step, stage="texture")
            best.offer(val, state)
            if step % settings.checkpoint_every == 0 or step == settings.steps or out_of_time:
                save_checkpoint(ckpt_path, **state)
            if out_of_time:
                break
        bar.close()
    return ckpt_path
