"""Stage 1 training smoke test: two steps, a checkpoint, and a resume that continues from it."""

import csv
from pathlib import Path

import pytest
import torch

from test_export import folded_store  # noqa: F401  (a tiny store with trained-looking BatchNorm, as from_store reads back)
from training.models import tiny
from training.stages.geometry import StageSettings, train_geometry


def test_two_steps_checkpoint_and_resume(tmp_path, kit):
    cfg = tiny()
    settings = StageSettings(steps=2, batch_size=2, checkpoint_every=1, validate_every=2, validation_batches=1, log_every=1)
    ckpt = train_geometry(cfg, tmp_path, settings)
    state = torch.load(ckpt, weights_only=False)
    assert state["step"] == 2 and state["config"] == cfg.as_dict() and "optimizer" in state
    train_geometry(cfg, tmp_path, StageSettings(**{**vars(settings), "steps": 3}))
    assert torch.load(ckpt, weights_only=False)["step"] == 3
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(float(r["total"]) > 0 for r in rows) and rows[1]["val_landmark_nme"] != ""


def test_export_cli_writes_a_store_from_a_checkpoint(tmp_path, kit):
    from service.model_store import load_model_store
    from training.export.__main__ import main as export_main

    ckpt = train_geometry(tiny(), tmp_path / "run", StageSettings(steps=1, batch_size=2, validate_every=10))
    export_main(["--geometry", str(ckpt), "--untrained-texture", "--root", str(tmp_path / "store"),
                 "--name", "tiny", "--version", "0.0.1"])
    store = load_model_store(tmp_path / "store" / "tiny" / "0.0.1")
    assert store.manifest["evaluation"]["trained"]["texture"].startswith("untrained")
    assert store.manifest["config"]["name"] == "tiny"


PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "helen-afw-68pt"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, kit) -> Path:
    """24 real photos fitted at S = 64 (the tiny config's UV size)."""
    from training.fitting.__main__ import main as fit_main

    if not PHOTOS.is_dir():
        pytest.skip(f"fitting photos not found at {PHOTOS}")
    out = tmp_path_factory.mktemp("fitted")
    fit_main(["--data", str(PHOTOS), "--out", str(out), "--limit", "24", "--size", "64"])
    return out


def test_training_with_fitted_real_photos(tmp_path, fitted):
    """Stage 1 mixes fitted real photos in and scores the held-out ones."""
    import numpy as np

    from training.fitting.crops import FittedPhotos, is_validation

    photos = PHOTOS
    train_set = FittedPhotos(fitted, photos, 32)
    held_out = FittedPhotos(fitted, photos, 32, split="validation")
    assert len(train_set) + len(held_out) == 24 and not any(is_validation(p.stem) for p in train_set.paths)
    batch = train_set.batch([0, 1], np.random.default_rng(0))
    assert batch.image.shape == (2, 3, 32, 32) and batch.a_id.shape == (2, 3, 64, 64)

    settings = StageSettings(steps=2, batch_size=2, validate_every=2, validation_batches=1, log_every=1, real_batch_size=2)
    train_geometry(tiny(), tmp_path / "run", settings, fitted=fitted, photos=photos)
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert rows[-1]["val_landmark_nme"] != ""
    assert (rows[-1]["val_real_landmark_nme"] != "") == (len(held_out) > 0)


def test_stage_one_with_profiled_faces_trains_the_same_with_workers(tmp_path, fitted):
    """Workers make each step's synthetic, fitted and profiled faces ahead; the weights come out
    exactly as when the loop makes them inline."""
    settings = StageSettings(steps=3, batch_size=2, validate_every=10, real_batch_size=2, profiled_batch_size=2)
    inline = train_geometry(tiny(), tmp_path / "inline", settings, fitted=fitted, photos=PHOTOS)
    workers = train_geometry(tiny(), tmp_path / "workers", StageSettings(**{**vars(settings), "workers": 2}),
                             fitted=fitted, photos=PHOTOS)
    a, b = (torch.load(p, weights_only=False)["model"] for p in (inline, workers))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    before = torch.load(train_geometry(tiny(), tmp_path / "plain", StageSettings(**{**vars(settings), "profiled_batch_size": 0}),
                                       fitted=fitted, photos=PHOTOS), weights_only=False)["model"]
    assert not all(torch.equal(a[k], before[k]) for k in a)  # the profiled faces did reach the loss


