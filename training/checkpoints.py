"""Checkpoints as every stage writes them: model(s), optimiser(s), config, stage and step in one file."""

from __future__ import annotations

from pathlib import Path

import torch

from training.models.config import NetworkConfig


def save_checkpoint(path: Path, **state) -> None:
    """Write ``state`` to ``path`` through a temporary file, so a kill never leaves half a checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def stream_weights(ckpt: dict, stream: str) -> dict:
    """One stream's weights from any stage's file: stage 1 and 2 files hold ``model``, stage 3 files
    hold both streams as ``geometry_model`` and ``texture_model``. ``stream``: "geometry" or "texture"."""
    key = f"{stream}_model"
    return ckpt[key] if key in ckpt else ckpt["model"]


def load_checkpoint(path: Path, config: NetworkConfig, device: torch.device) -> dict | None:
    """The checkpoint at ``path``, or None when there is none; refuses one trained with another config."""
    if not path.exists():
        return None
    ckpt = torch.load(path, map_location=device, weights_only=False)
    if not config.matches(ckpt["config"]):
        raise ValueError(f"{path} was trained with another config; use a fresh --out")
    return ckpt


class BestCheckpoint:
    """``best.pt`` in a run folder: the checkpoint with the lowest value of one validation figure so
    far, which a resumed run keeps beating rather than restarting from."""

    def __init__(self, folder: Path, metric: str):
        self.path, self.metric = folder / "best.pt", metric
        self.value = torch.load(self.path, weights_only=False)[metric] if self.path.exists() else float("inf")

    def offer(self, validation: dict, state: dict) -> None:
        """Save ``state`` (with the figure) when ``validation`` holds a better value of the metric."""
        if self.metric in validation and validation[self.metric] < self.value:
            self.value = validation[self.metric]
            save_checkpoint(self.path, **state, **{self.metric: self.value})
