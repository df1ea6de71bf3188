"""Synthetic-face generator rate: samples per second at 128 px (and 256 px) on this machine.

    python benchmarks/synth.py --out benchmarks/results/synth.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from training.facemodel import UVFaceModel
from training.machine import cpu_name
from training.synth import SynthFaceGenerator, SynthSettings


def rate(gen: SynthFaceGenerator, batch: int, seconds: float = 10.0) -> float:
    gen.batch(0, 0, batch)  # warm-up
    done, start, index = 0, time.perf_counter(), 1
    while time.perf_counter() - start < seconds:
        gen.batch(0, index, batch)
        done, index = done + batch, index + 1
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/synth.md"))
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    rows = []
    for image, uv in ((128, 128), (256, 256)):
        gen = SynthFaceGenerator(UVFaceModel.build(uv), SynthSettings(image_size=image))
        for batch in (16, 32):
            rows.append(f"| {image} px | S = {uv} | {batch} | {rate(gen, batch, args.seconds):.1f} |")
    text = "\n".join([
        "# Synthetic-face generator rate (`training.synth`)",
        "",
        f"CPU: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}. Each sample: identity,",
        "expression, procedural albedo, SH lighting, pose, background, a render of the ICT head and the",
        "ground-truth UV maps.",
        "",
        "| image | UV maps | batch | samples / s |",
        "| --- | --- | --- | --- |",
        *rows,
        "",
        "Regenerate: `python benchmarks/synth.py --out benchmarks/results/synth.md` (on an otherwise idle machine).",
        "",
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
