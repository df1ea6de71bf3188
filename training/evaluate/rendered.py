"""Reconstructions rendered back into their photos: photometric error, identity similarity, figures.

Each photo goes through the service's stages in this process (``inprocess.InProcessModel``); the
reconstruction (the topology's UV-grid mesh at the predicted vertices, a UV texture, SH lighting p_l)
is rendered by ``training.render`` with the weak-perspective camera of the pose, moved from crop
pixels into photo pixels exactly as the service's ``crop.to_photo`` does. From that render, per
photo and texture kind (paper Sec. IV-D):

* E_pho: mean absolute RGB difference (colour in [0, 1]) between the photo and the render over the
  render's mask (the visible face region);
* identity: cosine similarity of dlib's 128-d face descriptors of the photo and of the photo with
  the render pasted over the face, both read on the same face box; also their Euclidean distance,
  dlib's own measure (below 0.6: the same person, by dlib's threshold).

Texture kinds: the texture stream's albedo shaded with p_l, the linear albedo from p_t shaded with
p_l (what the texture stream adds is the difference), the ``albedo`` texture as the service serves it
(composed at the default texture size, with the photo's detail: ``service.engine.texture``) shaded
with p_l, which is what a user's ``shaded`` texture shows, and a reference that paints the face region
in the photo's own mean colour there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from service.engine.align import crop_face
from service.engine.asm_decode import FaceGeometry
from service.engine.decode import decode_image
from service.engine.detect import dlib_model_path
from service.engine.recrop import Box, landmark_box
from service.engine.texture import compose_texture, resize
from service.engine.topology import MeshTopology
from training.render import RenderSettings, TexturesUV, WeakPerspectiveCamera, render_mesh

from .inprocess import InProcessModel, Reconstruction
from .metrics import cosine_similarity, photometric_error

STREAM, LINEAR, FLAT = "albedo × shading", "linear albedo (p_t) × shading", "flat mean colour (reference)"
SERVED = "served albedo (with the photo's detail) × shading"
TEXTURE_KINDS = (STREAM, LINEAR, SERVED, FLAT)
CLAY = "clay"  # the untextured mesh under a fixed light, for the overlay figure
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".webp")
# A soft frontal light from slightly above, for the untextured "clay" overlay: (9, 3) SH, blue-grey.
CLAY_LIGHT = np.outer([0.6, -0.1, 0.3, 0, 0, 0, 0, 0, 0], [0.85, 0.9, 1.0])

Window = tuple[int, int, int, int]  # x0, y0, x1, y1: photo pixel columns [x0, x1), rows [y0, y1)


@dataclass(frozen=True)
class Render:
    """A render over a window of the photo; outside the window nothing of the mesh lands."""

    window: Window
    image: np.ndarray  # (h, w, C) float, zero where the mask is False
    mask: np.ndarray  # (h, w) bool: the mesh covers the pixel

    def photo_part(self, photo: np.ndarray) -> np.ndarray:
        """(H, W, ...) photo -> its (h, w, ...) part under the window."""
        x0, y0, x1, y1 = self.window
        return photo[y0:y1, x0:x1]

    def over(self, photo: np.ndarray, alpha: float = 1.0) -> np.ndarray:
        """(H, W, 3) uint8 photo with the render (colour in [0, 1]) blended in under its mask."""
        out = photo.copy()
        x0, y0, x1, y1 = self.window
        part = out[y0:y1, x0:x1].astype(np.float64)
        colour = np.clip(self.image[..., :3], 0.0, 1.0) * 255.0
        a = alpha * self.mask[..., None]
        out[y0:y1, x0:x1] = np.clip((1 - a) * part + a * colour + 0.5, 0, 255).astype(np.uint8)
        return out


def mesh_window(geo: FaceGeometry, photo_hw: tuple[int, int]) -> Window:
    """The photo pixels the projected vertices' bounding box touches, clipped to the photo."""
    xy = geo.crop.to_photo(geo.screen[:, :2])
    h, w = photo_hw
    x0, y0 = np.clip(np.floor(xy.min(0)).astype(int), 0, [w, h])
    x1, y1 = np.clip(np.ceil(xy.max(0)).astype(int), 0, [w, h])
    return int(x0), int(y0), int(max(x1, x0)), int(max(y1, y0))


