"""Landmark calibration: the differentiable read of landmarks against the service's decoder, a known
shift recovered under both constraints, the calibrated store, and the CLI on real AFLW2000-3D images."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from service.engine.asm_decode import sample_bilinear
from service.engine.mirror import MIRROR_68
from service.model_store import load_model_store
from service.engine.topology import MeshTopology
from service_fixtures import tiny_store
from training.landmark_calibration import (Observations, fit_landmarks, landmark_nmes, mirror_uv, onto_mesh, project,
                                           read_landmarks, write_calibrated_store)

DATA = Path(__file__).resolve().parents[2] / "shared" / "eval" / "aflw2000-dev"


@pytest.fixture(scope="module")
def store(tmp_path_factory, kit) -> Path:
    return tiny_store(tmp_path_factory, kit) / "tiny" / "0.0.1"


@pytest.fixture(scope="module")
def topology(store) -> MeshTopology:
    return MeshTopology.from_store(load_model_store(store))


def smooth_observations(topology: MeshTopology, uv: np.ndarray, n: int = 6) -> Observations:
    """Position maps smooth in (u, v) (x, y from u, v; depth a bump), cameras turned over the three yaw
    bins, and ground truth read at ``uv`` through them."""
    size = topology.size
    v, u = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1
    a = np.stack([u, -v, 0.5 * np.cos(1.5 * u) * np.cos(v)]).astype(np.float32)
    yaws = np.linspace(-80, 80, n)
    affines = []
    for yaw in np.radians(yaws):
        rot = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, -1, 0]])  # photo y grows downwards
        affines.append(np.concatenate([60 * rot, [[100.0], [120.0]]], 1))
    obs = Observations(np.repeat(a[None], n, 0), np.stack(affines), np.zeros((n, 68, 2)), yaws)
    truth = project(obs, torch.from_numpy(uv), np.arange(n)).numpy()
    return Observations(obs.a_full, obs.to_photo, truth, yaws)


def test_project_reads_a_as_the_service_decoder_does(topology):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(1, 3, topology.size, topology.size)).astype(np.float32)
    affine = rng.normal(size=(1, 2, 4))
    obs = Observations(a, affine, np.zeros((1, 68, 2)), np.zeros(1))
    uv = topology.landmarks_uv + rng.uniform(-2, 2, (68, 2))

    canonical = sample_bilinear(a[0].astype(np.float64), uv)  # the service's read, (68, 3)
    expected = canonical @ affine[0, :, :3].T + affine[0, :, 3]
    assert np.allclose(project(obs, torch.from_numpy(uv), np.array([0])).numpy()[0], expected, atol=1e-9)
    maps, affine_t = torch.from_numpy(a).double(), torch.from_numpy(affine)
    uv_t = torch.from_numpy(uv[:5] + 0.3).requires_grad_()  # away from texel centres, where bilinear reads kink
    assert torch.autograd.gradcheck(lambda q: read_landmarks(maps, affine_t, q), (uv_t,))


def test_fit_recovers_a_known_symmetric_shift_and_keeps_the_constraints(topology):
    mask = topology.uv_mask.astype(bool)
    start = topology.landmarks_uv
    rng = np.random.default_rng(1)
    shift = rng.uniform(-1.5, 1.5, (68, 2))
    target_t = onto_mesh(mirror_uv(torch.from_numpy(start + shift), topology.size) * 0.5
                         + torch.from_numpy(start + shift) * 0.5, mask)
    target = target_t.numpy()
    assert np.allclose(mirror_uv(target_t, topology.size).numpy(), target)  # the test's own target is reachable
    obs = smooth_observations(topology, target)

    fitted = fit_landmarks(obs, start, mask)
    before, after = landmark_nmes(obs, start, np.arange(len(obs))), landmark_nmes(obs, fitted, np.arange(len(obs)))
    assert after.mean() < 0.05 * before.mean()
    assert np.abs(fitted - target).max() < 0.2  # texels
    assert np.allclose(mirror_uv(torch.from_numpy(fitted), topology.size).numpy(), fitted, atol=1e-9)
    texel = np.round(fitted).astype(int)
    assert mask[texel[:, 1], texel[:, 0]].all()


def test_an_asymmetric_truth_still_gives_mirror_symmetric_landmarks_on_the_mesh(topology):
    mask = topology.uv_mask.astype(bool)
    start = topology.landmarks_uv
    moved = start.copy()
    moved[:17, 0] -= 6.0  # the whole jaw dragged to one side, partly off the face
    obs = smooth_observations(topology, moved)

    fitted = fit_landmarks(obs, start, mask, steps=100)
    flipped = fitted[MIRROR_68] * (-1, 1) + (topology.size - 1, 0)
    assert np.abs(flipped - fitted).max() < 1e-9
    texel = np.round(fitted).astype(int)
    assert mask[texel[:, 1], texel[:, 0]].all()


def test_the_calibrated_store_differs_only_in_its_landmarks(store, tmp_path):
    source = load_model_store(store)
    with np.load(store / "topology.npz") as t:
        landmarks = t["landmarks_uv"] + np.where(np.arange(68)[:, None] < 17, [0.0, -1.0], 0.0)  # jaw one texel up
    folder = write_calibrated_store(store, tmp_path, "0.0.2", landmarks, {"data": "test"})

    written = load_model_store(folder)  # validates the manifest, the checksums and the topology
    assert np.array_equal(MeshTopology.from_store(written).landmarks_uv, landmarks.astype(np.float32))
    for name in ("geometry.onnx", "texture.onnx"):
        assert written.manifest["files"][name] == source.manifest["files"][name]
    evaluation = json.loads((folder / "manifest.json").read_text())["evaluation"]
    assert evaluation["landmark_calibration"] == {"data": "test"}
    assert evaluation["onnx_parity_max_abs"] == source.manifest["evaluation"]["onnx_parity_max_abs"]


def test_cli_calibrates_a_store_on_real_images(store, tmp_path, capsys):
    if not DATA.is_dir():
        pytest.skip(f"AFLW2000-3D dev subset not found at {DATA}")
    from service.settings import Settings
    from training.evaluate import aflw2000
    from training.evaluate.inprocess import InProcessModel
    from training.evaluate.metrics import nme_2d
    from training.landmark_calibration import main, observe

    samples = aflw2000.load_samples(DATA, 4)
    model = InProcessModel(store, Settings(mirror_average=False))
    obs = observe(model, samples)
    service_nmes = [nme_2d(model.geometry(s.image, s.box)[3].landmarks_photo, s.landmarks) for s in samples]
    assert np.allclose(landmark_nmes(obs, model.topology.landmarks_uv, np.arange(4)), service_nmes, atol=1e-9)

    main(["--model", str(store), "--data", str(DATA), "--limit", "4", "--root", str(tmp_path), "--version", "0.0.2"])
    assert "2-fold held out" in capsys.readouterr().out
    record = load_model_store(tmp_path / "tiny" / "0.0.2").manifest["evaluation"]["landmark_calibration"]
    assert record["photos"] == 4 and record["folds"] == 2
    assert record["calibrated_in_sample"]["bin_mean"] <= record["as_stored"]["bin_mean"]
