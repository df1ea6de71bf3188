"""Checkpoints (stage 1, 2 or 3 files) -> a model store, for ``python -m training.export`` and the ablations."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from training.checkpoints import stream_weights
from training.models import AlbedoModel, GeometryStream, NetworkConfig, TextureStream

from .onnx import ExportReport, export_model_store


def export_checkpoints(geometry_path: Path, texture_path: Path | None, albedo_path: Path | None, root: Path, name: str,
                       version: str, overwrite: bool = False, half_weights: bool = False) -> ExportReport:
    """Load a geometry and a texture checkpoint (stage 3 files hold both) and write the model store.
    Without ``texture_path`` the texture stream is seeded and untrained, on ``albedo_path``'s albedo model."""
    geo_ckpt = torch.load(geometry_path, map_location="cpu", weights_only=False)
    cfg = NetworkConfig.from_dict(geo_ckpt["config"])
    geometry = GeometryStream(cfg.geometry)
    geometry.load_state_dict(stream_weights(geo_ckpt, "geometry"))
    torch.manual_seed(0)
    tex_ckpt = torch.load(texture_path, map_location="cpu", weights_only=False) if texture_path else None
    if tex_ckpt is not None:  # the texture run's own config: its ablations (n, plain) differ from the geometry run's
        cfg = replace(cfg, texture=NetworkConfig.from_dict(tex_ckpt["config"]).texture)
    if albedo_path is not None:
        albedo = AlbedoModel.load(albedo_path, cfg.texture.albedo_dim)
    else:
        albedo = AlbedoModel.placeholder(cfg.texture.albedo_dim, cfg.texture.uv_size)
    texture = TextureStream(cfg.texture, albedo)
    evaluation = {"trained": {"geometry": trained(geo_ckpt)}}
    if tex_ckpt is not None:
        texture.load_state_dict(stream_weights(tex_ckpt, "texture"))
        evaluation["trained"]["texture"] = trained(tex_ckpt)
    else:
        source = f"albedo model {albedo_path.name}" if albedo_path else "placeholder albedo model"
        evaluation["trained"]["texture"] = f"untrained (seeded), {source}"
    return export_model_store(geometry, texture, cfg, root, name, version, evaluation=evaluation, overwrite=overwrite,
                              half_weights=half_weights)


def trained(ckpt: dict) -> str:
    """How a checkpoint was trained, for the manifest: its stage, steps and the model store it started from."""
    origin = f", started from {ckpt['started_from']}" if ckpt.get("started_from") else ""
    return f"{ckpt['stage']} stage, {ckpt['step']} steps{origin}"
