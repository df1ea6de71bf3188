"""Training, stage by stage (paper Sec. IV-B). Stage 1, the geometry stream, is here so far.

    python -m training.train geometry --config cpu-small --steps 3000 --out runs/geometry

Stage 1 learns A_id, A_exp and the parameters on synthetic faces (``training.synth``), and, given
``--fitted``, on real photos with pseudo-ground truth from ``training.fitting`` (300W-LP's role), with
L_gs = 0.5 L_p + 1 L_asm + 0.5 L_sym + 1e-3 L_reg (Eq. 8), Adam at 2e-4, batch 8. Every run logs
losses to ``log.csv``, writes ``checkpoint.pt`` (model, optimiser, config, step) every
``--checkpoint-every`` steps and at the end, and resumes from it when restarted.
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from training import losses
from training.evaluate.metrics import nme_2d
from training.facemodel import UVFaceModel
from training.fitting.crops import FittedPhotos
from training.models import PRESETS, GeometryStream, NetworkConfig
from training.models.pose import pose_to_camera
from training.synth import SynthFaceGenerator, SynthSettings

VALIDATION_SEED = 999_999  # the synthetic validation batches, disjoint from the training seed


@dataclass(frozen=True)
class GeometryLossWeights:
    parametric: float = 0.5
    asm: float = 1.0
    symmetry: float = 0.5
    laplacian: float = 1e-3


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


class GeometryTargets:
    """The constant UV arrays the geometry losses need, as tensors."""

    def __init__(self, model: UVFaceModel, device: torch.device):
        topo = model.topology
        self.mask = torch.from_numpy(topo.uv_mask).to(device)
        self.weight = torch.from_numpy(topo.weight_mask).to(device)
        self.mirror = torch.from_numpy(topo.mirror_map).long().to(device)
        self.landmarks_uv = torch.from_numpy(topo.landmarks_uv).to(device)


def geometry_loss(net_out, batch, targets: GeometryTargets, weights: GeometryLossWeights) -> dict[str, torch.Tensor]:
    """L_gs (Eq. 8). Batches without lighting ground truth (fitted photos) supervise p_h only."""
    has_light = getattr(batch, "p_l", None) is not None
    pred = torch.cat([net_out.p_h, net_out.p_l], 1) if has_light else net_out.p_h
    gt = torch.cat([batch.p_h, batch.p_l], 1) if has_light else batch.p_h
    terms = {
        # No albedo coefficients are known for synthetic faces yet: only the tau ||p_t||^2 prior applies.
        "parametric": losses.parametric_loss(pred, gt, net_out.p_t),
        "asm": losses.asm_loss(net_out.a_id, batch.a_id, net_out.a_exp, batch.a_exp, targets.weight, targets.mask),
        "symmetry": losses.symmetry_loss(net_out.a_id, targets.mirror),
        "laplacian": losses.laplacian_loss(net_out.a_full, targets.mask),
    }
    terms["total"] = sum(getattr(weights, k) * v for k, v in terms.items())
    return terms


def project_landmarks(a_full: torch.Tensor, p_h: torch.Tensor, landmarks_uv: torch.Tensor, image_size: int) -> torch.Tensor:
    """Sample A (B, 3, S, S) at the 68 UV landmarks and project with p_h -> (B, 68, 2) pixels."""
    s = a_full.shape[-1]
    grid = (landmarks_uv + 0.5) / s * 2 - 1  # pixel coords -> grid_sample's [-1, 1]
    points = torch.nn.functional.grid_sample(a_full, grid[None, None].expand(a_full.shape[0], 1, 68, 2),
                                             align_corners=False)[:, :, 0].permute(0, 2, 1)
    return pose_to_camera(p_h, image_size).transform_points_screen(points)[..., :2]


@torch.no_grad()
def validate(net: GeometryStream, gen: SynthFaceGenerator, targets: GeometryTargets, settings: StageSettings,
             weights: GeometryLossWeights, device: torch.device, real: FittedPhotos | None = None) -> dict[str, float]:
    net.eval()
    size = gen.settings.image_size
    batches = [_to(gen.batch(VALIDATION_SEED, i, settings.batch_size), device) for i in range(settings.validation_batches)]
    out = {}
    for label, group in (("val", batches), ("val_real", _real_batches(real, settings.batch_size, device))):
        nmes, asm = [], []
        for batch in group:
            pred_out = net(batch.image)
            asm.append(float(geometry_loss(pred_out, batch, targets, weights)["asm"]))
            pred = project_landmarks(pred_out.a_full, pred_out.p_h, targets.landmarks_uv, size)
            nmes += [nme_2d(p, g) for p, g in zip(pred.cpu().numpy(), batch.landmarks.cpu().numpy())]
        if nmes:
            out[f"{label}_asm"], out[f"{label}_landmark_nme"] = float(np.mean(asm)), float(np.mean(nmes))
    net.train()
    return out


def _real_batches(real: FittedPhotos | None, batch_size: int, device):
    """The held-out fitted photos, cropped without jitter (empty without a fitted set)."""
    if real is None:
        return []
    return [_to(real.batch(range(i, min(i + batch_size, len(real))), None), device) for i in range(0, len(real), batch_size)]


def _to(batch, device):
    for name, value in vars(batch).items():
        setattr(batch, name, value.to(device))
    return batch


def train_geometry(cfg: NetworkConfig, out: Path, settings: StageSettings, device: str = "cpu",
                   fitted: Path | None = None, photos: Path | None = None) -> Path:
    """Run (or resume) stage 1 into ``out``; returns the checkpoint path. ``fitted`` (a
    ``training.fitting`` output folder) and ``photos`` (its photo folder) add real photos."""
    torch.manual_seed(settings.seed)
    dev = torch.device(device)
    out.mkdir(parents=True, exist_ok=True)
    face_model = UVFaceModel.build(cfg.geometry.uv_size)
    gen = SynthFaceGenerator(face_model, SynthSettings(image_size=cfg.geometry.image_size))
    targets = GeometryTargets(face_model, dev)
    weights = GeometryLossWeights()
    real = FittedPhotos(fitted, photos, cfg.geometry.image_size) if fitted else None
    real_val = FittedPhotos(fitted, photos, cfg.geometry.image_size, split="validation") if fitted else None
    net = GeometryStream(cfg.geometry).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
    ckpt_path = out / "checkpoint.pt"
    step = 0
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=dev, weights_only=False)
        if ckpt["config"] != cfg.as_dict():
            raise ValueError(f"{ckpt_path} was trained with another config; use a fresh --out")
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step = ckpt["step"]
    log_path = out / "log.csv"
    new_log = not log_path.exists()
    with log_path.open("a", newline="") as log_file:
        log = csv.writer(log_file)
        if new_log:
            log.writerow(["step", "seconds", "total", "parametric", "asm", "symmetry", "laplacian", "val_asm",
                          "val_landmark_nme", "val_real_asm", "val_real_landmark_nme"])
        start = time.time()
        bar = tqdm(total=settings.steps, initial=step, desc="stage 1 geometry", unit="step")
        net.train()
        while step < settings.steps:
            batch = _to(gen.batch(settings.seed, step, settings.batch_size), dev)
            terms = geometry_loss(net(batch.image), batch, targets, weights)
            if real is not None:
                rng = np.random.default_rng([settings.seed, step, 1])
                picked = rng.choice(len(real), settings.real_batch_size, replace=False)
                real_batch = _to(real.batch(picked, rng), dev)
                real_terms = geometry_loss(net(real_batch.image), real_batch, targets, weights)
                terms = {k: terms[k] + real_terms[k] for k in terms}
            opt.zero_grad(set_to_none=True)
            terms["total"].backward()
            opt.step()
            step += 1
            bar.update(1)
            val = validate(net, gen, targets, settings, weights, dev, real_val) if step % settings.validate_every == 0 else {}
            if step % settings.log_every == 0 or val:
                row = [step, round(time.time() - start, 1)] + [terms[k].item() for k in ("total", "parametric", "asm", "symmetry", "laplacian")]
                log.writerow(row + [val.get(k, "") for k in ("val_asm", "val_landmark_nme", "val_real_asm", "val_real_landmark_nme")])
                log_file.flush()
                bar.set_postfix(loss=f"{terms['total'].item():.4f}", **({"val_nme": f"{val['val_landmark_nme']:.3f}"} if val else {}))
            if step % settings.checkpoint_every == 0 or step == settings.steps:
                tmp = ckpt_path.with_suffix(".tmp")
                torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "config": cfg.as_dict(),
                            "step": step, "stage": "geometry"}, tmp)
                tmp.replace(ckpt_path)  # never leave a half-written checkpoint behind
        bar.close()
    return ckpt_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.train")
    parser.add_argument("stage", choices=["geometry"])
    parser.add_argument("--config", choices=sorted(PRESETS), default="cpu-small")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=StageSettings.steps)
    parser.add_argument("--batch-size", type=int, default=StageSettings.batch_size)
    parser.add_argument("--lr", type=float, default=StageSettings.lr)
    parser.add_argument("--seed", type=int, default=StageSettings.seed)
    parser.add_argument("--checkpoint-every", type=int, default=StageSettings.checkpoint_every)
    parser.add_argument("--validate-every", type=int, default=StageSettings.validate_every)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--fitted", type=Path, help="a `python -m training.fitting` output folder: adds real photos")
    parser.add_argument("--photos", type=Path, default=Path("../shared/data/helen-afw-68pt"), help="the fitted photos' folder")
    parser.add_argument("--real-batch-size", type=int, default=StageSettings.real_batch_size)
    args = parser.parse_args(argv)
    settings = StageSettings(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                             checkpoint_every=args.checkpoint_every, validate_every=args.validate_every,
                             real_batch_size=args.real_batch_size)
    path = train_geometry(PRESETS[args.config](), args.out, settings, args.device, args.fitted, args.photos)
    print(f"checkpoint: {path}")


if __name__ == "__main__":
    main()
