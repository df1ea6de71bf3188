"""``python -m training.evaluate aflw2000 --data ../shared/eval/aflw2000-dev [--url http://127.0.0.1:8000]``"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

from training.facemodel import FaceKit

from . import aflw2000, synthetic

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "eval" / "aflw2000-dev"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate")
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("aflw2000", help="68-landmark NME by yaw bin, with the mean-face and dlib baselines")
    a.add_argument("--data", type=Path, default=DEFAULT_DATA)
    a.add_argument("--url", help="a running service; omitted: baselines only")
    a.add_argument("--detector", action="store_true", help="let the service detect the face instead of passing the box")
    a.add_argument("--limit", type=int)
    a.add_argument("--out", type=Path, default=Path("reports"))
    y = sub.add_parser("synthetic", help="per-expression and per-yaw geometry error on the held-out synthetic set")
    y.add_argument("--model", type=Path, required=True, help="a model-store version folder")
    y.add_argument("--size", type=int, default=None, help="fewer samples than the full held-out set")
    y.add_argument("--out", type=Path, default=Path("reports"))
    args = parser.parse_args(argv)
    if args.command == "synthetic":
        synthetic_report(args.model, args.size, args.out)
        return

    samples = aflw2000.load_samples(args.data, args.limit)
    kit = FaceKit.load()
    mean_lm = kit.neutral[kit.landmarks68][:, :2] * [1, -1]  # frontal view, y down
    results = {
        "mean face in the box": aflw2000.evaluate(aflw2000.mean_face_predictor(mean_lm), samples),
        "dlib 68-point predictor": aflw2000.evaluate(aflw2000.dlib_predictor(), samples),
    }
    if args.url:
        label = "service (own detection)" if args.detector else "service"
        results[label] = aflw2000.evaluate(aflw2000.service_predictor(args.url, args.detector), samples)
    header = (f"{len(samples)} images from `{args.data}`; boxes from the ground-truth landmarks (3DDFA protocol); "
              f"NME normalised by sqrt(w·h) of the ground-truth box. Machine: {platform.processor() or platform.machine()}.")
    aflw2000.write_report(results, args.out, header)
    print(aflw2000.markdown(results))


def synthetic_report(model_dir: Path, size: int | None, out: Path) -> None:
    """Score a stored geometry.onnx with and without its expression ASM; write JSON and Markdown."""
    import json

    import onnxruntime as ort

    from training.facemodel import UVFaceModel

    manifest = json.loads((model_dir / "manifest.json").read_text())
    session = ort.InferenceSession(str(model_dir / "geometry.onnx"), providers=["CPUExecutionProvider"])

    def predict(images):
        a_id, a_exp = session.run(["a_id", "a_exp"], {"image": images.astype("float32")})
        return a_id, a_exp

    face_model = UVFaceModel.build(manifest["uv_size"])
    n = size or synthetic.SET_SIZE
    results = {label: synthetic.evaluate_expressions(predict, face_model, manifest["input_size"], size=n, with_expression=flag)
               for label, flag in (("A_id + A_exp", True), ("A_id only", False))}
    out.mkdir(parents=True, exist_ok=True)
    (out / "synthetic.json").write_text(json.dumps(results, indent=2) + "\n")
    from training.synth import CATEGORIES

    cats = [c for c in CATEGORIES if c in results["A_id + A_exp"]["by_category"]]
    bins = [b for b in aflw2000.BINS if b in results["A_id + A_exp"]["by_yaw"]]
    lines = [f"# Held-out synthetic set: {n} faces, model {manifest['model']['name']} {manifest['model']['version']}", "",
             "Mean per-vertex error after rigid alignment, mm (and / outer inter-ocular distance).", "",
             "| prediction | " + " | ".join(cats + bins) + " | overall |", "|---" * (len(cats) + len(bins) + 2) + "|"]
    for label, r in results.items():
        cells = [r["by_category"][c] for c in cats] + [r["by_yaw"][b] for b in bins] + [r["overall"]]
        lines.append(f"| {label} | " + " | ".join(f"{c['mm']:.2f} ({c['normalised']:.3f})" for c in cells) + " |")
    (out / "synthetic.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
