"""Is one model better than another on AFLW2000-3D, or only luckier? A paired bootstrap over photos.

    python -m training.evaluate compare reports/a/aflw2000.json reports/b/aflw2000.json [--row-a NAME] [--row-b NAME]

The dev subset holds 200 photos, 30-odd of them in the [60,90] bin, so the mean of the bins moves by
tenths of a point between runs that are equally good. Both models are scored on the same photos,
so the difference is measured photo by photo: B - A of the mean of the bins and of the overall NME,
on the photos both scored, with a 95 % interval from resampling the photos within each yaw bin
(the same draw for both models; the bins keep their sizes, as the mean of the bins assumes).
"""

from __future__ import annotations

import numpy as np

from .aflw2000 import BINS

MODEL_ROW = ", in-process"  # the default row: a model run in this process, one pass, not mirror-averaged


def default_row(results: dict) -> str:
    """The first row of an ``aflw2000.json`` that scored a model in-process without mirror averaging."""
    for name, row in results.items():
        if MODEL_ROW in name and not name.endswith("mirror-averaged") and row.get("per_photo"):
            return name
    raise ValueError(f"no in-process model row with per-photo figures among {list(results)}: name one, or rerun "
                     "`python -m training.evaluate aflw2000` (older reports have no per-photo figures)")


def paired_difference(a: dict, b: dict, rounds: int = 10_000, seed: int = 0) -> dict:
    """``a``, ``b``: two rows' ``per_photo`` ({name: {"yaw_bin", "nme_2d"}}). Returns each model's mean of
    the bins and overall NME on the photos both scored, B - A of each, and 2.5/97.5 % bootstrap bounds."""
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("the two rows share no scored photo")
    rng = np.random.default_rng(seed)
    n = {bin_: 0 for bin_ in BINS}
    means = {"a": [], "b": []}
    draws_mean_of_bins, draws_overall = np.zeros(rounds), np.zeros(rounds)
    filled = [bin_ for bin_ in BINS if any(a[p]["yaw_bin"] == bin_ for p in common)]
    for bin_ in filled:
        photos = [p for p in common if a[p]["yaw_bin"] == bin_]
        n[bin_] = len(photos)
        va, vb = (np.array([rows[p]["nme_2d"] for p in photos]) for rows in (a, b))
        means["a"].append(va.mean())
        means["b"].append(vb.mean())
        resampled = (vb - va)[rng.integers(0, len(photos), (rounds, len(photos)))].mean(1)
        draws_mean_of_bins += resampled / len(filled)
        draws_overall += resampled * len(photos) / len(common)
    weights = np.array([n[bin_] for bin_ in filled]) / len(common)
    a_bins, b_bins = float(np.mean(means["a"])), float(np.mean(means["b"]))
    a_all, b_all = float(np.dot(weights, means["a"])), float(np.dot(weights, means["b"]))
    return {"photos": len(common), "n": n,
            "mean_of_bins": {"a": a_bins, "b": b_bins, "difference": b_bins - a_bins,
                             "interval": [float(v) for v in np.percentile(draws_mean_of_bins, [2.5, 97.5])]},
            "overall": {"a": a_all, "b": b_all, "difference": b_all - a_all,
                        "interval": [float(v) for v in np.percentile(draws_overall, [2.5, 97.5])]}}


def markdown(result: dict, name_a: str, name_b: str) -> str:
    pct = lambda v: f"{v * 100:+.2f}"  # noqa: E731
    lines = [f"A: {name_a}; B: {name_b}; {result['photos']} photos scored by both "
             f"({', '.join(f'{b}: {k}' for b, k in result['n'].items())}).", "",
             "| NME | A | B | B - A | 95 % interval (paired bootstrap) |", "| --- | --- | --- | --- | --- |"]
    for key, label in (("mean_of_bins", "mean of bins"), ("overall", "overall")):
        r = result[key]
        lo, hi = r["interval"]
        lines.append(f"| {label} | {r['a'] * 100:.2f} % | {r['b'] * 100:.2f} % | {pct(r['difference'])} points | "
                     f"{pct(lo)} to {pct(hi)} |")
    return "\n".join(lines)
