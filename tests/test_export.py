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


def as_if_trained(net: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Random normalisation statistics and affine terms, and scalar parameters moved off their initial
    values, as a trained network has: folding BatchNorm is then not the identity, and no two parameters
    or constants are equal (the exporter, and the quantizer's optimiser, would merge them)."""
    g = torch.Generator().manual_seed(seed)
    for p in net.parameters():
        if p.dim() == 0:  # e.g. SSRPM's kappa, whose initial 0.01 a graph constant shares
            p.data.mul_(1.0 + torch.rand((), generator=g))
    for m in net.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d)) and m.affine:
            n = m.num_features
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net


@pytest.fixture(scope="module")
def folded_store(tmp_path_factory, uv_models):
    torch.manual_seed(2)
    cfg = tiny()
    geo = as_if_trained(GeometryStream(cfg.geometry))
    tex = as_if_trained(TextureStream(cfg.texture, AlbedoModel.placeholder(cfg.texture.albedo_dim, cfg.texture.uv_size)))
    report = export_model_store(geo, tex, cfg, tmp_path_factory.mktemp("folded"), "tiny", "0.0.2", face_model=uv_models[64])
    return cfg, geo.eval(), tex.eval(), report.folder


def test_a_store_reads_back_into_pytorch_with_its_batchnorm_folded(folded_store):
    """The importer gives back networks that compute what the exported ones did (the BatchNorm
    statistics now folded into the convolutions), in training mode too once BatchNorm is frozen,
    with gradients reaching every parameter."""
    from training.export.from_store import FOLDED, FrozenBatchNorm2d, checkpoint_from_store, freeze_batchnorm

    cfg, geo, tex, folder = folded_store
    ckpt = checkpoint_from_store(folder)
    assert ckpt["batchnorm"] == FOLDED and ckpt["config"] == cfg.as_dict()
    assert max(ckpt["import_parity"].values()) <= 1e-4
    inputs = example_inputs(cfg, seed=5)
    imported = freeze_batchnorm(GeometryStream(cfg.geometry))
    imported.load_state_dict(ckpt["geometry_model"])
    assert any(isinstance(m, FrozenBatchNorm2d) for m in imported.modules())
    stats = {k: v.clone() for k, v in imported.state_dict().items() if "running" in k}
    imported.train()
    out, want = imported(inputs["image"]), geo(inputs["image"])
    for name in GEOMETRY_OUTPUTS:
        torch.testing.assert_close(getattr(out, name), getattr(want, name), atol=1e-4, rtol=0)
    # the folded weights really are new: the original's BatchNorm was not the identity
    assert not torch.allclose(imported.encoder.features[0][0].weight, geo.encoder.features[0][0].weight)
    sum(getattr(out, name).square().mean() for name in GEOMETRY_OUTPUTS).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in imported.parameters())
    assert all(torch.equal(v, imported.state_dict()[k]) for k, v in stats.items())  # statistics frozen
    texture = TextureStream(cfg.texture, AlbedoModel.placeholder(cfg.texture.albedo_dim, cfg.texture.uv_size))
    texture.load_state_dict(ckpt["texture_model"])
    torch.testing.assert_close(texture.albedo.basis, tex.albedo.basis)  # stored reshaped for a MatMul
    with torch.no_grad():
        got = texture.eval()(*(inputs[n] for n in TEXTURE_INPUTS))[0]
        torch.testing.assert_close(got, tex(*(inputs[n] for n in TEXTURE_INPUTS))[0], atol=1e-4, rtol=0)


def test_a_store_with_position_pooling_reads_back(tmp_path, uv_models):
    from dataclasses import replace

    from training.export.from_store import checkpoint_from_store

    cfg = tiny()
    cfg = replace(cfg, geometry=replace(cfg.geometry, position_pooling=True))
    torch.manual_seed(4)
    geo = as_if_trained(GeometryStream(cfg.geometry))
    torch.nn.init.normal_(geo.encoder.locate.weight, std=0.1)  # as trained: not the zeros it starts from
    tex = as_if_trained(TextureStream(cfg.texture, AlbedoModel.placeholder(cfg.texture.albedo_dim, cfg.texture.uv_size)))
    report = export_model_store(geo, tex, cfg, tmp_path, "tiny", "0.0.5", face_model=uv_models[64])
    assert report.geometry_parity <= 1e-4
    ckpt = checkpoint_from_store(report.folder)  # raises above 1e-4 parity
    assert ckpt["config"]["geometry"]["position_pooling"] is True
    torch.testing.assert_close(ckpt["geometry_model"]["encoder.locate.weight"], geo.encoder.locate.weight.detach())


