"""Tiny seeded networks exported through ONNX into a model store that the service's reader accepts."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from service.model_store import load_model_store
from training.export.onnx import GEOMETRY_OUTPUTS, TEXTURE_INPUTS, example_inputs, export_model_store
from training.models import AlbedoModel, GeometryStream, TextureStream, tiny


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, uv_models):
    torch.manual_seed(0)
    cfg = tiny()
    geo = GeometryStream(cfg.geometry)
    tex = TextureStream(cfg.texture, AlbedoModel.placeholder(cfg.texture.albedo_dim, cfg.texture.uv_size))
    root = tmp_path_factory.mktemp("store")
    report = export_model_store(geo, tex, cfg, root, "tiny", "0.0.1", face_model=uv_models[64])
    return cfg, geo, tex, report


def test_export_parity_within_1e4(tiny_store):
    _, _, _, report = tiny_store
    assert report.geometry_parity <= 1e-4 and report.texture_parity <= 1e-4


def test_written_store_validates_and_describes_the_graphs(tiny_store):
    cfg, _, _, report = tiny_store
    store = load_model_store(report.folder)
    assert store.uv_size == 64 and store.input_size == 32
    assert [o["name"] for o in store.onnx_outputs("geometry")] == list(GEOMETRY_OUTPUTS)
    assert [i["name"] for i in store.onnx_inputs("texture")] == list(TEXTURE_INPUTS)
    assert store.onnx_inputs("geometry")[0]["shape"] == ["batch", 3, 32, 32]
    assert store.manifest["camera"]["pose_fields"][0] == "yaw"
    assert store.topology["expression_basis"].shape == (53, store.manifest["topology"]["vertices"], 3)


def test_stored_geometry_graph_runs_with_another_batch_size(tiny_store):
    cfg, geo, _, report = tiny_store
    store = load_model_store(report.folder)
    session = ort.InferenceSession(str(store.onnx_path("geometry")), providers=["CPUExecutionProvider"])
    image = example_inputs(cfg, batch=3, seed=5)["image"]
    a_id = session.run(["a_id"], {"image": image.numpy()})[0]
    with torch.no_grad():
        want = geo.eval()(image).a_id.numpy()
    assert a_id.shape == (3, 3, 64, 64)
    np.testing.assert_allclose(a_id, want, atol=1e-4)


def test_synthetic_report_scores_a_stored_model(tiny_store, tmp_path):
    from training.evaluate.__main__ import main as evaluate_main

    evaluate_main(["synthetic", "--model", str(tiny_store[3].folder), "--size", "21", "--out", str(tmp_path)])
    text = (tmp_path / "synthetic.md").read_text()
    assert "| A_id + A_exp | " in text and "| neutral | anger |" in text.replace("prediction | ", "")
