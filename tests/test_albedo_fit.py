"""Albedo coefficients fitted to the seen skin (service.engine.albedo_fit): the p_t and light that made
the colours are found again, hair over the skin is dropped, p_t stays bounded, and a face with too
little skin seen keeps the geometry stream's p_t; the basis a store carries is texture.onnx's own
linear albedo, feeds the texture graph, and is refused when broken."""

import numpy as np
import pytest

from service.engine.albedo_basis import AlbedoBasis, topology_arrays
from service.engine.albedo_fit import BOUND, COEFFICIENT_RIDGE, KEEP, LIGHT_RIDGE, ROUNDS, fit_albedo, fitted_albedo_coefficients
from service.engine.relight import MIN_VERTICES, fit_sh_lighting
from service.engine.texture import sh_basis


def channels(components: np.ndarray) -> np.ndarray:
    """(K, N, 3) -> fit_albedo's (3, K, N) float32."""
    return np.ascontiguousarray(components.transpose(2, 0, 1), dtype=np.float32)


def fit_albedo_reference(photo, normals, mean, components, prior_light, ridge=COEFFICIENT_RIDGE, rounds=ROUNDS,
                         keep=KEEP, bound=BOUND, light_ridge=LIGHT_RIDGE):
    """fit_albedo written plainly, in float64: the (3n, K) design matrix built whole every round."""
    k = components.shape[0]
    shading_basis = sh_basis(normals)
    light = fit_sh_lighting(photo, mean, normals, prior_light, ridge=light_ridge, keep=1.0)
    rows = np.ones(len(photo), bool)
    p_t = np.zeros(k)
    for step in range(rounds):
        shade = shading_basis[rows] @ light
        design = (components[:, rows] * shade[None]).reshape(k, -1).T
        target = (photo[rows] - mean[rows] * shade).reshape(-1)
        p_t = np.clip(np.linalg.solve(design.T @ design + ridge * len(target) * np.eye(k), design.T @ target), -bound, bound)
        albedo = mean + np.tensordot(p_t, components, 1)
        if step == 0 and keep < 1.0:
            residual = np.abs(photo - albedo * (shading_basis @ light)).mean(1)
            rows = residual <= np.quantile(residual, keep)
        light = fit_sh_lighting(photo[rows], albedo[rows], normals[rows], prior_light, ridge=light_ridge, keep=1.0)
    return p_t, light


def scene(n: int = 800, k: int = 6, seed: int = 0):
    """normals (n, 3), mean (n, 3), components (k, n, 3), p_t (k,), light (9, 3), photo (n, 3)."""
    rng = np.random.default_rng(seed)
    normals = rng.normal(size=(n, 3)) + [0, 0, 2.0]
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    mean = rng.uniform(0.35, 0.65, (n, 3))
    components = rng.normal(0, 0.05, (k, n, 3))
    p_t = rng.uniform(-1.5, 1.5, k)
    light = np.zeros((9, 3))
    light[0] = [0.9, 0.8, 0.7]
    light[1:4] = rng.normal(0, 0.2, (3, 3))
    photo = (mean + np.tensordot(p_t, components, 1)) * (sh_basis(normals) @ light)
    return normals, mean, components, p_t, light, photo


def test_the_coefficients_and_light_that_made_the_colours_are_found_again():
    normals, mean, components, p_t, light, photo = scene()
    prior = np.zeros((9, 3))
    prior[0] = 0.5  # a grey, darker guess
    fitted, fitted_light = fit_albedo(photo, normals, mean, channels(components), prior, ridge=1e-9, rounds=60, keep=1.0,
                                      light_ridge=1e-9)
    np.testing.assert_allclose(fitted, p_t, atol=0.02)
    np.testing.assert_allclose(fitted_light, light, atol=2e-3)