def test_a_time_limit_stops_the_stage_with_a_checkpoint(tmp_path, kit):
    settings = StageSettings(steps=1000, batch_size=2, validate_every=1000, minutes=1e-9)
    state = torch.load(train_geometry(tiny(), tmp_path, settings), weights_only=False)
    assert state["step"] == 1


def _albedo_npz(path, k: int, size: int):
    import numpy as np

    from training.models import AlbedoModel

    model = AlbedoModel.placeholder(k, size)
    np.savez(path, mean=model.mean.numpy(), basis=model.basis.numpy(), std=model.std.numpy())
    return path


def test_stage_two_trains_resumes_and_exports(tmp_path, kit):
    """Stage 2 on a tiny config: albedo drawn from an albedo model, L_con on the stage-1 encoder's
    features, a resume that continues, and an export that carries the trained texture stream."""
    from service.model_store import load_model_store
    from training.export.__main__ import main as export_main
    from training.stages.texture import TextureStageSettings, train_texture

    cfg = tiny()
    albedo = _albedo_npz(tmp_path / "albedo.npz", cfg.texture.albedo_dim, cfg.texture.uv_size)
    geometry = train_geometry(cfg, tmp_path / "geometry", StageSettings(steps=1, batch_size=2, validate_every=10),
                              albedo=albedo)
    settings = TextureStageSettings(steps=2, batch_size=2, checkpoint_every=1, validate_every=2, validation_batches=1, log_every=1)
    ckpt = train_texture(cfg, tmp_path / "texture", settings, albedo, geometry)
    state = torch.load(ckpt, weights_only=False)
    assert state["step"] == 2 and state["stage"] == "texture" and "optimizer_discriminator" in state
    train_texture(cfg, tmp_path / "texture", TextureStageSettings(**{**vars(settings), "steps": 3}), albedo, geometry)
    rows = list(csv.DictReader((tmp_path / "texture" / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    best = torch.load(tmp_path / "texture" / "best.pt", weights_only=False)
    assert best["step"] == 2 and best["val_mae"] == float(rows[1]["val_mae"])  # the one validation so far
    assert all(float(r["contextual"]) >= 0 for r in rows) and 0 < float(rows[1]["val_mae"]) < 1
    export_main(["--geometry", str(geometry), "--texture", str(ckpt), "--root", str(tmp_path / "store"),
                 "--name", "tiny", "--version", "0.0.2"])
    store = load_model_store(tmp_path / "store" / "tiny" / "0.0.2")
    assert store.manifest["evaluation"]["trained"]["texture"] == "texture stage, 3 steps"


def test_texture_inputs_match_what_the_service_computes(kit, uv_models):
    """The training-side heatmaps equal the service's (a file contract, so they are checked here)."""
    import numpy as np

    from service.engine.unwrap import heatmaps
    from training.stages.common import landmark_heatmaps

    marks = np.random.default_rng(0).uniform(0, 32, (68, 2)).astype(np.float32)
    torch_maps = landmark_heatmaps(torch.from_numpy(marks)[None], 32)[0].numpy()
    np.testing.assert_allclose(torch_maps, heatmaps(marks, 32), atol=1e-6)


def test_stage_three_fine_tunes_both_streams_through_the_renderer(tmp_path, fitted):
    """Stage 3 starts from stage-1 and stage-2 checkpoints, moves both streams, resumes, and exports."""
    from service.model_store import load_model_store
    from training.export.__main__ import main as export_main
    from training.train import main as train_main

    cfg = tiny()
    albedo = _albedo_npz(tmp_path / "albedo.npz", cfg.texture.albedo_dim, cfg.texture.uv_size)
    common = ["--config", "tiny", "--batch-size", "2", "--albedo", str(albedo), "--fitted", str(fitted),
              "--photos", str(PHOTOS), "--validate-every", "2", "--checkpoint-every", "1", "--profiled", "2"]
    utkface = PHOTOS.parent / "utkface-aligned-200"
    if utkface.is_dir():  # half of every stage-3 batch from UTKFace, landmarks by dlib
        from training.photos.__main__ import main as photos_main

        photos_main(["--photos", str(utkface), "--out", str(tmp_path / "utk.npz"), "--limit", "4"])
        common += ["--extra-landmarks", str(tmp_path / "utk.npz"), "--extra-photos", str(utkface)]
    train_main(["all", "--out", str(tmp_path / "run"), "--stage-steps", "1,1,2", "--workers", "2", *common])
    ckpt = tmp_path / "run" / "finetune" / "checkpoint.pt"
    before = torch.load(tmp_path / "run" / "texture" / "checkpoint.pt", weights_only=False)["model"]
    state = torch.load(ckpt, weights_only=False)
    assert state["stage"] == "finetune" and state["step"] == 2
    moved = [k for k, v in state["texture_model"].items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert moved and not any(k.startswith("albedo.") for k in moved)  # the albedo model stays a constant
    rows = list(csv.DictReader((tmp_path / "run" / "finetune" / "log.csv").open()))
    assert float(rows[0]["pixel"]) > 0 and float(rows[0]["landmark"]) > 0 and int(rows[-1]["step"]) == 2
    assert "val_profiled_landmark_nme" in rows[0]
    train_main(["finetune", "--out", str(tmp_path / "run" / "finetune"), "--steps", "3", *common, "--no-jaw-marching",
                "--roll-degrees", "0", "--no-mirror-photos", "--geometry-from", "unused", "--texture-from", "unused"])
    assert torch.load(ckpt, weights_only=False)["step"] == 3
    export_main(["--geometry", str(ckpt), "--texture", str(ckpt), "--root", str(tmp_path / "store"),
                 "--name", "tiny", "--version", "0.0.3"])
    trained = load_model_store(tmp_path / "store" / "tiny" / "0.0.3").manifest["evaluation"]["trained"]
    assert trained == {"geometry": "finetune stage, 3 steps", "texture": "finetune stage, 3 steps"}


def test_geometry_loss_ablations_switch_terms_off(uv_models):
    """Table III's presets: "asm" is L_p plus a plain masked MSE on A_id (no W); each later preset adds
    one term, and "full" is the paper's L_gs."""
    from training import losses
    from training.synth import SynthFaceGenerator, SynthSettings
    from training.stages.common import GEOMETRY_LOSS_ABLATIONS, GeometryTargets, geometry_loss
    from training.models import GeometryStream

    torch.manual_seed(0)
    cfg = tiny().geometry
    targets = GeometryTargets(uv_models[64], torch.device("cpu"))
    batch = SynthFaceGenerator(uv_models[64], SynthSettings(image_size=cfg.image_size)).batch(0, 0, 2)
    out = GeometryStream(cfg)(batch.image)
    terms = {name: geometry_loss(out, batch, targets, w) for name, w in GEOMETRY_LOSS_ABLATIONS.items()}

    mse = losses.asm_loss(out.a_id, batch.a_id, out.a_exp, batch.a_exp, targets.mask, targets.mask)
    torch.testing.assert_close(terms["asm"]["asm"], mse)
    assert not torch.allclose(terms["asm+w"]["asm"], mse)  # W reweights the regions
    for name in ("asm", "asm+w"):
        torch.testing.assert_close(terms[name]["total"], 0.5 * terms[name]["parametric"] + terms[name]["asm"])
    full = terms["full"]
    torch.testing.assert_close(terms["asm+w+sym"]["total"], full["total"] - 1e-3 * full["laplacian"])
    torch.testing.assert_close(full["total"], 0.5 * full["parametric"] + full["asm"] + 0.5 * full["symmetry"]
                               + 1e-3 * full["laplacian"])


def test_cli_ablation_switches_reach_the_checkpoints(tmp_path, kit):
    """--geometry-losses is recorded in the stage-1 checkpoint; --regions and --plain-texture in the
    stage-2 config, which export then builds the texture stream from."""
    from service.model_store import load_model_store
    from training.export.__main__ import main as export_main
    from training.train import main as train_main

    cfg = tiny()
    albedo = _albedo_npz(tmp_path / "albedo.npz", cfg.texture.albedo_dim, cfg.texture.uv_size)
    common = ["--config", "tiny", "--batch-size", "2", "--steps", "1", "--validate-every", "5", "--albedo", str(albedo)]
    train_main(["geometry", "--out", str(tmp_path / "g"), "--geometry-losses", "asm+w", *common])
    geometry = torch.load(tmp_path / "g" / "checkpoint.pt", weights_only=False)
    weights = geometry["loss_weights"]
    assert weights["symmetry"] == weights["laplacian"] == 0 and weights["region_weighting"] is True
    train_main(["texture", "--out", str(tmp_path / "t"), "--plain-texture", "--regions", "6",
                "--features", str(tmp_path / "g" / "checkpoint.pt"), *common])
    texture = torch.load(tmp_path / "t" / "checkpoint.pt", weights_only=False)
    assert texture["config"]["texture"]["plain"] and texture["config"]["texture"]["regions"] == 6
    export_main(["--geometry", str(tmp_path / "g" / "checkpoint.pt"), "--texture", str(tmp_path / "t" / "checkpoint.pt"),
                 "--root", str(tmp_path / "store"), "--name", "tiny", "--version", "0.0.3"])
    store = load_model_store(tmp_path / "store" / "tiny" / "0.0.3")
    assert store.manifest["config"]["texture"]["plain"] is True


def test_profiled_faces_turn_fitted_photos_towards_the_side_they_show(fitted, uv_models):
    """Face profiling: a fitted photo's identity, expression and unwrapped skin at 45-85° of yaw, turned
    the way the photo already faces; exact A_id, A_exp, p_h and landmarks, as a stage-1 real batch."""
    import numpy as np

    from training.synth import SynthFaceGenerator, SynthSettings
    from training.synth.profiling import ProfiledFaces, fill_unseen
    from training.stages.common import GeometryLossWeights, GeometryTargets, geometry_loss
    from training.models import GeometryStream

    gen = SynthFaceGenerator(uv_models[64], SynthSettings(image_size=32))
    faces = ProfiledFaces(fitted, gen)
    batch = faces.batch(0, 0, 6)
    assert batch.image.shape == (6, 3, 32, 32) and batch.a_id.shape == (6, 3, 64, 64) and batch.landmarks.shape == (6, 68, 2)
    yaw = np.rad2deg(batch.p_h[:, 0].numpy())
    assert ((np.abs(yaw) >= 45) & (np.abs(yaw) <= 85)).all()
    again = faces.batch(0, 0, 6)
    torch.testing.assert_close(again.image, batch.image)  # a pure function of (seed, index)
    picked = np.random.default_rng([0, 0, 4]).choice(len(faces), 6, replace=False)
    fitted_yaw = faces.rotation[picked, 0]
    turned = np.abs(fitted_yaw) > np.deg2rad(5)
    assert (np.sign(yaw[turned]) == np.sign(fitted_yaw[turned])).all()
    assert ((batch.landmarks > 0) & (batch.landmarks < 32)).float().mean() > 0.9
    cfg = tiny().geometry
    terms = geometry_loss(GeometryStream(cfg)(batch.image), batch, GeometryTargets(uv_models[64], torch.device("cpu")),
                          GeometryLossWeights())
    assert torch.isfinite(terms["total"])

    texture = np.zeros((8, 8, 3), np.uint8)
    texture[1:7, 1:7] = 50
    texture[2:6, 2:6] = 200
    visible = np.zeros((8, 8), bool)
    visible[1:7, 1:7] = True  # its rim (background in a real unwrap) is eroded away
    filled = fill_unseen(texture, visible, erode=1)
    assert (filled[2:6, 2:6] == 200).all() and (filled[0, 0] == 200).all() and (filled[1, 1] == 200).all()


def test_cosine_learning_rate_falls_from_lr_to_zero_over_the_steps():
    from training.stages.finetune import FinetuneSettings, learning_rate

    cosine = FinetuneSettings(steps=100, lr=1e-4, lr_schedule="cosine")
    assert [learning_rate(cosine, k) for k in (0, 50, 100, 150)] == pytest.approx([1e-4, 5e-5, 0, 0], abs=1e-12)
    assert learning_rate(cosine, 25) > learning_rate(cosine, 26)
    assert learning_rate(FinetuneSettings(steps=100, lr=1e-4), 99) == 1e-4
    with pytest.raises(ValueError, match="schedule"):
        learning_rate(FinetuneSettings(lr_schedule="step"), 0)


def test_stage_three_starts_from_a_model_store(tmp_path, fitted):
    """A shipped model, read back from its ONNX graphs (BatchNorm folded), fine-tunes with BatchNorm
    frozen, and a resumed run keeps it frozen."""
    from test_export import as_if_trained
    from training.export.from_store import checkpoint_from_store
    from training.export.onnx import export_model_store
    from training.models import AlbedoModel, GeometryStream, TextureStream
    from training.train import main as train_main

    cfg = tiny(regions=16)  # the CLI's default n
    torch.manual_seed(3)
    geo = as_if_trained(GeometryStream(cfg.geometry))
    tex = as_if_trained(TextureStream(cfg.texture, AlbedoModel.placeholder(cfg.texture.albedo_dim, cfg.texture.uv_size)))
    folder = export_model_store(geo, tex, cfg, tmp_path / "store", "tiny", "0.0.4").folder
    albedo = _albedo_npz(tmp_path / "albedo.npz", cfg.texture.albedo_dim, cfg.texture.uv_size)
    run = tmp_path / "run"
    common = ["--config", "tiny", "--batch-size", "2", "--albedo", str(albedo), "--fitted", str(fitted),
              "--photos", str(PHOTOS), "--validate-every", "5", "--out", str(run),
              "--geometry-from", str(folder), "--texture-from", str(folder), "--lr-schedule", "cosine"]
    train_main(["finetune", "--steps", "1", *common])
    imported = checkpoint_from_store(folder)["geometry_model"]
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["batchnorm"] == "folded" and state["step"] == 1
    weights = state["geometry_model"]
    stats = [k for k in weights if "running_" in k]
    assert stats and all(torch.equal(weights[k], imported[k]) for k in stats)  # frozen statistics
    assert not torch.equal(weights["encoder.features.0.0.weight"], imported["encoder.features.0.0.weight"])
    train_main(["finetune", "--steps", "2", *common])
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["step"] == 2 and state["batchnorm"] == "folded" and state["started_from"] == "tiny 0.0.4"
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(2.5e-5)  # step 1 of 2 on the cosine: half of 5e-5
    assert all(torch.equal(state["geometry_model"][k], imported[k]) for k in stats)


def test_stage_three_adds_position_pooling_to_a_stored_network(tmp_path, fitted, folded_store):  # noqa: F811
    """--position-pooling grows a store's plain encoder (the new layer from zero, at --locate-lr-scale
    times the rate); any other change of config is refused."""
    from dataclasses import replace

    from training.train import main as train_main
    from training.stages.common import start_checkpoint

    cfg, _, _, folder = folded_store  # tiny() has n = 4 regions
    with pytest.raises(ValueError, match="another config"):
        start_checkpoint(folder, replace(cfg, geometry=replace(cfg.geometry, latent_dim=64, position_pooling=True)),
                         torch.device("cpu"))
    albedo = _albedo_npz(tmp_path / "albedo.npz", cfg.texture.albedo_dim, cfg.texture.uv_size)
    train_main(["finetune", "--steps", "1", "--config", "tiny", "--regions", "4", "--position-pooling", "--batch-size",
                "2", "--albedo", str(albedo), "--fitted", str(fitted), "--photos", str(PHOTOS), "--validate-every", "5",
                "--out", str(tmp_path / "run"), "--geometry-from", str(folder), "--texture-from", str(folder),
                "--locate-lr-scale", "4"])
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert state["config"]["geometry"]["position_pooling"] is True and state["step"] == 1
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == pytest.approx([5e-5, 2e-4])
    # Adam's first step moves each weight by its rate (times the gradient's sign): 4 x 5e-5 from zero.
    assert state["geometry_model"]["encoder.locate.weight"].abs().max().item() == pytest.approx(2e-4, rel=1e-3)


def test_stage_one_grows_a_linear_basis_on_a_stored_network_and_stage_three_keeps_it(tmp_path, fitted, folded_store):  # noqa: F811
    """--linear-basis with --geometry-from a store: stage 1 keeps the store's encoder and PSN (BatchNorm
    frozen at the folded statistics), restarts the shape from the mean face (the decoders now give a
    residual, their last layer reset to zero), logs the coefficient terms; stage 3 continues from it."""
    import csv

    from training.export.from_store import checkpoint_from_store
    from training.train import main as train_main

    cfg, _, _, folder = folded_store
    imported = checkpoint_from_store(folder)["geometry_model"]
    stage1 = tmp_path / "stage1"
    train_main(["geometry", "--steps", "1", "--config", "tiny", "--regions", "4", "--linear-basis", "--batch-size", "2",
                "--geometry-from", str(folder), "--asm-weight", "10", "--validate-every", "5", "--out", str(stage1)])
    state = torch.load(stage1 / "checkpoint.pt", weights_only=False)
    assert state["config"]["geometry"]["linear_basis"] is True and state["batchnorm"] == "folded"
    assert state["loss_weights"]["asm"] == 10
    weights = state["model"]
    stats = [k for k in weights if "running_" in k]
    assert stats and all(torch.equal(weights[k], imported[k]) for k in stats)
    # One Adam step from zero moves the decoders' reset last layer by at most the rate (2e-4).
    assert 0 < weights["identity_decoder.out.weight"].abs().max() <= 2e-4 + 1e-9
    assert imported["identity_decoder.out.weight"].abs().max() > 1e-3
    assert weights["coefficients.net.2.weight"].abs().max() > 0
    with (stage1 / "log.csv").open() as f:
        header = next(csv.reader(f))
    assert {"expression_weights", "identity_coefficients", "residual"} <= set(header)

    albedo = _albedo_npz(tmp_path / "albedo.npz", cfg.texture.albedo_dim, cfg.texture.uv_size)
    train_main(["finetune", "--steps", "1", "--config", "tiny", "--regions", "4", "--linear-basis", "--batch-size", "2",
                "--albedo", str(albedo), "--fitted", str(fitted), "--photos", str(PHOTOS), "--validate-every", "5",
                "--out", str(tmp_path / "stage3"), "--geometry-from", str(stage1 / "checkpoint.pt"),
                "--texture-from", str(folder), "--anchor-weight", "5"])
    state = torch.load(tmp_path / "stage3" / "checkpoint.pt", weights_only=False)
    assert state["config"]["geometry"]["linear_basis"] is True and state["batchnorm"] == "folded" and state["step"] == 1


def test_probing_the_coefficient_head_solves_its_last_layer(uv_models, monkeypatch):
    """The closed-form start of the coefficient head: its last layer becomes the ridge solution on the
    head's features of the probe faces; the intercept is not penalised, so a very strong ridge gives
    every face the probe faces' mean coefficients (not zero, and not a blendshape weight of 0.5)."""
    from dataclasses import replace

    from training.models import GeometryStream
    from training.stages import geometry
    from training.synth import SynthFaceGenerator, SynthSettings

    monkeypatch.setattr(geometry, "PROBE_RIDGE", (1e6,))
    torch.manual_seed(0)
    cfg = replace(tiny().geometry, linear_basis=True)
    net = GeometryStream(cfg, uv_models[64])
    gen = SynthFaceGenerator(uv_models[64], SynthSettings(image_size=cfg.image_size))
    error = geometry.probe_coefficient_head(net, gen, 64, torch.device("cpu"), batch_size=16)
    assert all(e == e for e in error) and net.training  # finite; the net is left in training mode
    probe_faces = [gen.batch(geometry.PROBE_SEED, k, 16) for k in range(4)]
    ids = torch.cat([b.id_coeffs for b in probe_faces])
    weights = torch.cat([b.exp_weights for b in probe_faces]).clamp(geometry.LOGIT_CLIP, 1 - geometry.LOGIT_CLIP)
    with torch.no_grad():
        out = net.eval()(gen.batch(5, 0, 8).image)
    torch.testing.assert_close(out.id_coeffs, ids.mean(0).expand(8, -1), atol=1e-3, rtol=0)
    torch.testing.assert_close(out.exp_weights, torch.sigmoid(torch.log(weights / (1 - weights)).mean(0)).expand(8, -1),
                               atol=1e-3, rtol=0)


def test_a_training_checkpoint_is_scored_on_the_synthetic_set_beside_the_mean_face(tmp_path, kit):
    """`python -m training.evaluate synthetic --model CHECKPOINT.pt` scores a run before it is exported."""
    import json

    from training.evaluate.__main__ import main

    ckpt = train_geometry(tiny(), tmp_path / "run", StageSettings(steps=1, batch_size=2, validate_every=5))
    main(["synthetic", "--model", str(ckpt), "--size", "3", "--out", str(tmp_path / "report")])
    geometry = json.loads((tmp_path / "report" / "synthetic.json").read_text())["geometry"]
    assert set(geometry) == {"A_id + A_exp", "A_id only", "mean face (baseline)"}
    assert geometry["A_id + A_exp"]["overall"]["n"] == 3 and geometry["A_id + A_exp"]["overall"]["similarity_mm"] > 0
    assert "checkpoint" in (tmp_path / "report" / "synthetic.md").read_text()


def test_stage_three_appearance_only_keeps_the_shape_and_trains_albedo_and_light(tmp_path, fitted, folded_store):  # noqa: F811
    """--appearance-only grows a p_t/p_l head as a copy of the PSN (the grown network computes exactly
    what the store did), then trains only it and the texture stream against the anchor faces' albedo,
    the exposure change and the change under another lighting: the encoder, decoders and pose head are
    bit for bit the store's."""
    from dataclasses import replace

    from training.models import GeometryStream
    from training.stages.common import grown_geometry_weights, start_checkpoint
    from training.train import main as train_main

    cfg, _, _, folder = folded_store
    grown_cfg = replace(cfg, geometry=replace(cfg.geometry, appearance_head=True))
    start = start_checkpoint(folder, grown_cfg, torch.device("cpu"))
    plain, grown = GeometryStream(cfg.geometry), GeometryStream(grown_cfg.geometry)
    plain.load_state_dict(start["geometry_model"])
    grown.load_state_dict(grown_geometry_weights(grown, start))
    plain.eval(), grown.eval()
    image = torch.rand(2, 3, cfg.geometry.image_size, cfg.geometry.image_size)
    with torch.no_grad():
        before, after = plain(image), grown(image)
    for name in ("a_id", "a_exp", "p_t", "p_l", "p_h"):
        assert torch.equal(getattr(before, name), getattr(after, name)), name

    albedo = _albedo_npz(tmp_path / "albedo.npz", cfg.texture.albedo_dim, cfg.texture.uv_size)
    run = tmp_path / "run"
    train_main(["finetune", "--steps", "2", "--config", "tiny", "--regions", "4", "--appearance-only",
                "--albedo-weight", "10", "--exposure-weight", "10", "--lighting-weight", "10", "--batch-size", "2",
                "--albedo", str(albedo), "--fitted", str(fitted), "--photos", str(PHOTOS), "--validate-every", "2", "--out", str(run),
                "--geometry-from", str(folder), "--texture-from", str(folder)])
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["config"]["geometry"]["appearance_head"] is True and state["step"] == 2
    weights, imported = state["geometry_model"], start["geometry_model"]
    assert all(torch.equal(weights[k], imported[k]) for k in imported), "only the appearance head may move"
    assert not torch.equal(weights["appearance.net.2.weight"], imported["psn.net.2.weight"])
    assert not torch.equal(state["texture_model"]["out.weight"], start["texture_model"]["out.weight"])
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert float(rows[-1]["albedo"]) > 0 and float(rows[-1]["exposure"]) >= 0
    assert 0 < float(rows[-1]["val_synthetic_albedo"]) < 1  # the tiny fitted set holds no validation photos
    assert float(rows[-1]["lighting"]) > 0 and 0 < float(rows[-1]["val_synthetic_lighting_change"]) < 1
    assert (run / "best.pt").is_file()


def test_an_exposed_face_is_the_same_face_under_scaled_light(uv_models):
    """exposed_faces scales the photo and the SH lighting alike: rendering the face under the scaled
    lighting gives the scaled photo wherever the face is and nothing clips."""
    from training.stages.finetune import exposed_faces
    from training.synth import SynthFaceGenerator, SynthSettings

    gen = SynthFaceGenerator(uv_models[64], SynthSettings(image_size=48))
    batch = gen.batch(5, 0, 3)
    factors = torch.tensor([0.5, 0.8, 1.0])
    darker = exposed_faces(batch, factors)
    relit = gen.batch(5, 0, 3, lighting=batch.p_l * factors[:, None])
    assert torch.equal(darker.albedo, batch.albedo) and torch.allclose(darker.p_l, relit.p_l)
    face = batch.face_mask[:, None].expand_as(batch.image) & (batch.image < 0.999)
    assert face.sum() > 100
    assert torch.allclose(darker.image[face], relit.image[face], atol=1e-4)


def test_stage_three_with_fit_albedo_feeds_the_texture_stream_the_fitted_p_t(tmp_path, fitted, folded_store, monkeypatch):  # noqa: F811
    """--fit-albedo: every texture-stream pass of stage 3 (photos, their exposed copies, the anchor
    faces, validation) gets p_t from training.stages.albedo_fit, as the service fits it, and with
    --appearance-only only the texture stream trains (the grown head stays the PSN's copy)."""
    from training.stages import finetune
    from training.train import main as train_main

    cfg, _, _, folder = folded_store
    calls = []

    def recording(basis, *args):
        calls.append(basis.size)
        return fitted_p_t(basis, *args)

    fitted_p_t = finetune.fitted_p_t
    monkeypatch.setattr(finetune, "fitted_p_t", recording)
    albedo = _albedo_npz(tmp_path / "albedo.npz", cfg.texture.albedo_dim, cfg.texture.uv_size)
    run = tmp_path / "run"
    train_main(["finetune", "--steps", "1", "--config", "tiny", "--regions", "4", "--appearance-only", "--fit-albedo",
                "--albedo-weight", "10", "--exposure-weight", "10", "--batch-size", "2", "--albedo", str(albedo),
                "--fitted", str(fitted), "--photos", str(PHOTOS), "--validate-every", "1", "--out", str(run),
                "--geometry-from", str(folder), "--texture-from", str(folder)])
    assert len(calls) >= 3 and set(calls) == {cfg.texture.albedo_dim}
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["step"] == 1
    weights = state["geometry_model"]
    assert all(torch.equal(weights[f"appearance.{k[len('psn.'):]}"], weights[k]) for k in weights if k.startswith("psn."))


def test_a_shape_read_from_landmarks_has_no_residual_term():
    """L_gs's coefficient terms for a geometry stream without residual maps (shape_from_landmarks)."""
    from types import SimpleNamespace

    from training.stages.common import coefficient_terms

    out = SimpleNamespace(id_coeffs=torch.ones(2, 5), exp_weights=torch.zeros(2, 3), id_residual=None, exp_residual=None)
    batch = SimpleNamespace(id_coeffs=torch.zeros(2, 5), exp_weights=torch.zeros(2, 3))
    terms = coefficient_terms(out, batch, torch.ones(4, 4))
    assert terms["residual"].item() == 0.0 and terms["identity_coefficients"].item() == 1.0
