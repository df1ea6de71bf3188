"""The SH lighting refit (service.engine.relight): it recovers a known light from the colours it makes,
past a share of outliers, and falls back on p_l without evidence."""

import numpy as np

from service.engine.relight import fit_sh_lighting
from service.engine.texture import sh_basis


def scene(n: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    normals = rng.normal(size=(n, 3)) + [0, 0, 2.0]  # mostly facing the camera
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    albedo = rng.uniform(0.3, 0.8, (n, 3))
    light = np.zeros((9, 3))
    light[0] = [0.9, 0.8, 0.7]  # a warm ambient term
    light[1:4] = rng.normal(0, 0.2, (3, 3))
    return normals, albedo, light, albedo * (sh_basis(normals) @ light)


def test_the_light_that_made_the_colours_is_found_again_from_another_prior():
    normals, albedo, light, photo = scene()
    prior = np.zeros((9, 3))
    prior[0] = 0.4  # a darker, grey guess, as p_l is for an underexposed reading
    fitted = fit_sh_lighting(photo, albedo, normals, prior, ridge=1e-6, keep=1.0)
    np.testing.assert_allclose(fitted, light, atol=1e-3)


def test_outliers_are_dropped_by_the_second_fit():
    normals, albedo, light, photo = scene(seed=1)
    hair = np.random.default_rng(2).random(len(photo)) < 0.15
    photo = photo.copy()
    photo[hair] = 0.05  # dark hair over some of the skin
    prior = np.zeros((9, 3))
    once = fit_sh_lighting(photo, albedo, normals, prior, ridge=1e-6, keep=1.0)
    twice = fit_sh_lighting(photo, albedo, normals, prior, ridge=1e-6, keep=0.8)
    assert np.abs(twice - light).max() < 0.2 * np.abs(once - light).max()
    assert np.abs(twice[0] - light[0]).max() < 0.01


def test_a_strong_ridge_keeps_the_prior():
    normals, albedo, _, photo = scene(seed=3)
    prior = np.full((9, 3), 0.1)
    np.testing.assert_allclose(fit_sh_lighting(photo, albedo, normals, prior, ridge=1e6), prior, atol=1e-4)
