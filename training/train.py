"""The training CLI (paper Sec. IV-B): stage 1, the geometry stream (``training.stages.geometry``);
stage 2, the texture stream (``training.stages.texture``); stage 3, the self-supervised fine-tuning
(``training.stages.finetune``); or all three in a row.

    python -m training.train geometry --config cpu-small --steps 3000 --out runs/geometry
    python -m training.train texture --config cpu-small --albedo ALBEDO.npz --features runs/geometry/checkpoint.pt --out runs/texture
    python -m training.train finetune --config cpu-small --albedo ALBEDO.npz --fitted data/fitted \
        --geometry-from runs/geometry/checkpoint.pt --texture-from runs/texture/checkpoint.pt --out runs/finetune
    python -m training.train landmarks --config cpu-small --geometry-from model_store/facerecon-cpu-small/0.8.0 \
        --albedo ALBEDO.npz --fitted data/fitted --out runs/landmarks   # the shape from landmarks (issue 21)
    python -m training.train all --config cpu-small --albedo ALBEDO.npz --fitted data/fitted --out runs/cpu-small

Every stage logs losses to ``log.csv``, writes ``checkpoint.pt`` every ``--checkpoint-every`` steps
and at the end, and resumes from it when restarted.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from training.models import PRESETS
from training.stages.common import GEOMETRY_LOSS_ABLATIONS, GeometryLossWeights
from training.stages.finetune import FinetuneLossWeights, FinetuneSettings, train_finetune
from training.stages.geometry import StageSettings, train_geometry
from training.stages.landmarks import LandmarkStageSettings, train_landmarks
from training.stages.texture import TextureStageSettings, train_texture

STAGES = ("geometry", "texture", "finetune")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.train", description=(
        "Stage 1 `geometry`, stage 2 `texture`, stage 3 `finetune`, or `all` three in a row into OUT/<stage>."))
    parser.add_argument("stage", choices=[*STAGES, "landmarks", "all"])
    parser.add_argument("--config", choices=sorted(PRESETS), default="cpu-small")
    parser.add_argument("--out", type=Path, required=True, help="the run folder (for `all`: the parent of one per stage)")
    parser.add_argument("--steps", type=int, help="default: 3000 / 3000 / 1000 by stage; for `all` give --stage-steps")
    parser.add_argument("--stage-steps", default="3000,3000,1000", help="`all`: steps of the three stages, comma-separated")
    parser.add_argument("--batch-size", type=int, help="default: the stage's (8 for stage 1)")
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
    parser.add_argument("--real-batch-size", type=int, default=StageSettings.real_batch_size, help="stage 1 and `landmarks`")
    parser.add_argument("--regressor-steps", type=int, default=LandmarkStageSettings.regressor_steps,
                        help="stage `landmarks`: steps of LandmarkToFace alone on drawn landmarks, before the head's --steps")
    parser.add_argument("--frontal-fraction", type=float, default=LandmarkStageSettings.frontal_fraction,
                        help="`landmarks`: the training faces' share near-frontal (|yaw| < 30); the rest spread to 90")
    parser.add_argument("--model-albedo-fraction", type=float, default=LandmarkStageSettings.model_albedo_fraction,
                        help="`landmarks`: the rendered faces' share with the albedo model's skin; the rest procedural")
    parser.add_argument("--appearance-steps", type=int, default=LandmarkStageSettings.appearance_steps,
                        help="stage `landmarks`: steps teaching the appearance head the start's p_t and p_l, after")
    parser.add_argument("--geometry-losses", choices=list(GEOMETRY_LOSS_ABLATIONS), default="full",
                        help="stage 1: L_gs in full, or one of the paper's Table III ablations")
    parser.add_argument("--asm-weight", type=float, default=GeometryLossWeights.asm,
                        help="L_asm's weight in L_gs (stage 1, and stage 3's synthetic anchor); the paper's 1")
    parser.add_argument("--coefficient-weights", type=float, nargs=2, metavar=("EXPRESSION", "IDENTITY"),
                        default=(GeometryLossWeights.expression_weights, GeometryLossWeights.identity_coefficients),
                        help="with --linear-basis: the weights of the blendshape-weight and identity-coefficient errors in L_gs")
    parser.add_argument("--probe-faces", type=int, default=StageSettings.probe_faces,
                        help="stage 1 with --linear-basis: solve the coefficient head's last layer by ridge regression "
                        "on this many synthetic faces before the first step (0: it starts at zero)")
    parser.add_argument("--anchor-weight", type=float, default=FinetuneLossWeights.anchor,
                        help="stage 3: the weight of stage 1's L_gs on synthetic faces, which keeps the 3D shape")
    parser.add_argument("--albedo-weight", type=float, default=FinetuneLossWeights.albedo,
                        help="stage 3: the weight of the texture stream's albedo error on the synthetic anchor faces (issue 22)")
    parser.add_argument("--exposure-weight", type=float, default=FinetuneLossWeights.exposure,
                        help="stage 3: the weight of the change of each photo's albedo at another exposure")
    parser.add_argument("--lighting-weight", type=float, default=FinetuneLossWeights.lighting,
                        help="stage 3: the weight of the change of each anchor face's albedo under another SH lighting")
    parser.add_argument("--appearance-only", action="store_true",
                        help="stage 3: train only the texture stream and a p_t/p_l head grown beside the PSN "
                        "(GeometryConfig.appearance_head); shape, pose and landmarks stay the start's")
    parser.add_argument("--fit-albedo", action="store_true",
                        help="stage 3: the texture stream's p_t fitted to each photo's seen skin as the service fits it "
                        "(service.engine.albedo_fit), not the geometry stream's; with --appearance-only only the texture "
                        "stream trains")
    parser.add_argument("--reset-albedo-correction", action="store_true",
                        help="stage 3: zero the texture stream's output layer, so it starts from the linear albedo at p_t")
    parser.add_argument("--linear-basis", action="store_true",
                        help="A_id and A_exp from ICT's linear model at predicted coefficients plus the decoders' "
                        "residual (GeometryConfig.linear_basis); a run may add it to a network trained without it")
    parser.add_argument("--regions", type=int, default=16, help="n, the texture stream's soft regions (8, 16, 32)")
    parser.add_argument("--shape-from-landmarks", action="store_true",
                        help="stage 3 from a start the landmark stage grew (GeometryConfig.shape_from_landmarks), "
                        "e.g. with --appearance-only --fit-albedo")
    parser.add_argument("--position-pooling", action="store_true",
                        help="the encoder also pools where its last feature maps' activation lies (GeometryConfig."
                        "position_pooling); stage 3 may add it to a network trained without it")
    parser.add_argument("--locate-lr-scale", type=float, default=FinetuneSettings.locate_lr_scale,
                        help="stage 3: the position-pooling layer's rate as a multiple of --lr (it starts from zeros)")
    parser.add_argument("--plain-texture", action="store_true",
                        help="the texture stream as a plain encoder-decoder: no skips, no SSRPM/SRSM (an ablation)")
    parser.add_argument("--features", type=Path, help="stage 2: a stage-1 checkpoint whose encoder gives L_con's features")
    parser.add_argument("--p-t-noise", type=float, default=TextureStageSettings.p_t_noise, help="stage 2")
    parser.add_argument("--geometry-from", type=Path, help="stage 3: the stage-1 checkpoint (or a model-store version "
                        "folder) to start from; stage 1: a checkpoint or store to start from instead of random weights")
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
    if args.linear_basis:
        cfg = replace(cfg, geometry=replace(cfg.geometry, linear_basis=True))
    if args.appearance_only:
        cfg = replace(cfg, geometry=replace(cfg.geometry, appearance_head=True))
    if args.shape_from_landmarks:
        cfg = replace(cfg, geometry=replace(cfg.geometry, shape_from_landmarks=True))
    geometry_weights = replace(GEOMETRY_LOSS_ABLATIONS[args.geometry_losses], asm=args.asm_weight,
                               expression_weights=args.coefficient_weights[0],
                               identity_coefficients=args.coefficient_weights[1])

    def common(stage_cls, steps, minutes):
        given = {"checkpoint_every": args.checkpoint_every, "validate_every": args.validate_every, "lr": args.lr,
                 "batch_size": args.batch_size}
        return dict(steps=steps or stage_cls.steps, seed=args.seed, workers=args.workers,
                    minutes=minutes, **{k: v for k, v in given.items() if v is not None})

    def run(stage: str, out: Path, steps: int | None, features=None, geometry_from=None, texture_from=None,
            minutes: float | None = args.minutes) -> Path:
        if stage == "geometry":
            settings = StageSettings(real_batch_size=args.real_batch_size, profiled_batch_size=args.profiled,
                                     probe_faces=args.probe_faces,
                                     **common(StageSettings, steps, minutes))
            return train_geometry(cfg, out, settings, args.device, args.fitted, args.photos, args.albedo,
                                  geometry_weights, geometry_from)
        if stage == "landmarks":
            if geometry_from is None:
                parser.error("stage `landmarks` needs --geometry-from (the geometry stream it grows from)")
            settings = LandmarkStageSettings(regressor_steps=args.regressor_steps, appearance_steps=args.appearance_steps,
                                             frontal_fraction=args.frontal_fraction,
                                             model_albedo_fraction=args.model_albedo_fraction,
                                             real_batch_size=args.real_batch_size,
                                             **common(LandmarkStageSettings, steps, minutes))
            grown = replace(cfg, geometry=replace(cfg.geometry, shape_from_landmarks=True, appearance_head=True))
            return train_landmarks(grown, out, settings, geometry_from, args.fitted, args.photos, args.albedo, args.device)
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
                                    appearance_only=args.appearance_only,
                                    reset_albedo_correction=args.reset_albedo_correction, fit_albedo=args.fit_albedo,
                                    **common(FinetuneSettings, steps, minutes))
        extra = (args.extra_landmarks, args.extra_photos) if args.extra_landmarks else None
        return train_finetune(cfg, out, settings, geometry_from, texture_from, args.fitted, args.photos, args.albedo,
                              args.device, extra, FinetuneLossWeights(anchor=args.anchor_weight, albedo=args.albedo_weight,
                                                                      exposure=args.exposure_weight,
                                                                      lighting=args.lighting_weight), geometry_weights)

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
