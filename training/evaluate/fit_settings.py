"""The albedo fit's settings tried against the service's, on held-out synthetic faces: for each setting
(``service.engine.albedo_fit.fit_albedo``'s keywords: ridge, light_ridge, rounds, keep, bound) the albedo
errors and the lighting change of ``synthetic.evaluate_albedo``, the texture stream's and the linear
albedo's at the fitted p_t, beside the service's own settings and the mean albedo.

    python -m training.evaluate albedo-fit --model DIR --settings '[{"ridge": 1e-5}, {"light_ridge": 0.05}]'
"""

from __future__ import annotations

import json
from pathlib import Path

from service.engine import albedo_fit
from training.machine import describe as machine

from . import synthetic



def service_settings() -> dict[str, float]:
    """The settings the service fits with (``fit_albedo``'s defaults)."""
    return {"ridge": albedo_fit.COEFFICIENT_RIDGE, "light_ridge": albedo_fit.LIGHT_RIDGE,
            "rounds": albedo_fit.ROUNDS, "keep": albedo_fit.KEEP, "bound": albedo_fit.BOUND}


def label(solver: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in solver.items()) or "the service's settings"


def fit_settings_report(model_dir: Path, settings: list[dict[str, float]], albedo: Path, size: int, out: Path) -> str:
    """Score ``settings`` (each a dict of fit_albedo keywords) and the service's own on ``size`` held-out
    faces drawn from ``albedo`` (the albedo model the store was trained with); write JSON and Markdown."""
    from training.facemodel import UVFaceModel

    for solver in settings:
        unknown = set(solver) - set(service_settings())
        if unknown:
            raise ValueError(f"unknown fit settings {sorted(unknown)}; known: {', '.join(service_settings())}")
    manifest = json.loads((model_dir / "manifest.json").read_text())
    components = next(i["shape"][1] for i in manifest["onnx"]["texture"]["inputs"] if i["name"] == "p_t")
    face_model = UVFaceModel.build(manifest["uv_size"])
    trials = [{}] + [s for s in settings if s]
    predictors = {label(s): synthetic.served_albedo_predictor(model_dir, fit_solver=s) for s in trials}
    results = synthetic.evaluate_albedo(predictors, face_model, manifest["input_size"], albedo, components, size=size)
    service = service_settings()
    lines = [f"# The albedo fit's settings, {manifest['model']['name']} {manifest['model']['version']}", "",
             f"`python -m training.evaluate albedo-fit --model {model_dir} --settings '{json.dumps(settings)}' "
             f"--size {size}`", "", f"Machine: {machine()}. Held-out synthetic faces: {size} (occluded "
             f"{next(iter(results.values()))['n_occluded']}, lit {next(iter(results.values()))['n_lit']} under "
             f"{synthetic.LIGHTINGS} lightings). The service's settings: {label(service)}.", "",
             "| albedo | face region | visible part | unseen part | occluded texels | lighting change |",
             "|---|---|---|---|---|---|"]
    for row, r in results.items():
        lines.append(f"| {row} | {r['face']:.4f} | {r['visible']:.4f} | {r['unseen']:.4f} | {r['occluded']:.4f} | "
                     f"{r['lighting_change']:.4f} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "albedo-fit.json").write_text(json.dumps({"machine": machine(), "service": service, "settings": trials,
                                                     "albedo": results}, indent=2) + "\n")
    (out / "albedo-fit.md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines) + "\n"
