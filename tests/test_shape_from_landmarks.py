"""The geometry stream's shape from 68 landmarks (issue 21): the landmark head's soft-argmax, the
regressor's pose frame, the generator's landmark draws, the landmark stage end to end on the tiny
network, and its export read by the service (blendshapes = the regressor's weights)."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from service_fixtures import photo_bytes, ready_client
from training.models import GeometryStream, tiny
from training.models.landmarks import EXPRESSION_LOGIT_OFFSET, LandmarkToFace, landmark_nme, soft_argmax
from training.models.pose import pose_to_camera


def landmark_config():
    cfg = tiny()
    return replace(cfg, geometry=replace(cfg.geometry, shape_from_landmarks=True, appearance_head=True))


def test_soft_argmax_finds_a_sharp_peak_at_its_cell_centre():
    logits = torch.full((1, 2, 8, 8), -50.0)
    logits[0, 0, 2, 5] = 50.0  # row 2, column 5
    logits[0, 1, 7, 0] = 50.0
    got = soft_argmax(logits, image_size=64)  # 8 px cells
    np.testing.assert_allclose(got[0].numpy(), [[5.5 * 8, 2.5 * 8], [0.5 * 8, 7.5 * 8]], atol=1e-4)


def test_landmark_to_face_gives_the_pose_in_the_landmarks_frame():
    """With a constant output (origin offset (0.1, -0.2) boxes, log scale 0.3, no rotation), the canonical
    origin projects to the landmarks' mean + box x offset, and one canonical unit spans box x e^0.3 px."""
    net = LandmarkToFace(hidden=16, layers=1)
    with torch.no_grad():
        net.net[-1].weight.zero_()
        net.net[-1].bias.zero_()
        net.net[-1].bias[-6:] = torch.tensor([0.0, 0.0, 0.0, 0.1, -0.2, 0.3])
    landmarks = torch.rand(1, 68, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor([40.0, 60.0]) + 30.0
    with torch.no_grad():
        _, exp_weights, p_h = net(landmarks, image_size=128)
    span = landmarks.amax(1) - landmarks.amin(1)
    box = float((span[0, 0] * span[0, 1]).sqrt())
    camera = pose_to_camera(p_h, 128)
    origin, unit_x = camera.transform_points_screen(torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]]))[0, :, :2]
    centre = landmarks[0].mean(0)
    np.testing.assert_allclose(origin.numpy(), (centre + box * torch.tensor([0.1, -0.2])).numpy(), atol=1e-3)
    np.testing.assert_allclose(float(unit_x[0] - origin[0]), box * np.exp(0.3), rtol=1e-4)
    np.testing.assert_allclose(exp_weights.numpy(), 1 / (1 + np.exp(EXPRESSION_LOGIT_OFFSET)), rtol=1e-5)


def test_landmark_draws_are_the_rendered_batchs(uv_models):
    from training.synth import SynthFaceGenerator, SynthSettings

    gen = SynthFaceGenerator(uv_models[64], SynthSettings(image_size=32))
    batch = gen.batch(5, 3, 4)
    landmarks, ids, exp, p_h = gen.landmark_draws(5, 3, 4)
    for got, want in ((landmarks, batch.landmarks), (ids, batch.id_coeffs), (exp, batch.exp_weights), (p_h, batch.p_h)):
        torch.testing.assert_close(got, want)


def test_landmark_nme_weighs_landmarks():
    target = torch.zeros(1, 68, 2)
    target[0, :, 0] = torch.arange(68.0)
    target[0, :, 1] = torch.arange(68.0)  # a 67 x 67 box
    pred = target.clone()
    pred[0, 0, 0] += 6.7  # one landmark off by a tenth of the box
    assert float(landmark_nme(pred, target)) == pytest.approx(0.1 / 68)
    weight = torch.ones(1, 68)
    weight[0, 0] = 0.0
    assert float(landmark_nme(pred, target, weight)) == 0.0


