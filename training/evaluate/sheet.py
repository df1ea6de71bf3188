"""A reconstruction sheet to judge by eye: per photo its face crop, then every texture mode the
service returns (``albedo``, ``shaded``, ``photo``) on the reconstructed mesh, seen front-on and
turned 45 degrees.

The mesh is drawn in its canonical frame (the pose taken out) by a fixed orthographic camera over a
neutral grey background, unlit: each texture exactly as the service composes it, so what differs
between two cells of a row is the texture alone, and between rows the face. Photos go through the
service's own stages in this process (``InProcessModel``) and its own ``compose_texture``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io as sio
import torch

from service.engine.align import crop_face
from service.engine.camera import rotation
from service.engine.texture import TEXTURE_KINDS, compose_texture, resize, unwrap_photo
from service.engine.topology import MeshTopology
from training.render import RenderSettings, TexturesUV, WeakPerspectiveCamera, render_mesh

from .inprocess import InProcessModel, Reconstruction
from .rendered import Photo, load_photo_folder
from .seam import seam_figures

VIEW_YAWS = (0.0, 45.0)  # degrees; positive turns the nose to the viewer's right, showing the face's right cheek
FIELD = 1.5  # canonical units across a panel: the canonical face spans about 1.25 high, 1.0 wide
BACKGROUND = 0.5  # neutral grey
TEXTURE_SIZE = 512  # what the sheet's textures are composed at (the service's usual request)
MIN_TURNED_YAW = 40.0  # degrees, |yaw| of the AFLW2000-3D heads picked as "turned"


@dataclass(frozen=True)
class SheetRow:
    label: str
    panels: list[np.ndarray]  # (P, P, 3) uint8: the crop, then per texture kind one per view yaw
    seam: dict[str, dict | None]  # the `photo` texture's seam figures: as served, feathered over the plain map, the switch


def column_titles(kinds: tuple[str, ...] = TEXTURE_KINDS, yaws: tuple[float, ...] = VIEW_YAWS) -> tuple[str, ...]:
    return ("photo crop", *(f"{kind} {yaw:.0f}°" for kind in kinds for yaw in yaws))


def canonical_camera(panel: int, yaw_degrees: float) -> WeakPerspectiveCamera:
    """A fixed orthographic camera on the canonical frame: the origin at the panel's centre, ``FIELD``
    canonical units across, the head turned by ``yaw_degrees`` about its vertical axis."""
    r = rotation(np.radians(yaw_degrees), 0.0, 0.0)
    return WeakPerspectiveCamera(rotation=torch.as_tensor(r, dtype=torch.float32)[None],
                                 scale=torch.tensor([panel / FIELD], dtype=torch.float32),
                                 translation=torch.zeros(1, 2), image_size=(panel, panel))


def render_textures(vertices: np.ndarray, topo: MeshTopology, textures: list[np.ndarray], panel: int,
                    yaw_degrees: float) -> list[np.ndarray]:
    """The mesh at (V, 3) canonical ``vertices`` under :func:`canonical_camera`, once per texture.

    textures: (T, T, 3) uint8 in the UV layout (row 0 = top), as ``compose_texture`` returns them.
    Returns (panel, panel, 3) uint8 each. One rasterization serves all: the textures are stacked as channels.
    """
    stacked = np.concatenate([t.transpose(2, 0, 1).astype(np.float32) / 255.0 for t in textures])
    with torch.no_grad():
        out = render_mesh(torch.as_tensor(vertices, dtype=torch.float32)[None],
                          torch.from_numpy(topo.triangles.astype(np.int64)), canonical_camera(panel, yaw_degrees),
                          RenderSettings(image_size=panel, background=BACKGROUND),
                          texture=TexturesUV(torch.from_numpy(stacked)[None],
                                             torch.tensor(topo.uv_coords, dtype=torch.float32)))
    image = out.image[0].numpy()
    return [(np.clip(image[..., 3 * i:3 * i + 3], 0, 1) * 255 + 0.5).astype(np.uint8) for i in range(len(textures))]


def sheet_row(model: InProcessModel, photo: Photo, panel: int, rec: Reconstruction | None = None,
              kinds: tuple[str, ...] = TEXTURE_KINDS, yaws: tuple[float, ...] = VIEW_YAWS,
              texture_size: int = TEXTURE_SIZE) -> SheetRow:
    """One photo's row; ``rec`` when already reconstructed. LookupError where the service finds no face."""
    rec = rec or model.reconstruct(photo.image, photo.box)
    geo, topo = rec.geometry, model.topology
    detail = model.settings.texture_detail
    textures = [compose_texture(kind, rec.albedo, geo, rec.unwrapped, topo, photo.image, texture_size, detail)
                for kind in kinds]
    views = {yaw: render_textures(geo.vertices_full, topo, textures, panel, yaw) for yaw in yaws}
    crop = crop_face(photo.image, rec.box, panel, model.settings.crop_scale)
    panels = [(crop.image.transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)]
    panels += [views[yaw][k] for k in range(len(kinds)) for yaw in yaws]
    yaw, _, _ = geo.pose_degrees
    fill = resize(rec.albedo.transpose(1, 2, 0), texture_size)
    seam = {name: seam_figures(unwrap_photo(photo.image, rec.unwrapped, geo, texture_size, fill, topo, feather),
                               rec.unwrapped.visibility, topo.uv_mask)
            for name, feather in (("feathered over the plain map", True), ("switch", False))}
    served = (textures[kinds.index("photo")] if "photo" in kinds else
              compose_texture("photo", rec.albedo, geo, rec.unwrapped, topo, photo.image, texture_size, detail))
    seam = {"as served": seam_figures(served, rec.unwrapped.visibility, topo.uv_mask)} | seam
    return SheetRow(f"{photo.name} (yaw {round(yaw) or 0:+d}°)", panels, seam)


