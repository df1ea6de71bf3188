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


def test_export_cli_writes_a_store_from_a_checkpoint(tmp_path, kit):
    from service.model_store import load_model_store
    from training.export.__main__ import main as export_main

    ckpt = train_geometry(tiny(), tmp_path / "run", StageSettings(steps=1, batch_size=2, validate_every=10))
    export_main(["--geometry", str(ckpt), "--untrained-texture", "--root", str(tmp_path / "store"),
                 "--name", "tiny", "--version", "0.0.1"])
    store = load_model_store(tmp_path / "store" / "tiny" / "0.0.1")
    assert store.manifest["evaluation"]["trained"]["texture"].startswith("untrained")
    assert store.manifest["config"]["name"] == "tiny"
