"""The evaluation tables, each written as ``<out>/<name>.json`` and ``.md`` and printed:

    python -m training.evaluate aflw2000 --data ../shared/eval/aflw2000-dev [--url http://127.0.0.1:8000 | --model DIR]
    python -m training.evaluate synthetic --model model_store/<name>/<version> [--albedo data/albedo/albedo-k80.npz]
    python -m training.evaluate texture --model DIR --photos ../shared/eval/photos [--aflw DIR --limit N] [--grid PNG]
    python -m training.evaluate all --model DIR [--url URL] [--albedo NPZ] [--grid PNG]
    python -m training.evaluate sheet --model DIR --out docs/texture-sheet.png [--photos DIR --aflw DIR --turned N]
    python -m training.evaluate albedo-fit --model DIR --settings JSON [--albedo NPZ --size N]
    python -m training.evaluate uv-alignment --model DIR [--photos DIR --aflw DIR --limit N --size 512]
    python -m training.evaluate skin-test --model DIR [--albedo NPZ --size N]
    python -m training.evaluate albedo-limits --model DIR [--albedo NPZ --size N]
    python -m training.evaluate boxes --model DIR [--data DIR --limit N]
    python -m training.evaluate probe --model DIR [--train-faces N --size N]
    python -m training.evaluate blendshapes --model DIR [--size N] [--photos DIR] [--aflw DIR] [--limit N]
    python -m training.evaluate compare A/aflw2000.json B/aflw2000.json [--row-a NAME --row-b NAME]
    python -m training.evaluate ablations --geometry-runs RUN… --texture-runs RUN… --base-geometry CKPT --albedo NPZ

``--model`` runs a model store in this process through the service's own stages (no server);
``--url`` asks a running service over HTTP.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.facemodel import FaceKit
from training.machine import describe as machine

from . import aflw2000, synthetic

SHARED = Path(__file__).resolve().parents[3] / "shared"
DEFAULT_DATA = SHARED / "eval" / "aflw2000-dev"
DEFAULT_PHOTOS = SHARED / "eval" / "photos"


def held_out_faces_parser(sub, name: str, help: str, size: int, size_help: str) -> None:
    """A command scoring a model store on held-out synthetic faces: --model, --albedo, --size, --out."""
    p = sub.add_parser(name, help=help)
    p.add_argument("--model", type=Path, required=True, help="a model-store version folder")
    p.add_argument("--albedo", type=Path, default=Path("data/albedo/albedo-k80.npz"), help="the albedo model the faces are drawn from")
    p.add_argument("--size", type=int, default=size, help=size_help)
    p.add_argument("--out", type=Path, default=Path("reports"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate")
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("aflw2000", help="68-landmark NME by yaw bin, with the mean-face and dlib baselines")
    a.add_argument("--data", type=Path, default=DEFAULT_DATA)
    a.add_argument("--url", help="a running service")
    a.add_argument("--model", type=Path, help="a model-store version folder, run in this process")
    a.add_argument("--detector", action="store_true", help="let the service detect the face instead of passing the box")
    a.add_argument("--limit", type=int)
    a.add_argument("--out", type=Path, default=Path("reports"))
    y = sub.add_parser("synthetic", help="geometry error by expression and yaw (and albedo MAE) on held-out synthetic faces")
    y.add_argument("--model", type=Path, required=True, help="a model-store version folder, or a training checkpoint "
                   "(.pt) whose geometry stream is scored before export")
    y.add_argument("--size", type=int, default=None, help="fewer samples than the full held-out set")
    y.add_argument("--albedo", type=Path, help="the albedo model (npz) the texture stream was trained with; "
                                               "without it the albedo table is skipped")
    y.add_argument("--out", type=Path, default=Path("reports"))
    t = sub.add_parser("texture", help="photometric error and identity similarity of renders over real photos")
    t.add_argument("--model", type=Path, required=True, help="a model-store version folder")
    t.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="photos (a 68-point .pts beside one gives its box)")
    t.add_argument("--aflw", type=Path, help="also the AFLW2000-3D images of this folder (boxes from their landmarks)")
    t.add_argument("--limit", type=int, help="at most this many photos per set")
    t.add_argument("--grid", type=Path, help="write a figure of (input, mesh overlay, textured render) rows here")
    t.add_argument("--grid-rows", type=int, default=6)
    t.add_argument("--fit-albedo", type=Path, help="an albedo model npz: texture.onnx gets p_t fitted to each photo's "
                                                  "seen skin (service.engine.albedo_fit) instead of the geometry stream's")
    t.add_argument("--out", type=Path, default=Path("reports"))
    h = sub.add_parser("sheet", help="a sheet to judge by eye: each photo's crop, then every texture mode on the "
                                     "mesh, front-on and turned 45°")
    h.add_argument("--model", type=Path, required=True, help="a model-store version folder")
    h.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="photos (a 68-point .pts beside one gives its box)")
    h.add_argument("--aflw", type=Path, default=DEFAULT_DATA, help="AFLW2000-3D images to take turned heads from")
    h.add_argument("--turned", type=int, default=3, help="how many AFLW2000-3D heads turned 40° or more")
    h.add_argument("--panel", type=int, default=160, help="panel side, pixels")
    h.add_argument("--out", type=Path, required=True, help="the PNG")
    u = sub.add_parser("uv-alignment", help="the photo's 68 landmarks carried into UV against the mesh's own, in "
                                            "texels (does the `photo` texture line up?)")
    u.add_argument("--model", type=Path, required=True, help="a model-store version folder")
    u.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="photos; those with a 68-point .pts are scored")
    u.add_argument("--aflw", type=Path, default=DEFAULT_DATA)
    u.add_argument("--limit", type=int, help="at most this many faces per set")
    u.add_argument("--size", type=int, default=512, help="the texture side the texels are counted at")
    u.add_argument("--out", type=Path, default=Path("reports"))
    held_out_faces_parser(sub, "skin-test", "does the `photo` texture copy an occluder? Occluded synthetic faces "
                          "against the same faces without it, with the skin test and without", 128, "occluded held-out faces")
    held_out_faces_parser(sub, "albedo-limits", "where the served albedo's error comes from: the linear albedo at p_t "
                          "true, fitted under the exact shading, fitted on the true normals, served", 64, "held-out faces")
    e = sub.add_parser("all", help="every table above into --out, the model run in this process")
    e.add_argument("--model", type=Path, required=True, help="a model-store version folder")
    e.add_argument("--url", help="also score a running service on AFLW2000-3D")
    e.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the AFLW2000-3D folder")
    e.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    e.add_argument("--albedo", type=Path, help="as for `synthetic`")
    e.add_argument("--limit", type=int, help="at most this many AFLW2000-3D images (and photos)")
    e.add_argument("--size", type=int, default=None, help="synthetic faces (default: the full held-out set)")
    e.add_argument("--grid", type=Path)
    e.add_argument("--grid-rows", type=int, default=6)
    e.add_argument("--out", type=Path, default=Path("reports"))
    e.add_argument("--record", action="store_true", help="also store the figures in the model's manifest (`evaluation`)")
    f = sub.add_parser("albedo-fit", help="the albedo fit's settings against the service's, on held-out synthetic faces")
    f.add_argument("--model", type=Path, required=True, help="a model-store version folder whose topology carries the basis")
    f.add_argument("--settings", type=json.loads, required=True,
                   help='a JSON list of fit_albedo keyword sets, e.g. \'[{"ridge": 1e-5}, {"light_ridge": 0.05}]\'')
    f.add_argument("--albedo", type=Path, default=Path("data/albedo/albedo-k80.npz"), help="the albedo model the faces are drawn from")
    f.add_argument("--size", type=int, default=64, help="held-out synthetic faces")
    f.add_argument("--out", type=Path, default=Path("reports"))
    x = sub.add_parser("boxes", help="the detector's box against the landmark box, and the NME from each with and "
                                     "without the recrop")
    x.add_argument("--model", type=Path, required=True, help="a model-store version folder")
    x.add_argument("--data", type=Path, default=DEFAULT_DATA)
    x.add_argument("--limit", type=int)
    x.add_argument("--out", type=Path, default=Path("reports"))
    w = sub.add_parser("blendshapes", help="blendshape MAE on held-out synthetic faces, exclusive pairs on real photos")
    w.add_argument("--model", type=Path, required=True, help="a model-store version folder")
    w.add_argument("--size", type=int, default=synthetic.SET_SIZE, help="synthetic faces")
    w.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    w.add_argument("--aflw", type=Path, default=DEFAULT_DATA)
    w.add_argument("--limit", type=int, help="at most this many photos per set")
    w.add_argument("--out", type=Path, default=Path("reports"))
    c = sub.add_parser("compare", help="B - A on AFLW2000-3D photo by photo, with a paired bootstrap interval")
    c.add_argument("a", type=Path, help="an `aflw2000` report's aflw2000.json (or a `boxes` report's boxes.json)")
    c.add_argument("b", type=Path, help="another, of the same photos")
    c.add_argument("--row-a", help="the row of A to compare (default: its in-process model, one pass)")
    c.add_argument("--row-b", help="likewise for B")
    c.add_argument("--rounds", type=int, default=10_000)
    b = sub.add_parser("ablations", help="Table III's stage-1 runs and the texture stream's variants, each exported and scored")
    b.add_argument("--geometry-runs", type=Path, nargs="*", default=[], help="stage-1 run folders (--geometry-losses …)")
    b.add_argument("--texture-runs", type=Path, nargs="*", default=[], help="stage-2 run folders (--regions, --plain-texture)")
    b.add_argument("--base-geometry", type=Path, help="the geometry checkpoint the texture runs are scored behind")
    b.add_argument("--albedo", type=Path, required=True, help="the albedo model the runs were trained with")
    b.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the AFLW2000-3D folder")
    b.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    b.add_argument("--limit", type=int, help="at most this many AFLW2000-3D images")
    b.add_argument("--photo-limit", type=int, default=20, help="at most this many photos per set for E_pho")
    b.add_argument("--size", type=int, default=504, help="held-out synthetic faces")
    b.add_argument("--out", type=Path, default=Path("reports"))
    q = sub.add_parser("probe", help="a linear probe: how much of the true ICT coefficients the encoder's latent holds")
    q.add_argument("--model", type=Path, required=True, help="a model-store version folder")
    q.add_argument("--train-faces", type=int, default=3072)
    q.add_argument("--size", type=int, default=126, help="held-out synthetic faces scored")
    q.add_argument("--ridge", type=float, default=1.0)
    r = sub.add_parser("record", help="store the figures of reports already written in the model's manifest")
    r.add_argument("--model", type=Path, required=True, help="a model-store version folder")
    r.add_argument("--reports", type=Path, default=Path("reports"))
    args = parser.parse_args(argv)

    if args.command == "aflw2000":
        print(aflw2000_report(args.data, args.limit, args.out, url=args.url, model_dir=args.model, detector=args.detector))
    elif args.command == "boxes":
        print(boxes_report(args.model, args.data, args.limit, args.out))
    elif args.command == "blendshapes":
        print(blendshapes_report(args.model, args.size, args.photos, args.aflw, args.limit, args.out))
    elif args.command == "compare":
        from . import compare

        # A `boxes` report keeps its rows under "nme"; an `aflw2000` report at the top.
        a, b = (report.get("nme", report) for report in (json.loads(path.read_text()) for path in (args.a, args.b)))
        try:
            row_a, row_b = args.row_a or compare.default_row(a), args.row_b or compare.default_row(b)
            result = compare.paired_difference(a[row_a]["per_photo"], b[row_b]["per_photo"], args.rounds)
        except (KeyError, ValueError) as error:
            parser.error(f"compare: {error}")
        print(compare.markdown(result, f"{row_a} (`{args.a}`)", f"{row_b} (`{args.b}`)"))
    elif args.command == "synthetic":
        print(synthetic_report(args.model, args.size, args.out, args.albedo))
    elif args.command == "ablations":
        from .ablations import ablation_report

        print(ablation_report(args.geometry_runs, args.texture_runs, args.base_geometry, args.albedo, args.data,
                              args.photos, args.out, args.limit, args.size, args.photo_limit))
    elif args.command == "probe":
        from .probe import linear_probe

        r = linear_probe(args.model, args.train_faces, args.size, args.ridge)
        p, m = r["probe"], r["mean_face"]
        print(f"{args.model}: a ridge probe ({r['ridge']}) on {r['train_faces']} synthetic faces explains "
              f"{100 * r['identity_r2']:.1f} % of the identity coefficients' variance and {100 * r['expression_r2']:.1f} % "
              f"of the blendshape weights'; on {r['held_out']} held-out faces its decoded shape scores "
              f"{p['mm']:.2f} mm rigid ({p['mm'] / m['mm']:.2f}x the mean face's {m['mm']:.2f}) and "
              f"{p['similarity_mm']:.2f} mm similarity ({p['similarity_mm'] / m['similarity_mm']:.2f}x {m['similarity_mm']:.2f}).")
    elif args.command == "record":
        record_in_manifest(args.model, args.reports)
    elif args.command == "sheet":
        from .sheet import sheet_report

        print(sheet_report(args.model, args.photos, args.aflw if args.aflw.is_dir() else None, args.turned, args.out,
                           args.panel))
    elif args.command == "albedo-fit":
        from .fit_settings import fit_settings_report

        try:
            print(fit_settings_report(args.model, args.settings, args.albedo, args.size, args.out))
        except ValueError as error:
            parser.error(f"albedo-fit: {error}")
    elif args.command == "uv-alignment":
        from .uv_alignment import alignment_report

        print(alignment_report(args.model, args.photos if args.photos.is_dir() else None,
                               args.aflw if args.aflw.is_dir() else None, args.limit, args.size, args.out))
    elif args.command == "skin-test":
        from .skin_test import skin_test_report

        print(skin_test_report(args.model, args.albedo, args.size, args.out))
    elif args.command == "albedo-limits":
        from .albedo_limits import albedo_limits_report

        print(albedo_limits_report(args.model, args.albedo, args.size, args.out))
    elif args.command == "texture":
        print(texture_report(args.model, args.photos, args.aflw, args.limit, args.out, args.grid, args.grid_rows,
                             args.fit_albedo))
    else:
        tables = [aflw2000_report(args.data, args.limit, args.out, url=args.url, model_dir=args.model),
                  synthetic_report(args.model, args.size, args.out, args.albedo),
                  texture_report(args.model, args.photos, args.data, args.limit, args.out, args.grid, args.grid_rows)]
        print("\n".join(tables))
        if args.record:
            record_in_manifest(args.model, args.out)


def record_in_manifest(model_dir: Path, reports: Path) -> None:
    """Copy the reports' figures (per-photo rows left out) into ``manifest.json``'s ``evaluation``.

    The manifest is the one file of a store its own checksums do not cover, so this keeps the store valid.
    """
    def compact(value):
        if isinstance(value, dict):
            return {k: compact(v) for k, v in value.items() if k != "per_photo"}
        return [compact(v) for v in value] if isinstance(value, list) else value

    path = model_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    for name in ("aflw2000", "synthetic", "texture"):
        report = reports / f"{name}.json"
        if report.is_file():
            manifest["evaluation"][name] = compact(json.loads(report.read_text()))
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def aflw2000_report(data: Path, limit: int | None, out: Path, url: str | None = None, model_dir: Path | None = None,
                    detector: bool = False) -> str:
    """NME of the baselines and of the model (in this process, over HTTP, or both); returns the Markdown."""
    samples = aflw2000.load_samples(data, limit)
    kit = FaceKit.load()
    mean_lm = kit.neutral[kit.landmarks68][:, :2] * [1, -1]  # frontal view, y down
    results = {
        "mean face in the box": aflw2000.evaluate(aflw2000.mean_face_predictor(mean_lm), samples),
        "dlib 68-point predictor": aflw2000.evaluate(aflw2000.dlib_predictor(), samples),
    }
    suffix = " (own detection)" if detector else ""
    if model_dir is not None:
        from service.settings import Settings

        from .inprocess import InProcessModel

        for mirror in (False, True):  # the service's default, and with FACERECON_MIRROR_AVERAGE
            model = InProcessModel(model_dir, Settings(mirror_average=mirror))
            recropped = ", recropped" if detector and model.settings.recrops else ""
            label = f"{model.label}, in-process{suffix}{recropped}" + (", mirror-averaged" if mirror else "")
            # With the detector, a miss is scored from the whole photo as a caller's box (aflw2000.evaluate).
            fallback = model.landmark_predictor(False, False) if detector else None
            results[label] = aflw2000.evaluate(model.landmark_predictor(detector), samples, fallback)
            if not (mirror or detector):  # the 3D NME's baseline: the same placement, the mean face's shape
                results[f"mean face under {model.label}'s pose"] = aflw2000.evaluate(model.mean_shape_predictor(), samples)
    if url:
        results["service" + suffix] = aflw2000.evaluate(aflw2000.service_predictor(url, detector), samples,
                                                        aflw2000.service_predictor(url) if detector else None)
    boxes = ("the model's rows: the service's own detection (largest face; a photo without one is a failure, "
             "counted and scored from the whole photo as the box), the baselines' from the ground-truth landmarks"
             if detector
             else "boxes from the ground-truth landmarks (3DDFA protocol)")
    header = (f"{len(samples)} images from `{data}`; {boxes}; NME normalised by sqrt(w·h) of the ground-truth box. "
              f"Machine: {machine()}.")
    aflw2000.write_report(results, out, header)
    return (out / "aflw2000.md").read_text()


def blendshapes_report(model_dir: Path, size: int, photos: Path | None, aflw: Path | None, limit: int | None,
                       out: Path) -> str:
    """``training.evaluate.blendshapes``; writes blendshapes.json and .md, returns the Markdown."""
    from . import blendshapes
    from .inprocess import InProcessModel

    model = InProcessModel(model_dir)
    sets = blendshapes.photo_paths(photos if photos and photos.is_dir() else None,
                                   aflw if aflw and aflw.is_dir() else None, limit)
    result = {"model": model.label, "machine": machine(), "synthetic": blendshapes.evaluate_synthetic(model, size),
              "photos": blendshapes.evaluate_photos(model, sets)}
    text = (f"# Blendshape weights ({model.label})\n\nMachine: {machine()}.\n\n" + blendshapes.markdown(result))
    out.mkdir(parents=True, exist_ok=True)
    (out / "blendshapes.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "blendshapes.md").write_text(text)
    return text


def boxes_report(model_dir: Path, data: Path, limit: int | None, out: Path) -> str:
    """``training.evaluate.boxes`` on the AFLW2000-3D images; writes boxes.json and .md, returns the Markdown."""
    from . import boxes
    from .inprocess import InProcessModel

    model = InProcessModel(model_dir)
    samples = aflw2000.load_samples(data, limit)
    result = boxes.evaluate(model, samples)
    text = (f"# The geometry stream's box: detector or landmarks, one pass or recropped ({model.label})\n\n"
            f"{len(samples)} images from `{data}`; NME normalised by sqrt(w·h) of the ground-truth box; "
            f"a detector's miss is counted and scored from the whole photo as the box. Machine: {machine()}.\n\n" + boxes.markdown(result))
    out.mkdir(parents=True, exist_ok=True)
    (out / "boxes.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "boxes.md").write_text(text)
    return text


def synthetic_report(model_dir: Path, size: int | None, out: Path, albedo: Path | None = None) -> str:
    """Score a stored geometry.onnx (or a training checkpoint's geometry stream: ``model_dir`` a .pt file)
    with and without its expression ASM beside the mean face, and texture.onnx's albedo when the albedo
    model is given; write JSON and Markdown, return the Markdown."""
    from training.facemodel import UVFaceModel

    if model_dir.is_file():
        predict, config = synthetic.checkpoint_geometry_predictor(model_dir)
        input_size, uv_size, label = config["geometry"]["image_size"], config["geometry"]["uv_size"], f"checkpoint {model_dir}"
    else:
        manifest = json.loads((model_dir / "manifest.json").read_text())
        predict = synthetic.stored_geometry_predictor(model_dir)
        input_size, uv_size = manifest["input_size"], manifest["uv_size"]
        label = f"model {manifest['model']['name']} {manifest['model']['version']}"
    face_model = UVFaceModel.build(uv_size)
    n = size or synthetic.SET_SIZE
    results = {name: synthetic.evaluate_expressions(predict, face_model, input_size, size=n, with_expression=flag)
               for name, flag in (("A_id + A_exp", True), ("A_id only", False))}
    results[MEAN_FACE] = synthetic.evaluate_expressions(synthetic.mean_face_predictor(face_model), face_model, input_size, size=n)
    if model_dir.is_file():
        albedo_results, albedo_note = None, "Skipped: a training checkpoint is scored for its geometry only."
    else:
        albedo_results, albedo_note = synthetic.stored_albedo_errors(model_dir, manifest, face_model, albedo, n)

    lines = [f"# Held-out synthetic set: {n} faces, {label}", "",
             f"Machine: {machine()}.", "", *geometry_table(results), "", "## Albedo", "", albedo_note]
    if albedo_results:
        yaw_bins = list(next(iter(albedo_results.values()))["face_by_yaw"])
        lines += ["", "| albedo | face region | visible part | unseen part | occluded texels | lighting change | "
                  + " | ".join(f"face, yaw {b}" for b in yaw_bins) + " |", "|---" * (6 + len(yaw_bins)) + "|"]
        for label, r in albedo_results.items():
            lines.append(f"| {label} | {r['face']:.4f} | {r['visible']:.4f} | {r['unseen']:.4f} | {r['occluded']:.4f} | "
                         f"{r['lighting_change']:.4f} | " + " | ".join(f"{r['face_by_yaw'][b]:.4f}" for b in yaw_bins) + " |")
        lines += ["", "The same albedos, each first scaled by the one gain that fits it best to its truth over the face "
                  "(the overall level, which the photo's exposure hides):", "",
                  "| albedo | face region, level-free | unseen part, level-free | occluded texels, level-free |", "|---" * 4 + "|"]
        lines += [f"| {label} | {r['level_free']['face']:.4f} | {r['level_free']['unseen']:.4f} | {r['level_free']['occluded']:.4f} |"
                  for label, r in albedo_results.items()]
    out.mkdir(parents=True, exist_ok=True)
    document = {"machine": machine(), "geometry": results, "albedo": albedo_results, "albedo_note": albedo_note}
    (out / "synthetic.json").write_text(json.dumps(document, indent=2) + "\n")
    (out / "synthetic.md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines) + "\n"


MEAN_FACE = "mean face (baseline)"


def geometry_table(results: dict[str, dict]) -> list[str]:
    """Markdown tables of ``evaluate_expressions`` results (one row each, ``MEAN_FACE`` among them): mm by
    expression, yaw bin and overall, after rigid and after similarity alignment, each row also as a
    ratio to the mean face's error under the same alignment."""
    from training.synth import CATEGORIES

    first = next(iter(results.values()))
    cats = [c for c in CATEGORIES if c in first["by_category"]]
    bins = [b for b in aflw2000.BINS if b in first["by_yaw"]]
    base = results[MEAN_FACE]
    lines = []
    for key, title in (("mm", "rigid alignment"), ("similarity_mm", "similarity alignment (scale fitted too)")):
        lines += [f"Mean per-vertex error after {title}, mm, and as a ratio to the mean face's.", "",
                  "| prediction | " + " | ".join(cats + bins) + " | overall |", "|---" * (len(cats) + len(bins) + 2) + "|"]
        for label, r in results.items():
            pairs = [(r["by_category"][c], base["by_category"][c]) for c in cats]
            pairs += [(r["by_yaw"][b], base["by_yaw"][b]) for b in bins] + [(r["overall"], base["overall"])]
            lines.append(f"| {label} | " + " | ".join(f"{c[key]:.2f} ({c[key] / m[key]:.2f}x)" for c, m in pairs) + " |")
        lines.append("")
    return lines[:-1]


def texture_report(model_dir: Path, photos: Path, aflw: Path | None, limit: int | None, out: Path,
                   grid: Path | None = None, grid_rows: int = 6, fit_albedo: Path | None = None) -> str:
    """E_pho and identity cosine per photo set and texture kind; write JSON, Markdown and the figure.
    ``fit_albedo``: an albedo model npz whose p_t is fitted to each photo (``InProcessModel``'s ``albedo_model``)."""
    from . import rendered
    from .inprocess import InProcessModel

    model = InProcessModel(model_dir, albedo_model=fit_albedo)
    describe = rendered.FaceDescriptor()
    sets = {photos.name: rendered.load_photo_folder(photos, limit)}
    if aflw is not None:
        sets[aflw.name] = rendered.aflw_photos(aflw, limit)
    summaries, rows = {}, []
    for name, set_photos in sets.items():
        result = rendered.evaluate_photos(model, set_photos, describe, figure_rows=grid_rows - len(rows) if grid else 0)
        summaries[name] = result.summary
        rows += result.figure_rows
    text = "\n".join([
        f"# Texture: the reconstruction rendered over the photo, model {model.label}", "",
        *([f"texture.onnx's p_t fitted to each photo's seen skin with the albedo model `{fit_albedo}` "
           "(`service.engine.albedo_fit`), not the geometry stream's.", ""] if fit_albedo else []),
        "E_pho: mean absolute RGB difference (colour in [0, 1]) between the photo and the render over the render's "
        "mask. Identity: cosine similarity of dlib's 128-d face descriptors of the photo and of the photo with the "
        "render pasted over the face (same face box); identity distance: their Euclidean distance, dlib's own measure "
        "(below 0.6 counts as the same person). Boxes from the photo's 68 landmarks where given, else the "
        "service's detector (largest face).", "",
        f"Machine: {machine()}.", "", rendered.markdown(summaries)])
    if grid and rows:
        rendered.write_grid(rows, grid)
        text += f"\nFigure: `{grid}`.\n"
    out.mkdir(parents=True, exist_ok=True)
    document = {"model": {"name": model.model.name, "version": model.model.version}, "machine": machine(), "sets": summaries}
    (out / "texture.json").write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    (out / "texture.md").write_text(text)
    return text


if __name__ == "__main__":
    main()
