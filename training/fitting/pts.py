"""300-W / iBUG ``.pts`` landmark files and the photo folders that hold them.

Coordinate convention. iBUG marked its points in MATLAB-style 1-based pixel coordinates, where an
integer ``(x1, y1)`` is the *centre* of the pixel in column ``x1 - 1``, row ``y1 - 1`` (0-based).
The renderer (``training.render``) puts the centre of pixel (row i, col j) at ``(j + 0.5, i + 0.5)``.
So a 1-based annotation maps to renderer coordinates by ``x = x1 - 0.5``, ``y = y1 - 0.5``: the
first pixel's centre (1, 1) lands on (0.5, 0.5). Everything in ``training.fitting`` (the fit, the
stored landmarks, the NME) uses these 0-based, pixel-edge-origin coordinates; ``write_pts`` undoes
the shift so a round trip is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

PTS_OFFSET = 0.5  # renderer coordinate = 1-based iBUG coordinate - PTS_OFFSET
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp")


def read_pts(path: str | Path) -> np.ndarray:
    """Read a 300-W ``.pts`` file.

    Returns:
        (n_points, 2) float32 ``(x, y)`` in renderer pixel coordinates (x right, y down, the centre
        of pixel (row i, col j) at (j + 0.5, i + 0.5)), i.e. the file's 1-based values minus 0.5.
    """
    lines = [ln.strip() for ln in Path(path).read_text().splitlines()]
    header = {}
    for ln in lines:
        if ln.startswith("{"):
            break
        if ":" in ln:
            key, value = ln.split(":", 1)
            header[key.strip()] = value.strip()
    try:
        start, end = lines.index("{") + 1, lines.index("}")
    except ValueError as err:
        raise ValueError(f"{path}: no '{{ ... }}' block of points") from err
    points = np.array([[float(v) for v in ln.split()[:2]] for ln in lines[start:end] if ln], np.float64)
    n = int(header.get("n_points", len(points)))
    if points.shape != (n, 2):
        raise ValueError(f"{path}: header says {n} points, found {points.shape[0]}")
    return (points - PTS_OFFSET).astype(np.float32)


def write_pts(path: str | Path, points: np.ndarray) -> None:
    """Write (n, 2) renderer-convention points as a 1-based 300-W ``.pts`` file."""
    points = np.asarray(points, np.float64) + PTS_OFFSET
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in points)
    Path(path).write_text(f"version: 1\nn_points: {len(points)}\n{{\n{body}\n}}\n")


@dataclass(frozen=True)
class Sample:
    """One annotated photo: ``name`` (file stem), ``image`` path, ``landmarks`` (68, 2) float32."""

    name: str
    image: Path
    landmarks: np.ndarray


def list_samples(folder: str | Path, limit: int | None = None) -> list[Sample]:
    """Every photo in ``folder`` with a 68-point ``.pts`` beside it, sorted by name."""
    folder = Path(folder)
    samples = []
    for pts in sorted(folder.glob("*.pts")):
        image = next((pts.with_suffix(s) for s in IMAGE_SUFFIXES if pts.with_suffix(s).is_file()), None)
        if image is None:
            continue
        points = read_pts(pts)
        if points.shape != (68, 2):
            continue
        samples.append(Sample(pts.stem, image, points))
        if limit is not None and len(samples) >= limit:
            break
    return samples
