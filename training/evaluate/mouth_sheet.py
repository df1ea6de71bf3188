"""``region=head``'s mouth by eye: ICT's teeth, gums and tongue inside an open mouth, front-on, at 45 and at 90 degrees.

    python -m training.evaluate.mouth_sheet --jaw 1.0 --out docs/mouth-sheet.png \
        [--model model_store/facerecon-cpu-small/<version> --photo ../shared/eval/photos/einstein.jpg]

With ``--model`` and ``--photo``, a second row: that photo through the model store in this process
(``InProcessModel``), its ``region=head`` meshes as the service fuses them, ``albedo`` at 512².

The maps are ICT's own model (an identity drawn at 0.7 sigma, seed 0, ``jawOpen`` at ``--jaw``)
rasterised at S = 128, so what is drawn is the service's decode (``IctMeshes.positions`` at the
weights its fit finds, the ``region=head`` mesh and texture as ``fuse_meshes`` builds them, the
eyeballs), and any tooth that showed through a lip or a cheek would be the service's placement, not
a network's error. Lit (ambient and a light from the front and above: unlit, the flat palette colours
hide the mouth's depth), orthographic, close up on the mouth; quantised to 128 colours.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from service.engine.camera import rotation
from service.engine.eyes import DEFAULT_IRIS, eye_texture
from service.engine.fuse import Mesh
from service.engine.head import EXACT_MAPS, HeadFit, HeadModel
from service.engine.ict_mesh import IctMeshes
from service.engine.texture import head_texture
from training.facemodel import UVFaceModel
from training.facemodel.facekit import FaceKit
from training.render import RenderSettings, TexturesUV, WeakPerspectiveCamera, render_mesh

from .sheet import BACKGROUND

VIEW_YAWS = (0.0, 45.0, 90.0)
MOUTH_FIELD = 0.55  # canonical units across a panel: the mouth and the nose
SKIN = (200, 150, 130)
SIZE = 128


def mouth_meshes(jaw: float) -> tuple[list[Mesh], np.ndarray, float]:
    """The synthetic face's ``region=head`` mesh and eyeballs (metres), the mouth socket's centre and
    the metres per canonical unit."""
    kit = FaceKit.load()
    model = UVFaceModel.build(SIZE, kit)
    fit = HeadFit.build(HeadModel.load(), model.topology.to_npz_dict(), SIZE, model.frame.center, model.frame.scale,
                        EXACT_MAPS)
    ict, head = IctMeshes(fit, 0.01), fit.head
    weights = np.zeros(53, np.float32)
    weights[head.expression_names.index("jawOpen")] = jaw
    identity = (np.random.default_rng(0).standard_normal(100) * 0.7).astype(np.float32)
    a_id = model.identity_map(identity).transpose(2, 0, 1).astype(np.float64)
    a = a_id + model.expression_map(weights).transpose(2, 0, 1)
    outer, eyes = ict.positions("full", a, a_id, fit.fit(a), "head")
    texture = head_texture(np.full((512, 512, 3), SKIN, np.uint8), model.topology.uv_mask, head.head_palette_uv)
    meshes = [Mesh(outer, head.head.triangles, head.head.uv, texture, "head"),
              Mesh(eyes, head.eyes.triangles, head.eyes.uv, eye_texture(DEFAULT_IRIS), "eyes")]
    mouth = np.isin(head.head.ids, np.arange(*kit.parts["mouth_socket"]))
    return meshes, outer[mouth].mean(0), model.frame.scale * 0.01


def photo_meshes(model_path: Path, photo_path: Path) -> tuple[list[Mesh], np.ndarray, float]:
    """As :func:`mouth_meshes` for a photo through a model store (its largest face)."""
    from service.engine.eyes import iris_colour
    from service.engine.fuse import fuse_meshes
    from service.engine.texture import compose_texture

    from .inprocess import InProcessModel
    from .rendered import load_photo_folder

    model = InProcessModel(model_path)
    topo = model.topology
    (photo,) = [p for p in load_photo_folder(photo_path.parent) if p.name == photo_path.stem]
    rec = model.reconstruct(photo.image, photo.box)
    geo = rec.geometry
    texture = compose_texture("albedo", rec.albedo, geo, rec.unwrapped, topo, photo.image, 512)
    meshes = fuse_meshes("full", geo, topo, texture, "face_0", False,
                         eye_texture(iris_colour(photo.image, geo.landmarks_photo)), "head")
    jaw = geo.coefficients.expression[topo.ict.fit.head.expression_names.index("jawOpen")]
    print(f"{photo.name}: fitted jawOpen {jaw:.2f}")
    start, end = FaceKit.load().parts["mouth_socket"]
    ids = topo.ict.fit.head.head.ids
    return meshes, meshes[0].vertices[(ids >= start) & (ids < end)].mean(0), topo.units_per_canonical * topo.metres_per_unit


def mouth_camera(panel: int, yaw_degrees: float) -> WeakPerspectiveCamera:
    """``sheet.canonical_camera`` closer: ``MOUTH_FIELD`` canonical units across the panel."""
    r = rotation(np.radians(yaw_degrees), 0.0, 0.0)
    return WeakPerspectiveCamera(rotation=torch.as_tensor(r, dtype=torch.float32)[None],
                                 scale=torch.tensor([panel / MOUTH_FIELD], dtype=torch.float32),
                                 translation=torch.zeros(1, 2), image_size=(panel, panel))


def render_lit(meshes: list[Mesh], centre: np.ndarray, metres_per_canonical: float, panel: int,
               yaw: float) -> np.ndarray:
    """(panel, panel, 3) uint8: the meshes, their textures side by side in one atlas, ``centre`` (3,)
    metres at the panel's centre, ``MOUTH_FIELD`` across, turned by ``yaw`` degrees."""
    size = max(m.texture.shape[0] for m in meshes)
    atlas = np.concatenate([np.asarray(Image.fromarray(m.texture).resize((size, size))) for m in meshes], 1)
    vertices, triangles, uv, offset = [], [], [], 0
    for slot, mesh in enumerate(meshes):
        vertices.append((mesh.vertices - centre) / metres_per_canonical)
        triangles.append(mesh.triangles.astype(np.int64) + offset)
        uv.append(np.c_[(slot + np.clip(mesh.uv[:, 0], 0, 1)) / len(meshes), mesh.uv[:, 1]])
        offset += len(mesh.vertices)
    light = torch.zeros(1, 9, 3)
    light[0, 0], light[0, 1], light[0, 2] = 0.55, -0.2, 0.45  # ambient; from above (SH's -y); from the front
    with torch.no_grad():
        out = render_mesh(torch.as_tensor(np.concatenate(vertices), dtype=torch.float32)[None],
                          torch.from_numpy(np.concatenate(triangles)), mouth_camera(panel, yaw),
                          RenderSettings(image_size=panel, background=BACKGROUND),
                          texture=TexturesUV(torch.from_numpy(atlas.transpose(2, 0, 1).astype(np.float32) / 255)[None],
                                             torch.tensor(np.concatenate(uv), dtype=torch.float32)),
                          sh_coeffs=light)
    return (np.clip(out.image[0].numpy(), 0, 1) * 255 + 0.5).astype(np.uint8)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate.mouth_sheet", description=__doc__.split("\n")[0])
    parser.add_argument("--jaw", type=float, default=1.0, help="jawOpen of the synthetic face")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--panel", type=int, default=300)
    parser.add_argument("--model", type=Path, help="a model-store version folder, for the photo's row")
    parser.add_argument("--photo", type=Path, help="a photo in a folder that load_photo_folder reads")
    args = parser.parse_args(argv)
    rows = [mouth_meshes(args.jaw)]
    if args.model and args.photo:
        rows.append(photo_meshes(args.model, args.photo))
    picture = np.concatenate([np.concatenate([render_lit(meshes, centre, scale, args.panel, yaw) for yaw in VIEW_YAWS], 1)
                              for meshes, centre, scale in rows], 0)
    Image.fromarray(picture).quantize(128).save(args.out, optimize=True)
    print(f"{args.out}: {args.out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