def photo_camera(geo: FaceGeometry, window: Window) -> WeakPerspectiveCamera:
    """The renderer's camera that puts canonical points where the service puts them in the photo,
    relative to the window's top-left corner.

    The service: photo = crop.origin + step * N/2 * (1 + s (R X)_x + tx) (y likewise with -(R X)_y),
    the renderer: window = size/2 + scale (R X)_x + t_x; so scale = step N/2 s and t is the rest.
    """
    cam, crop = geo.camera, geo.crop
    x0, y0, x1, y1 = window
    w, h = x1 - x0, y1 - y0
    half = crop.step * crop.size / 2.0
    tx = crop.origin[0] - x0 + half * (1.0 + cam.translation[0]) - w / 2.0
    ty = crop.origin[1] - y0 + half * (1.0 + cam.translation[1]) - h / 2.0
    return WeakPerspectiveCamera(
        rotation=torch.as_tensor(cam.rotation, dtype=torch.float32)[None],
        scale=torch.tensor([half * cam.scale], dtype=torch.float32),
        translation=torch.tensor([[tx, ty]], dtype=torch.float32),
        image_size=(h, w),
    )


def render_in_photo(geo: FaceGeometry, topo: MeshTopology, photo_hw: tuple[int, int], texture: np.ndarray | None = None,
                    lighting: np.ndarray | None = None) -> Render:
    """Render the reconstruction over its window of an (H, W) photo.

    texture: (C, S, S) map in the UV layout (row 0 = top), sampled at the topology's uv_coords; None
    renders white. lighting: (9, C) SH coefficients (the layout of p_l), None renders unlit.
    """
    window = mesh_window(geo, photo_hw)
    x0, y0, x1, y1 = window
    channels = texture.shape[0] if texture is not None else 3
    if x1 <= x0 or y1 <= y0:  # the mesh lies outside the photo
        return Render(window, np.zeros((y1 - y0, x1 - x0, channels)), np.zeros((y1 - y0, x1 - x0), bool))
    verts = torch.as_tensor(geo.vertices_full, dtype=torch.float32)[None]
    faces = torch.from_numpy(topo.triangles.astype(np.int64))
    textures = None
    if texture is not None:
        textures = TexturesUV(torch.as_tensor(texture, dtype=torch.float32)[None],
                              torch.tensor(topo.uv_coords, dtype=torch.float32))
    sh = None if lighting is None else torch.as_tensor(lighting, dtype=torch.float32)[None]
    with torch.no_grad():
        out = render_mesh(verts, faces, photo_camera(geo, window), RenderSettings(image_size=(y1 - y0, x1 - x0)),
                          texture=textures, sh_coeffs=sh)
    return Render(window, out.image[0].double().numpy(), out.mask[0].numpy())


def texture_renders(rec: Reconstruction, topo: MeshTopology, photo: np.ndarray,
                    served: np.ndarray | None = None) -> dict[str, Render]:
    """Each texture kind rendered over the photo (H, W, 3) uint8, colour clipped to [0, 1], and the
    untextured clay render (``CLAY``) for figures. ``served``: (T, T, 3) uint8, the ``albedo`` texture
    the service composes (``SERVED``), or None to leave that kind out.

    One rasterization serves all: the textures are stacked as channels with p_l repeated per texture
    (shading is per channel), since rasterizing a face-sized window dominates the cost; the maps are
    resized to the served texture's size for that (bilinear, as the renderer samples them).
    """
    geo = rec.geometry
    maps = {STREAM: rec.albedo}
    if rec.linear_albedo is not None:
        maps[LINEAR] = rec.linear_albedo
    if served is not None:
        size = served.shape[0]
        maps = {kind: resize(m.transpose(1, 2, 0), size).transpose(2, 0, 1) for kind, m in maps.items()}
        maps[SERVED] = served.transpose(2, 0, 1) / 255.0
    maps[CLAY] = np.ones_like(maps[STREAM])
    lights = [CLAY_LIGHT if kind == CLAY else geo.lighting for kind in maps]
    stacked = render_in_photo(geo, topo, photo.shape[:2], np.concatenate(list(maps.values())), np.concatenate(lights, 1))
    renders = {kind: Render(stacked.window, np.clip(stacked.image[..., 3 * i:3 * i + 3], 0.0, 1.0), stacked.mask)
               for i, kind in enumerate(maps)}
    base = renders[STREAM]
    part = base.photo_part(photo) / 255.0
    mean = part[base.mask].mean(0) if base.mask.any() else np.zeros(3)
    renders[FLAT] = Render(base.window, base.mask[..., None] * mean, base.mask)
    return renders