@pytest.mark.parametrize("keep", [1.0, KEEP])
def test_the_fit_solves_what_the_plain_design_matrix_solves(keep):
    normals, mean, components, _, light, photo = scene(k=12, seed=6)
    photo = photo + np.random.default_rng(7).normal(0, 0.02, photo.shape)
    prior = light * 0.7
    fast, fast_light = fit_albedo(photo, normals, mean, channels(components), prior, keep=keep)
    slow, slow_light = fit_albedo_reference(photo, normals, mean, components, prior, keep=keep)
    np.testing.assert_allclose(fast, slow, atol=1e-4)  # float32 products against float64 ones
    np.testing.assert_allclose(fast_light, slow_light, atol=1e-5)


def test_a_side_light_goes_into_the_light_not_into_the_albedo():
    """An albedo component that brightens one side of the face and a side light look alike; the light's
    prior (the geometry's p_l) knows nothing of the side light. The fit's light ridge leaves the light
    free enough to take it: relight's ridge, ten times stronger, puts most of it into p_t instead."""
    from service.engine.relight import RIDGE

    normals, mean, components, p_t, light, _ = scene(k=6, seed=8)
    light[1:4] = 0.0
    components[0] = 0.1 * normals[:, [0]] * mean  # brighter towards +x, as a light from there makes it
    p_t[0] = 0.0
    side = light.copy()
    side[3] = -0.3 * light[0]  # the x term of the first SH order (sh_basis's -a1c1 * x)
    photo = (mean + np.tensordot(p_t, components, 1)) * (sh_basis(normals) @ side)
    free, _ = fit_albedo(photo, normals, mean, channels(components), light)
    held, _ = fit_albedo(photo, normals, mean, channels(components), light, light_ridge=RIDGE)
    assert LIGHT_RIDGE < RIDGE
    assert abs(free[0]) < 0.2 * abs(held[0])
    np.testing.assert_allclose(free[1:], p_t[1:], atol=0.05)


def test_hair_over_the_skin_is_dropped_after_the_first_round():
    normals, mean, components, p_t, _, photo = scene(seed=1)
    hair = np.random.default_rng(2).random(len(photo)) < 0.15
    photo = photo.copy()
    photo[hair] = 0.05
    prior = np.zeros((9, 3))
    prior[0] = 0.8

    def error(keep):
        fitted, _ = fit_albedo(photo, normals, mean, channels(components), prior, ridge=1e-9, rounds=30, keep=keep,
                               light_ridge=1e-9)
        return np.abs(np.tensordot(fitted - p_t, components, 1)).mean()

    assert error(0.8) < 0.25 * error(1.0)
    assert error(0.8) < 2e-3


def test_coefficients_stay_within_the_bound():
    normals, mean, components, _, light, _ = scene(seed=3)
    photo = (mean + np.tensordot(np.full(components.shape[0], 9.0), components, 1)) * (sh_basis(normals) @ light)
    fitted, _ = fit_albedo(photo, normals, mean, channels(components), light, ridge=1e-9, bound=3.0)
    assert np.abs(fitted).max() <= 3.0


def test_too_little_skin_seen_keeps_the_geometry_streams_coefficients():
    normals, mean, components, _, light, photo = scene(n=MIN_VERTICES - 1, seed=4)
    basis = AlbedoBasis(vertices=np.arange(len(mean)), mean=mean, components=components)
    prior_p_t = np.full(components.shape[0], 0.25)
    got = fitted_albedo_coefficients(basis, np.ones(len(mean), bool), photo, normals, prior_p_t, light)
    np.testing.assert_array_equal(got, prior_p_t.astype(np.float32))
    assert got.dtype == np.float32


def test_the_stored_basis_is_the_linear_albedo_at_its_vertices(tiny_model, tiny_topology):
    """The tiny store's basis against texture.onnx's own linear albedo: the same colours at the basis's
    vertices for any p_t, within float16 storage."""
    import onnxruntime as ort

    basis = tiny_topology.albedo_basis
    assert basis is not None and len(basis.vertices) < tiny_topology.vertices
    session = ort.InferenceSession(str(tiny_model / "texture.onnx"), providers=["CPUExecutionProvider"])
    feeds = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32) for i in session.get_inputs()}
    p_t = np.random.default_rng(5).normal(0, 1, basis.size).astype(np.float32)
    feeds["p_t"] = p_t[None]
    linear = session.run(["linear_albedo"], feeds)[0][0]  # (3, S, S)
    rows, cols = tiny_topology.rows[basis.vertices], tiny_topology.cols[basis.vertices]
    np.testing.assert_allclose(basis.mean + np.tensordot(p_t, basis.components, 1), linear[:, rows, cols].T, atol=2e-3)


