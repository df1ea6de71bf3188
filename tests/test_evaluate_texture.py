"""The texture evaluation: renders back into the photo frame, E_pho, identity, the CLIs on the tiny store."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.model_store import load_model_store
from service_fixtures import PHOTOS, encode, noise_image, ready_client, tiny_store
from training.evaluate import metrics

DATA = PHOTOS.parent / "aflw2000-dev"


@pytest.fixture(scope="module")
def store(tmp_path_factory, kit):
    return tiny_store(tmp_path_factory, kit) / "tiny" / "0.0.1"


@pytest.fixture(scope="module")
def topology(store):
    from service.engine.topology import MeshTopology
    from service.model_store import load_model_store

    return MeshTopology.from_store(load_model_store(store))


@pytest.fixture(scope="module")
def neutral_map(kit):
    from training.facemodel import UVFaceModel

    return UVFaceModel.build(64, kit).identity_map().transpose(2, 0, 1)  # (3, 64, 64) canonical


def placed_face(neutral_map, topology, crop, yaw=0.15, roll=0.05):
    """A known mesh: the neutral face, turned, scaled so its landmark box spans 1/1.6 of the crop as the
    service frames faces, decoded by the service's own ASM decode."""
    from service.engine.asm_decode import decode_asm, sample_bilinear

    lm = sample_bilinear(neutral_map, topology.landmarks_uv)
    extent = float((lm[:, :2].max(0) - lm[:, :2].min(0)).max())
    light = np.zeros((9, 3))
    light[0], light[2] = 0.8, 0.3
    outputs = {"a_id": neutral_map, "a_exp": np.zeros_like(neutral_map), "p_t": np.zeros(6), "p_l": light.reshape(-1),
               "p_h": np.array([yaw, 0.05, roll, 0.03, 0.06, np.log(2.0 / 1.6 / extent)])}
    return decode_asm(outputs, crop, topology)


def test_in_process_model_computes_what_the_service_answers(store, tmp_path):
    """Same stages, same numbers: the service's JSON landmarks and lighting for a given box."""
    from service.app import create_app
    from service.settings import Settings
    from training.evaluate.inprocess import InProcessModel

    image = noise_image(size=(200, 160), seed=4)
    box = (40.0, 30.0, 150.0, 140.0)
    rec = InProcessModel(store).reconstruct(np.asarray(image), box)
    app = create_app(Settings(model_store=store.parents[1], job_store=str(tmp_path / "jobs.db")))
    with ready_client(app) as client:
        r = client.post("/v1/reconstruct", files={"image": ("a.png", encode(image, "PNG"), "image/png")},
                        data={"format": "json", "box": ",".join(map(str, box))})
    face = r.json()["faces"][0]
    np.testing.assert_allclose(face["landmarks68"], rec.geometry.landmarks_photo, atol=1e-3)
    np.testing.assert_allclose(face["lighting"], rec.geometry.lighting, atol=1e-5)


def test_identical_images_give_zero_photometric_error():
    from training.evaluate.rendered import Render

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    window = (10, 5, 30, 35)
    r = Render(window, photo[5:35, 10:30] / 255.0, rng.random((30, 20)) > 0.3)
    assert metrics.photometric_error(r.image, r.photo_part(photo) / 255.0, r.mask) == 0
    np.testing.assert_array_equal(r.over(photo), photo)  # pasting the photo's own pixels changes nothing
    brighter = Render(window, np.clip(r.image + 0.1, 0, 1), r.mask)
    assert 0 < metrics.photometric_error(brighter.image, r.photo_part(photo) / 255.0, r.mask) <= 0.1 + 1e-12


