"""training.bundle: a photo made smaller still gives the same training crop; weights survive the round trip."""

import numpy as np
import pytest
import torch

import training.bundle as bundle
from test_export import folded_store  # noqa: F401  (a tiny store with trained-looking BatchNorm, as from_store reads back)
from training.photos import crop_around_landmarks


def _photo_and_landmarks(seed: int = 0):
    """A smooth 300 x 400 photo and 68 points spread over a 120-px box in it."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:300, 0:400]
    image = np.stack([127 + 100 * np.sin(rows / 17.0 + k) * np.cos(cols / 23.0 - k) for k in range(3)], -1)
    marks = np.array([210.0, 140.0]) + rng.uniform(-60, 60, (68, 2))
    return image.astype(np.uint8), marks


def test_a_packed_photo_gives_the_training_crop_of_the_original():
    image, marks = _photo_and_landmarks()
    packed, packed_marks = bundle.pack_photo(image, marks, box=60.0)
    side = (marks.max(0) - marks.min(0)).max()
    assert packed.shape[0] < image.shape[0] and packed.shape[1] < image.shape[1]
    assert (packed_marks.max(0) - packed_marks.min(0)).max() == pytest.approx(60.0, abs=0.5)
    assert packed.shape[0] <= round(bundle.CONTEXT * 60) + 1
    want, _, want_marks = crop_around_landmarks(image, marks, 48, 1.6, None)
    got, _, got_marks = crop_around_landmarks(packed, packed_marks, 48, 1.6, None)
    np.testing.assert_allclose(got_marks, want_marks, atol=0.2)  # x and y scale by w2 / w and h2 / h, rounded apart
    assert np.abs(got - want).mean() < 0.03
    assert side > 60  # the photo really was scaled down


def test_a_photo_already_small_enough_is_only_cut(tmp_path):
    image, marks = _photo_and_landmarks(1)
    packed, packed_marks = bundle.pack_photo(image, marks, box=500.0)
    lo, hi = marks.min(0), marks.max(0)
    x0 = max(0, int((lo[0] + hi[0]) / 2 - bundle.CONTEXT / 2 * (hi - lo).max()))
    y0 = max(0, int((lo[1] + hi[1]) / 2 - bundle.CONTEXT / 2 * (hi - lo).max()))
    np.testing.assert_array_equal(packed, image[y0:y0 + packed.shape[0], x0:x0 + packed.shape[1]])
    np.testing.assert_allclose(packed_marks, marks - [x0, y0])


def test_weights_go_out_in_half_precision_and_come_home_with_the_exact_albedo(folded_store, tmp_path, monkeypatch):  # noqa: F811
    from training.export.from_store import checkpoint_from_store

    trained_store = folded_store[3]
    store = checkpoint_from_store(trained_store)
    out = tmp_path / "bundle"
    (out / "fitted-photos").mkdir(parents=True)
    (out / "fitted-photos" / "a.pts").write_text("points")
    bundle.pack_weights(trained_store, out / "start.pt.xz")
    bundle.tar_folders(out / "photos.tar", out, ["fitted-photos"])
    assert not (out / "fitted-photos").exists()

    bundle.unbundle(out)
    assert (out / "fitted-photos" / "a.pts").read_text() == "points"
    start = torch.load(out / "start.pt", weights_only=False)
    assert start["batchnorm"] == store["batchnorm"] and start["config"] == store["config"]
    halves = [k for k, v in start["geometry_model"].items() if v.dtype == torch.float16]
    assert halves and all(start["geometry_model"][k].numel() > bundle.HALF_PRECISION_ABOVE for k in halves)
    with np.load(out / "albedo.npz") as albedo:
        for key in ("mean", "basis", "std"):
            np.testing.assert_allclose(albedo[key], store["texture_model"][f"albedo.{key}"].numpy(), rtol=1e-3, atol=1e-3)

    start["optimizer"] = {"state": {}}  # a training checkpoint's, which stays there
    torch.save(start, out / "best.pt")
    monkeypatch.setattr(bundle, "PART_BYTES", 200_000)
    parts = bundle.split_weights(out / "best.pt", tmp_path / "parts")
    assert len(parts) > 2 and all(p.stat().st_size <= 200_000 for p in parts)
    joined = bundle.join_weights(tmp_path / "parts", trained_store, tmp_path / "joined.pt")
    assert "optimizer" not in joined
    for key, value in store["geometry_model"].items():
        torch.testing.assert_close(joined["geometry_model"][key].to(value.dtype), value, rtol=2e-3, atol=2e-3)
    for key in bundle.ALBEDO_BUFFERS:
        assert torch.equal(joined["texture_model"][key], store["texture_model"][key])