def test_the_stream_decodes_its_coefficients_through_ict(uv_models):
    torch.manual_seed(1)
    net = GeometryStream(landmark_config().geometry, uv_models[64]).eval()
    assert net.identity_decoder is None and net.expression_decoder is None
    with torch.no_grad():
        out = net(torch.rand(2, 3, 32, 32))
    assert out.landmarks.shape == (2, 68, 2)
    model = uv_models[64]
    want_id = model.identity_map(out.id_coeffs.numpy()).transpose(0, 3, 1, 2)
    want_exp = model.expression_map(out.exp_weights.numpy()).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(out.a_id.numpy(), want_id, atol=1e-5)
    np.testing.assert_allclose(out.a_exp.numpy(), want_exp, atol=1e-5)


def tiny_landmark_run(tmp_path: Path, regressor_steps: int, steps: int, appearance_steps: int):
    """A stage-1 file of the plain tiny network (as a trained one would be) to start from, and the landmark
    stage's settings for a tiny run of the given phase lengths: (start, settings)."""
    from training.stages.landmarks import LandmarkStageSettings

    torch.manual_seed(3)
    start = tmp_path / "stage1.pt"
    torch.save({"config": tiny().as_dict(), "model": GeometryStream(tiny().geometry).state_dict(), "stage": "geometry",
                "step": 0}, start)
    settings = LandmarkStageSettings(regressor_steps=regressor_steps, steps=steps, appearance_steps=appearance_steps,
                                     batch_size=2, draw_batch_size=8, validate_every=2, validation_faces=4,
                                     checkpoint_every=1, workers=0, log_every=1)
    return start, settings


def test_landmark_stage_runs_its_three_phases_and_exports(tmp_path):
    from training.export.checkpoints import export_checkpoints
    from training.stages.landmarks import DONE, train_landmarks

    start, settings = tiny_landmark_run(tmp_path, regressor_steps=3, steps=2, appearance_steps=2)
    path = train_landmarks(landmark_config(), tmp_path / "run", settings, start)
    ckpt = torch.load(path, weights_only=False)
    assert (ckpt["phase"], ckpt["step"]) == (DONE, 7)
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["regressor"] * 3 + ["landmarks"] * 2 + ["appearance"] * 2
    assert "val_similarity_mm=" in rows[4] and "val_mean_face_mm=" in rows[4]
    # A finished run resumes to nothing.
    assert train_landmarks(landmark_config(), tmp_path / "run", settings, start) == path
    assert torch.load(path, weights_only=False)["model"].keys() == ckpt["model"].keys()
    report = export_checkpoints(path, None, None, tmp_path / "store", "tiny-landmarks", "0.0.1")
    assert report.geometry_parity < 1e-4


def test_a_landmark_run_without_appearance_steps_ends_done_with_its_steps(tmp_path):
    """A run whose last phases have no steps (0.11.0's: landmarks only) is finished and counts its steps."""
    from training.stages.landmarks import DONE, train_landmarks

    start, settings = tiny_landmark_run(tmp_path, regressor_steps=0, steps=2, appearance_steps=0)
    path = train_landmarks(landmark_config(), tmp_path / "run", settings, start)
    ckpt = torch.load(path, weights_only=False)
    assert (ckpt["phase"], ckpt["step"]) == (DONE, 2)


@pytest.fixture(scope="module")
def weights_and_store(tmp_path_factory, uv_models):
    from training.export.onnx import export_model_store
    from training.models import AlbedoModel, TextureStream

    torch.manual_seed(7)
    cfg = landmark_config()
    geo = GeometryStream(cfg.geometry, uv_models[64])
    weights = np.random.default_rng(7).uniform(0.05, 0.95, 53)
    with torch.no_grad():
        last = geo.landmarks_to_face.net[-1]
        last.weight.zero_()  # the same coefficients for every photo, so the test knows them
        last.bias.zero_()
        last.bias[:100] = torch.linspace(-1, 1, 100)
        last.bias[100:153] = torch.from_numpy(np.log(weights / (1 - weights))) + EXPRESSION_LOGIT_OFFSET
    tex = TextureStream(cfg.texture, AlbedoModel.placeholder(cfg.texture.albedo_dim, cfg.texture.uv_size))
    root = tmp_path_factory.mktemp("landmark_store")
    report = export_model_store(geo, tex, cfg, root, "tiny-landmarks", "0.0.1", face_model=uv_models[64])
    return weights, root, report


