"""Stage ``fuse``: the chosen ASM -> meshes in metres (glTF conventions: Y up, metres, centred).

The canonical frame is already x right, y up, z towards the viewer and centred on the neutral face
region, so the vertices only need the manifest's scale; every mesh kind shares the same origin,
which keeps an identity mesh and its expression aligned when overlaid.

A store with ICT taps (every store since 0.7.0) gets ICT-FaceKit's topology (``ict_mesh``): the face
region's own triangles and UVs, and the eyeballs as a second mesh; a store without gets the UV grid
(the S x S layout's valid pixels as vertices).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service import errors

from .asm_decode import FaceGeometry
from .morph import MorphTargets
from .texture import bleed, head_texture
from .topology import MeshTopology

MESH_KINDS = ("full", "identity", "expression")


@dataclass(frozen=True)
class Mesh:
    vertices: np.ndarray  # (V, 3) float32 metres
    triangles: np.ndarray  # (F, 3) int32
    uv: np.ndarray  # (V, 2) float32, v up
    texture: np.ndarray  # (T, T, 3) uint8
    name: str
    # The blendshapes as morph targets (GLB only); ``vertices`` is the mesh shown at their default weights.
    morph: MorphTargets | None = None
    roughness: float = 1.0  # the glTF material's: skin is matte; an eyeball's wet surface is not


EYE_ROUGHNESS = 0.3


def fuse_meshes(kind: str, geo: FaceGeometry, topo: MeshTopology, texture: np.ndarray, name: str,
                morph_targets: bool = False, eye_texture: np.ndarray | None = None, region: str = "face") -> list[Mesh]:
    """The face's meshes: in ICT's topology, the face (``region`` "face") or the head around it ("head")
    as ``name`` and its eyeballs as ``name_eyes`` (textured with ``eye_texture``, (E, E, 3) uint8); for
    a store without ICT taps, the UV grid mesh alone (``region`` "head" is then a 400)."""
    if topo.ict is None or geo.coefficients is None:
        if region == "head":
            raise errors.bad_request("region=head needs ICT-FaceKit's taps (ict_vertex_ids), which this model "
                                     "store's topology lacks")
        return [fuse_mesh(kind, geo, topo, texture, name, morph_targets)]
    outer, eyes = topo.ict.positions(kind, geo.a_full, geo.a_id, geo.coefficients, region)
    head = topo.ict.fit.head
    sub = head.head if region == "head" else head.face
    morph = None
    if morph_targets:
        weights = np.zeros(53) if kind == "identity" else geo.coefficients.expression
        morph = MorphTargets(topo.ict.targets(region), np.asarray(weights, np.float32))
    if region == "head":
        texture = head_texture(texture, topo.uv_mask, head.head_palette_uv)
    else:
        texture = bleed(texture, topo.uv_mask)
    out = [Mesh(vertices=outer, triangles=sub.triangles, uv=sub.uv, texture=texture, name=name, morph=morph)]
    if eye_texture is not None:
        out.append(Mesh(vertices=eyes, triangles=head.eyes.triangles, uv=head.eyes.uv, texture=eye_texture,
                        name=f"{name}_eyes", roughness=EYE_ROUGHNESS))
    return out


def fuse_mesh(kind: str, geo: FaceGeometry, topo: MeshTopology, texture: np.ndarray, name: str,
              morph_targets: bool = False) -> Mesh:
    """``full`` = A_id + A_exp; ``identity`` = A_id (neutral); ``expression`` = A_id + the 53-blendshape
    fit of A_exp, i.e. the expression as an ARKit rig driven by the reported weights would show it.

    ``morph_targets``: the 53 expression deltas ride along as morph targets, at default weights that
    show the mesh of ``kind``: the fitted weights for ``full`` and ``expression``, 0 for ``identity``."""
    if kind == "full":
        canonical = geo.vertices_full
    elif kind == "identity":
        canonical = geo.vertices_id
    elif kind == "expression":
        if geo.blendshapes is None or topo.expression_basis is None:
            raise errors.bad_request("mesh=expression needs an expression basis, which this model store lacks")
        delta = np.tensordot(geo.blendshapes, topo.expression_basis, axes=1)
        canonical = geo.vertices_id + delta
    else:
        raise ValueError(f"unknown mesh kind {kind!r}")
    metres_per_canonical = topo.units_per_canonical * topo.metres_per_unit
    morph = None
    if morph_targets:
        if geo.blendshapes is None or topo.morph_targets is None:
            raise errors.bad_request("morph_targets needs an expression basis, which this model store lacks")
        weights = np.zeros_like(geo.blendshapes) if kind == "identity" else geo.blendshapes
        morph = MorphTargets(topo.morph_targets, weights.astype(np.float32))
    return Mesh(vertices=(canonical * metres_per_canonical).astype(np.float32), triangles=topo.triangles,
                uv=topo.uv_coords, texture=texture, name=name, morph=morph)
