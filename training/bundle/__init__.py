"""Stage 3 on a GPU machine that has neither our data nor room for it: one folder to carry there.

A machine lent for minutes may take only a small upload (ours: 64 MiB, of which the repo's own
model store is 56 MB) and nothing from the network. A bundle holds what ``training.train finetune``
needs from a shipped model, about 62 MB in all:

- ``start.pt.xz``: the store's two streams as a stage-3 start checkpoint, tensors of more than 4,096
  values in half precision, xz-compressed (53 MB in fp32 -> 21 MB). Training upcasts them; ``join``
  puts the store's exact albedo buffers back into what comes home.
- ``facekit.npz``: ICT-FaceKit with its identity and expression deltas in half precision (23 -> 17 MB;
  a 1 cm delta is off by 5 um).
- ``photos.tar``: the fitted photos cropped to ``CONTEXT`` x their landmark box (so a turned,
  jittered training crop stays inside) and scaled so the box's longer side is at most ``box`` pixels
  (default 110: the smallest training crop, 1.6 x 0.85 x the box, is still >= 128 px), JPEG quality
  ``quality``, their ``.pts`` moved with them; and a subset of the landmarked photos (UTKFace), as
  they are. The fit runs again there on these photos (two minutes), as its shards would not fit.
- ``landmarks.npz``: the subset's landmarks; ``run.sh``: unbundle, fit, fine-tune, split.

The weights come home as ``best.pt.part*`` files (a lent machine returns files of at most 16 MiB).
The machine needs torch, numpy, opencv, scipy, onnx, tqdm and jsonschema (``service.model_store``
imports it; the lent images lack it, so its wheels travel too: ``benchmarks/results/gpu-h100.md``).
"""

from __future__ import annotations

import io
import lzma
import shutil
import tarfile
from pathlib import Path

import cv2
import numpy as np
import torch

from training.fitting.pts import list_samples, write_pts

CONTEXT = 2.6  # x the landmark box: the corners of a 1.84 x box crop turned by 20 degrees stay inside
HALF_PRECISION_ABOVE = 4096  # values; smaller tensors (biases, std) stay fp32
PART_BYTES = 15_000_000
ALBEDO_BUFFERS = ("albedo.mean", "albedo.basis", "albedo.std")


def pack_weights(store: Path, out: Path) -> int:
    """A model-store version folder -> ``out`` (xz of a stage-3 start checkpoint, large tensors fp16); its size."""
    from training.export.from_store import checkpoint_from_store

    ckpt = checkpoint_from_store(store)
    for stream in ("geometry_model", "texture_model"):
        ckpt[stream] = {k: v.half() if v.is_floating_point() and v.numel() > HALF_PRECISION_ABOVE else v
                        for k, v in ckpt[stream].items()}
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    out.write_bytes(lzma.compress(buffer.getvalue(), preset=6))
    return out.stat().st_size


def pack_facekit(src: Path, out: Path) -> None:
    kit = dict(np.load(src))
    for key in ("identity", "expression"):
        kit[key] = kit[key].astype(np.float16)
    np.savez_compressed(out, **kit)


def pack_photo(image: np.ndarray, landmarks: np.ndarray, box: float) -> tuple[np.ndarray, np.ndarray]:
    """One photo cut to ``CONTEXT`` x its landmark box and scaled so the box is at most ``box`` px.

    ``landmarks`` (68, 2) renderer pixels (pixel (i, j)'s centre at (j + 0.5, i + 0.5)); returns the
    smaller photo and its landmarks in the same convention.
    """
    lo, hi = landmarks.min(0), landmarks.max(0)
    side = float((hi - lo).max())
    centre, half = (lo + hi) / 2, CONTEXT / 2 * side
    h, w = image.shape[:2]
    x0, y0 = max(0, int(centre[0] - half)), max(0, int(centre[1] - half))
    x1, y1 = min(w, int(np.ceil(centre[0] + half))), min(h, int(np.ceil(centre[1] + half)))
    image = image[y0:y1, x0:x1]
    h, w = image.shape[:2]
    scale = min(1.0, box / side)
    w2, h2 = max(1, round(w * scale)), max(1, round(h * scale))
    if (w2, h2) != (w, h):
        image = cv2.resize(image, (w2, h2), interpolation=cv2.INTER_AREA)
    # Renderer coordinates scale exactly with the pixel grid (edges at 0 and w map to 0 and w2).
    return image, (landmarks - [x0, y0]) * np.array([w2 / w, h2 / h])


