"""Training, stage by stage (paper Sec. IV-B): stage 1, the geometry stream, here; stage 2, the
texture stream, in ``train_texture``; stage 3, the self-supervised fine-tuning, in
``train_finetune``; one CLI for all.

    python -m training.train geometry --config cpu-small --steps 3000 --out runs/geometry
    python -m training.train texture --config cpu-small --albedo ALBEDO.npz --features runs/geometry/checkpoint.pt --out runs/texture
    python -m training.train finetune --config cpu-small --albedo ALBEDO.npz --fitted data/fitted \
        --geometry-from runs/geometry/checkpoint.pt --texture-from runs/texture/checkpoint.pt --out runs/finetune
    python -m training.train all --config cpu-small --albedo ALBEDO.npz --fitted data/fitted --out runs/cpu-small

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
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from training import losses
from training.checkpoints import load_checkpoint, save_checkpoint
from training.evaluate.metrics import nme_2d
from training.facemodel import UVFaceModel
from training.fitting.crops import FittedPhotos
from training.models import PRESETS, GeometryStream, NetworkConfig
from training.models.pose import pose_to_camera
from training.prefetch import Deadline, step_inputs
from training.synth import SynthFaceGenerator, SynthSettings
from training.synth.profiling import ProfiledFaces, profile_generator

VALIDATION_SEED = 999_999  # the synthetic validation batches, disjoint from the training seed


@dataclass(frozen=True)
class GeometryLossWeights:
    parametric: float = 0.5
    asm: float = 1.0
    symmetry: float = 0.5
    laplacian: float = 1e-3
    region_weighting: bool = True  # W in L_asm; off, A_id's error is a plain masked MSE


# The paper's Table III, one loss term added at a time (L_p is always on).
GEOMETRY_LOSS_ABLATIONS = {
    "asm": GeometryLossWeights(symmetry=0.0, laplacian=0.0, region_weighting=False),
    "asm+w": GeometryLossWeights(symmetry=0.0, laplacian=0.0),
    "asm+w+sym": GeometryLossWeights(laplacian=0.0),
    "full": GeometryLossWeights(),
}


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


class GeometryTargets:
    """The constant UV arrays the geometry losses need, as tensors."""

    def __init__(self, model: UVFaceModel, device: torch.device):
        topo = model.topology
        self.mask = torch.from_numpy(topo.uv_mask).to(device)
        self.weight = torch.from_numpy(topo.weight_mask).to(device)
        self.mirror = torch.from_numpy(topo.mirror_map).long().to(device)
        self.landmarks_uv = torch.from_numpy(topo.landmarks_uv).to(device)


def geometry_loss(net_out, batch, targets: GeometryTargets, weights: GeometryLossWeights) -> dict[str, torch.Tensor]:
    """L_gs (Eq. 8). Batches without lighting ground truth (fitted photos) supervise p_h only, and
    p_t is supervised where the synthetic faces were drawn from the albedo model."""
    has_light = getattr(batch, "p_l", None) is not None
    pred = torch.cat([net_out.p_h, net_out.p_l], 1) if has_light else net_out.p_h
    gt = torch.cat([batch.p_h, batch.p_l], 1) if has_light else batch.p_h
    parametric = losses.parametric_loss(pred, gt, net_out.p_t)
    p_t_gt = getattr(batch, "p_t", None)
    if p_t_gt is not None and p_t_gt.shape[1] == net_out.p_t.shape[1]:
        # Averaged over the K coefficients so that 80 albedo values do not drown the 33 pose and light ones.
        parametric = parametric + (net_out.p_t - p_t_gt).square().mean()
    w = targets.weight if weights.region_weighting else targets.mask
    terms = {
        "parametric": parametric,
        "asm": losses.asm_loss(net_out.a_id, batch.a_id, net_out.a_exp, batch.a_exp, w, targets.mask),
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


def landmark_nmes(net_out, landmarks: torch.Tensor, landmarks_uv: torch.Tensor, image_size: int) -> list[float]:
    """Per-face 2D NME of the geometry stream's 68 landmarks against ``landmarks`` (B, 68, 2) crop pixels."""
    pred = project_landmarks(net_out.a_full, net_out.p_h, landmarks_uv, image_size)
    return [nme_2d(p, g) for p, g in zip(pred.cpu().numpy(), landmarks.cpu().numpy())]


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


def to_device(batch, device):
    """Move every tensor field of a batch dataclass (synthetic or real) to ``device``; returns the batch."""
    for name, value in vars(batch).items():
        setattr(batch, name, value.to(device))
    return batch


