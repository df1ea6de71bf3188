"""NME statistics by yaw bin, the Markdown report and the contact sheet of fits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from training.machine import describe

YAW_BINS = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0))  # |yaw| degrees; the last bin is closed


def nme_table(nme: np.ndarray, yaw_degrees: np.ndarray) -> list[dict]:
    """(B,) NME and (B,) yaw -> rows {bin, n, median, p90} for all photos, then each |yaw| bin."""
    yaw = np.abs(np.asarray(yaw_degrees))
    rows = [("all", np.ones_like(yaw, bool))]
    for i, (lo, hi) in enumerate(YAW_BINS):
        last = i == len(YAW_BINS) - 1
        rows.append((f"[{lo:.0f}, {hi:.0f}{']' if last else ')'}", (yaw >= lo) & ((yaw <= hi) if last else (yaw < hi))))
    out = []
    for name, sel in rows:
        v = np.asarray(nme)[sel]
        out.append({"bin": name, "n": int(sel.sum()),
                    "median": float(np.median(v)) if len(v) else float("nan"),
                    "p90": float(np.percentile(v, 90)) if len(v) else float("nan")})
    return out


def machine() -> str:
    """One line about where this ran."""
    return describe()


def write_markdown(path: str | Path, tables: dict[str, list[dict]], command: str, timings: dict[str, float],
                   notes: list[str]) -> None:
    """tables: label -> :func:`nme_table` rows (one column pair per label)."""
    labels = list(tables)
    head = "| yaw bin | n | " + " | ".join(f"{l} median | {l} p90" for l in labels) + " |"
    sep = "|---|---|" + "---|---|" * len(labels)
    lines = ["# Landmark fitting (`training.fitting`)", "",
             "ICT-FaceKit fitted to the 68 ground-truth landmarks of `helen-afw-68pt` (Helen train + AFW). "
             "NME = mean landmark reprojection error / sqrt(w h) of the ground-truth landmark box, in %; "
             "yaw from the fitted pose.", "", head, sep]
    first = tables[labels[0]]
    for i, row in enumerate(first):
        cells = " | ".join(
            f"{tables[l][i]['median'] * 100:.2f} | {tables[l][i]['p90'] * 100:.2f}" if tables[l][i]["n"] else "- | -"
            for l in labels)
        lines.append(f"| {row['bin']} | {row['n']} | {cells} |")
    empty = [row["bin"] for row in first if row["n"] == 0]
    if empty:
        lines += ["", f"No photo's fitted |yaw| falls in {', '.join(empty)}: the data set holds no profiles."]
    lines += ["", "Timing (wall clock): " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()), "",
              f"- Machine: {machine()}", f"- Command: `{command}`"]
    lines += [f"- {n}" for n in notes]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n")


def jaw_side_errors(pred: np.ndarray, target: np.ndarray, yaw_degrees: np.ndarray, min_yaw: float = 25.0) -> dict:
    """Median per-point error (/ sqrt(w h)) of the jaw points 0-16 on the side turned away and on
    the side facing the camera, over photos with |yaw| >= ``min_yaw``. pred, target (B, 68, 2)."""
    from .fitter import landmark_box_size

    turned = np.abs(yaw_degrees) >= min_yaw
    err = np.linalg.norm(pred - target, axis=-1)[turned] / landmark_box_size(target[turned])[:, None]
    plus = (yaw_degrees[turned] > 0)[:, None]  # yaw > 0 turns the +x side (points 9-16) away
    right = np.zeros(68, bool)
    right[9:17] = True
    left = np.zeros(68, bool)
    left[0:8] = True
    away = np.where(plus, right[None], left[None])
    near = np.where(plus, left[None], right[None])
    return {"n": int(turned.sum()), "away": float(np.median(err[away])) if turned.any() else float("nan"),
            "facing": float(np.median(err[near])) if turned.any() else float("nan")}


def pick_for_sheet(yaw_degrees: np.ndarray, count: int = 16) -> np.ndarray:
    """Indices of ``count`` photos whose |yaw| spreads evenly from 0 to the largest (real photos
    are mostly frontal, so picking by rank would show few turned faces)."""
    yaw = np.abs(np.asarray(yaw_degrees))
    picked: list[int] = []
    for value in np.linspace(0, yaw.max(), min(count, len(yaw))):
        dist = np.abs(yaw - value)
        dist[picked] = np.inf
        picked.append(int(np.argmin(dist)))
    return np.array(picked)


def shaded_overlay(photo: np.ndarray, points: torch.Tensor, faces: torch.Tensor, pose: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 photo with the fitted surface (P, 3) rendered grey-shaded at 55 % opacity."""
    from training.render import render_mesh, RenderSettings, vertex_normals

    from .unwrap import pose_camera

    h, w = photo.shape[:2]
    camera = pose_camera(pose, (h, w))
    verts = points[None].float()
    normals = vertex_normals(camera.to_view(verts), faces)
    # Headlight Lambert: brightness = normal . view direction, so the shape reads at a glance.
    shade = (0.25 + 0.75 * normals[..., 2:3].clamp(0, 1)).expand(-1, -1, 3)
    out = render_mesh(verts, faces, camera, RenderSettings(image_size=(h, w)), vertex_colors=shade)
    mask = out.mask[0].numpy()[..., None]
    rgb = out.image[0].numpy() * np.array([0.75, 0.85, 1.0])
    blend = photo / 255.0 * (1 - 0.55 * mask) + 0.55 * mask * rgb
    return (blend.clip(0, 1) * 255).astype(np.uint8)


def save_sheet(path: str | Path, panels: list[dict]) -> None:
    """panels: dicts with overlay (H, W, 3) uint8, texture (S, S, 3) uint8, visible (S, S) bool,
    landmarks / fitted (68, 2) pixels, title. Two images per fit, four fits per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(4 * cols, 2.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, p in enumerate(panels):
        a, b = axes[i // cols, 2 * (i % cols)], axes[i // cols, 2 * (i % cols) + 1]
        a.imshow(p["overlay"])
        a.scatter(*p["landmarks"].T, s=4, c="lime", linewidths=0)
        a.scatter(*p["fitted"].T, s=4, c="red", linewidths=0)
        # Jaw points joined in order: a wrong landmark order shows up as a zig-zag.
        a.plot(*p["fitted"][:17].T, c="red", lw=0.5)
        a.set_title(p["title"], fontsize=6)
        tex = np.where(p["visible"][..., None], p["texture"], 96).astype(np.uint8)
        b.imshow(tex)
        b.set_title("unwrapped (grey = unseen / outside UV mask)", fontsize=6)
    fig.suptitle("Landmark fits: green = ground truth, red = fitted model; right: photo unwrapped into UV", fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
