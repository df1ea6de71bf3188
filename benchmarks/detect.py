"""Benchmark the service's detect stage: YuNet (the default) against dlib's HOG, same photos, same run.

The photo is ``eval/photos/breakingbad.jpg`` (two faces) cut to 4:3 and resized to 640x480 and to
4000x3000 (a 12-megapixel phone photo). Each detector is built with the service's default settings
(``service.settings.Settings``) and called as the service's detect stage calls it; the two alternate
run by run so that a busy machine slows both alike. Writes a Markdown table with the p50 and p90 in
milliseconds and the faces found, and the machine's CPU.

    python benchmarks/detect.py --out benchmarks/results/detect.md [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from service.engine.detect import detection_scale, make_detector  # noqa: E402
from service.settings import Settings  # noqa: E402
from training.machine import cpu_name  # noqa: E402

DEFAULT_PHOTO = REPO_ROOT.parent / "shared" / "eval" / "photos" / "breakingbad.jpg"
SIZES = ((640, 480), (4000, 3000))


def photo_at(path: Path, size: tuple[int, int]) -> np.ndarray:
    """The photo's centre cut to ``size``'s aspect and resized to it: (H, W, 3) uint8 RGB."""
    rgb = np.asarray(Image.open(path).convert("RGB"))
    h, w = rgb.shape[:2]
    aspect = size[0] / size[1]
    cw, ch = (round(h * aspect), h) if w / h > aspect else (w, round(w / aspect))
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    return cv2.resize(rgb[y0:y0 + ch, x0:x0 + cw], size, interpolation=cv2.INTER_CUBIC)


def measure(detectors: dict, photo: np.ndarray, runs: int) -> dict[str, dict]:
    """p50 / p90 (ms) and faces found per detector, the detectors alternating run by run (one warm-up each)."""
    times = {name: [] for name in detectors}
    found = {name: len(detect(photo)) for name, detect in detectors.items()}
    for _ in range(runs):
        for name, detect in detectors.items():
            start = time.perf_counter()
            detect(photo)
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: {"p50": float(np.percentile(t, 50)), "p90": float(np.percentile(t, 90)), "faces": found[name]}
            for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--out", type=Path, help="write the Markdown table here (else print it)")
    args = parser.parse_args(argv)
    if not args.photo.is_file():
        print(f"photo {args.photo} absent", file=sys.stderr)
        return 2
    s = Settings()
    detectors = {name: make_detector(name, s.detect_score_threshold, s.min_face_px, s.detect_max_side,
                                     s.detect_upsample, s.yunet_path) for name in ("yunet", "hog")}
    lines = ["# Detect stage: YuNet against dlib's HOG", "",
             f"`python benchmarks/detect.py --runs {args.runs}` on `{args.photo.name}` cut to 4:3 and resized; "
             "the service's default settings (YuNet's copy scaled by "
             f"min(1, 32 / min_face_px = {s.min_face_px}, detect_max_side = {s.detect_max_side} / long side); "
             "HOG's copy at a long side of detect_max_side); the detectors alternate run by run; "
             "times in ms, including each detector's downscale.", "",
             f"- CPU: {cpu_name()}, {os.cpu_count()} cores; OpenCV {cv2.__version__}", "",
             "| photo | YuNet's copy | YuNet p50 | p90 | faces | HOG p50 | p90 | faces | YuNet / HOG (p50) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for size in SIZES:
        photo = photo_at(args.photo, size)
        r = measure(detectors, photo, args.runs)
        factor = detection_scale(size[1], size[0], s.min_face_px, s.detect_max_side)
        y, hog = r["yunet"], r["hog"]
        lines.append(f"| {size[0]}x{size[1]} | {round(size[0] * factor)}x{round(size[1] * factor)} | {y['p50']:.1f} | "
                     f"{y['p90']:.1f} | {y['faces']} | {hog['p50']:.1f} | {hog['p90']:.1f} | {hog['faces']} | "
                     f"{y['p50'] / hog['p50']:.2f} |")
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
