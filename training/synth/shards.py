"""Synthetic faces on disk: compressed npz shards plus ``index.json``, and a reader that streams them
back as ``SynthBatch`` es.

Layout under ``out`` (as ``training.fitting`` writes its data): ``shard-00000.npz`` ... (``shard_size``
samples each, compressed) and ``index.json``. Shard keys are the ``SynthBatch`` fields, in its
layout (n samples, H = image size, S = UV size, K = albedo components):

    image (n, 3, H, H) uint8          round(255 x the [0, 1] image)
    a_id, a_exp (n, 3, S, S) f16      canonical units, 0 outside the UV mask
    albedo (n, 3, S, S) f16           colour in [0, 1] over the whole UV square
    p_l (n, 27) f32                   SH, 9 x RGB flattened coefficient-major
    p_h (n, 6) f32                    (yaw, pitch, roll in radians, tx, ty, log scale); ``training.models.pose``
    landmarks (n, 68, 2) f32          renderer pixels: pixel (i, j) centred at (j + 0.5, i + 0.5)
    face_mask (n, H, H) bool          uv_visible (n, S, S) bool
    category (n,) int64               index into ``expressions.CATEGORIES``
    id_coeffs (n, 100) f32            exp_weights (n, 53) f32 in [0, 1]
    p_t (n, K) f32                    albedo-model coefficients; (n, 0) without an albedo model

Sample i is row i - first of the shard whose entry in ``index.json`` covers it. The samples are a
pure function of the index's seed, settings and batch plan (``generator_batch``, ``batch_index``):
the same command writes the same arrays, whatever the shard size.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from .expressions import CATEGORIES
from .generator import SynthBatch, SynthFaceGenerator

FORMAT = "training.synth/1"

# On-disk dtype of every SynthBatch field. Maps are float16 (their error, ~1e-3 relative, is far below
# what the losses resolve) to halve the shards; the image is uint8 like any photo.
DTYPES: dict[str, type] = {
    "image": np.uint8,
    "a_id": np.float16, "a_exp": np.float16, "albedo": np.float16,
    "p_l": np.float32, "p_h": np.float32, "landmarks": np.float32,
    "face_mask": np.bool_, "uv_visible": np.bool_,
    "category": np.int64,
    "id_coeffs": np.float32, "exp_weights": np.float32, "p_t": np.float32,
}
assert set(DTYPES) == {f.name for f in dataclasses.fields(SynthBatch)}, "a SynthBatch field without an on-disk dtype"

YAW_BINS = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0))  # |yaw| degrees, as training.evaluate bins them


@dataclass(frozen=True)
class GeneratorCall:
    """One ``SynthFaceGenerator.batch(seed, index, size, categories, yaw_degrees)`` call of a plan."""

    index: int
    size: int
    categories: np.ndarray | None = None  # (size,) fixed categories, or drawn
    yaw_degrees: np.ndarray | None = None  # (size,) fixed yaws, or drawn


def random_plan(count: int, batch: int) -> list[GeneratorCall]:
    """``count`` samples as batches 0, 1, ... of ``batch`` (the last one shorter)."""
    return [GeneratorCall(k, min(batch, count - start)) for k, start in enumerate(range(0, count, batch))]


def encode(batch: SynthBatch) -> dict[str, np.ndarray]:
    """A SynthBatch -> its on-disk arrays (see the module docstring)."""
    out = {}
    for name, dtype in DTYPES.items():
        value = getattr(batch, name).detach().cpu()
        if name == "image":
            value = (value.clamp(0, 1) * 255).round()
        out[name] = value.numpy().astype(dtype)
    return out


def decode(arrays: dict[str, np.ndarray]) -> SynthBatch:
    """On-disk arrays -> a SynthBatch as the generator returns it: float32 maps and image in [0, 1]
    (within float16 / uint8 rounding of the generated ones), bool masks, int64 categories."""
    fields = {}
    for name in DTYPES:
        value = arrays[name]
        if name == "image":
            value = value.astype(np.float32) / 255.0
        elif value.dtype == np.float16:
            value = value.astype(np.float32)
        fields[name] = torch.from_numpy(np.ascontiguousarray(value))
    return SynthBatch(**fields)


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([p[name] for p in parts]) for name in DTYPES}


def yaw_bin_name(yaw_degrees: float) -> str:
    a = abs(yaw_degrees)
    for i, (lo, hi) in enumerate(YAW_BINS):
        if a < hi or i == len(YAW_BINS) - 1:
            return f"[{lo:.0f},{hi:.0f}{']' if i == len(YAW_BINS) - 1 else ')'}"
    raise AssertionError


def write_shards(gen: SynthFaceGenerator, out: str | Path, seed: int, plan: Iterable[GeneratorCall],
                 shard_size: int = 256, meta: dict | None = None, desc: str = "synth") -> dict:
    """Generate every call of ``plan`` with ``seed`` and write the shards and ``index.json`` under ``out``.

    ``meta`` (settings, provenance, ...) goes into the index as it is. Returns the index as written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = list(plan)
    total = sum(call.size for call in plan)
    shards: list[dict] = []
    categories, yaw_bins = Counter(), Counter()
    pending: list[dict[str, np.ndarray]] = []  # generated rows not yet in a shard

    def flush(arrays: dict[str, np.ndarray]) -> None:
        name = f"shard-{len(shards):05d}.npz"
        np.savez_compressed(out / name, **arrays)
        first = shards[-1]["first"] + shards[-1]["count"] if shards else 0
        shards.append({"name": name, "first": first, "count": len(arrays["category"])})

    with tqdm(total=total, desc=desc, unit="face") as bar:
        for call in plan:
            batch = gen.batch(seed, call.index, call.size, categories=call.categories, yaw_degrees=call.yaw_degrees)
            arrays = encode(batch)
            categories.update(CATEGORIES[c] for c in arrays["category"])
            yaw_bins.update(yaw_bin_name(y) for y in np.rad2deg(arrays["p_h"][:, 0]))
            pending.append(arrays)
            # Shards need not line up with generator batches: cut full shards off the pending rows.
            while sum(len(p["category"]) for p in pending) >= shard_size:
                rows = _concat(pending)
                flush({k: v[:shard_size] for k, v in rows.items()})
                rest = {k: v[shard_size:] for k, v in rows.items()}
                pending = [rest] if len(rest["category"]) else []
            bar.update(call.size)
    if pending:
        flush(_concat(pending))

    index = {
        "format": FORMAT,
        "count": total,
        "seed": seed,
        **(meta or {}),
        "shard_size": shard_size,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "counts": {"category": {c: categories[c] for c in CATEGORIES},
                   "yaw_bin": {yaw_bin_name(lo): yaw_bins[yaw_bin_name(lo)] for lo, _ in YAW_BINS}},
        "fields": {name: np.dtype(dtype).name for name, dtype in DTYPES.items()},
        "shards": shards,
    }
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return index