class FaceDescriptor:
    """dlib's 128-d face descriptor (its ResNet, with the weights of ``face_recognition_models``),
    read on a given face box through dlib's 68-point landmarks, as the service finds those files."""

    def __init__(self):
        import dlib

        names = ("shape_predictor_68_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat")
        paths = [dlib_model_path(n) for n in names]
        if None in paths:
            raise RuntimeError("dlib's model files are missing: install the face_recognition_models package")
        self._dlib = dlib
        self.shapes = dlib.shape_predictor(str(paths[0]))
        self.net = dlib.face_recognition_model_v1(str(paths[1]))

    def __call__(self, image: np.ndarray, box: Box) -> np.ndarray:
        """(H, W, 3) uint8 RGB and (x0, y0, x1, y1) -> (128,) float64."""
        image = np.ascontiguousarray(image)
        shape = self.shapes(image, self._dlib.rectangle(*(int(round(v)) for v in box)))
        return np.asarray(self.net.compute_face_descriptor(image, shape), np.float64)


def score_renders(photo: np.ndarray, box: Box, renders: dict[str, Render],
                  describe: FaceDescriptor) -> tuple[dict, np.ndarray]:
    """Per texture kind: E_pho, identity cosine and covered pixels; and the photo's own (128,) descriptor."""
    reference = describe(photo, box)
    scores = {}
    for kind, r in renders.items():
        if kind not in TEXTURE_KINDS:
            continue
        if not r.mask.any():  # the mesh off the photo or collapsed: nothing to compare
            scores[kind] = {"e_pho": None, "identity": None, "identity_distance": None, "pixels": 0}
            continue
        composite = describe(r.over(photo), box)
        scores[kind] = {
            "e_pho": photometric_error(r.image, r.photo_part(photo) / 255.0, r.mask),
            "identity": cosine_similarity(reference, composite),
            "identity_distance": float(np.linalg.norm(reference - composite)),
            "pixels": int(r.mask.sum()),
        }
    return scores, reference


@dataclass(frozen=True)
class Photo:
    name: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    landmarks: np.ndarray | None  # (68, 2) photo pixels, or None: the face is detected

    @property
    def box(self) -> Box | None:
        return None if self.landmarks is None else landmark_box(self.landmarks)


def load_photo_folder(folder: Path, limit: int | None = None) -> list[Photo]:
    """Every image in ``folder``, decoded as the service decodes uploads, with its 68-point ``.pts``
    (300-W, 1-based) when one lies beside it."""
    from service.settings import Settings
    from training.fitting.pts import read_pts

    s = Settings()
    photos = []
    for path in sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]:
        image = decode_image(path.read_bytes(), max_pixels=s.max_pixels, formats=s.image_formats)
        pts = path.with_suffix(".pts")
        landmarks = read_pts(pts).astype(np.float64) if pts.is_file() else None
        photos.append(Photo(path.stem, image, landmarks if landmarks is not None and len(landmarks) == 68 else None))
    return photos


def aflw_photos(folder: Path, limit: int | None = None) -> list[Photo]:
    """AFLW2000-3D images with their ground-truth 68 landmarks (the box of the 3DDFA protocol)."""
    from .aflw2000 import load_samples

    return [Photo(s.name, s.image, s.landmarks[:, :2]) for s in load_samples(folder, limit)]


@dataclass
class PhotoSetResult:
    summary: dict  # JSON-ready: per kind means, per photo scores, failures
    figure_rows: list[tuple[str, list[np.ndarray]]]  # (name, [input, overlay, textured]) panels


