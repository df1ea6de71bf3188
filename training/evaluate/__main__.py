"""``python -m training.evaluate aflw2000 --data ../shared/eval/aflw2000-dev [--url http://127.0.0.1:8000]``"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

from training.facemodel import FaceKit

from . import aflw2000

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
    args = parser.parse_args(argv)

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


if __name__ == "__main__":
    main()
