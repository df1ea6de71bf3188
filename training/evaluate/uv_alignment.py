"""Does the ``photo`` texture line up? The photo's annotated 68 landmarks carried into UV against the
mesh's own 68 landmarks there (the topology's ``landmarks_uv``), in texels of a ``size``² texture.

The ``photo`` texture puts at each texel the photo's colour at the texel's projected position
(``service.engine.texture.photo_positions``). A photo landmark therefore lands, in UV, at the seen
texel whose projected position is nearest to it (refined below a texel by the local inverse of the
projection). Were the geometry exact, that is the mesh's own landmark in UV; the distance is what a
user sees as the photo's eye sitting above or below the mesh's eye opening.

Beside the model, per face: the *floor* (the mesh's own projected landmarks carried back the same way:
what the lookup itself adds), the *mean face* under the model's pose (its shape replaced by ICT's
neutral mean: what the model's shape buys), and the *scale*, texels per photo pixel at the landmarks
(a landmark error of one photo pixel moves the texture by that much).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.engine.asm_decode import FaceGeometry, decode_asm
from service.engine.texture import photo_positions, resize
from service.engine.topology import MeshTopology
from service.engine.unwrap import Unwrap, unwrap

from .aflw2000 import BINS, load_samples
from .metrics import yaw_bin

INNER = np.arange(17, 68)  # brows, nose, eyes, mouth: the jaw contour is a silhouette, not a surface point
PARTS = {"brows": np.arange(17, 27), "nose": np.arange(27, 36), "eyes": np.arange(36, 48), "mouth": np.arange(48, 68)}


def seen_texels(unwrapped: Unwrap, topo: MeshTopology, size: int) -> np.ndarray:
    """(size, size) bool: texels inside the UV mask that the photo shows (the unwrap's visibility, resized)."""
    seen = resize(unwrapped.visibility.astype(np.float64), size) > 0.5
    return seen & (resize(topo.uv_mask.astype(np.float64), size) > 0.5)


def photo_to_uv(positions: np.ndarray, candidates: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where photo points land in UV.

    positions: (T, T, 2) photo (x, y) of each texel; candidates: (T, T) bool, the texels that may take a
    point; points: (N, 2) photo pixels. Returns (N, 2) UV texel positions (x = col, y = row, centres at
    integers) and (N,) the photo-pixel distance from each point to its nearest candidate's position
    (large where the point lies off the seen surface).
    """
    t = positions.shape[0]
    index = np.flatnonzero(candidates)
    if index.size == 0:
        raise ValueError("no candidate texels")
    xy = positions.reshape(-1, 2)[index]
    uv, gap = np.zeros((len(points), 2)), np.zeros(len(points))
    for i, p in enumerate(points):
        k = int(np.argmin(((xy - p) ** 2).sum(1)))
        row, col = divmod(int(index[k]), t)
        gap[i] = float(np.hypot(*(xy[k] - p)))
        # Below a texel: one Newton step through the local Jacobian d(photo xy)/d(col, row).
        r, c = min(max(row, 1), t - 2), min(max(col, 1), t - 2)
        jac = np.stack([(positions[r, c + 1] - positions[r, c - 1]) / 2, (positions[r + 1, c] - positions[r - 1, c]) / 2], 1)
        step = np.zeros(2)
        if abs(np.linalg.det(jac)) > 1e-9:
            step = np.clip(np.linalg.solve(jac, p - positions[row, col]), -1.0, 1.0)
        uv[i] = (col + step[0], row + step[1])
    return uv, gap


def texels_per_pixel(positions: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """(N,) texels per photo pixel (the square root of the inverse Jacobian's area) at (N, 2) UV positions."""
    t = positions.shape[0]
    out = np.zeros(len(uv))
    for i, (x, y) in enumerate(uv):
        r, c = min(max(int(round(y)), 1), t - 2), min(max(int(round(x)), 1), t - 2)
        jac = np.stack([(positions[r, c + 1] - positions[r, c - 1]) / 2, (positions[r + 1, c] - positions[r - 1, c]) / 2], 1)
        out[i] = 1.0 / np.sqrt(max(abs(np.linalg.det(jac)), 1e-12))
    return out


def mesh_landmarks_uv(topo: MeshTopology, size: int) -> np.ndarray:
    """(68, 2) the topology's landmarks in texels of a size² texture (centres at integers)."""
    return (topo.landmarks_uv + 0.5) * size / topo.size - 0.5


def uv_distances(geo: FaceGeometry, unwrapped: Unwrap, topo: MeshTopology, landmarks: np.ndarray,
                 size: int) -> dict[str, np.ndarray]:
    """(68,) texel distances between ``landmarks`` (68, 2 photo pixels) carried into UV and the mesh's own
    UV landmarks; with each point's gap to the seen surface (photo px) and the texels per photo pixel."""
    positions = photo_positions(unwrapped, geo, size)
    seen = seen_texels(unwrapped, topo, size)
    uv, gap = photo_to_uv(positions, seen, landmarks[:, :2])
    target = mesh_landmarks_uv(topo, size)
    at = np.clip(np.round(target).astype(int), 0, size - 1)
    return {"texels": np.linalg.norm(uv - target, axis=1), "offset": uv - target, "gap_px": gap,
            "texels_per_px": texels_per_pixel(positions, target), "mesh_seen": seen[at[:, 1], at[:, 0]]}


def mean_face_geometry(geo: FaceGeometry, outputs: dict[str, np.ndarray], mean_face: np.ndarray, topo: MeshTopology,
                       pose_fields: list[str] | None) -> FaceGeometry:
    """The same crop, pose and lighting with the shape replaced by ``mean_face`` (3, S, S), no expression."""
    face = {k: v for k, v in outputs.items() if k != "exp_weights"}
    face |= {"a_id": mean_face, "a_exp": np.zeros_like(mean_face)}
    return decode_asm(face, geo.crop, topo, pose_fields)


def face_alignment(model, image: np.ndarray, landmarks: np.ndarray, mean_face: np.ndarray, size: int) -> dict:
    """One face (box from its landmarks, as the 3DDFA protocol): per-landmark texel distances of the
    model, of the floor and of the mean face, the scale, and the model's landmark error in photo pixels."""
    from service.engine.recrop import landmark_box

    _, _, outputs, geo = model.geometry(image, landmark_box(landmarks))
    topo = model.topology
    named = {k: out[0] for k, out in zip(model.model.geometry_outputs, outputs)}
    unwrapped = unwrap(geo, topo)
    own = uv_distances(geo, unwrapped, topo, landmarks, size)
    floor = uv_distances(geo, unwrapped, topo, geo.landmarks_photo[:, :2], size)
    mean_geo = mean_face_geometry(geo, named, mean_face, topo, model.pose_fields)
    mean = uv_distances(mean_geo, unwrap(mean_geo, topo), topo, landmarks, size)
    # The floor only where the mesh's own landmark is seen: a hidden one (the far eye of a turned head)
    # lands on whatever hides it, which is the geometry's occlusion, not the lookup's error.
    return {"model": own["texels"], "floor": np.where(floor["mesh_seen"], floor["texels"], np.nan),
            "mean_face": mean["texels"], "offset": own["offset"],
            "texels_per_px": own["texels_per_px"], "gap_px": own["gap_px"],
            "error_px": np.linalg.norm(geo.landmarks_photo[:, :2] - landmarks[:, :2], axis=1)}


ROWS = ("model", "floor", "mean_face")


def summarise(faces: dict[str, dict], yaws: dict[str, float] | None = None) -> dict:
    """Means over faces of each row's per-face mean distance, over the inner 51 landmarks, all 68 and by part."""
    def mean_of(key, idx):
        per_face = [np.nanmean(f[key][idx]) for f in faces.values() if np.isfinite(f[key][idx]).any()]
        return float(np.mean(per_face)) if per_face else None

    out = {"n": len(faces)}
    for key in (*ROWS, "texels_per_px", "error_px"):
        out[key] = {"inner": mean_of(key, INNER), "all": mean_of(key, np.arange(68))}
        out[key] |= {part: mean_of(key, idx) for part, idx in PARTS.items()}
    # A systematic shift (the photo's eyes above the mesh's eye openings on every face) would be a
    # calibration to fix, not noise: the mean signed offset, texels (x right, y down in the texture).
    for part, idx in (("inner", INNER), *PARTS.items()):
        out.setdefault("model_offset", {})[part] = (
            [float(v) for v in np.mean([f["offset"][idx].mean(0) for f in faces.values()], 0)] if faces else None)
    out["off_surface"] = int(sum((f["gap_px"][INNER] > 2.0).sum() for f in faces.values()))  # points 2+ px off the seen mesh
    if yaws:
        out["model_inner_by_yaw"] = {}
        for b in BINS:
            names = [n for n in faces if yaw_bin(yaws[n]) == b]
            out["model_inner_by_yaw"][b] = (float(np.mean([faces[n]["model"][INNER].mean() for n in names]))
                                            if names else None)
            out["model_inner_by_yaw"][f"n {b}"] = len(names)
    return out


def alignment_report(model_dir: Path, photos: Path | None, aflw: Path | None, limit: int | None, size: int,
                     out: Path) -> str:
    """Write uv_alignment.json and .md into ``out``; returns the Markdown."""
    import json

    from training.facemodel import UVFaceModel
    from training.machine import describe as machine

    from .inprocess import InProcessModel
    from .rendered import load_photo_folder

    model = InProcessModel(model_dir)
    mean_face = UVFaceModel.build(model.model.store.uv_size).identity_map().transpose(2, 0, 1)
    failures: list[str] = []

    def score(named: list[tuple[str, np.ndarray, np.ndarray]]) -> dict[str, dict]:
        faces = {}
        for name, image, landmarks in named:
            try:
                faces[name] = face_alignment(model, image, landmarks, mean_face, size)
            except (LookupError, ValueError) as error:  # too small for the service, or nothing of it seen
                failures.append(f"{name}: {error}")
        return faces

    sets = {}
    if photos is not None:
        annotated = [p for p in load_photo_folder(photos) if p.landmarks is not None][:limit]
        sets[photos.name] = (score([(p.name, p.image, p.landmarks) for p in annotated]), None)
    if aflw is not None:
        samples = load_samples(aflw, limit)
        sets[aflw.name] = (score([(s.name, s.image, s.landmarks) for s in samples]), {s.name: s.yaw_degrees for s in samples})
    summary = {name: summarise(faces, yaws) for name, (faces, yaws) in sets.items()}
    fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [f"# `photo` texture alignment, {model.label}", "",
             f"The photo's annotated 68 landmarks carried into UV through the reconstruction's projection, against "
             f"the mesh's own UV landmarks: mean distance in texels of a {size}² texture (inner 51: brows, nose, eyes, "
             f"mouth; boxes from the annotations). Floor: the mesh's own projected landmarks carried back, where "
             f"the mesh shows them (the lookup's own error). Mean face: ICT's neutral mean under the model's pose. Scale: texels per photo "
             f"pixel at the landmarks. Machine: {machine()}.", "",
             "| photos | n | model, inner 51 | all 68 | eyes | mouth | floor, inner | mean face, inner | all 68 "
             "| texels per photo px | landmark error, photo px (inner) |", "|---" * 11 + "|"]
    for name, s in summary.items():
        lines.append(f"| {name} | {s['n']} | {fmt(s['model']['inner'])} | {fmt(s['model']['all'])} | "
                     f"{fmt(s['model']['eyes'])} | {fmt(s['model']['mouth'])} | {fmt(s['floor']['inner'])} | "
                     f"{fmt(s['mean_face']['inner'])} | {fmt(s['mean_face']['all'])} | "
                     f"{fmt(s['texels_per_px']['inner'])} | {fmt(s['error_px']['inner'])} |")
    for name, s in summary.items():
        shifts = ", ".join(f"{part} ({v[0]:+.1f}, {v[1]:+.1f})" for part, v in s["model_offset"].items() if v)
        lines += ["", f"{name}, model, mean signed offset (x, y) in texels (y down: + = the photo's landmark lands "
                      f"below the mesh's): {shifts}"]
        if "model_inner_by_yaw" in s:
            by = s["model_inner_by_yaw"]
            lines += ["", f"{name}, model, inner 51 by yaw: " + ", ".join(f"{b} {fmt(by[b])} (n {by['n ' + b]})" for b in BINS)]
    lines += [f"\nNot scored: {f}" for f in failures]
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    document = {"model": model.label, "size": size, "machine": machine(), "sets": summary, "failures": failures}
    (out / "uv_alignment.json").write_text(json.dumps(document, indent=2) + "\n")
    (out / "uv_alignment.md").write_text(text)
    return text