def train_geometry(cfg: NetworkConfig, out: Path, settings: StageSettings, device: str = "cpu",
                   fitted: Path | None = None, photos: Path | None = None, albedo: Path | None = None,
                   weights: GeometryLossWeights = GeometryLossWeights()) -> Path:
    """Run (or resume) stage 1 into ``out``; returns the checkpoint path. ``fitted`` (a
    ``training.fitting`` output folder) and ``photos`` (its photo folder) add real photos;
    ``albedo`` (a ``training.albedo`` npz) draws the synthetic albedo from it and supervises p_t;
    ``weights`` are L_gs's (Table III's ablations switch terms off)."""
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
    net = GeometryStream(cfg.geometry).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
    ckpt_path = out / "checkpoint.pt"
    step = 0
    if (ckpt := load_checkpoint(ckpt_path, cfg, dev)) is not None:
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
        start, deadline = time.time(), Deadline(settings.minutes)
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
                row = [step, round(time.time() - start, 1)] + [terms[k].item() for k in ("total", "parametric", "asm", "symmetry", "laplacian")]
                log.writerow(row + [val.get(k, "") for k in ("val_asm", "val_landmark_nme", "val_real_asm", "val_real_landmark_nme")])
                log_file.flush()
                bar.set_postfix(loss=f"{terms['total'].item():.4f}", **({"val_nme": f"{val['val_landmark_nme']:.3f}"} if val else {}))
            if step % settings.checkpoint_every == 0 or step == settings.steps or out_of_time:
                save_checkpoint(ckpt_path, model=net.state_dict(), optimizer=opt.state_dict(), config=cfg.as_dict(),
                                step=step, stage="geometry", loss_weights=asdict(weights))
            if out_of_time:
                break
        bar.close()
    return ckpt_path


STAGES = ("geometry", "texture", "finetune")