def test_render_lands_where_the_service_projects(neutral_map, topology):
    """The photo-frame camera agrees with the service's crop -> photo mapping, and the render shows at each
    projected landmark the UV position of that landmark."""
    import torch

    from service.engine.align import Crop
    from training.evaluate.rendered import mesh_window, photo_camera, render_in_photo

    crop = Crop(np.zeros((3, 32, 32), np.float32), origin=(40.0, 25.0), step=5.0)
    geo = placed_face(neutral_map, topology, crop)
    hw = (220, 260)
    window = mesh_window(geo, hw)
    screen = photo_camera(geo, window).transform_points_screen(torch.tensor(geo.vertices_full, dtype=torch.float32)[None])[0]
    np.testing.assert_allclose(screen[:, :2].numpy() + window[:2], crop.to_photo(geo.screen[:, :2]), atol=1e-3)

    s = topology.size
    uv_positions = np.stack(np.meshgrid(np.arange(s), np.arange(s), indexing="xy")).astype(np.float64)  # (2, S, S): x, y
    r = render_in_photo(geo, topology, hw, uv_positions)
    rows, cols = np.nonzero(r.mask)
    x0, y0, x1, y1 = r.window
    assert (cols.min() + x0, rows.min() + y0) == pytest.approx(window[:2], abs=2)  # the mesh fills its window
    assert (cols.max() + x0 + 1, rows.max() + y0 + 1) == pytest.approx(window[2:], abs=2)

    inner = np.arange(17, 68)  # the jaw contour sits on the silhouette, half hidden at this yaw
    px = np.floor(geo.landmarks_photo[inner, :2] - [x0, y0]).astype(int)
    covered = r.mask[px[:, 1], px[:, 0]]
    assert covered.mean() > 0.85, inner[~covered]  # a few lie on the lid and lip slits, holes in the mesh
    err = np.abs(r.image[px[:, 1], px[:, 0]] - topology.landmarks_uv[inner]).max(1)[covered]  # UV pixels
    assert np.median(err) < 0.3 and np.quantile(err, 0.9) < 0.6


def photo_with_landmarks(name):
    from training.evaluate.rendered import load_photo_folder

    if not (PHOTOS / f"{name}.pts").is_file():
        pytest.skip(f"real photo {PHOTOS / name} and its .pts absent (the shared eval photos are not checked out)")
    return next(p for p in load_photo_folder(PHOTOS) if p.name == name)


def test_scores_of_a_known_reconstruction_on_a_real_photo(neutral_map, topology):
    """A neutral face placed in einstein's landmark box: finite E_pho, identity in (0, 1]; the photo's own
    pixels as the 'render' give E_pho 0 and identity 1 (a photo with itself)."""
    pytest.importorskip("dlib")
    from service.engine.align import crop_face
    from service.engine.unwrap import unwrap
    from training.evaluate.inprocess import Reconstruction
    from training.evaluate.rendered import FLAT, SERVED, STREAM, FaceDescriptor, Render, score_renders, texture_renders

    photo = photo_with_landmarks("einstein")
    geo = placed_face(neutral_map, topology, crop_face(photo.image, photo.box, 32, 1.6))
    grey = np.full((3, 64, 64), 0.6)
    rec = Reconstruction(photo.box, "landmarks", geo, unwrap(geo, topology), grey, None)
    renders = texture_renders(rec, topology, photo.image)
    describe = FaceDescriptor()
    scores, reference = score_renders(photo.image, photo.box, renders, describe)
    assert set(scores) == {STREAM, FLAT} and reference.shape == (128,)
    for s in scores.values():
        assert s["pixels"] > 2000 and 0 < s["e_pho"] < 0.5 and 0 < s["identity"] <= 1 + 1e-9
    # The served texture, here the same grey at 128², renders as the stream's map does.
    served = texture_renders(rec, topology, photo.image, np.full((128, 128, 3), 153, np.uint8))
    assert set(served) == set(renders) | {SERVED}
    np.testing.assert_allclose(served[SERVED].image, served[STREAM].image, atol=0.003)
    base = renders[STREAM]
    own = Render(base.window, base.photo_part(photo.image) / 255.0, base.mask)
    same = score_renders(photo.image, photo.box, {STREAM: own}, describe)[0][STREAM]
    assert same["e_pho"] == 0 and same["identity"] == pytest.approx(1.0, abs=1e-9) and same["identity_distance"] == 0


