"""A contact sheet of synthetic samples with their ground truth drawn over them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .expressions import CATEGORIES
from .generator import SynthBatch


def save_sheet(path: str | Path, batch: SynthBatch, uv_mask: np.ndarray, columns: int = 8, uv_samples: int = 4,
               title: str = "") -> None:
    """Every sample of ``batch`` (B images, ``columns`` a row) with its 68 landmarks (jaw, brows, nose,
    eyes and lips joined in order, so a wrong order or offset shows), the face-mask outline (cyan),
    its category and yaw; then for the first ``uv_samples`` samples their albedo map and visible-UV
    mask (white = visible, grey = in ``uv_mask`` (S, S) bool but unseen or occluded, black = outside).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(batch.category)
    image_rows = (n + columns - 1) // columns
    uv_rows = (2 * uv_samples + columns - 1) // columns
    fig, axes = plt.subplots(image_rows + uv_rows, columns, figsize=(1.7 * columns, 1.85 * (image_rows + uv_rows)),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    images = batch.image.permute(0, 2, 3, 1).numpy()
    # Landmarks are in renderer pixels (pixel j centred at j + 0.5); imshow centres pixel j at j.
    landmarks = batch.landmarks.numpy() - 0.5
    yaws = np.rad2deg(batch.p_h[:, 0].numpy())
    runs = [(0, 17), (17, 22), (22, 27), (27, 31), (31, 36), (36, 42, True), (42, 48, True), (48, 60, True), (60, 68, True)]
    for i in range(n):
        ax = axes[i // columns, i % columns]
        ax.imshow(images[i], interpolation="nearest")
        ax.contour(batch.face_mask[i].numpy().astype(float), levels=[0.5], colors="cyan", linewidths=0.6)
        for a, b, *closed in runs:
            pts = landmarks[i, a:b]
            if closed:
                pts = np.vstack([pts, pts[:1]])
            ax.plot(*pts.T, c="red", lw=0.4)
        ax.scatter(*landmarks[i].T, s=1.5, c="yellow", linewidths=0)
        category = int(batch.category[i])  # -1: a given face (profiling), its expression fitted, not drawn
        ax.set_title(f"{i}: {CATEGORIES[category] if category >= 0 else 'fitted'}, yaw {yaws[i]:+.0f}°", fontsize=6)
    for j in range(min(uv_samples, n)):
        k = image_rows * columns + 2 * j
        a, b = axes[k // columns, k % columns], axes[(k + 1) // columns, (k + 1) % columns]
        a.imshow(batch.albedo[j].permute(1, 2, 0).numpy().clip(0, 1))
        a.set_title(f"{j}: albedo (UV)", fontsize=6)
        visible = np.where(batch.uv_visible[j].numpy(), 1.0, np.where(uv_mask, 0.4, 0.0))
        b.imshow(visible, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        b.set_title(f"{j}: visible UV", fontsize=6)
    fig.suptitle(title or "Synthetic faces: red/yellow = the 68 ground-truth landmarks, cyan = face-mask outline", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
