"""int8 graphs: half-precision weights widened back exactly, and a quantized tiny store that the service
loads and whose outputs stay near the float store's, calibrated on the eval photos that carry landmarks."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper

from service.model_store import load_model_store
from service.settings import Settings
from service_fixtures import tiny_store
from test_export import folded_store  # noqa: F401  (a tiny store with trained-looking BatchNorm, as from_store reads back)
from training.evaluate.inprocess import InProcessModel
from training.export.half import HALF_SUFFIX, store_weights_in_half, widen_half_weights
from training.quantize import calibration_photos, quantize_store

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "eval" / "photos"


@pytest.fixture(scope="module")
def store(tmp_path_factory, kit) -> Path:
    return tiny_store(tmp_path_factory, kit) / "tiny" / "0.0.1"


def run(path: Path, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_widening_half_weights_computes_what_the_half_graph_did(store, tmp_path):
    source = store / "geometry.onnx"
    half = tmp_path / "half.onnx"
    shutil.copy(source, half)
    converted = store_weights_in_half(half)
    model = onnx.load(str(half))
    assert widen_half_weights(model) == converted > 0
    wide = tmp_path / "wide.onnx"
    onnx.save(model, str(wide))
    assert not [n for n in model.graph.node if n.op_type == "Cast" and n.input[0].endswith(HALF_SUFFIX)]
    assert all(init.data_type != TensorProto.FLOAT16 for init in model.graph.initializer)

    feeds = {"image": np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)}
    for a, b in zip(run(half, feeds), run(wide, feeds)):
        assert np.array_equal(a, b)
    # and each widened weight is the float32 original rounded to half
    original = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(source)).graph.initializer}
    widened = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for name, value in widened.items():
        if name in original and value.size >= 256:
            assert np.array_equal(value, original[name].astype(np.float16).astype(np.float32)), name


def test_store_weights_in_half_keeps_the_names_asked(store, tmp_path):
    path = tmp_path / "g.onnx"
    shutil.copy(store / "geometry.onnx", path)
    large = [i.name for i in onnx.load(str(path)).graph.initializer
             if i.data_type == TensorProto.FLOAT and np.prod(i.dims) >= 256]
    store_weights_in_half(path, keep=frozenset(large[:1]))
    names = {i.name: i.data_type for i in onnx.load(str(path)).graph.initializer}
    assert names[large[0]] == TensorProto.FLOAT
    assert all(names.get(n + HALF_SUFFIX) == TensorProto.FLOAT16 for n in large[1:])


@pytest.mark.skipif(not PHOTOS.is_dir(), reason="../shared/eval/photos is absent")
def test_quantized_store_loads_serves_and_stays_near_the_float_one(store, tmp_path):
    photos = calibration_photos(PHOTOS, 4, seed=0)
    assert len(photos) == 4 and all(p.landmarks.shape == (68, 2) for p in photos)
    folder, record = quantize_store(store, tmp_path, "0.0.1-int8", photos, PHOTOS.name)

    loaded = load_model_store(folder)  # hashes and topology checked as the service checks them
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["evaluation"]["quantization"]["source"] == "tiny 0.0.1"
    assert record["calibration_faces"] == record["held_out_faces"] == 2
    assert any("/features.0/" in name for name in record["float_nodes"]["geometry"])

    for part in ("geometry", "texture"):
        graph = onnx.load(str(loaded.onnx_path(part))).graph
        weights = {i.name: i.data_type for i in graph.initializer}
        quantized_convs = [n for n in graph.node
                           if n.op_type == "Conv" and n.name not in record["float_nodes"][part]]
        assert quantized_convs
        for conv in quantized_convs:  # each reads an int8 weight through a DequantizeLinear
            producer = next(n for n in graph.node if conv.input[1] in n.output)
            assert producer.op_type == "DequantizeLinear" and weights[producer.input[0]] == TensorProto.INT8
        for output, error in record["held_out_error"][part].items():
            assert error["mean_abs"] <= 0.05 * error["mean_abs_value"] + 1e-6, (part, output, error)

    # The graphs alone: the tiny untrained store's fitted p_t (service.engine.albedo_fit) swings to its
    # bound from face to face, far beyond what 2 calibration faces span.
    float_model = InProcessModel(store, Settings(mirror_average=False, albedo_fit=False))
    int8_model = InProcessModel(folder, Settings(mirror_average=False, albedo_fit=False))
    photo = photos[1]
    a, b = float_model.reconstruct(photo.image, photo.box), int8_model.reconstruct(photo.image, photo.box)
    assert np.abs(a.albedo - b.albedo).mean() < 0.02
    assert np.abs(a.geometry.landmarks_photo - b.geometry.landmarks_photo).mean() < 1.0  # pixels


@pytest.fixture(scope="module")
def quantized_folded(folded_store, tmp_path_factory) -> Path:  # noqa: F811
    """The tiny store with trained-looking BatchNorm (test_export), quantized on 4 eval photos."""
    if not PHOTOS.is_dir():
        pytest.skip("../shared/eval/photos is absent")
    folder, _ = quantize_store(folded_store[3], tmp_path_factory.mktemp("quantized"), "0.0.2-int8",
                               calibration_photos(PHOTOS, 4, seed=0), PHOTOS.name)
    return folder


def test_an_int8_store_reads_back_into_pytorch(quantized_folded, folded_store):  # noqa: F811
    """Its weights come back as the float values the graph's DequantizeLinear nodes compute: the imported
    network computes the dequantized graph exactly, and its weights are the original's to int8 steps."""
    import torch

    from training.export.from_store import checkpoint_from_store

    ckpt = checkpoint_from_store(quantized_folded)
    assert ckpt["int8_weights"] == ["geometry", "texture"]
    assert max(ckpt["import_parity"].values()) <= 1e-4
    original = checkpoint_from_store(folded_store[3])
    assert original["int8_weights"] == []
    for stream in ("geometry_model", "texture_model"):
        moved = [k for k, v in ckpt[stream].items() if v.is_floating_point() and v.numel() > 64
                 and not torch.equal(v, original[stream][k])]
        assert moved, stream  # the quantized weights really are rounded...
        for key in moved:  # ...within one int8 step of the largest in their tensor (per channel: less)
            step = original[stream][key].abs().max() / 127
            assert (ckpt[stream][key] - original[stream][key]).abs().max() <= step * 0.51 + 1e-6, (stream, key)


