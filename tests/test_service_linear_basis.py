"""The service with a linear-basis model store: blendshape weights are the bounded joint fit's where the
store has ICT taps, the network's own (bounded) coefficients where it has none."""

from dataclasses import replace

import numpy as np
import pytest
import torch



@pytest.fixture(scope="module")
def weights_and_store(tmp_path_factory, uv_models):
    from training.export.onnx import export_model_store
    from training.models import AlbedoModel, GeometryStream, TextureStream, tiny

    torch.manual_seed(6)
    cfg = replace(tiny(), geometry=replace(tiny().geometry, linear_basis=True))
    geo = GeometryStream(cfg.geometry, uv_models[64])
    weights = np.random.default_rng(6).uniform(0.05, 0.95, 53)
    with torch.no_grad():
        head = geo.coefficients.net[-1]
        head.weight.zero_()  # the same coefficients for every photo, so the test knows them
        head.bias[:100] = torch.linspace(-1, 1, 100)
        head.bias[100:] = torch.from_numpy(np.log(weights / (1 - weights)))
        for decoder in (geo.identity_decoder, geo.expression_decoder):  # a residual, as after training
            decoder.out.weight.normal_(0, 0.05)
            decoder.out.bias.normal_(0, 0.05)
    tex = TextureStream(cfg.texture, AlbedoModel.placeholder(cfg.texture.albedo_dim, cfg.texture.uv_size))
    root = tmp_path_factory.mktemp("linear_store")
    export_model_store(geo, tex, cfg, root, "tiny-linear", "0.0.1", face_model=uv_models[64])
    return weights, root


def test_blendshapes_are_fitted_and_the_networks_only_without_ict_taps(weights_and_store):
    """The service reports the bounded joint fit's weights whenever the store has ICT taps (a network
    that learns its coefficients through the shape does not learn which blendshapes are meant), and
    the network's own bounded coefficients only where it has none."""
    from dataclasses import replace as replaced

    import onnxruntime as ort

    from service.engine.align import Crop
    from service.engine.asm_decode import decode_asm
    from service.engine.topology import MeshTopology
    from service.model_store import load_model_store

    weights, root = weights_and_store
    store = load_model_store(root / "tiny-linear" / "0.0.1")
    topo = MeshTopology.from_store(store)
    assert topo.head is not None
    session = ort.InferenceSession(str(store.onnx_path("geometry")), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).random((1, 3, 32, 32), np.float32)
    outputs = {o.name: v[0] for o, v in zip(session.get_outputs(), session.run(None, {"image": image}))}
    crop = Crop(image=image[0], origin=(0.0, 0.0), step=1.0)
    fitted = decode_asm(outputs, crop, topo).blendshapes
    a_full = outputs["a_id"].astype(np.float64) + outputs["a_exp"].astype(np.float64)
    np.testing.assert_allclose(fitted, topo.head.fit(a_full).expression)
    own = decode_asm(outputs, crop, replaced(topo, head=None)).blendshapes
    np.testing.assert_allclose(own, weights, atol=1e-5)
