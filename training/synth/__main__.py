"""``python -m training.synth write | held-out | sheet``: synthetic faces written to disk.

    write     --out data/synth --count N [--seed S] [--image-size 128] [--uv-size 128] [--shard-size 256]
              [--albedo data/albedo/albedo-k80.npz] [--photos ../shared/data/helen-afw-68pt --occluder-fraction 0.25]
    held-out  --out data/synth-held-out [--image-size 128] [--uv-size 128] [--albedo ...]
              the fixed held-out set of ``training.evaluate.synthetic`` (its seed and balanced design)
    sheet     --out docs/synth-sheet.png [--albedo ...] [--photos ...] [--profiled data/fitted]
              32 samples with their ground truth drawn over them (with --profiled: fitted photos turned to
              large yaw, ``profiling.py``)

Shards and ``index.json`` are described in ``shards.py``; ``shards.iter_synth_batches`` streams them back.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

import torch

from training.facemodel import UVFaceModel

from .clutter import photo_patches
from .generator import SynthFaceGenerator, SynthSettings
from .shards import GeneratorCall, random_plan, write_shards
from .sheet import save_sheet

GENERATOR_BATCH = 32  # faces per generator call; part of what fixes the samples (see random_plan)


def build_generator(args, settings: SynthSettings) -> tuple[SynthFaceGenerator, dict]:
    """The generator for ``args`` and its description for ``index.json``."""
    model = UVFaceModel.build(args.uv_size)
    photos = getattr(args, "photos", None)
    patches = photo_patches(photos, args.background_patches, args.image_size, args.seed) if photos else None
    if photos is not None and not len(patches):
        sys.exit(f"no photos with 68-point .pts found in {photos}")
    gen = SynthFaceGenerator(model, settings, args.albedo, args.albedo_components, backgrounds=patches)
    meta = {
        "image_size": args.image_size, "uv_size": args.uv_size, "settings": dataclasses.asdict(settings),
        "albedo": str(args.albedo) if args.albedo else None,
        "albedo_components": len(gen.albedo_model[2]) if gen.albedo_model else 0,
        "backgrounds": {"photos": str(photos), "patches": len(patches), "seed": args.seed} if photos else None,
        "frame": model.frame.as_dict(),
    }
    return gen, meta


def command_line(argv: list[str] | None) -> str:
    return "python -m training.synth " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m training.synth", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, clutter: bool = True) -> None:
        p.add_argument("--out", required=True, type=Path)
        p.add_argument("--image-size", type=int, default=128)
        p.add_argument("--uv-size", type=int, default=128, help="UV map size S (the albedo model's, when given)")
        p.add_argument("--albedo", type=Path, help="a `python -m training.albedo` npz: albedo drawn from it, p_t kept")
        p.add_argument("--albedo-components", type=int, help="use the first K components (all by default)")
        p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
        if clutter:
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--photos", type=Path, help="folder of photos with 68-point .pts: photo-patch backgrounds")
            p.add_argument("--background-patches", type=int, default=1000, help="patches cut from --photos")
            p.add_argument("--photo-background-fraction", type=float, default=SynthSettings.photo_background_fraction)

    w = sub.add_parser("write", help="N random samples (deterministic by --seed)")
    common(w)
    w.add_argument("--count", type=int, required=True)
    w.add_argument("--occluder-fraction", type=float, default=0.0, help="share of samples with a hand, hair or glasses")
    w.add_argument("--shard-size", type=int, default=256)

    h = sub.add_parser("held-out", help="the fixed held-out test set of training.evaluate.synthetic")
    common(h, clutter=False)
    h.add_argument("--count", type=int, default=None,
                   help="set size (default SET_SIZE); another size is held_out_design(count), "
                        "what evaluate_*(size=count) scores")
    h.add_argument("--shard-size", type=int, default=256)

    s = sub.add_parser("sheet", help="a PNG of 32 samples with their ground truth")
    common(s)
    # Stage 2 trains with occluders on a quarter of the faces; the sheet shows them by default.
    s.add_argument("--occluder-fraction", type=float, default=0.25)
    s.add_argument("--count", type=int, default=32)
    s.add_argument("--profiled", type=Path, help="a `python -m training.fitting` folder: show its photos turned to "
                   "45-85° of yaw with their own skin (face profiling, stage 3's --profiled) instead")

    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.command == "held-out":
        # Imported here: training.evaluate pulls in the metrics, which write and sheet do not need.
        from training.evaluate.synthetic import HELD_OUT_SEED, SET_SIZE, held_out_design

        count = args.count or SET_SIZE
        # Plain faces, as evaluate_expressions / evaluate_albedo generate them (no clutter).
        gen, meta = build_generator(args, SynthSettings(image_size=args.image_size))
        cats, yaws = held_out_design(count)
        # evaluate_* call gen.batch(HELD_OUT_SEED, start, 32, ...) with the first sample as the index.
        plan = [GeneratorCall(start, min(GENERATOR_BATCH, count - start), cats[start:start + GENERATOR_BATCH],
                              yaws[start:start + GENERATOR_BATCH]) for start in range(0, count, GENERATOR_BATCH)]
        meta |= {"kind": "held-out", "design": f"training.evaluate.synthetic.held_out_design({count})",
                 "generator_batch": GENERATOR_BATCH, "batch_index": "first sample of the batch",
                 "command": command_line(argv)}
        index = write_shards(gen, args.out, HELD_OUT_SEED, plan, args.shard_size, meta, desc="held-out")
    else:
        settings = SynthSettings(image_size=args.image_size, occluder_fraction=args.occluder_fraction,
                                 photo_background_fraction=args.photo_background_fraction)
        gen, meta = build_generator(args, settings)
        if args.command == "sheet":
            # With the default --count, the first batch `write` writes with the same options.
            if args.profiled:
                from .profiling import ProfiledFaces

                batch = ProfiledFaces(args.profiled, gen).synth_batch(args.seed, 0, args.count)
                kind = f"Profiled fitted photos from {args.profiled}"
            else:
                batch = gen.batch(args.seed, 0, args.count)
                kind = "Synthetic faces" + (", albedo model" if args.albedo else "")
            save_sheet(args.out, batch, gen.model.layout.mask,
                       title=f"{kind} (seed {args.seed}, {args.image_size} px, UV {args.uv_size}"
                             f"{', photo backgrounds' if args.photos else ''}"
                             f", occluders {args.occluder_fraction:g}): red/yellow = 68 landmarks, cyan = face mask")
            print(f"{args.count} samples -> {args.out}")
            return
        meta |= {"kind": "random", "generator_batch": GENERATOR_BATCH, "batch_index": "batch number",
                 "command": command_line(argv)}
        index = write_shards(gen, args.out, args.seed, random_plan(args.count, GENERATOR_BATCH), args.shard_size, meta)
    print(f"{index['count']} samples in {len(index['shards'])} shards -> {args.out}")
    print("categories: " + ", ".join(f"{k} {v}" for k, v in index["counts"]["category"].items()))
    print("|yaw| bins: " + ", ".join(f"{k} {v}" for k, v in index["counts"]["yaw_bin"].items()))


if __name__ == "__main__":
    main()