def evaluate_photos(model: InProcessModel, photos: list[Photo], describe: FaceDescriptor, figure_rows: int = 0,
                    panel: int = 256) -> PhotoSetResult:
    """Reconstruct, render and score every photo; the first ``figure_rows`` scored ones also give figure panels."""
    per_photo, failures, references, rows = {}, [], [], []
    for p in photos:
        try:
            rec = model.reconstruct(p.image, p.box)
        except LookupError as error:  # the service would answer 422: counted, not scored
            failures.append(f"{p.name}: {error}")
            continue
        s = model.settings
        served = compose_texture("albedo", rec.albedo, rec.geometry, rec.unwrapped, model.topology, p.image,
                                 s.default_texture_size, s.texture_detail)
        renders = texture_renders(rec, model.topology, p.image, served)
        scores, reference = score_renders(p.image, rec.box, renders, describe)
        per_photo[p.name] = {"box": [round(v, 2) for v in rec.box], "box_from": rec.box_from, "scores": scores}
        references.append(reference)
        if len(rows) < figure_rows:
            rows.append((p.name, figure_panels(p.image, rec.box, renders, model.settings.crop_scale, panel)))

    kinds = {}
    for kind in TEXTURE_KINDS:
        values = [s["scores"][kind] for s in per_photo.values() if kind in s["scores"]]
        if values:
            kinds[kind] = {key: _nanmean([v[key] for v in values]) for key in ("e_pho", "identity", "identity_distance")}
            kinds[kind]["n"] = len(values)
    # The scale of the identity figures: the same measures between the set's different photos.
    pairs = list(combinations(references, 2))
    summary = {"n": len(photos), "scored": len(per_photo), "kinds": kinds,
               "identity_between_photos": _nanmean([cosine_similarity(a, b) for a, b in pairs]),
               "identity_distance_between_photos": _nanmean([float(np.linalg.norm(a - b)) for a, b in pairs]),
               "failures": failures, "per_photo": per_photo}
    return PhotoSetResult(summary, rows)


def _nanmean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def figure_panels(photo: np.ndarray, box: Box, renders: dict[str, Render], crop_scale: float,
                  panel: int) -> list[np.ndarray]:
    """(panel, panel, 3) uint8 views of the service's crop square around ``box``: the input, the clay
    mesh over it, the textured render (albedo x shading) pasted in."""

    def square(image):
        crop = crop_face(image, box, panel, crop_scale)
        return (crop.image.transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)

    shown = renders.get(SERVED, renders[STREAM])  # what a user sees, where the caller composed it
    return [square(photo), square(renders[CLAY].over(photo, alpha=0.75)), square(shown.over(photo))]


def write_grid(rows: list[tuple[str, list[np.ndarray]]], path: Path,
               titles: tuple[str, ...] = ("input", "mesh overlay", "albedo x shading")) -> None:
    """A PNG of rows of equal square panels (uint8 (P, P, 3)) under column titles, the name on each row."""
    if not rows:
        raise ValueError("no figure rows to write")
    p = rows[0][1][0].shape[0]
    gap, head = 4, 24
    cols = len(rows[0][1])
    canvas = Image.new("RGB", (cols * p + (cols + 1) * gap, head + len(rows) * (p + gap) + gap), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=14)
    for c, title in enumerate(titles[:cols]):
        draw.text((gap + c * (p + gap) + p / 2, head / 2), title, fill="black", font=font, anchor="mm")
    for r, (name, panels) in enumerate(rows):
        top = head + gap + r * (p + gap)
        for c, image in enumerate(panels):
            canvas.paste(Image.fromarray(image), (gap + c * (p + gap), top))
        draw.text((gap + 4, top + 4), name, fill="white", font=font, stroke_width=2, stroke_fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def markdown(sets: dict[str, dict]) -> str:
    """One table: per photo set and texture kind, mean E_pho and identity cosine and distance."""
    lines = ["| photos | scored / total | texture | E_pho (mean abs., [0, 1]) | identity cosine | identity distance |",
             "| --- | --- | --- | --- | --- | --- |"]
    fmt = lambda v: "–" if v is None else f"{v:.4f}"  # noqa: E731
    for name, s in sets.items():
        for kind, k in s["kinds"].items():
            lines.append(f"| {name} | {s['scored']} / {s['n']} | {kind} | {fmt(k['e_pho'])} | {fmt(k['identity'])} "
                         f"| {fmt(k['identity_distance'])} |")
        lines.append(f"| {name} | | reference: different photos of the set | | {fmt(s['identity_between_photos'])} "
                     f"| {fmt(s['identity_distance_between_photos'])} |")
    return "\n".join(lines) + "\n"