def pack_fitted_photos(src: Path, dst: Path, box: float, quality: int) -> int:
    dst.mkdir(parents=True, exist_ok=True)
    samples = list_samples(src)
    for s in samples:
        image, marks = pack_photo(cv2.imread(str(s.image)), s.landmarks.astype(np.float64), box)
        cv2.imwrite(str(dst / f"{s.name}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        write_pts(dst / f"{s.name}.pts", marks)
    return len(samples)


def pack_landmarked_photos(landmarks: Path, photos: Path, count: int, dst: Path, out: Path) -> int:
    """The first ``count`` photos of a ``python -m training.photos`` file, copied as they are, and their file."""
    dst.mkdir(parents=True, exist_ok=True)
    with np.load(landmarks) as d:
        names, marks = [str(n) for n in d["names"][:count]], d["landmarks"][:count]
    for name in names:
        shutil.copy(photos / name, dst / name)
    np.savez_compressed(out, names=np.array(names), landmarks=marks)
    return len(names)


def tar_folders(out: Path, root: Path, names: list[str]) -> None:
    """One file instead of thousands: an upload limit may count each small file by its disk blocks."""
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:  # PAX would add a header per file
        for name in names:
            tar.add(root / name, arcname=name)
        for name in names:
            shutil.rmtree(root / name)


def unbundle(bundle: Path) -> None:
    """On the GPU machine: the photo folders, ``start.pt`` and the albedo npz the synthetic anchors draw from
    (the texture stream's own buffers: mean, basis, std, as ``training.albedo`` writes them)."""
    with tarfile.open(bundle / "photos.tar") as tar:
        tar.extractall(bundle, filter="data")
    with lzma.open(bundle / "start.pt.xz") as src, open(bundle / "start.pt", "wb") as dst:
        shutil.copyfileobj(src, dst)
    texture = torch.load(bundle / "start.pt", map_location="cpu", weights_only=False)["texture_model"]
    np.savez(bundle / "albedo.npz", **{k.split(".")[1]: texture[k].float().numpy() for k in ALBEDO_BUFFERS})


def split_weights(checkpoint: Path, out: Path) -> list[Path]:
    """A stage-3 checkpoint without its optimiser, in ``PART_BYTES`` parts ``best.pt.part0``, ..."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    buffer = io.BytesIO()
    torch.save({k: v for k, v in ckpt.items() if k != "optimizer"}, buffer)
    data = buffer.getvalue()
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(0, len(data), PART_BYTES):
        parts.append(out / f"best.pt.part{i // PART_BYTES}")
        parts[-1].write_bytes(data[i:i + PART_BYTES])
    return parts


def join_weights(parts: Path, store: Path, out: Path) -> dict:
    """Back home: the parts as one checkpoint, with the start store's exact (fp32) albedo buffers."""
    from training.export.from_store import checkpoint_from_store

    files = sorted(parts.glob("best.pt.part*"), key=lambda p: int(p.name.removeprefix("best.pt.part")))
    if not files:
        raise FileNotFoundError(f"no best.pt.part* files in {parts}")
    ckpt = torch.load(io.BytesIO(b"".join(f.read_bytes() for f in files)), map_location="cpu", weights_only=False)
    start = checkpoint_from_store(store)["texture_model"]
    for key in ALBEDO_BUFFERS:
        ckpt["texture_model"][key] = start[key].clone()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out)
    return ckpt
