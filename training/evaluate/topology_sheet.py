"""The output mesh's topology by eye: per photo, the UV grid mesh the service used to output, the
mesh in ICT-FaceKit's topology it outputs now (``region=face``: the face region's own triangles and
UVs, the eyeballs with the iris colour read off the photo) and ICT's head around it (``region=head``),
each front-on and turned 45 degrees.

    python -m training.evaluate.topology_sheet --model model_store/facerecon-cpu-small/0.8.0 \\
        --out docs/topology-sheet.png

Drawn as ``sheet.py`` draws (canonical frame, the pose taken out, orthographic, unlit, grey
background), the ``albedo`` texture composed at 512^2 by the service's own ``compose_texture`` and
the meshes by its own ``fuse_meshes``. The PNG is quantised to 256 colours (the docs' size budget).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from service.engine.eyes import eye_texture, iris_colour
from service.engine.fuse import Mesh, fuse_mesh, fuse_meshes
from service.engine.texture import compose_texture
from training.render import RenderSettings, TexturesUV, render_mesh

from .inprocess import InProcessModel
from .rendered import load_photo_folder, write_grid
from .sheet import BACKGROUND, FIELD, TEXTURE_SIZE, VIEW_YAWS, canonical_camera

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PHOTOS = REPO_ROOT.parent / "shared" / "eval" / "photos"
COLUMNS = ("photo crop", *(f"{name} {yaw:.0f}°" for name in ("UV grid", "region=face", "region=head")
                           for yaw in VIEW_YAWS))
HEAD_FIELD = 2.2  # canonical units across a head panel: the head is about 1.8 high


def render_meshes(meshes: list[Mesh], metres_per_canonical: float, panel: int, yaw: float) -> np.ndarray:
    """Meshes (each with its own texture) in one picture: their textures side by side in one atlas,
    each mesh's u squeezed into its slot, so that one rasterisation resolves what hides what."""
    size = max(m.texture.shape[0] for m in meshes)
    atlas = np.concatenate([np.asarray(Image.fromarray(m.texture).resize((size, size))) for m in meshes], 1)
    vertices, triangles, uv, offset = [], [], [], 0
    for slot, mesh in enumerate(meshes):
        vertices.append(mesh.vertices / metres_per_canonical)
        triangles.append(mesh.triangles.astype(np.int64) + offset)
        uv.append(np.c_[(slot + np.clip(mesh.uv[:, 0], 0, 1)) / len(meshes), mesh.uv[:, 1]])
        offset += len(mesh.vertices)
    with torch.no_grad():
        out = render_mesh(torch.as_tensor(np.concatenate(vertices), dtype=torch.float32)[None],
                          torch.from_numpy(np.concatenate(triangles)), canonical_camera(panel, yaw),
                          RenderSettings(image_size=panel, background=BACKGROUND),
                          texture=TexturesUV(torch.from_numpy(atlas.transpose(2, 0, 1).astype(np.float32) / 255)[None],
                                             torch.tensor(np.concatenate(uv), dtype=torch.float32)))
    return (np.clip(out.image[0].numpy(), 0, 1) * 255 + 0.5).astype(np.uint8)


def topology_rows(model: InProcessModel, photos_dir: Path, panel: int) -> list[tuple[str, list[np.ndarray]]]:
    from service.engine.align import crop_face

    topo = model.topology
    scale = topo.units_per_canonical * topo.metres_per_unit
    rows = []
    for photo in load_photo_folder(photos_dir):
        try:
            rec = model.reconstruct(photo.image, photo.box)
        except LookupError:
            continue
        geo = rec.geometry
        texture = compose_texture("albedo", rec.albedo, geo, rec.unwrapped, topo, photo.image, TEXTURE_SIZE)
        grid = [fuse_mesh("full", geo, topo, texture, "face_0")]
        eyes = eye_texture(iris_colour(photo.image, geo.landmarks_photo))
        ict = fuse_meshes("full", geo, topo, texture, "face_0", False, eyes)
        head = fuse_meshes("full", geo, topo, texture, "face_0", False, eyes, "head")
        crop = crop_face(photo.image, rec.box, panel, model.settings.crop_scale)
        panels = [(crop.image.transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)]
        panels += [render_meshes(meshes, scale, panel, yaw) for meshes in (grid, ict) for yaw in VIEW_YAWS]
        # The head drawn smaller (its panel spans HEAD_FIELD, not FIELD) so that it fits.
        panels += [render_meshes(head, scale * HEAD_FIELD / FIELD, panel, yaw) for yaw in VIEW_YAWS]
        rows.append((photo.name, panels))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate.topology_sheet",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a model-store version folder")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--panel", type=int, default=160)
    args = parser.parse_args(argv)
    rows = topology_rows(InProcessModel(args.model), args.photos, args.panel)
    write_grid(rows, args.out, COLUMNS)
    Image.open(args.out).quantize(256, dither=Image.Dither.NONE).save(args.out, optimize=True)
    print(f"{args.out}: {len(rows)} rows, {args.out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
