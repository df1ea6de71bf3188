"""The service with a linear-basis model store: blendshape weights are the network's own (bounded)
coefficients, not a least-squares fit to A_exp."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from service.app import create_app
from service.settings import Settings
from service_fixtures import photo_bytes, ready_client


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


def test_blendshapes_are_the_networks_coefficients(weights_and_store, tmp_path):
    weights, root = weights_and_store
    app = create_app(Settings(model_store=root, default_texture_size=128, job_store=str(tmp_path / "jobs.db")))
    with ready_client(app) as client:
        response = client.post("/v1/reconstruct", files={"image": ("face.jpg", photo_bytes(), "image/jpeg")},
                               data={"format": "json"})
    assert response.status_code == 200, response.text
    (face,) = response.json()["faces"]
    got = np.array(list(face["blendshapes"].values()))  # in the rig's order
    np.testing.assert_allclose(got, weights, atol=1e-5)
