"""Does the `photo` texture copy what hides the face? Held-out synthetic faces, each drawn twice, with an
occluder (a hand, hair, glasses) and without, through the service's own stages on the occluded one.

The truth for every texel is the face without the occluder seen through the same reconstruction: the
clean image unwrapped with the occluded image's geometry, so that the geometry's error is the same on
both sides and only what the occluder put into the texture counts. Scored, for the `photo` texture with
the service's skin test (``service.engine.texture.skin_trust``) and without it (the texture before):

* the texels the occluder hides (the generator knows them) where the photo is trusted at all: is the
  occluder copied, or does the model's fill show?
* the other seen texels: what the test costs where the photo shows skin.

Beside them the fill alone (the model's colour matched to the photo's, no photo anywhere): on the hidden
texels, the error of a test that knew exactly what the occluder hides.

    python -m training.evaluate skin-test --model model_store/facerecon-cpu-small/0.13.0 [--size 128]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.engine.texture import compose_texture, photo_weight, unwrap_photo
from training.facemodel import UVFaceModel
from training.machine import describe as machine
from training.synth import SynthFaceGenerator, SynthSettings

from .inprocess import InProcessModel
from .metrics import texture_mae
from .report import write_report
from .synthetic import HELD_OUT_SEED

OCCLUDER_SEED = HELD_OUT_SEED + 1  # the faces of the synthetic report's occluded texels
ROWS = ("with the skin test (served)", "without it (before)")
FILL_ROW = "the fill alone, no photo (what a test that knew the occluder would give on the hidden texels)"


def _as_photo(image: np.ndarray) -> np.ndarray:
    """(3, N, N) float crop in [0, 1] -> (N, N, 3) uint8, the photo the crop's reconstruction reads."""
    return (np.clip(image.transpose(1, 2, 0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def evaluate_skin_test(model: InProcessModel, albedo_model: Path, size: int, batch_size: int = 32) -> dict:
    """Per row of ``ROWS`` and ``FILL_ROW``: the `photo` texture's mean absolute error (colours in [0, 1]) against the
    clean face over the hidden texels the photo is trusted on and over the other trusted texels, mean
    over faces; with the faces and texels counted."""
    manifest = model.model.store.manifest
    components = next(i["shape"][1] for i in manifest["onnx"]["texture"]["inputs"] if i["name"] == "p_t")
    face_model = UVFaceModel.build(manifest["uv_size"])
    settings = SynthSettings(image_size=manifest["input_size"])
    plain_gen = SynthFaceGenerator(face_model, settings, albedo_model=albedo_model, albedo_components=components)
    hidden_gen = SynthFaceGenerator(face_model, SynthSettings(image_size=manifest["input_size"], occluder_fraction=1.0),
                                    albedo_model=albedo_model, albedo_components=components)
    topo = model.topology
    s = topo.size
    scores = {row: {"hidden": [], "skin": []} for row in (*ROWS, FILL_ROW)}
    hidden_texels = 0
    for start in range(0, size, batch_size):
        n = min(batch_size, size - start)
        plain, hidden = (g.batch(OCCLUDER_SEED, start, n) for g in (plain_gen, hidden_gen))
        for i in range(n):
            rec = model.crop_reconstruction(hidden.image[i].numpy().astype(np.float32))
            geo, unwrapped = rec.geometry, rec.unwrapped
            photo, clean = _as_photo(hidden.image[i].numpy()), _as_photo(plain.image[i].numpy())
            trusted = photo_weight(unwrapped, topo, s) > 0.5
            behind = trusted & plain.uv_visible[i].numpy() & ~hidden.uv_visible[i].numpy()
            rest = trusted & ~behind & hidden.uv_visible[i].numpy()
            if not behind.any():
                continue
            hidden_texels += int(behind.sum())
            fill = rec.albedo.transpose(1, 2, 0)
            truth = unwrap_photo(clean, unwrapped, geo, s, fill, topo)  # where trusted: the clean face's colour
            for row, skin_test in zip(ROWS, (True, False)):
                texture = compose_texture("photo", rec.albedo, geo, unwrapped, topo, photo, s,
                                          model.settings.texture_detail, skin_test=skin_test) / 255.0
                scores[row]["hidden"].append(texture_mae(texture, truth, behind))
                scores[row]["skin"].append(texture_mae(texture, truth, rest))
            fill_only = unwrap_photo(photo, unwrapped, geo, s, fill, topo, trust=np.zeros((s, s)))
            scores[FILL_ROW]["hidden"].append(texture_mae(fill_only, truth, behind))
            scores[FILL_ROW]["skin"].append(texture_mae(fill_only, truth, rest))
    return {row: {"hidden": float(np.mean(v["hidden"])), "skin": float(np.nanmean(v["skin"])),
                  "faces": len(v["hidden"]), "hidden_texels": hidden_texels} for row, v in scores.items()}


def skin_test_report(model_dir: Path, albedo_model: Path, size: int, out: Path) -> str:
    """Score the skin test on ``size`` occluded held-out faces; write JSON and Markdown into ``out``."""
    model = InProcessModel(model_dir)
    results = evaluate_skin_test(model, albedo_model, size)
    first = next(iter(results.values()))
    lines = [f"# The skin test on occluded synthetic faces, {model.label}", "",
             f"`python -m training.evaluate skin-test --model {model_dir} --size {size}`", "",
             f"Machine: {machine()}. {first['faces']} held-out faces with an occluder (of {size} drawn; the others' "
             f"occluder hides no trusted texel), {first['hidden_texels']} hidden texels at {model.topology.size}². "
             "Error: the `photo` texture against the same face without the occluder, unwrapped through the same "
             "reconstruction (colours in [0, 1]).", "",
             "| `photo` texture | hidden texels (occluder copied?) | other seen texels (skin lost?) |", "|---|---|---|"]
    lines += [f"| {row} | {r['hidden']:.4f} | {r['skin']:.4f} |" for row, r in results.items()]
    return write_report(out, "skin-test", results, lines)
