"""Stage 1 training smoke test: two steps, a checkpoint, and a resume that continues from it."""

import csv

import torch

from training.train import StageSettings, train_geometry
from training.models import tiny


def test_two_steps_checkpoint_and_resume(tmp_path, kit):
    cfg = tiny()
    settings = StageSettings(steps=2, batch_size=2, checkpoint_every=1, validate_every=2, validation_batches=1, log_every=1)
    ckpt = train_geometry(cfg, tmp_path, settings)
    state = torch.load(ckpt, weights_only=False)
    assert state["step"] == 2 and state["config"] == cfg.as_dict() and "optimizer" in state
    train_geometry(cfg, tmp_path, StageSettings(**{**vars(settings), "steps": 3}))
    assert torch.load(ckpt, weights_only=False)["step"] == 3
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(float(r["total"]) > 0 for r in rows) and rows[1]["val_landmark_nme"] != ""
