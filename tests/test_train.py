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


def test_training_with_fitted_real_photos(tmp_path, kit):
    """Stage 1 mixes fitted real photos in and scores the held-out ones."""
    from pathlib import Path

    import numpy as np
    import pytest

    from training.fitting.__main__ import main as fit_main
    from training.fitting.crops import FittedPhotos, is_validation

    photos = Path(__file__).resolve().parents[2] / "shared" / "data" / "helen-afw-68pt"
    if not photos.is_dir():
        pytest.skip(f"fitting photos not found at {photos}")
    fit_main(["--data", str(photos), "--out", str(tmp_path / "fitted"), "--limit", "24", "--size", "64"])
    train_set = FittedPhotos(tmp_path / "fitted", photos, 32)
    held_out = FittedPhotos(tmp_path / "fitted", photos, 32, split="validation")
    assert len(train_set) + len(held_out) == 24 and not any(is_validation(p.stem) for p in train_set.paths)
    batch = train_set.batch([0, 1], np.random.default_rng(0))
    assert batch.image.shape == (2, 3, 32, 32) and batch.a_id.shape == (2, 3, 64, 64)

    settings = StageSettings(steps=2, batch_size=2, validate_every=2, validation_batches=1, log_every=1, real_batch_size=2)
    train_geometry(tiny(), tmp_path / "run", settings, fitted=tmp_path / "fitted", photos=photos)
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert rows[-1]["val_landmark_nme"] != ""
    assert (rows[-1]["val_real_landmark_nme"] != "") == (len(held_out) > 0)
