"""Benchmark the GLB with and without the 53 blendshapes as morph targets (``morph_targets=true``), in
ICT's topology (what the service outputs: ``region=face`` and ``region=head``) and on the UV grid it
output before (the baseline).

One photo (``eval/photos/JianzhuGuo.jpg``) through a model store's geometry in this process, its
meshes fused as the service fuses them with a 512^2 texture (``default_texture_size``, the photo
resized: a texture's JPEG size depends on its content, and this one is the same for every row; the
eyeballs' 128^2 texture with the photo's iris colour), then ``fuse`` and ``export_glb`` timed, the
rows alternating run by run so that a busy machine slows all alike. The first export with morph
targets also encodes the model's targets (once per process); it is left out of the percentiles and
reported on its own. Writes a Markdown table: GLB bytes, fuse and export p50 / p90 (ms).

    python benchmarks/morph.py --model model_store/facerecon-cpu-small/0.7.0 --out benchmarks/results/morph.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from service.engine.export import export_glb  # noqa: E402
from service.engine.eyes import eye_texture, iris_colour  # noqa: E402
from service.engine.fuse import fuse_mesh, fuse_meshes  # noqa: E402
from training.evaluate.inprocess import InProcessModel  # noqa: E402
from training.machine import cpu_name  # noqa: E402

DEFAULT_PHOTO = REPO_ROOT.parent / "shared" / "eval" / "photos" / "JianzhuGuo.jpg"
ROWS = [("grid", "full", False), ("grid", "full", True), ("ICT face", "full", False), ("ICT face", "full", True),
        ("ICT face", "identity", True), ("ICT head", "full", False), ("ICT head", "full", True)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a model-store version folder")
    parser.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    model = InProcessModel(args.model)
    photo = np.asarray(Image.open(args.photo).convert("RGB"))
    _, _, _, geo = model.geometry(photo)
    texture = np.asarray(Image.fromarray(photo).resize((512, 512)))
    eyes = eye_texture(iris_colour(photo, geo.landmarks_photo))

    def fuse(row):
        topology, kind, morph = row
        if topology == "grid":
            return [fuse_mesh(kind, geo, model.topology, texture, "face_0", morph)]
        region = "head" if topology == "ICT head" else "face"
        return fuse_meshes(kind, geo, model.topology, texture, "face_0", morph, eyes, region)

    meshes = {row: fuse(row) for row in ROWS}
    start = time.perf_counter()
    for row in ROWS:
        if row[2]:
            export_glb(meshes[row], {})
    first = (time.perf_counter() - start) * 1000
    sizes = {row: len(export_glb(mesh, {})) for row, mesh in meshes.items()}
    fuse_ms = {row: [] for row in ROWS}
    times = {row: [] for row in ROWS}
    for _ in range(args.runs):
        for row in ROWS:
            start = time.perf_counter()
            fuse(row)
            fuse_ms[row].append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            export_glb(meshes[row], {})
            times[row].append((time.perf_counter() - start) * 1000)
    lines = [f"# GLB with morph targets ({model.label}, {args.photo.name}, 512^2 JPEG texture)", "",
             f"Machine: {cpu_name()}, {os.cpu_count()} cores; {args.runs} runs per row, alternating; "
             f"`python benchmarks/morph.py --model {args.model} --out {args.out}`.", "",
             "| topology | mesh | morph_targets | GLB bytes | fuse p50 / p90 ms | export p50 / p90 ms |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row, t in times.items():
        topology, kind, morph = row
        f = fuse_ms[row]
        lines.append(f"| {topology} | {kind} | {str(morph).lower()} | {sizes[row]:,} | {np.percentile(f, 50):.1f} / "
                     f"{np.percentile(f, 90):.1f} | {np.percentile(t, 50):.1f} / {np.percentile(t, 90):.1f} |")
    lines += ["", f"The first exports with morph targets, which encode each topology's 53 targets once per process: "
                  f"{first:.0f} ms."]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