def test_the_service_runs_an_int8_store_in_float(quantized_folded):
    """FACERECON_FLOAT_GRAPHS: the same store served with its graphs dequantized; the metadata says so,
    and the reconstruction stays near the int8 one."""
    from service.app import create_app
    from service_fixtures import ready_client

    root = quantized_folded.parents[1]
    photo = calibration_photos(PHOTOS, 4, seed=0)[1]
    fixed = dict(mirror_average=False, albedo_fit=False)
    as_stored = InProcessModel(quantized_folded, Settings(**fixed))
    floated = InProcessModel(quantized_folded, Settings(float_graphs=True, **fixed))
    assert floated.model.float_graphs and not as_stored.model.float_graphs
    a, b = as_stored.reconstruct(photo.image, photo.box), floated.reconstruct(photo.image, photo.box)
    assert not np.array_equal(a.albedo, b.albedo)
    assert np.abs(a.albedo - b.albedo).mean() < 0.02
    assert np.abs(a.geometry.landmarks_photo - b.geometry.landmarks_photo).mean() < 1.0  # pixels

    settings = Settings(model_store=root, float_graphs=True, job_store=str(root / "jobs.db"))
    with ready_client(create_app(settings)) as client:
        meta = client.get(f"/v2/models/{quantized_folded.parent.name}").json()
        assert meta["float_graphs"] is True and meta["versions"] == ["0.0.2-int8"]
        path = next(p for p in PHOTOS.glob(f"{photo.name}.*") if p.suffix != ".pts")
        response = client.post("/v1/reconstruct?format=json", files={"image": (path.name, path.read_bytes())})
        assert response.status_code == 200, response.text
