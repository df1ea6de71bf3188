"""Stage ``export``: meshes + figures -> response bytes (GLB, OBJ zip or JSON)."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np
import trimesh
from PIL import Image
from trimesh.visual.material import PBRMaterial, SimpleMaterial
from trimesh.visual.texture import TextureVisuals

from .fuse import Mesh
from .morph import add_morph_targets

MEDIA_TYPES = {"glb": "model/gltf-binary", "obj": "application/zip", "json": "application/json"}


def _trimesh(mesh: Mesh, material, vertices: np.ndarray | None = None) -> trimesh.Trimesh:
    visual = TextureVisuals(uv=mesh.uv, material=material)
    # process=False keeps the vertex order: vertex i is UV pixel vertex_pixels[i].
    return trimesh.Trimesh(vertices=mesh.vertices if vertices is None else vertices, faces=mesh.triangles,
                           visual=visual, process=False)


def export_glb(meshes: list[Mesh], figures: dict[str, Any], image_format: str = "jpeg") -> bytes:
    """A binary glTF: one node per face, PBR material (base colour texture, not metallic), figures in extras.
    A mesh with ``morph`` gets its morph targets (``service.engine.morph``): its POSITION is then the
    base that the targets at their default weights move onto ``mesh.vertices``.

    ``image_format`` "jpeg" or "png": trimesh writes JPEG for images whose format says JPEG.
    """
    scene = trimesh.Scene()
    for mesh in meshes:
        texture = Image.fromarray(mesh.texture)
        texture.format = "JPEG" if image_format == "jpeg" else None
        material = PBRMaterial(name=f"{mesh.name}_material", baseColorTexture=texture,
                               metallicFactor=0.0, roughnessFactor=mesh.roughness, doubleSided=False)
        base = None if mesh.morph is None else mesh.morph.base(mesh.vertices)
        scene.add_geometry(_trimesh(mesh, material, base), geom_name=mesh.name, node_name=mesh.name)

    def add_extras(tree: dict) -> None:
        tree.setdefault("asset", {})["extras"] = _jsonable(figures)
        _set_buffer_view_targets(tree)

    glb = scene.export(file_type="glb", tree_postprocessor=add_extras)
    morphs = {mesh.name: mesh.morph for mesh in meshes if mesh.morph is not None}
    return add_morph_targets(glb, morphs) if morphs else glb


ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963


def _set_buffer_view_targets(tree: dict) -> None:
    """Mark vertex and index buffer views, which trimesh leaves unmarked (the Khronos validator hints
    BUFFER_VIEW_TARGET_MISSING); loaders can then upload them to the GPU without inspecting accessors."""
    views, accessors = tree.get("bufferViews", []), tree.get("accessors", [])
    for mesh in tree.get("meshes", []):
        for primitive in mesh.get("primitives", []):
            for accessor in primitive.get("attributes", {}).values():
                views[accessors[accessor]["bufferView"]]["target"] = ARRAY_BUFFER
            if "indices" in primitive:
                views[accessors[primitive["indices"]]["bufferView"]]["target"] = ELEMENT_ARRAY_BUFFER


def export_obj_zip(meshes: list[Mesh], figures: dict[str, Any]) -> bytes:
    """A zip of <name>.obj, <name>.mtl and <name>.png per face, and result.json with the figures."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for mesh in meshes:
            material = SimpleMaterial(image=Image.fromarray(mesh.texture), name=mesh.name)
            # trimesh names the MTL and PNG after the material, so each face's files stay distinct.
            obj_text, files = trimesh.exchange.obj.export_obj(
                _trimesh(mesh, material), include_normals=False, include_texture=True,
                mtl_name=f"{mesh.name}.mtl", return_texture=True,
            )
            archive.writestr(f"{mesh.name}.obj", obj_text)
            for filename, data in files.items():
                archive.writestr(filename, data)
        archive.writestr("result.json", json.dumps(_jsonable(figures), indent=2))
    return buffer.getvalue()


def export_json(figures: dict[str, Any]) -> bytes:
    return json.dumps(_jsonable(figures)).encode()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
