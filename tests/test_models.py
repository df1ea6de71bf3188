"""The dual-stream network's modules on tiny seeded inputs: shapes, gradients, SSRPM/SRSM behaviour."""

from dataclasses import replace

import pytest
import torch

from training.models import (
    SRSM,
    AlbedoModel,
    GeometryStream,
    PatchDiscriminator,
    TextureStream,
    cpu_small,
    paper,
    region_stats,
    tiny,
)


def texture_inputs(cfg, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    s, h = cfg.uv_size, cfg.image_size
    return (
        torch.randn(batch, cfg.albedo_dim, generator=g),
        torch.rand(batch, 3, h, h, generator=g),
        torch.rand(batch, cfg.landmarks, h, h, generator=g),
        torch.rand(batch, s, s, 2, generator=g) * 2 - 1,
        (torch.rand(batch, 1, s, s, generator=g) > 0.3).float(),
    )


def test_geometry_stream_shapes_and_gradients():
    torch.manual_seed(0)
    cfg = tiny().geometry
    net = GeometryStream(cfg)
    out = net(torch.rand(2, 3, cfg.image_size, cfg.image_size))
    assert out.a_id.shape == out.a_exp.shape == (2, 3, cfg.uv_size, cfg.uv_size)
    assert out.p_t.shape == (2, cfg.albedo_dim) and out.p_l.shape == (2, 27) and out.p_h.shape == (2, 6)
    assert out.a_id.abs().max() < 1
    (out.a_full.square().mean() + out.p_h.sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_position_moments_say_where_a_map_is_active():
    from training.models.geometry import position_moments

    x = torch.zeros(1, 2, 4, 8)
    x[0, 0, 1, 6] = 2.0  # row 1 of 4 (centre v = -0.25), column 6 of 8 (centre u = 0.625)
    x[0, 1] = 1.0  # even: centred
    torch.testing.assert_close(position_moments(x), torch.tensor([[2 * 0.625 / 32, 0.0, 2 * -0.25 / 32, 0.0]]))


def test_position_pooling_starts_as_the_network_without_it_and_learns():
    """A network grown by the encoder's position pooling computes exactly what it did, and the new
    layer gets gradients (it starts at zero)."""
    torch.manual_seed(0)
    cfg = tiny().geometry
    plain = GeometryStream(cfg).eval()
    grown = GeometryStream(replace(cfg, position_pooling=True))
    grown.load_state_dict(grown.state_dict() | plain.state_dict())
    image = torch.rand(2, 3, cfg.image_size, cfg.image_size)
    want, got = plain(image), grown.eval()(image)
    for name in ("a_id", "a_exp", "p_t", "p_l", "p_h"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), atol=0, rtol=0)
    got.p_h.square().sum().backward()
    assert grown.encoder.locate.weight.grad.abs().sum() > 0


def test_texture_stream_and_discriminator_shapes_and_gradients():
    torch.manual_seed(0)
    cfg = tiny().texture
    net = TextureStream(cfg, AlbedoModel.placeholder(cfg.albedo_dim, cfg.uv_size))
    albedo, linear, regions = net(*texture_inputs(cfg))
    assert albedo.shape == linear.shape == (2, 3, cfg.uv_size, cfg.uv_size)
    assert (albedo >= 0).all() and (albedo <= 1).all()
    assert regions.shape[1] == cfg.regions
    torch.testing.assert_close(regions.sum(1), torch.ones_like(regions[:, 0]))
    logits = PatchDiscriminator(cfg)(albedo)
    assert logits.shape[:2] == (2, 1)
    logits.mean().backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert grads["ssrpm.kappa"] is not None and torch.isfinite(grads["ssrpm.kappa"])
    assert all(g is not None for g in grads.values())


@pytest.mark.parametrize("regions", [8, 32])
def test_texture_stream_takes_any_number_of_regions(regions):
    cfg = tiny(regions).texture
    _, _, soft = TextureStream(cfg, AlbedoModel.placeholder(cfg.albedo_dim, cfg.uv_size))(*texture_inputs(cfg))
    assert soft.shape[1] == regions


def test_plain_encoder_decoder_ablation_starts_at_the_linear_albedo_and_uses_every_input(tmp_path):
    """The plain variant (no skips, SSRPM or SRSM) keeps the texture graph's five inputs, so the service
    runs it unchanged; its output starts equal to I_ua and learns through every input, heatmaps included."""
    import numpy as np
    import onnxruntime as ort

    from training.export.onnx import export_texture

    torch.manual_seed(0)
    cfg = replace(tiny().texture, plain=True)
    net = TextureStream(cfg, AlbedoModel.placeholder(cfg.albedo_dim, cfg.uv_size))
    assert not hasattr(net, "ssrpm") and not hasattr(net, "srsm")
    inputs = list(texture_inputs(cfg))
    albedo, linear, regions = net(*inputs)
    assert regions is None
    torch.testing.assert_close(albedo, linear.clamp(0.01, 0.99))
    torch.nn.init.normal_(net.out.weight, std=0.1)
    inputs[2].requires_grad_(True)
    net(*inputs)[0].square().mean().backward()
    assert inputs[2].grad.abs().sum() > 0 and net.content[0][0].weight.grad.abs().sum() > 0

    net.eval()
    names = ["p_t", "image", "heatmaps", "uv_grid", "uv_visibility"]
    feeds = dict(zip(names, (t.detach() for t in inputs)))
    export_texture(net, tmp_path / "texture.onnx", feeds)
    session = ort.InferenceSession(str(tmp_path / "texture.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == names
    got = session.run(["albedo"], {k: v.numpy() for k, v in feeds.items()})[0]
    np.testing.assert_allclose(got, net(*feeds.values())[0].detach().numpy(), atol=1e-4)


@pytest.mark.parametrize("preset", [cpu_small, paper])
def test_presets_have_consistent_shapes(preset):
    cfg = preset()
    assert cfg.geometry.uv_size == cfg.texture.uv_size
    assert cfg.geometry.albedo_dim == cfg.texture.albedo_dim
    assert max(cfg.texture.srsm_levels) < len(cfg.texture.widths)


def test_cpu_small_runs_forward_and_backward():
    torch.manual_seed(0)
    cfg = cpu_small()
    geo = GeometryStream(cfg.geometry)
    tex = TextureStream(cfg.texture, AlbedoModel.placeholder(cfg.texture.albedo_dim, cfg.texture.uv_size))
    out = geo(torch.rand(1, 3, 128, 128))
    albedo, _, _ = tex(out.p_t, *texture_inputs(cfg.texture, batch=1)[1:])
    (out.a_full.mean() + albedo.mean()).backward()
    assert out.a_id.shape == (1, 3, 128, 128) and albedo.shape == (1, 3, 128, 128)


def test_region_stats_match_hard_masks():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 8, 8)
    masks = torch.zeros(1, 2, 8, 8)
    masks[:, 0, :, :4] = 1
    masks[:, 1, :, 4:] = 1
    mean, std = region_stats(x, masks)
    left, right = x[0, :, :, :4].reshape(3, -1), x[0, :, :, 4:].reshape(3, -1)
    torch.testing.assert_close(mean[0, 0], left.mean(1))
    torch.testing.assert_close(mean[0, 1], right.mean(1))
    torch.testing.assert_close(std[0, 1], right.std(1, unbiased=False), atol=1e-4, rtol=1e-4)


def test_srsm_gives_each_region_the_style_statistics():
    """With zeroed style convs, every region comes out normalised (mean 0, std 1) per channel."""
    torch.manual_seed(0)
    srsm = SRSM(4)
    for conv in (srsm.to_alpha, srsm.to_beta):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    x_u = torch.randn(1, 4, 8, 8) * 3 + 5
    regions = torch.zeros(1, 2, 8, 8)
    regions[:, 0, :4] = 1
    regions[:, 1, 4:] = 1
    out = srsm(x_u, torch.randn(1, 4, 8, 8), regions, torch.ones(1, 1, 8, 8))
    mean, std = region_stats(out, regions)
    torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-4, rtol=0)
    torch.testing.assert_close(std, torch.ones_like(std), atol=1e-3, rtol=0)
    # A style bias then moves each region's mean to beta.
    torch.nn.init.constant_(srsm.to_beta.bias, 0.7)
    out = srsm(x_u, torch.randn(1, 4, 8, 8), regions, torch.ones(1, 1, 8, 8))
    torch.testing.assert_close(region_stats(out, regions)[0], torch.full((1, 2, 4), 0.7), atol=1e-4, rtol=0)


def test_albedo_model_is_linear_in_p_t():
    model = AlbedoModel.placeholder(5, 16)
    p = torch.randn(2, 5)
    zero = model(torch.zeros(1, 5))
    torch.testing.assert_close(zero[0], model.mean)
    torch.testing.assert_close(model(2 * p) - zero, 2 * (model(p) - zero), atol=1e-5, rtol=0)


def test_albedo_model_loads_a_built_model(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "a.npz", mean=rng.random((3, 8, 8)).astype(np.float32),
             basis=rng.random((5, 3, 8, 8)).astype(np.float32), std=np.linspace(1, 0.1, 5).astype(np.float32))
    model = AlbedoModel.load(tmp_path / "a.npz", k=3)
    assert model.basis.shape == (3, 3, 8, 8)
    torch.testing.assert_close(model(torch.zeros(1, 3))[0], model.mean)
    with pytest.raises(ValueError, match="holds 5 albedo components"):
        AlbedoModel.load(tmp_path / "a.npz", k=6)


@pytest.mark.parametrize("size", [64, 128])
def test_linear_basis_decodes_coefficients_as_the_face_model_does(uv_models, size):
    """The stream's basis (valid pixels, gathered into the map) equals ICT's own vertices sampled on
    the UV layout (``identity_map`` / ``expression_map``, through the mesh), at the tiny and the real S."""
    import numpy as np

    from training.models.basis import LinearFaceBasis

    model = uv_models[size]
    basis = LinearFaceBasis(model)
    rng = np.random.default_rng(size)
    id_coeffs = rng.standard_normal((3, 100)).astype(np.float32) * 2
    exp_weights = rng.uniform(0, 1, (3, 53)).astype(np.float32)
    a_id, a_exp = basis(torch.from_numpy(id_coeffs), torch.from_numpy(exp_weights))
    np.testing.assert_allclose(a_id.numpy(), model.identity_map(id_coeffs).transpose(0, 3, 1, 2), atol=1e-5)
    np.testing.assert_allclose(a_exp.numpy(), model.expression_map(exp_weights).transpose(0, 3, 1, 2), atol=1e-5)
    assert a_id[:, :, ~torch.from_numpy(model.layout.mask)].abs().max() == 0


def test_linear_basis_stream_starts_as_the_mean_face_and_learns_coefficients(uv_models):
    """With ``linear_basis`` the first prediction is ICT's mean face with blendshape weights near zero
    (the decoders' residual and the identity coefficients start at zero); a loss on A reaches every
    parameter, the coefficient head's first."""
    import numpy as np

    from training.models.geometry import EXPRESSION_BIAS_INIT

    torch.manual_seed(0)
    cfg = replace(tiny().geometry, linear_basis=True)
    net = GeometryStream(cfg, uv_models[64])
    out = net(torch.rand(2, 3, cfg.image_size, cfg.image_size))
    assert out.id_coeffs.shape == (2, 100) and out.exp_weights.shape == (2, 53)
    assert out.id_coeffs.abs().max() == 0 and out.id_residual.abs().max() == 0 and out.exp_residual.abs().max() == 0
    torch.testing.assert_close(out.exp_weights, torch.full((2, 53), float(torch.sigmoid(torch.tensor(EXPRESSION_BIAS_INIT)))))
    mean_face = torch.from_numpy(uv_models[64].identity_map().transpose(2, 0, 1).copy())
    expression = torch.from_numpy(uv_models[64].expression_map(out.exp_weights[0].detach().numpy()).transpose(2, 0, 1).copy())
    torch.testing.assert_close(out.a_id[0], mean_face, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.a_exp[0], expression, atol=1e-5, rtol=0)
    (out.a_full - 0.01).square().mean().backward()
    assert net.coefficients.net[-1].weight.grad.abs().sum() > 0
    assert net.identity_decoder.out.weight.grad.abs().sum() > 0
    assert not any(k.startswith("basis.") for k in net.state_dict()), "the basis is the face model's, not a checkpoint's"
    assert np.isfinite(net.coefficients.net[0].weight.grad.numpy()).all()