def two_photos(tmp_path):
    if not (PHOTOS / "takeo.pts").is_file() or not (PHOTOS / "einstein.pts").is_file():
        pytest.skip(f"real photos absent from {PHOTOS} (the shared eval photos are not checked out)")
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("takeo.ppm", "takeo.pts", "einstein.jpg", "einstein.pts"):
        shutil.copy(PHOTOS / name, folder / name)
    return folder


def test_texture_cli_on_the_tiny_store_writes_tables_and_grid(store, tmp_path):
    pytest.importorskip("dlib")
    from PIL import Image

    from training.evaluate.__main__ import main
    from training.evaluate.rendered import FLAT, LINEAR, SERVED, STREAM

    grid = tmp_path / "docs" / "grid.png"
    main(["texture", "--model", str(store), "--photos", str(two_photos(tmp_path)), "--out", str(tmp_path / "reports"),
          "--grid", str(grid)])
    report = json.loads((tmp_path / "reports" / "texture.json").read_text())
    s = report["sets"]["photos"]
    assert report["model"] == {"name": "tiny", "version": "0.0.1"} and "cores" in report["machine"]
    assert s["n"] == 2 and s["scored"] == 2 and set(s["per_photo"]) == {"einstein", "takeo"}
    assert set(s["per_photo"]["takeo"]["scores"]) == {STREAM, LINEAR, SERVED, FLAT}
    assert s["per_photo"]["takeo"]["box_from"] == "landmarks"
    text = (tmp_path / "reports" / "texture.md").read_text()
    assert f"| photos | 2 / 2 | {STREAM} |" in text and LINEAR in text
    with Image.open(grid) as image:
        assert image.size == (3 * 256 + 4 * 4, 24 + 2 * (256 + 4) + 4)


def test_all_writes_every_table_in_process(store, tmp_path):
    """aflw2000 with the model in process, synthetic with the albedo table, texture; the albedo model
    given is the tiny store's own, so the linear albedo from the true p_t must match the truth closely."""
    if not DATA.is_dir():
        pytest.skip(f"AFLW2000-3D dev subset not found at {DATA}")
    pytest.importorskip("dlib")
    from training.evaluate.__main__ import main
    from training.models import AlbedoModel

    albedo = AlbedoModel.placeholder(6, 64)  # what build_tiny_store puts in the texture stream
    npz = tmp_path / "albedo.npz"
    np.savez(npz, mean=albedo.mean.numpy(), basis=albedo.basis.numpy(), std=albedo.std.numpy())
    out = tmp_path / "reports"
    root = Path(shutil.copytree(store.parents[1], tmp_path / "store"))  # --record writes into the manifest
    store = root / store.relative_to(store.parents[1])
    main(["all", "--model", str(store), "--data", str(DATA), "--photos", str(two_photos(tmp_path)), "--limit", "2",
          "--size", "7", "--albedo", str(npz), "--out", str(out), "--record"])
    for name in ("aflw2000", "synthetic", "texture"):
        assert (out / f"{name}.json").is_file() and (out / f"{name}.md").is_file()
    nme = json.loads((out / "aflw2000.json").read_text())["tiny 0.0.1, in-process"]["nme_2d"]
    assert sum(nme["n"].values()) == 2 and nme["overall"] > 0
    averaged = json.loads((out / "aflw2000.json").read_text())["tiny 0.0.1, in-process, mirror-averaged"]["nme_2d"]
    assert sum(averaged["n"].values()) == 2 and averaged["overall"] != nme["overall"]
    synth = json.loads((out / "synthetic.json").read_text())
    assert set(synth["geometry"]) == {"A_id + A_exp", "A_id only", "mean face (baseline)"}
    linear, stream = synth["albedo"]["linear albedo (p_t), true inputs"], synth["albedo"]["texture stream, true inputs"]
    assert linear["n"] == 7 and linear["face"] < 0.05 and 0 < stream["face"] < 1
    # The true p_t does not depend on the light; the p_t the geometry graph reads off the photo does.
    assert linear["lighting_change"] == 0 and linear["occluded"] < 0.05
    baseline = synth["albedo"]["mean albedo (p_t = 0; baseline)"]
    assert baseline["n"] == 7 and baseline["lighting_change"] == 0 and baseline["face"] > linear["face"]
    for row in synth["albedo"].values():  # the gain is the best over the face: there it can only lower the error
        assert row["level_free"]["face"] <= row["face"] + 1e-9, row
        assert all(row["level_free"][part] >= 0 or np.isnan(row[part]) for part in ("unseen", "occluded")), row
    assert "level-free" in (out / "synthetic.md").read_text()
    served = synth["albedo"]["linear albedo (p_t), as served"]
    assert served["n"] == 7 and 0 < served["face"] < 1 and served["n_lit"] == 7 and served["lighting_change"] > 0
    assert set(json.loads((out / "texture.json").read_text())["sets"]) == {"photos", DATA.name}
    recorded = load_model_store(store).manifest["evaluation"]  # still a valid store, figures inside
    assert recorded["aflw2000"]["tiny 0.0.1, in-process"]["nme_2d"]["overall"] == nme["overall"]
    assert "per_photo" not in json.dumps(recorded["texture"]) and "onnx_parity_max_abs" in recorded