def test_a_store_that_carries_the_basis_feeds_texture_onnx_the_fitted_p_t(tiny_model):
    from service.engine.runtime import GEOMETRY_OUTPUTS
    from service.settings import Settings
    from service_fixtures import noise_image
    from training.evaluate.inprocess import InProcessModel

    model = InProcessModel(tiny_model, Settings(mirror_average=False))
    _, _, outputs, geo = model.geometry(np.asarray(noise_image(size=(200, 160), seed=4)), (40.0, 30.0, 150.0, 140.0))
    _, feeds = model.texture_feeds(outputs, geo)
    head = outputs[GEOMETRY_OUTPUTS.index("p_t")]
    assert feeds["p_t"].shape == head.shape and feeds["p_t"].dtype == np.float32
    assert not np.allclose(feeds["p_t"], head)


@pytest.mark.parametrize("change, message", [
    (lambda t: t.pop("albedo_fit_mean"), "missing"),
    (lambda t: t.update(albedo_fit_mean=t["albedo_fit_mean"][1:]), "do not fit"),
    (lambda t: t.update(albedo_fit_vertices=t["albedo_fit_vertices"] + 10**6), "must index"),
])
def test_a_broken_basis_is_refused(change, message):
    rng = np.random.default_rng(0)
    topology = topology_arrays(rng.random((3, 8, 8)), rng.random((4, 3, 8, 8)), np.ones(4), np.ones((8, 8), bool))
    assert AlbedoBasis.from_topology(dict(topology), 64) is not None
    change(topology)
    with pytest.raises(ValueError, match=message):
        AlbedoBasis.from_topology(topology, 64)


def test_training_fits_the_p_t_the_service_fits(tiny_topology, kit):
    """training.stages.albedo_fit (torch tensors of a batch) against the service's fit_face (its own
    geometry, unwrap and bilinear lookup) on one placed face: the same coefficients."""
    import torch

    from service.engine.albedo_fit import fit_face
    from service.engine.align import Crop
    from service.engine.asm_decode import decode_asm, sample_bilinear
    from service.engine.unwrap import unwrap
    from training.facemodel import UVFaceModel
    from training.stages.albedo_fit import fitted_p_t

    topo, n = tiny_topology, 32
    neutral = UVFaceModel.build(topo.size, kit).identity_map().transpose(2, 0, 1)
    marks = sample_bilinear(neutral, topo.landmarks_uv)
    extent = float((marks[:, :2].max(0) - marks[:, :2].min(0)).max())
    light = np.zeros((9, 3))
    light[0], light[2] = 0.8, 0.3
    outputs = {"a_id": neutral, "a_exp": np.zeros_like(neutral), "p_t": np.zeros(topo.albedo_basis.size),
               "p_l": light.reshape(-1), "p_h": np.array([0.3, 0.05, 0.05, 0.03, 0.06, np.log(2.0 / 1.6 / extent)])}
    yy, xx = np.mgrid[0:n, 0:n] / n
    image = np.stack([0.5 + 0.3 * np.sin(3 * xx), 0.4 + 0.2 * yy, 0.3 + 0.2 * xx * yy]).astype(np.float32)
    geo = decode_asm(outputs, Crop(image=image, origin=(0.0, 0.0), step=1.0), topo)
    unwrapped = unwrap(geo, topo)
    service = fit_face(topo.albedo_basis, geo, unwrapped, topo, outputs["p_t"])

    vertices = torch.from_numpy(geo.a_full[:, topo.rows, topo.cols].T.astype(np.float32))[None]
    training = fitted_p_t(topo.albedo_basis, vertices, torch.from_numpy(np.array(topo.triangles)).long(),
                          torch.from_numpy(outputs["p_h"]).float()[None], torch.from_numpy(light.reshape(1, 27)).float(),
                          torch.from_numpy(image)[None], torch.from_numpy(np.array(unwrapped.visibility[topo.rows, topo.cols]))[None],
                          torch.zeros(1, topo.albedo_basis.size))[0].numpy()
    assert np.abs(service).max() > 0.1  # the photo moved p_t off the mean
    np.testing.assert_allclose(training, service, atol=1e-4)