def main(argv: list[str] | None = None) -> None:
    from training.train_finetune import FinetuneSettings, train_finetune
    from training.train_texture import TextureStageSettings, train_texture

    parser = argparse.ArgumentParser(prog="python -m training.train", description=(
        "Stage 1 `geometry`, stage 2 `texture`, stage 3 `finetune`, or `all` three in a row into OUT/<stage>."))
    parser.add_argument("stage", choices=[*STAGES, "all"])
    parser.add_argument("--config", choices=sorted(PRESETS), default="cpu-small")
    parser.add_argument("--out", type=Path, required=True, help="the run folder (for `all`: the parent of one per stage)")
    parser.add_argument("--steps", type=int, help="default: 3000 / 3000 / 1000 by stage; for `all` give --stage-steps")
    parser.add_argument("--stage-steps", default="3000,3000,1000", help="`all`: steps of the three stages, comma-separated")
    parser.add_argument("--batch-size", type=int, default=StageSettings.batch_size)
    parser.add_argument("--lr", type=float, help="default: the paper's 2e-4, 1e-4, 5e-5 by stage")
    parser.add_argument("--lr-schedule", choices=["constant", "cosine"], default=FinetuneSettings.lr_schedule,
                        help="stage 3: constant (the paper's), or cosine from --lr to 0 over --steps")
    parser.add_argument("--seed", type=int, default=StageSettings.seed)
    parser.add_argument("--checkpoint-every", type=int)
    parser.add_argument("--validate-every", type=int)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--albedo", type=Path, help="a `python -m training.albedo` npz: synthetic albedo from it, p_t "
                        "supervised; required from stage 2 on")
    parser.add_argument("--fitted", type=Path, help="a `python -m training.fitting` output folder: real photos "
                        "(stage 1 adds them, stage 3 needs them)")
    parser.add_argument("--photos", type=Path, default=Path("../shared/data/helen-afw-68pt"),
                        help="the fitted photos' folder (stage 2 cuts background patches from it)")
    parser.add_argument("--real-batch-size", type=int, default=StageSettings.real_batch_size, help="stage 1")
    parser.add_argument("--geometry-losses", choices=list(GEOMETRY_LOSS_ABLATIONS), default="full",
                        help="stage 1: L_gs in full, or one of the paper's Table III ablations")
    parser.add_argument("--regions", type=int, default=16, help="n, the texture stream's soft regions (8, 16, 32)")
    parser.add_argument("--position-pooling", action="store_true",
                        help="the encoder also pools where its last feature maps' activation lies (GeometryConfig."
                        "position_pooling); stage 3 may add it to a network trained without it")
    parser.add_argument("--locate-lr-scale", type=float, default=FinetuneSettings.locate_lr_scale,
                        help="stage 3: the position-pooling layer's rate as a multiple of --lr (it starts from zeros)")
    parser.add_argument("--plain-texture", action="store_true",
                        help="the texture stream as a plain encoder-decoder: no skips, no SSRPM/SRSM (an ablation)")
    parser.add_argument("--features", type=Path, help="stage 2: a stage-1 checkpoint whose encoder gives L_con's features")
    parser.add_argument("--p-t-noise", type=float, default=TextureStageSettings.p_t_noise, help="stage 2")
    parser.add_argument("--geometry-from", type=Path, help="stage 3: the stage-1 checkpoint (or a model-store version folder) to start from")
    parser.add_argument("--texture-from", type=Path, help="stage 3: the stage-2 checkpoint (or a model-store version folder) to start from")
    parser.add_argument("--extra-landmarks", type=Path, help="stage 3: a `python -m training.photos` file; its photos "
                        "make half of every batch")
    parser.add_argument("--profiled", type=int, default=0, help="stages 1 and 3: profiled fitted photos per step "
                        "(45-85° yaw; training.synth.profiling)")
    parser.add_argument("--jaw-marching", action=argparse.BooleanOptionalAction, default=FinetuneSettings.jaw_marching,
                        help="stage 3: L_ali compares the jaw points of the side turned away with the silhouette, as 2D "
                        "annotations mark them (training.jaw_marching); --no-jaw-marching as before 0.4.0")
    parser.add_argument("--roll-degrees", type=float, default=FinetuneSettings.roll_degrees,
                        help="stage 3: the photos turned in the image plane by up to this much (0: not at all)")
    parser.add_argument("--mirror-photos", action=argparse.BooleanOptionalAction, default=FinetuneSettings.mirror_photos,
                        help="stage 3: half the photos mirrored left-right (--no-mirror-photos as before 0.5.0)")
    parser.add_argument("--workers", type=int, default=0, help="processes making each step's inputs ahead "
                        "(0: inline; on a GPU machine, about the CPU cores)")
    parser.add_argument("--minutes", type=float, help="stop a stage after this much wall time, checkpointing first")
    parser.add_argument("--stage-minutes", help="`all`: the three stages' --minutes, comma-separated")
    parser.add_argument("--extra-photos", type=Path, default=Path("../shared/data/utkface-aligned-200"),
                        help="stage 3: the folder of --extra-landmarks' photos")
    args = parser.parse_args(argv)
    cfg = PRESETS[args.config](args.regions)
    if args.plain_texture:
        cfg = replace(cfg, texture=replace(cfg.texture, plain=True))
    if args.position_pooling:
        cfg = replace(cfg, geometry=replace(cfg.geometry, position_pooling=True))

    def common(stage_cls, steps, minutes):
        given = {"checkpoint_every": args.checkpoint_every, "validate_every": args.validate_every, "lr": args.lr}
        return dict(steps=steps or stage_cls.steps, batch_size=args.batch_size, seed=args.seed, workers=args.workers,
                    minutes=minutes, **{k: v for k, v in given.items() if v is not None})

    def run(stage: str, out: Path, steps: int | None, features=None, geometry_from=None, texture_from=None,
            minutes: float | None = args.minutes) -> Path:
        if stage == "geometry":
            settings = StageSettings(real_batch_size=args.real_batch_size, profiled_batch_size=args.profiled,
                                     **common(StageSettings, steps, minutes))
            return train_geometry(cfg, out, settings, args.device, args.fitted, args.photos, args.albedo,
                                  GEOMETRY_LOSS_ABLATIONS[args.geometry_losses])
        if args.albedo is None:
            parser.error(f"stage {stage} needs --albedo (the albedo model)")
        if stage == "texture":
            if features is None:
                parser.error("stage 2 needs --features (a stage-1 checkpoint)")
            settings = TextureStageSettings(p_t_noise=args.p_t_noise, **common(TextureStageSettings, steps, minutes))
            return train_texture(cfg, out, settings, args.albedo, features, args.device, args.photos)
        if None in (geometry_from, texture_from, args.fitted):
            parser.error("stage 3 needs --geometry-from, --texture-from and --fitted")
        settings = FinetuneSettings(profiled_batch_size=args.profiled, jaw_marching=args.jaw_marching,
                                    roll_degrees=args.roll_degrees, mirror_photos=args.mirror_photos,
                                    lr_schedule=args.lr_schedule, locate_lr_scale=args.locate_lr_scale,
                                    **common(FinetuneSettings, steps, minutes))
        extra = (args.extra_landmarks, args.extra_photos) if args.extra_landmarks else None
        return train_finetune(cfg, out, settings, geometry_from, texture_from, args.fitted, args.photos, args.albedo,
                              args.device, extra)

    if args.stage == "all":
        steps = [int(n) for n in args.stage_steps.split(",")]
        minutes = [float(m) for m in args.stage_minutes.split(",")] if args.stage_minutes else [args.minutes] * 3
        geometry = run("geometry", args.out / "geometry", steps[0], minutes=minutes[0])
        texture = run("texture", args.out / "texture", steps[1], features=geometry, minutes=minutes[1])
        path = run("finetune", args.out / "finetune", steps[2], geometry_from=geometry, texture_from=texture,
                   minutes=minutes[2])
    else:
        path = run(args.stage, args.out, args.steps, args.features, args.geometry_from, args.texture_from)
    print(f"checkpoint: {path}")


if __name__ == "__main__":
    main()