def read_index(folder: str | Path) -> dict:
    index = json.loads((Path(folder) / "index.json").read_text())
    if index.get("format") != FORMAT:
        raise ValueError(f"{folder}/index.json is not a {FORMAT} index (format {index.get('format')!r})")
    return index


def load_shard(path: str | Path) -> SynthBatch:
    """One shard, decoded (see :func:`decode`)."""
    with np.load(path) as d:
        return decode({k: d[k] for k in d.files})


def load_synth_shards(folder: str | Path) -> SynthBatch:
    """Every sample of ``folder`` in one SynthBatch, in index order (for test sets that fit in memory;
    :func:`iter_synth_batches` streams larger ones)."""
    index = read_index(folder)
    parts = [load_shard(Path(folder) / s["name"]) for s in index["shards"]]
    return SynthBatch(**{name: torch.cat([getattr(p, name) for p in parts]) for name in DTYPES})


def iter_synth_batches(folder: str | Path, batch_size: int, shuffle: bool = False, seed: int = 0,
                       drop_last: bool = False) -> Iterator[SynthBatch]:
    """Stream ``folder``'s samples as SynthBatches of ``batch_size`` (B first, the layout the generator
    returns), one shard in memory at a time.

    ``shuffle`` visits the shards and the rows within each in a random order drawn from ``seed`` (a
    new seed per epoch gives a new order); batches may straddle two shards. The last, shorter batch
    is dropped with ``drop_last``.
    """
    index = read_index(folder)
    rng = np.random.default_rng(seed)
    shards = index["shards"]
    order = rng.permutation(len(shards)) if shuffle else range(len(shards))
    carry: SynthBatch | None = None  # rows left over from the previous shard
    for k in order:
        batch = load_shard(Path(folder) / shards[k]["name"])
        if shuffle:
            rows = torch.from_numpy(rng.permutation(len(batch.category)))
            batch = SynthBatch(**{name: getattr(batch, name)[rows] for name in DTYPES})
        if carry is not None:
            batch = SynthBatch(**{name: torch.cat([getattr(carry, name), getattr(batch, name)]) for name in DTYPES})
        n = len(batch.category)
        for start in range(0, n - batch_size + 1, batch_size):
            yield SynthBatch(**{name: getattr(batch, name)[start:start + batch_size] for name in DTYPES})
        rest = n - n % batch_size
        carry = SynthBatch(**{name: getattr(batch, name)[rest:] for name in DTYPES}) if n % batch_size else None
    if carry is not None and not drop_last:
        yield carry
