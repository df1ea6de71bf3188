"""``python -m training.synth``: shards read back as the generator made them; the held-out set on
disk is evaluate's; the sheet is drawn."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.synth import SynthFaceGenerator, SynthSettings
from training.synth.__main__ import main
from training.synth.shards import iter_synth_batches, load_synth_shards, read_index

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "helen-afw-68pt"


def assert_matches_generator(disk, made):
    """Exact for masks, categories and float32 fields; float16 and uint8 rounding for maps and image."""
    for name in ("face_mask", "uv_visible", "category", "p_l", "p_h", "landmarks", "id_coeffs", "exp_weights", "p_t"):
        assert getattr(disk, name).dtype == getattr(made, name).dtype, name
        assert torch.equal(getattr(disk, name), getattr(made, name)), name
    for name in ("a_id", "a_exp", "albedo"):
        torch.testing.assert_close(getattr(disk, name), getattr(made, name), rtol=1e-3, atol=1e-4)
    assert (disk.image - made.image).abs().max() <= 0.5 / 255 + 1e-6


def test_write_reads_back_as_generated(kit, uv_models, tmp_path):
    out = tmp_path / "synth"
    main(["write", "--out", str(out), "--count", "6", "--image-size", "32", "--uv-size", "64", "--shard-size", "4",
          "--seed", "3", "--threads", "1"])
    index = read_index(out)
    assert [s["count"] for s in index["shards"]] == [4, 2] and index["count"] == 6 and index["seed"] == 3
    assert sum(index["counts"]["category"].values()) == 6 and index["created"]
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "shard-00000.npz", "shard-00001.npz"]
    with np.load(out / "shard-00000.npz") as d:
        assert d["image"].dtype == np.uint8 and d["a_id"].dtype == np.float16 and d["face_mask"].dtype == bool

    made = SynthFaceGenerator(uv_models[64], SynthSettings(image_size=32)).batch(3, 0, 6)
    assert_matches_generator(load_synth_shards(out), made)

    # Another shard size writes the same samples.
    main(["write", "--out", str(tmp_path / "other"), "--count", "6", "--image-size", "32", "--uv-size", "64",
          "--shard-size", "5", "--seed", "3", "--threads", "1"])
    assert torch.equal(load_synth_shards(tmp_path / "other").a_id, load_synth_shards(out).a_id)

    # Streaming: batches straddle the shards; shuffled, every sample comes exactly once.
    plain = list(iter_synth_batches(out, 4))
    assert [len(b.category) for b in plain] == [4, 2]
    assert torch.equal(torch.cat([b.id_coeffs for b in plain]), made.id_coeffs)
    shuffled = list(iter_synth_batches(out, 3, shuffle=True, seed=1))
    assert [len(b.category) for b in shuffled] == [3, 3]
    seen = torch.cat([b.id_coeffs[:, 0] for b in shuffled])
    assert torch.equal(seen.sort().values, made.id_coeffs[:, 0].sort().values)


def test_held_out_is_evaluates_set(kit, uv_models, tmp_path):
    from training.evaluate.synthetic import HELD_OUT_SEED, held_out_design

    out = tmp_path / "held-out"
    main(["held-out", "--out", str(out), "--count", "9", "--image-size", "32", "--uv-size", "64", "--threads", "1"])
    index = json.loads((out / "index.json").read_text())
    assert index["kind"] == "held-out" and index["seed"] == HELD_OUT_SEED and index["count"] == 9
    disk = load_synth_shards(out)
    cats, yaws = held_out_design(9)
    assert np.array_equal(disk.category.numpy(), cats)
    np.testing.assert_allclose(np.rad2deg(disk.p_h[:, 0].numpy()), yaws, atol=1e-4)
    # The very faces evaluate_expressions scores (it calls the generator this way).
    made = SynthFaceGenerator(uv_models[64], SynthSettings(image_size=32)).batch(HELD_OUT_SEED, 0, 9, categories=cats,
                                                                                 yaw_degrees=yaws)
    assert_matches_generator(disk, made)


def test_sheet_is_drawn(kit, tmp_path):
    out = tmp_path / "sheet.png"
    main(["sheet", "--out", str(out), "--count", "8", "--image-size", "32", "--uv-size", "64", "--threads", "1"])
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape[0] > 200 and image.shape[1] > 600
    assert image.std() > 20 and (image < 250).mean() > 0.2  # drawn, not a white page


def test_write_with_photo_backgrounds_and_occluders(kit, uv_models, tmp_path):
    """The clutter options reach the generator: the shards hold what it makes with the same patches."""
    from training.synth.clutter import photo_patches

    if not PHOTOS.is_dir():
        pytest.skip(f"photos not found at {PHOTOS}")
    out = tmp_path / "synth"
    main(["write", "--out", str(out), "--count", "4", "--image-size", "32", "--uv-size", "64", "--threads", "1",
          "--photos", str(PHOTOS), "--background-patches", "4", "--occluder-fraction", "1.0",
          "--photo-background-fraction", "1.0"])
    index = read_index(out)
    assert index["backgrounds"]["patches"] == 4 and index["settings"]["occluder_fraction"] == 1.0
    settings = SynthSettings(image_size=32, occluder_fraction=1.0, photo_background_fraction=1.0)
    made = SynthFaceGenerator(uv_models[64], settings, backgrounds=photo_patches(PHOTOS, 4, 32, seed=0)).batch(0, 0, 4)
    assert_matches_generator(load_synth_shards(out), made)
