"""``python -m training.export``: checkpoints -> ONNX -> ``model_store/<name>/<version>/``.

    python -m training.export --geometry runs/geometry-cpu-small/checkpoint.pt \\
        --texture runs/texture-cpu-small/checkpoint.pt --name facerecon-cpu-small --version 0.2.0

Without ``--texture`` the texture stream is exported untrained only when ``--untrained-texture``
says so, and the manifest's evaluation records it: such a store is for pipeline work, not release.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .checkpoints import export_checkpoints
from .store import REPO_ROOT


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.export")
    parser.add_argument("--geometry", type=Path, required=True, help="stage 1 (or 3) checkpoint")
    parser.add_argument("--texture", type=Path, help="stage 2 (or 3) checkpoint")
    parser.add_argument("--untrained-texture", action="store_true", help="export a seeded, untrained texture stream")
    parser.add_argument("--albedo", type=Path, help="albedo model (python -m training.albedo) for an untrained texture stream")
    parser.add_argument("--root", type=Path, default=REPO_ROOT / "model_store")
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--half-weights", action="store_true",
                        help="store the graphs' weights in float16, computed in float32 (half the size; training.export.half)")
    args = parser.parse_args(argv)
    if args.texture is None and not args.untrained_texture:
        parser.error("give --texture, or --untrained-texture to export the texture stream untrained")

    report = export_checkpoints(args.geometry, args.texture, args.albedo, args.root, args.name, args.version,
                                args.overwrite, args.half_weights)
    print(f"wrote {report.folder}; ONNX parity max |diff|: geometry {report.geometry_parity:.2e}, texture {report.texture_parity:.2e}")


if __name__ == "__main__":
    main()
