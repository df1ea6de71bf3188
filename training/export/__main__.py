"""``python -m training.export``: checkpoints -> ONNX -> ``model_store/<name>/<version>/``.

    python -m training.export --geometry runs/geometry-cpu-small/checkpoint.pt \\
        --texture runs/texture-cpu-small/checkpoint.pt --name facerecon-cpu-small --version 0.1.0

Without ``--texture`` the texture stream is exported untrained only when ``--untrained-texture``
says so, and the manifest's evaluation records it: such a store is for pipeline work, not release.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from training.models import AlbedoModel, GeometryStream, NetworkConfig, TextureStream
from training.models.config import GeometryConfig, TextureConfig

from .onnx import export_model_store
from .store import REPO_ROOT


def config_from_dict(d: dict) -> NetworkConfig:
    def typed(cls, values):
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    return NetworkConfig(name=d["name"], geometry=typed(GeometryConfig, d["geometry"]), texture=typed(TextureConfig, d["texture"]))


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
    args = parser.parse_args(argv)
    if args.texture is None and not args.untrained_texture:
        parser.error("give --texture, or --untrained-texture to export the texture stream untrained")

    geo_ckpt = torch.load(args.geometry, map_location="cpu", weights_only=False)
    cfg = config_from_dict(geo_ckpt["config"])
    geometry = GeometryStream(cfg.geometry)
    geometry.load_state_dict(geo_ckpt.get("geometry_model", geo_ckpt.get("model")))  # stage 3 files hold both streams
    torch.manual_seed(0)
    if args.albedo is not None:
        albedo = AlbedoModel.load(args.albedo, cfg.texture.albedo_dim)
    else:
        albedo = AlbedoModel.placeholder(cfg.texture.albedo_dim, cfg.texture.uv_size)
    texture = TextureStream(cfg.texture, albedo)
    evaluation = {"trained": {"geometry": f"{geo_ckpt['stage']} stage, {geo_ckpt['step']} steps"}}
    if args.texture is not None:
        tex_ckpt = torch.load(args.texture, map_location="cpu", weights_only=False)
        texture.load_state_dict(tex_ckpt.get("texture_model", tex_ckpt.get("model")))
        evaluation["trained"]["texture"] = f"{tex_ckpt['stage']} stage, {tex_ckpt['step']} steps"
    else:
        source = f"albedo model {args.albedo.name}" if args.albedo else "placeholder albedo model"
        evaluation["trained"]["texture"] = f"untrained (seeded), {source}"
    report = export_model_store(geometry, texture, cfg, args.root, args.name, args.version,
                                evaluation=evaluation, overwrite=args.overwrite)
    print(f"wrote {report.folder}; ONNX parity max |diff|: geometry {report.geometry_parity:.2e}, texture {report.texture_parity:.2e}")


if __name__ == "__main__":
    main()