def test_a_photo_darkened_as_a_whole_gets_the_same_coefficients():
    """The exposure is taken out before the fit: the photo at 55 %, and a prior light twice as bright,
    give the same p_t; another skin's pattern still moves it."""
    normals, mean, components, _, light, photo = scene(seed=8)
    basis = AlbedoBasis(vertices=np.arange(len(mean)), mean=mean, components=components)
    seen, prior_p_t = np.ones(len(mean), bool), np.zeros(components.shape[0])
    once = fitted_albedo_coefficients(basis, seen, photo, normals, prior_p_t, light)
    darker = fitted_albedo_coefficients(basis, seen, 0.55 * photo, normals, prior_p_t, 2.0 * light)
    np.testing.assert_allclose(darker, once, atol=1e-5)
    other_p_t = np.random.default_rng(9).uniform(-1.5, 1.5, components.shape[0])
    other = (mean + np.tensordot(other_p_t, components, 1)) * (sh_basis(normals) @ light)
    assert np.abs(fitted_albedo_coefficients(basis, seen, other, normals, prior_p_t, light) - once).max() > 0.5


@pytest.mark.parametrize("on", [True, False])
def test_the_service_fits_p_t_unless_told_not_to(tmp_path_factory, kit, on):
    """FACERECON_ALBEDO_FIT: the `albedo_fit` stage runs for a store with the basis, and not when off."""
    from service_fixtures import encode, noise_image, post, tiny_client

    with tiny_client(tmp_path_factory, kit, f"fit_{on}", albedo_fit=on) as client:
        response = post(client, encode(noise_image(size=(200, 160), seed=4), "PNG"), filename="a.png", format="json",
                        box="40,30,150,140")
    assert response.status_code == 200, response.text
    assert ("albedo_fit" in response.json()["timings_ms"]) is on


def test_fit_settings_are_scored_beside_the_services(tiny_model, tmp_path):
    """`python -m training.evaluate albedo-fit`: each setting reaches the solver (a ridge so strong that
    p_t stays at zero scores as the mean albedo does), the service's own row comes first, and an
    unknown setting is refused."""
    import json

    from training.evaluate.fit_settings import fit_settings_report
    from training.models import AlbedoModel

    manifest = json.loads((tiny_model / "manifest.json").read_text())
    k = next(i["shape"][1] for i in manifest["onnx"]["texture"]["inputs"] if i["name"] == "p_t")
    placeholder = AlbedoModel.placeholder(k, manifest["uv_size"])
    albedo = tmp_path / "albedo.npz"
    np.savez(albedo, mean=placeholder.mean.numpy(), basis=placeholder.basis.numpy(), std=placeholder.std.numpy())
    text = fit_settings_report(tiny_model, [{"ridge": 1e6}], albedo, 2, tmp_path)
    rows = json.loads((tmp_path / "albedo-fit.json").read_text())["albedo"]
    assert list(rows)[:2] == ["texture stream, the service's settings", "linear albedo (p_t), the service's settings"]
    held, mean = rows["linear albedo (p_t), ridge 1e+06"], rows["mean albedo (p_t = 0; baseline)"]
    assert abs(held["face"] - mean["face"]) < 1e-3
    assert abs(rows["linear albedo (p_t), the service's settings"]["face"] - mean["face"]) > 1e-3
    assert "| texture stream, ridge 1e+06 |" in text
    with pytest.raises(ValueError, match="unknown fit settings"):
        fit_settings_report(tiny_model, [{"ridges": 1.0}], albedo, 2, tmp_path)