def test_export_carries_the_coefficients_and_the_service_serves_them(weights_and_store, tmp_path):
    from service.app import create_app
    from service.settings import Settings

    _, root, report = weights_and_store
    assert report.geometry_parity < 1e-4
    names = [o.name for o in load_geometry_outputs(root / "tiny-landmarks" / "0.0.1")]
    assert names[-2:] == ["id_coeffs", "exp_weights"]
    app = create_app(Settings(model_store=root, default_texture_size=128, job_store=str(tmp_path / "jobs.db")))
    with ready_client(app) as client:
        response = client.post("/v1/reconstruct", files={"image": ("face.jpg", photo_bytes(), "image/jpeg")},
                               data={"format": "json"})
    assert response.status_code == 200, response.text
    (face,) = response.json()["faces"]
    got = np.array(list(face["blendshapes"].values()))
    assert got.shape == (53,) and ((got >= 0) & (got <= 1)).all()


def load_geometry_outputs(folder):
    import onnxruntime as ort

    return ort.InferenceSession(str(folder / "geometry.onnx"), providers=["CPUExecutionProvider"]).get_outputs()


def test_half_weights_reach_the_basis_constants(weights_and_store, tmp_path):
    """ICT's basis is exported as Constant nodes (non-persistent buffers); storing weights in half
    precision must reach them, or they would be most of the graph's bytes in float32."""
    import shutil

    import onnx
    import onnxruntime as ort

    from training.export.half import MIN_ELEMENTS, store_weights_in_half

    _, root, _ = weights_and_store
    source = root / "tiny-landmarks" / "0.0.1" / "geometry.onnx"
    half = tmp_path / "geometry.onnx"
    shutil.copy(source, half)

    def big_float_constants(path):
        return [n for n in onnx.load(str(path)).graph.node if n.op_type == "Constant" and any(
            a.name == "value" and a.t.data_type == onnx.TensorProto.FLOAT and np.prod(a.t.dims) >= MIN_ELEMENTS
            for a in n.attribute)]

    assert big_float_constants(source), "the basis is no longer a constant: this test needs another graph"
    store_weights_in_half(half)
    assert not big_float_constants(half)
    assert half.stat().st_size < 0.6 * source.stat().st_size
    image = {"image": np.random.default_rng(0).random((1, 3, 32, 32), np.float32)}
    full, halved = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, image) for p in (source, half))
    for a, b in zip(full, halved):
        np.testing.assert_allclose(b, a, atol=2e-2 * max(1.0, float(np.abs(a).max())))


def test_a_half_precision_landmark_store_reads_back(tmp_path, uv_models):
    """Stage 3 (or another landmark stage) can start from a shipped store: the importer skips the PSN the
    graph no longer runs and rounds ICT's basis as the store did."""
    from test_export import as_if_trained

    from training.export.from_store import checkpoint_from_store
    from training.export.onnx import export_model_store
    from training.models import AlbedoModel, TextureStream

    torch.manual_seed(8)
    cfg = landmark_config()
    geo = as_if_trained(GeometryStream(cfg.geometry, uv_models[64]))
    tex = as_if_trained(TextureStream(cfg.texture, AlbedoModel.placeholder(cfg.texture.albedo_dim, cfg.texture.uv_size)))
    report = export_model_store(geo, tex, cfg, tmp_path, "tiny-landmarks", "0.0.2", face_model=uv_models[64],
                                half_weights=True)
    ckpt = checkpoint_from_store(report.folder)  # raises above the import's parity limit
    assert max(ckpt["import_parity"].values()) <= 1e-4
    assert ckpt["config"] == cfg.as_dict()
