"""``python -m training.albedo --fitted data/fitted --out data/albedo.npz [--k 80]``

Builds the UV albedo model from the photos ``training.fitting`` unwrapped: per photo SH lighting
from the fitted normals, delighting, mirror fill; then a masked PCA over the photos, 10 % held out
to report the reconstruction error. Writes mean (3, S, S), basis (K, 3, S, S), std (K,) and the
provenance, and a Markdown report beside the output.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training.fitting.crops import is_validation
from training.fitting.dataset import load_shard
from training.render import euler_to_rotation

from .build import delight, estimate_sh, masked_pca, mirror_fill, reconstruction_error


def uv_normals(points: np.ndarray) -> np.ndarray:
    """(S, S, 3) position map -> (S, S, 3) unit normals (outward: +z on a frontal face)."""
    du = np.gradient(points, axis=1)  # along u (columns)
    dv = -np.gradient(points, axis=0)  # v grows upwards, rows downwards
    n = np.cross(du, dv)
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-9)


def photo_albedo(texture, visible, a_full, pose, mask, mirror):
    """One photo -> (P, 3) albedo at the mask's pixels and (P,) validity."""
    import torch

    rot = euler_to_rotation(*(torch.tensor([float(v)]) for v in pose[:3]))[0].numpy()
    normals = uv_normals(a_full) @ rot.T
    colours = texture[mask].astype(np.float64) / 255.0
    seen = visible[mask]
    n = normals[mask]
    sh = estimate_sh(colours[seen], n[seen], colours[seen].mean(0))
    albedo, ok = delight(colours, n, sh)
    ok &= seen
    return mirror_fill(albedo, ok, mirror)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.albedo")
    parser.add_argument("--fitted", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--k", type=int, default=80)
    parser.add_argument("--sheet", type=Path, help="also draw the mean and +-2 sigma of the first five components")
    args = parser.parse_args(argv)

    index = json.loads((args.fitted / "index.json").read_text())
    s = index["uv_size"]
    first = load_shard(args.fitted / index["shards"][0])
    mask = first["a_id"][0].astype(np.float32).any(-1)
    flat = np.flatnonzero(mask.ravel())
    lookup = np.full(s * s, -1)
    lookup[flat] = np.arange(len(flat))
    rows, cols = np.nonzero(mask)
    mirror_flat = rows * s + (s - 1 - cols)
    mirror = np.where(mask.ravel()[mirror_flat], lookup[mirror_flat], -1)

    names, data, observed = [], [], []
    for shard_name in tqdm(index["shards"], desc="delight"):
        shard = load_shard(args.fitted / shard_name)
        for i, name in enumerate(shard["name"]):
            a_full = (shard["a_id"][i] + shard["a_exp"][i]).astype(np.float64)
            albedo, ok = photo_albedo(shard["texture"][i], shard["visible"][i], a_full, shard["pose"][i], mask, mirror)
            names.append(str(name))
            data.append(np.clip(albedo, 0, 1).ravel())
            observed.append(np.repeat(ok, 3))
    data, observed = np.stack(data), np.stack(observed)
    held = np.array([is_validation(n, 0.10) for n in names])
    model = masked_pca(np.where(observed[~held], data[~held], 0), observed[~held], args.k)
    train_err = reconstruction_error(model, data[~held][:100], observed[~held][:100])
    test_err = reconstruction_error(model, data[held], observed[held])

    def to_maps(v):  # (..., 3P) -> (..., 3, S, S)
        out = np.zeros((*v.shape[:-1], s * s, 3), np.float32)
        out[..., flat, :] = v.reshape(*v.shape[:-1], -1, 3)
        return np.moveaxis(out.reshape(*v.shape[:-1], s, s, 3), -1, -3)

    provenance = {"photos": int((~held).sum()), "held_out": int(held.sum()), "k": len(model.std),
                  "source": str(args.fitted), "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, mean=to_maps(model.mean), basis=to_maps(model.components), std=model.std.astype(np.float32),
                        explained=model.explained.astype(np.float32), provenance=json.dumps(provenance))
    cumulative = np.cumsum(model.explained)
    report = "\n".join([
        f"# Albedo model ({provenance['k']} components, {provenance['photos']} photos, {provenance['held_out']} held out)", "",
        f"Explained variance: first 5 components {', '.join(f'{100 * e:.1f} %' for e in model.explained[:5])}; "
        f"cumulative at 10 / 40 / {len(cumulative)}: {100 * cumulative[min(9, len(cumulative) - 1)]:.1f} / "
        f"{100 * cumulative[min(39, len(cumulative) - 1)]:.1f} / {100 * cumulative[-1]:.1f} %.", "",
        f"Mean absolute reconstruction error on observed pixels (colour in [0, 1]): training photos "
        f"{train_err.mean():.4f}, held-out photos {test_err.mean():.4f}.", ""])
    args.out.with_suffix(".md").write_text(report)
    print(report)
    if args.sheet:
        save_sheet(args.sheet, to_maps(model.mean), to_maps(model.components[:5]), model.std[:5])


def save_sheet(path: Path, mean: np.ndarray, basis: np.ndarray, std: np.ndarray) -> None:
    """mean (3, S, S), basis (5, 3, S, S), std (5,) -> a PNG grid: the mean, then +2 / -2 sigma per component."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1 + len(std), figsize=(3 * (1 + len(std)), 6))
    show = lambda ax, img, title: (ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 1)), ax.set_title(title))  # noqa: E731
    show(axes[0, 0], mean, "mean albedo")
    for k in range(len(std)):
        for row, sign in enumerate((2, -2)):
            show(axes[row, k + 1], mean + sign * std[k] * basis[k], f"component {k + 1}, {sign:+d} sigma")
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=60)


if __name__ == "__main__":
    main()
