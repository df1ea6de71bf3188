"""``python -m training.facemodel describe``: counts per UV size and a sheet to look at."""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402

from .facekit import FaceKit  # noqa: E402
from .model import UVFaceModel  # noqa: E402
from .topology import REGION_NAMES  # noqa: E402

SIZES = (64, 128, 256)
# A strong, asymmetric expression: open jaw, one-sided smile, raised brows, one eye closed.
STRONG_EXPRESSION = {"jawOpen": 0.8, "mouthSmile_L": 1.0, "browInnerUp_L": 0.8, "browInnerUp_R": 0.8,
                     "eyeBlink_R": 1.0, "cheekSquint_L": 0.6}


def rotation_y(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def draw_mesh(ax, vertices: np.ndarray, triangles: np.ndarray, yaw: float = 0.0) -> np.ndarray:
    """Shaded orthographic view (painter's algorithm); returns the rotated vertices (N, 3)."""
    v = vertices @ rotation_y(yaw).T
    tri = v[triangles]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
    light = np.array([0.3, 0.4, 1.0]) / np.linalg.norm([0.3, 0.4, 1.0])
    shade = 0.15 + 0.85 * np.clip(normal @ light, 0, 1)
    front = normal[:, 2] > 0
    order = np.argsort(tri[front, :, 2].mean(1))
    colours = np.clip(np.outer(shade[front][order], [0.93, 0.78, 0.68]), 0, 1)
    ax.add_collection(PolyCollection(tri[front][order][:, :, :2], facecolors=colours, edgecolors="none"))
    ax.set_xlim(v[:, 0].min() - 1, v[:, 0].max() + 1)
    ax.set_ylim(v[:, 1].min() - 1, v[:, 1].max() + 1)
    ax.set_aspect("equal")
    ax.axis("off")
    return v


def describe(out: Path, seed: int = 0) -> None:
    kit = FaceKit.load()
    models = {s: UVFaceModel.build(s, kit) for s in SIZES}
    region = models[SIZES[0]].region
    print(f"region: {len(region.vertex_ids)} ICT vertices, {len(region.triangles)} ICT triangles")
    print(f"canonical frame: center {models[SIZES[0]].frame.center} cm, scale {models[SIZES[0]].frame.scale} cm")
    print(f"{'S':>5} {'valid UV pixels (= mesh vertices)':>34} {'grid triangles':>15}")
    for s, m in models.items():
        t = m.topology
        print(f"{s:>5} {int(t.uv_mask.sum()):>34} {len(t.triangles):>15}")

    m = models[128]
    topo = m.topology
    fig, axes = plt.subplots(2, 3, figsize=(15, 10))
    ax = axes[0, 0]
    ax.imshow(np.where(topo.uv_mask, topo.region_labels, np.nan), cmap="tab10", vmin=0, vmax=9)
    ax.plot(topo.landmarks_uv[:, 0], topo.landmarks_uv[:, 1], "k.", ms=3)
    ax.set_title("UV mask (S=128) by region: " + ", ".join(REGION_NAMES[1:]), fontsize=7)
    ax = axes[0, 1]
    im = ax.imshow(np.where(topo.uv_mask, topo.weight_mask, np.nan), cmap="viridis")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("facial weight mask W")

    ax = axes[0, 2]
    draw_mesh(ax, kit.neutral, region.triangles)
    lm = kit.neutral[kit.landmarks68]
    ax.plot(lm[:, 0], lm[:, 1], "r.", ms=4)
    for i, (x, y, _) in enumerate(lm):
        ax.text(x, y, str(i), fontsize=6, color="blue")
    ax.set_title("mean face, 68 landmarks (iBUG order)")

    rng = np.random.default_rng(seed)
    exp = np.zeros(len(kit.expression_names), np.float32)
    for name, w in STRONG_EXPRESSION.items():
        exp[kit.expression_names.index(name)] = w
    face = kit.vertices(rng.standard_normal(100).astype(np.float32), exp)
    for ax, yaw in zip(axes[1], (0, 40, 90)):
        draw_mesh(ax, face, region.triangles, yaw)
        ax.set_title(f"random identity (seed {seed}), strong expression, yaw {yaw}°")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"sheet written to {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.facemodel")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("describe", help="print counts and draw a sheet of the face model in UV")
    d.add_argument("--out", type=Path, default=Path("docs/facemodel-sheet.png"))
    d.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "describe":
        describe(args.out, args.seed)