def test_synthetic_without_albedo_says_why_the_table_is_missing(store, tmp_path):
    from training.evaluate.__main__ import main

    main(["synthetic", "--model", str(store), "--size", "7", "--out", str(tmp_path)])
    assert "Skipped" in (tmp_path / "synthetic.md").read_text() and "--albedo" in (tmp_path / "synthetic.md").read_text()
    assert json.loads((tmp_path / "synthetic.json").read_text())["albedo"] is None


def test_p_t_under_a_known_shading_is_recovered():
    from service.engine.albedo_basis import AlbedoBasis
    from training.evaluate.albedo_limits import p_t_under_shading

    rng = np.random.default_rng(4)
    k, m = 5, 400
    basis = AlbedoBasis(vertices=np.arange(m), mean=rng.uniform(0.3, 0.6, (m, 3)), components=rng.normal(0, 0.05, (k, m, 3)))
    p_t = rng.normal(0, 1, k)
    shading = rng.uniform(0.4, 1.2, (m, 3))
    photo = (basis.mean + np.einsum("k,kmc->mc", p_t, basis.components)) * shading
    seen = rng.random(m) > 0.3
    np.testing.assert_allclose(p_t_under_shading(basis, seen, photo, shading, ridge=1e-12), p_t, atol=1e-6)
    shrunk = p_t_under_shading(basis, seen, photo, shading, ridge=1e-2)  # the ridge pulls towards the mean albedo
    assert np.linalg.norm(shrunk) < np.linalg.norm(p_t)


def test_albedo_limits_cli_on_the_tiny_store(store, tmp_path):
    from training.evaluate.__main__ import main
    from training.evaluate.albedo_limits import ROWS
    from training.models import AlbedoModel

    albedo = AlbedoModel.placeholder(6, 64)  # what build_tiny_store puts in the texture stream
    npz = tmp_path / "albedo.npz"
    np.savez(npz, mean=albedo.mean.numpy(), basis=albedo.basis.numpy(), std=albedo.std.numpy())
    main(["albedo-limits", "--model", str(store), "--albedo", str(npz), "--size", "3", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "albedo-limits.json").read_text())["results"]
    assert list(results) == list(ROWS) and all(r["n"] == 3 for r in results.values())
    for r in results.values():
        assert 0 <= r["level_free"] <= r["face"] + 1e-9
    true, exact, baseline = (results[row]["face"] for row in (ROWS[0], ROWS[1], ROWS[-1]))
    assert true < exact < baseline  # the photo under its exact shading says less than the truth, more than nothing
    assert "| true p_t |" in (tmp_path / "albedo-limits.md").read_text()
