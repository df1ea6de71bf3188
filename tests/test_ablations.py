"""The ablation tables on tiny runs: each run exported, scored by the evaluation code, tabulated."""

import json

import numpy as np
import pytest
import torch

from service_fixtures import PHOTOS

DATA = PHOTOS.parent / "aflw2000-dev"


def test_ablation_report_scores_geometry_and_texture_runs(tmp_path, kit):
    if not DATA.is_dir():
        pytest.skip(f"AFLW2000-3D dev subset not found at {DATA}")
    pytest.importorskip("dlib")
    from training.evaluate.__main__ import main
    from training.models import AlbedoModel
    from training.train import main as train_main

    albedo = AlbedoModel.placeholder(6, 64)  # the tiny config's K and S
    npz = tmp_path / "albedo.npz"
    np.savez(npz, mean=albedo.mean.numpy(), basis=albedo.basis.numpy(), std=albedo.std.numpy())
    common = ["--config", "tiny", "--batch-size", "2", "--steps", "1", "--validate-every", "1", "--albedo", str(npz)]
    runs = tmp_path / "runs"
    for losses in ("asm", "full"):
        train_main(["geometry", "--out", str(runs / f"geometry-{losses}"), "--geometry-losses", losses, *common])
    features = str(runs / "geometry-full" / "checkpoint.pt")
    train_main(["texture", "--out", str(runs / "texture-plain"), "--plain-texture", "--features", features, *common])
    train_main(["texture", "--out", str(runs / "texture-n4"), "--regions", "4", "--features", features, *common])

    out = tmp_path / "reports"
    main(["ablations", "--geometry-runs", str(runs / "geometry-asm"), str(runs / "geometry-full"),
          "--texture-runs", str(runs / "texture-plain"), str(runs / "texture-n4"), "--base-geometry", features,
          "--albedo", str(npz), "--data", str(DATA), "--photos", str(PHOTOS), "--limit", "2", "--photo-limit", "1",
          "--size", "7", "--out", str(out)])
    doc = json.loads((out / "ablations.json").read_text())
    geometry = {r["run"]: r for r in doc["geometry"]}
    assert geometry["geometry-asm"]["loss_weights"]["region_weighting"] is False
    assert all(sum(r["aflw2000_nme"]["n"].values()) == 2 and r["synthetic_mm"] > 0 for r in geometry.values())
    texture = {r["run"]: r for r in doc["texture"]}
    assert texture["texture-plain"]["plain"] and texture["texture-n4"]["regions"] == 4
    assert texture["texture-n4"]["step"] == 1 and set(texture["texture-n4"]["e_pho"]) == {PHOTOS.name, DATA.name}
    # The linear albedo from the true p_t is the truth up to the generator's detail layer.
    assert doc["linear_albedo"]["albedo_mae"] < 0.05
    assert 0 < texture["texture-plain"]["albedo_mae"] < 1
    text = (out / "ablations.md").read_text()
    assert "| geometry-asm | L_p + L_asm (MSE) | 1 |" in text
    assert "L_p + L_asm with W + L_sym + L_reg" in text and "plain encoder-decoder" in text and "n = 4" in text
