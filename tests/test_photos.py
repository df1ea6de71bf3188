"""Landmarked photos (stage 3's extra real photos): dlib landmarks and the crops around them."""

from pathlib import Path

import numpy as np
import pytest

from training.photos import LandmarkedPhotos, crop_around_landmarks, detect_landmarks
from training.photos.__main__ import main as photos_main

UTKFACE = Path(__file__).resolve().parents[2] / "shared" / "data" / "utkface-aligned-200"


def test_crop_maps_landmarks_with_the_photo():
    """A bright dot at a landmark lands on that landmark's crop position, jitter or not."""
    photo = np.zeros((300, 400, 3), np.uint8)
    landmarks = np.random.default_rng(0).uniform([120, 90], [260, 220], (68, 2))
    x, y = landmarks[30].astype(int)
    photo[y - 2:y + 3, x - 2:x + 3] = 255
    for rng in (None, np.random.default_rng(1)):
        crop, (x0, y0, side), in_crop = crop_around_landmarks(photo, landmarks + 0.5, 64, 1.6, rng)
        assert crop.shape == (3, 64, 64) and side > 0
        peak = np.unravel_index(crop[0].argmax(), crop[0].shape)
        assert np.abs(np.array(peak[::-1]) + 0.5 - in_crop[30]).max() < 1.5


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
