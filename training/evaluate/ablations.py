"""Ablation tables: the paper's Table III (stage-1 loss terms) and the texture stream's variants.

Every run is exported to a model store in a temporary folder and scored by the evaluation tables' own
code, so an ablation's figures mean what the shipped model's mean:

- geometry runs (``python -m training.train geometry --geometry-losses …``): AFLW2000-3D NME (boxes
  from the ground truth) and the held-out synthetic per-vertex error; their texture stream is untrained.
- texture runs (``python -m training.train texture --regions n [--plain-texture]``): synthetic albedo
  MAE (true p_t and geometry, as ``evaluate synthetic``) and, behind a fixed geometry stream, E_pho
  and identity on real photos (as ``evaluate texture``).
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from training.export.checkpoints import export_checkpoints
from training.facemodel import UVFaceModel
from training.machine import describe as machine
from training.models import NetworkConfig

from . import aflw2000, rendered, synthetic
from .inprocess import InProcessModel


@dataclass(frozen=True)
class Run:
    """A training run folder: its best checkpoint (``best.pt``) if one was kept, else its last."""

    folder: Path

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def slug(self) -> str:  # a model-store name
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")

    @property
    def checkpoint(self) -> Path:
        best = self.folder / "best.pt"
        return best if best.is_file() else self.folder / "checkpoint.pt"

    def describe(self) -> dict:
        """Step kept, steps run and the settings that tell the ablations apart."""
        ckpt = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
        last = torch.load(self.folder / "checkpoint.pt", map_location="cpu", weights_only=False)
        texture = NetworkConfig.from_dict(ckpt["config"]).texture
        return {"step": int(ckpt["step"]), "steps_run": int(last["step"]), "stage": ckpt["stage"],
                "loss_weights": ckpt.get("loss_weights"), "regions": texture.regions, "plain": texture.plain}


def geometry_row(run: Run, samples: list[aflw2000.Sample], synthetic_size: int, albedo: Path, root: Path) -> dict:
    store = export_checkpoints(run.checkpoint, None, albedo, root, run.slug, "0.0.0").folder
    model = InProcessModel(store)
    nme = aflw2000.evaluate(model.landmark_predictor(False), samples)["nme_2d"]
    manifest = json.loads((store / "manifest.json").read_text())
    errors = synthetic.evaluate_expressions(synthetic.stored_geometry_predictor(store), UVFaceModel.build(manifest["uv_size"]),
                                            manifest["input_size"], size=synthetic_size)
    return {"run": run.name, **run.describe(), "aflw2000_nme": nme,
            "synthetic_mm": errors["overall"]["mm"], "synthetic_normalised": errors["overall"]["normalised"],
            "synthetic_by_category_mm": {c: v["mm"] for c, v in errors["by_category"].items()}}


def texture_rows(run: Run, base_geometry: Path, photo_sets: dict[str, list[rendered.Photo]], synthetic_size: int,
                 albedo: Path, root: Path, describe: rendered.FaceDescriptor) -> dict[str, dict]:
    """The run's row, and the linear albedo's (the same for every run) under the key ``linear``."""
    store = export_checkpoints(base_geometry, run.checkpoint, albedo, root, run.slug, "0.0.0").folder
    manifest = json.loads((store / "manifest.json").read_text())
    maes, _ = synthetic.stored_albedo_errors(store, manifest, UVFaceModel.build(manifest["uv_size"]), albedo, synthetic_size)
    model = InProcessModel(store)
    sets = {name: rendered.evaluate_photos(model, photos, describe).summary["kinds"] for name, photos in photo_sets.items()}
    rows = {}
    for key, mae_kind, render_kind in (("run", "texture stream, true inputs", "albedo × shading"),
                                       ("linear", "linear albedo (p_t), true inputs", "linear albedo (p_t) × shading")):
        rows[key] = {"albedo_mae": maes[mae_kind]["face"], "albedo_mae_visible": maes[mae_kind]["visible"],
                     "e_pho": {name: kinds[render_kind]["e_pho"] for name, kinds in sets.items()},
                     "identity": {name: kinds[render_kind]["identity"] for name, kinds in sets.items()}}
    rows["run"] |= {"run": run.name, **run.describe()}
    return rows


def ablation_report(geometry_runs: list[Path], texture_runs: list[Path], base_geometry: Path | None, albedo: Path,
                    aflw: Path, photos: Path, out: Path, aflw_limit: int | None = None, synthetic_size: int = 504,
                    photo_limit: int | None = None) -> str:
    """Score every run, write ``<out>/ablations.json`` and ``.md``; returns the Markdown."""
    samples = aflw2000.load_samples(aflw, aflw_limit)
    document = {"machine": machine(), "aflw2000": {"folder": str(aflw), "n": len(samples)},
                "synthetic_size": synthetic_size, "geometry": [], "texture": [], "linear_albedo": None}
    with tempfile.TemporaryDirectory() as tmp:
        for folder in geometry_runs:
            document["geometry"].append(geometry_row(Run(folder), samples, synthetic_size, albedo, Path(tmp)))
        if texture_runs:
            if base_geometry is None:
                raise ValueError("texture runs need a base geometry checkpoint to reconstruct real photos")
            describe = rendered.FaceDescriptor()
            sets = {photos.name: rendered.load_photo_folder(photos, photo_limit),
                    aflw.name: rendered.aflw_photos(aflw, photo_limit)}
            for folder in texture_runs:
                rows = texture_rows(Run(folder), base_geometry, sets, synthetic_size, albedo, Path(tmp), describe)
                document["texture"].append(rows["run"])
                document["linear_albedo"] = rows["linear"]
            document["texture_geometry"] = str(base_geometry)
    text = markdown(document)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablations.json").write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    (out / "ablations.md").write_text(text)
    return text


def _loss_terms(weights: dict | None) -> str:
    if weights is None:
        return "full (not recorded)"
    terms = ["L_p", "L_asm" + (" with W" if weights.get("region_weighting", True) else " (MSE)")]
    terms += [name for name, key in (("L_sym", "symmetry"), ("L_reg", "laplacian")) if weights[key] > 0]
    return " + ".join(terms)


def markdown(doc: dict) -> str:
    pct = lambda v: "–" if v is None else f"{100 * v:.2f}"  # noqa: E731
    num = lambda v: "–" if v is None else f"{v:.4f}"  # noqa: E731
    lines = ["# Ablations", "", f"Machine: {doc['machine']}.", ""]
    if doc["geometry"]:
        bins = aflw2000.BINS
        lines += ["## Stage-1 loss terms (the paper's Table III)", "",
                  f"AFLW2000-3D: {doc['aflw2000']['n']} images, boxes from the ground truth, 2D NME (%). Synthetic: "
                  f"{doc['synthetic_size']} held-out faces, mean per-vertex error after rigid alignment (mm, and / "
                  "outer inter-ocular distance). Stage 1 only (no fine-tuning).", "",
                  "| run | losses | steps | " + " | ".join(f"NME {b}" for b in bins) + " | NME mean of bins | "
                  "NME overall | synthetic mm (/IOD) |", "|---" * (6 + len(bins)) + "|"]
        for r in doc["geometry"]:
            nme = r["aflw2000_nme"]
            lines.append(f"| {r['run']} | {_loss_terms(r['loss_weights'])} | {r['steps_run']} | "
                         + " | ".join(pct(nme["bins"][b]) for b in bins)
                         + f" | {pct(nme['bin_mean'])} | {pct(nme['overall'])} | "
                         f"{r['synthetic_mm']:.2f} ({r['synthetic_normalised']:.3f}) |")
        lines.append("")
    if doc["texture"]:
        sets = list(doc["texture"][0]["e_pho"])
        lines += ["## Texture stream variants", "",
                  f"Albedo MAE (colour in [0, 1]) on {doc['synthetic_size']} held-out synthetic faces, given the true "
                  "p_t and geometry (face region, and its visible part). E_pho and dlib identity cosine on real photos "
                  f"behind the geometry stream of `{doc.get('texture_geometry')}`. Stage 2 only (no fine-tuning); "
                  "the kept step is the best by validation albedo MAE.", "",
                  "| texture | kept step / run | albedo MAE | visible | " + " | ".join(f"E_pho {s}" for s in sets)
                  + " | " + " | ".join(f"identity {s}" for s in sets) + " |", "|---" * (4 + 2 * len(sets)) + "|"]
        linear = doc["linear_albedo"]
        lines.append(f"| linear albedo from p_t | – | {num(linear['albedo_mae'])} | {num(linear['albedo_mae_visible'])} | "
                     + " | ".join(num(linear["e_pho"][s]) for s in sets) + " | "
                     + " | ".join(num(linear["identity"][s]) for s in sets) + " |")
        for r in doc["texture"]:
            label = "plain encoder-decoder" if r["plain"] else f"U-Net + SSRPM/SRSM, n = {r['regions']}"
            lines.append(f"| {label} | {r['step']} / {r['steps_run']} | {num(r['albedo_mae'])} | "
                         f"{num(r['albedo_mae_visible'])} | " + " | ".join(num(r["e_pho"][s]) for s in sets) + " | "
                         + " | ".join(num(r["identity"][s]) for s in sets) + " |")
        lines.append("")
    return "\n".join(lines)