def turned_aflw_photos(folder: Path, count: int, min_yaw: float = MIN_TURNED_YAW) -> list[Photo]:
    """The first ``count`` AFLW2000-3D images (sorted by name) whose ground-truth |yaw| (the .mat's
    ``Pose_Para``) is at least ``min_yaw`` degrees, with their 68 landmarks (the box of the protocol)."""
    from PIL import Image

    out = []
    for jpg in sorted(Path(folder).glob("*.jpg")):
        if len(out) >= count:
            break
        mat = sio.loadmat(jpg.with_suffix(".mat"))
        if abs(np.degrees(mat["Pose_Para"][0, 1])) < min_yaw:
            continue
        out.append(Photo(jpg.stem, np.asarray(Image.open(jpg).convert("RGB")), mat["pt3d_68"][:2].T.astype(np.float64)))
    return out


def build_sheet(model: InProcessModel, photos: list[Photo], panel: int = 160) -> tuple[list[SheetRow], list[str]]:
    """Rows for the photos the service reconstructs, and a line for each it refuses (no face found)."""
    rows, failures = [], []
    for photo in photos:
        try:
            rows.append(sheet_row(model, photo, panel))
        except LookupError as error:
            failures.append(f"{photo.name}: {error}")
    return rows, failures


def sheet_report(model_dir: Path, photos: Path, aflw: Path | None, turned: int, out: Path, panel: int = 160) -> str:
    """Write the sheet PNG to ``out``; returns a line saying what is on it."""
    from .rendered import write_grid

    model = InProcessModel(model_dir)
    chosen = load_photo_folder(photos)
    if aflw is not None and turned > 0:
        chosen += turned_aflw_photos(aflw, turned)
    rows, failures = build_sheet(model, chosen, panel)
    write_grid([(r.label, r.panels) for r in rows], out, column_titles())
    line = (f"{out}: {len(rows)} rows of {model.label} (textures composed at {TEXTURE_SIZE}², rendered unlit in the "
            f"canonical frame, front and at {VIEW_YAWS[1]:.0f}°)")
    line += "".join(f"\n  not reconstructed: {f}" for f in failures)
    return line + "\n" + seam_summary(rows)


def seam_summary(rows: list[SheetRow]) -> str:
    """The `photo` texture's seam over the rows that have one: as served (feathered, the fill with the
    photo's detail), feathered over the plain resized map, and the plain switch."""
    lines = []
    for name in ("as served", "feathered over the plain map", "switch"):
        figures = [r.seam[name] for r in rows if r.seam[name] is not None]
        if figures:
            mean = {k: float(np.mean([f[k] for f in figures])) for k in ("edge_contrast", "step", "own_step")}
            lines.append(f"  `photo` seam, {name} ({len(figures)} faces): edge contrast {mean['edge_contrast']:.2f} "
                         f"(1 = the photo's own detail), step across {mean['step']:.3f} (the photo's own "
                         f"{mean['own_step']:.3f})")
    return "\n".join(lines)