def test_a_linear_basis_network_exports_its_coefficients_and_reads_back(tmp_path, uv_models):
    """geometry.onnx of a linear-basis network keeps a_id/a_exp (the contract) and adds id_coeffs and
    exp_weights; a_id/a_exp equal the coefficients decoded through ICT plus the residual; the store
    reads back into PyTorch at the parity limit."""
    from dataclasses import replace

    from training.export.from_store import checkpoint_from_store
    from training.export.onnx import COEFFICIENT_OUTPUTS
    from training.models import NetworkConfig

    torch.manual_seed(4)
    cfg = replace(tiny(), geometry=replace(tiny().geometry, linear_basis=True))
    geo = as_if_trained(GeometryStream(cfg.geometry, uv_models[64]))
    with torch.no_grad():  # as after training: the layers that start at zero have moved (the exporter merges equal tensors)
        for p in geo.parameters():
            if p.abs().max() == 0:
                p.normal_(0, 0.01)
    tex = as_if_trained(TextureStream(cfg.texture, AlbedoModel.placeholder(cfg.texture.albedo_dim, cfg.texture.uv_size)))
    report = export_model_store(geo, tex, cfg, tmp_path, "tiny", "0.0.9", face_model=uv_models[64])
    assert report.geometry_parity <= 1e-4
    store = load_model_store(report.folder)
    assert [o["name"] for o in store.onnx_outputs("geometry")] == [*GEOMETRY_OUTPUTS, *COEFFICIENT_OUTPUTS]
    session = ort.InferenceSession(str(store.onnx_path("geometry")), providers=["CPUExecutionProvider"])
    image = example_inputs(cfg, batch=3, seed=9)["image"]
    a_id, a_exp, id_coeffs, exp_weights = session.run(["a_id", "a_exp", "id_coeffs", "exp_weights"], {"image": image.numpy()})
    assert id_coeffs.shape == (3, 100) and exp_weights.shape == (3, 53) and 0 <= exp_weights.min() <= exp_weights.max() <= 1
    with torch.no_grad():
        residual = geo.eval()(image).id_residual.numpy()
    np.testing.assert_allclose(a_id, uv_models[64].identity_map(id_coeffs).transpose(0, 3, 1, 2) + residual, atol=1e-4)
    ckpt = checkpoint_from_store(report.folder)
    assert NetworkConfig.from_dict(ckpt["config"]).geometry.linear_basis and ckpt["import_parity"]["geometry"] <= 1e-4


def test_half_precision_weights_halve_the_store_and_read_back(tmp_path, uv_models):
    """--half-weights stores the large weights in float16 behind casts: the files shrink by about half,
    the served graphs stay float32 in and out and within fp16 rounding of the network (the parity the
    manifest records), and the store reads back (with an appearance head) to the stored weights exactly."""
    from dataclasses import replace

    import onnx

    from training.export.from_store import checkpoint_from_store

    cfg = tiny()
    cfg = replace(cfg, geometry=replace(cfg.geometry, appearance_head=True))
    torch.manual_seed(6)
    geo = as_if_trained(GeometryStream(cfg.geometry))
    tex = as_if_trained(TextureStream(cfg.texture, AlbedoModel.placeholder(cfg.texture.albedo_dim, cfg.texture.uv_size)))
    full = export_model_store(geo, tex, cfg, tmp_path, "tiny", "0.0.6", face_model=uv_models[64])
    half = export_model_store(geo, tex, cfg, tmp_path, "tiny", "0.0.7", face_model=uv_models[64], half_weights=True)
    for graph in ("geometry", "texture"):
        full_size, half_size = ((r.folder / f"{graph}.onnx").stat().st_size for r in (full, half))
        assert half_size < 0.6 * full_size, graph
        stored = onnx.load(str(half.folder / f"{graph}.onnx"))
        assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in stored.graph.initializer)
        assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in stored.graph.output)
    assert 1e-6 < half.geometry_parity < 1e-2 and 1e-6 < half.texture_parity < 1e-2
    assert load_model_store(half.folder).manifest["evaluation"]["onnx_parity_max_abs"]["texture"] == half.texture_parity
    ckpt = checkpoint_from_store(half.folder)  # raises above its parity limit
    assert max(ckpt["import_parity"].values()) <= 1e-5
    weight = geo.appearance.net[2].weight.detach()
    torch.testing.assert_close(ckpt["geometry_model"]["appearance.net.2.weight"], weight.half().float(), atol=0, rtol=0)
