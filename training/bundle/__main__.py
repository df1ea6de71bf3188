"""Stage 3 on a lent GPU machine (``training.bundle``):

    python -m training.bundle pack --model model_store/facerecon-cpu-small/0.7.0 --out bundle
    # there, in a checkout with bundle/ carried into it (OUT: where files come home from):
    sh bundle/run.sh 2400 6 14 -- --profiled 8 --seed 6 --lr-schedule cosine
    # back here, with the best.pt.part* files in DIR:
    python -m training.bundle join DIR --model model_store/facerecon-cpu-small/0.7.0 --out runs/gpu/best.pt
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from training.facemodel import facekit_path

from . import (join_weights, pack_facekit, pack_fitted_photos, pack_landmarked_photos, pack_weights, split_weights,
               tar_folders, unbundle)

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.bundle", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    pack = verbs.add_parser("pack", help="here: a bundle folder from a model-store version folder")
    pack.add_argument("--model", type=Path, required=True, help="the model-store version folder to fine-tune from")
    pack.add_argument("--out", type=Path, required=True)
    pack.add_argument("--photos", type=Path, default=SHARED / "data" / "helen-afw-68pt", help="the fitted photos")
    pack.add_argument("--landmarks", type=Path, default=Path("data/utkface-landmarks.npz"),
                      help="a `python -m training.photos` file: half of each batch")
    pack.add_argument("--extra-photos", type=Path, default=SHARED / "data" / "utkface-aligned-200")
    pack.add_argument("--extra", type=int, default=1500, help="how many of its photos (0: none)")
    pack.add_argument("--box", type=float, default=110.0, help="the fitted photos' landmark box, at most, in pixels")
    pack.add_argument("--quality", type=int, default=80, help="their JPEG quality")
    there = verbs.add_parser("unbundle", help="there: photo folders, start.pt and albedo.npz inside the bundle")
    there.add_argument("bundle", type=Path)
    split = verbs.add_parser("split", help="there: a checkpoint's weights as best.pt.part* files")
    split.add_argument("checkpoint", type=Path)
    split.add_argument("out", type=Path)
    join = verbs.add_parser("join", help="here: the parts as one checkpoint, with the start's exact albedo buffers")
    join.add_argument("parts", type=Path)
    join.add_argument("--model", type=Path, required=True, help="the model-store version folder the run started from")
    join.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    if args.verb == "pack":
        args.out.mkdir(parents=True, exist_ok=True)
        print(f"start.pt.xz: {pack_weights(args.model, args.out / 'start.pt.xz') / 1e6:.1f} MB")
        pack_facekit(facekit_path(), args.out / "facekit.npz")
        print(f"{pack_fitted_photos(args.photos, args.out / 'fitted-photos', args.box, args.quality)} fitted photos")
        folders = ["fitted-photos"]
        if args.extra:
            n = pack_landmarked_photos(args.landmarks, args.extra_photos, args.extra, args.out / "extra-photos",
                                       args.out / "landmarks.npz")
            print(f"{n} landmarked photos")
            folders.append("extra-photos")
        tar_folders(args.out / "photos.tar", args.out, folders)
        shutil.copy(Path(__file__).with_name("run.sh"), args.out / "run.sh")
        total = sum(p.stat().st_size for p in args.out.iterdir())
        print(f"{args.out}: {total / 2**20:.1f} MiB")
    elif args.verb == "unbundle":
        unbundle(args.bundle)
    elif args.verb == "split":
        parts = split_weights(args.checkpoint, args.out)
        print(f"{args.checkpoint} -> {len(parts)} parts in {args.out}")
    else:
        ckpt = join_weights(args.parts, args.model, args.out)
        print(f"{args.out}: step {ckpt['step']}, started from {ckpt.get('started_from')}")


if __name__ == "__main__":
    main()
