"""Landmarked photos (stage 3's extra real photos): dlib landmarks and the crops around them."""

from pathlib import Path

import numpy as np
import pytest

from service.engine.mirror import MIRROR_68
from training.photos import CropJitter, LandmarkedPhotos, crop_around_landmarks, detect_landmarks
from training.photos.__main__ import main as photos_main

UTKFACE = Path(__file__).resolve().parents[2] / "shared" / "data" / "utkface-aligned-200"
# The iBUG 300-W scheme's left-right pairs as the service writes them out: landmark i of a face is
# IBUG_MIRROR[i] of its mirror image.
IBUG_MIRROR = tuple(int(i) for i in MIRROR_68)


def dot_centre(channel: np.ndarray) -> np.ndarray:
    """The brightness-weighted centre (x, y) of a crop channel, pixel centres at +0.5."""
    rows, cols = np.indices(channel.shape)
    return np.array([(cols * channel).sum(), (rows * channel).sum()]) / channel.sum() + 0.5


@pytest.mark.parametrize("jitter", [CropJitter(), CropJitter(roll_degrees=30.0, mirror=IBUG_MIRROR)],
                         ids=["scale-shift", "turned-mirrored"])
def test_crop_maps_landmarks_with_the_photo(jitter):
    """A bright dot at a landmark lands on that landmark's crop position (its mirror pair's, when the
    crop is a mirror image), to a fraction of a pixel, jitter or not."""
    landmarks = np.random.default_rng(0).uniform([120, 90], [260, 220], (68, 2))
    mirrored = 0
    for seed in range(6):
        for index in (0, 30, 45):
            photo = np.zeros((300, 400, 3), np.uint8)
            x, y = landmarks[index].astype(int)
            photo[y - 2:y + 3, x - 2:x + 3] = 255
            rng = np.random.default_rng(seed) if seed else None
            crop, (x0, y0, side), in_crop = crop_around_landmarks(photo, landmarks.astype(int) + 0.5, 64, 1.6, rng, jitter)
            assert crop.shape == (3, 64, 64) and side > 0
            found = [i for i in range(68) if np.abs(dot_centre(crop[0]) - in_crop[i]).max() < 0.25]
            assert found in ([index], [IBUG_MIRROR[index]])
            mirrored += found != [index]
    assert (mirrored > 0) == (jitter.mirror is not None) and (mirrored < 15 if mirrored else True)


def test_landmark_mirror_pairs_the_ibug_scheme(uv_models):
    assert uv_models[128].topology.landmark_mirror() == IBUG_MIRROR


def test_cli_finds_utkface_landmarks_and_crops_them(tmp_path):
    if not UTKFACE.is_dir():
        pytest.skip(f"UTKFace photos not found at {UTKFACE}")
    out = tmp_path / "utk.npz"
    photos_main(["--photos", str(UTKFACE), "--out", str(out), "--limit", "6"])
    names, landmarks = detect_landmarks(UTKFACE, 6)
    with np.load(out) as d:
        assert list(d["names"]) == names and np.array_equal(d["landmarks"], landmarks)
    assert len(names) >= 4 and landmarks.shape == (len(names), 68, 2)
    assert (landmarks[:, 36, 0] < landmarks[:, 45, 0]).all()  # the image-left eye corner first (iBUG order)
    assert ((landmarks > -20) & (landmarks < 220)).all()  # aligned 200-px crops: the jaw may touch the edge
    batch = LandmarkedPhotos(out, UTKFACE, 32).batch([0, 1], np.random.default_rng(0))
    assert batch.image.shape == (2, 3, 32, 32) and batch.landmarks.shape == (2, 68, 2)
    assert (batch.landmarks > 0).all() and (batch.landmarks < 32).all()
