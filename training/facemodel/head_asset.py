"""The service's ICT head asset: what every model version shares, written once into the repository.

    python -m training.facemodel.head_asset [--out service/assets/ict]

The service fits ICT-FaceKit's identity and expression to each face's predicted maps
(``service/engine/head.py``). That needs ICT's bases, which do not depend on the trained network, so
they live once under ``service/assets/ict/`` (with ICT's MIT notice) instead of in every model store.
The repository keeps every blob forever, so the asset holds only what the service uses: the bases at
the face region's vertices (the fit reads nothing else) and the one ring of vertices around it (where
the region's rim meets the fitted head, so the seam can be checked), and what ``region=head`` outputs
(ICT's face part, the back of the head, the sockets, teeth, gums and tongue), 7.41 MB in all. Full
bases are stored for 14,064 vertices; the parts ICT moves nearly rigidly take an affine map per
identity component instead (the eyeballs; the teeth; the gums and tongue, whose full bases would add
2.58 MB), and the teeth, gums and tongue only the deltas of the jaw's four expressions, the only ones
that move them (``mouth_arrays``). Bases are stored as float16 (their largest error, 1e-3 cm, is far
under the network's); the neutral stays float32 so that a neutral face comes back exact. The zip is
LZMA-compressed with fixed timestamps, so the same FaceKit always gives the same bytes
(``service.engine.head.HEAD_ASSET_SHA256``).

Arrays (N = ICT vertices of the head parts, Nb = vertices with bases, F = triangles):
    neutral (N, 3) float32 cm: the whole head, for the seam spread's distances and edge lengths.
    basis_vertices (Nb,) int32 sorted ICT ids; identity_bytes (2, 100, 3, Nb), expression_bytes
        (2, 53, 3, Nb) uint8: the (100, Nb, 3) and (53, Nb, 3) float16 cm deltas at those vertices,
        byte-shuffled (``shuffled_half``) because LZMA packs them smaller so.
    expression_names (53,) ARKit names.
    triangles (F, 3) int32 ICT vertex ids of the head parts' triangles (the spread's edges).
    eyeballs (2, 2) int32 ICT vertex ranges of the left and right eyeball.
    layout<S>_pixels (P,) int32 flat pixel index, layout<S>_vertices (P, 3) int32 ICT ids and
        layout<S>_bary (P, 3) float32, for S in ``LAYOUT_SIZES``: how the S x S maps sample ICT's mesh,
        so the service can compare a fitted ICT face with the predicted maps through the same sampler.
    face_vertices (Vf,) int32 ICT ids, face_uv (Vf, 2) float32, face_triangles (Tf, 3) int32 indices
        into face_vertices: the output mesh of the face region, ICT's own triangles and UVs (a vertex
        that ICT splits along a UV seam is one output vertex per texture coordinate, as in any glTF).
        The region's UVs are tile 0 of ICT's layout, the very coordinates of the S x S maps' pixels.
    eye_vertices (Ve,) int32, eye_uv (Ve, 2) float32, eye_triangles (Te, 3) int32: the two eyeballs
        the same way (their UVs: a unit square per eyeball, the iris at its centre).
    eyeball_identity (2, 100, 4, 3) float32: per eyeball and identity component, the affine map
        ``[x - centre, 1] @ A`` that gives the component's delta at an eyeball vertex (``eyeball_centres``
        (2, 3) float32, the neutral eyeballs' vertex means). ICT moves an eyeball almost rigidly, so 2.4k
        numbers stand for its 0.9M: 0.2 mm largest error at unit-variance coefficients, where the
        eyeball moves by up to 7 mm (``part_affine``).
    mouth_ranges (2, 2) int32 ICT vertex ranges of the teeth and of the gums and tongue (``MOUTH_PARTS``);
        mouth_centres (2, 3) float32 and mouth_identity (2, 100, 4, 3) float32: their affine maps, as
        the eyeballs' (0.30 mm / 0.57 mm largest error per component at a unit coefficient, against
        4.3 / 5.3 mm of motion), for the parts' vertices not in ``basis_vertices`` (Nm: all but two gum
        vertices that other expressions move too, which keep full bases).
    mouth_expressions (4,) int32 indices into expression_names (``MOUTH_EXPRESSIONS``: the jaw's) and
        mouth_expression_bytes (2, 4, 3, Nm) uint8: their float16 deltas at those Nm vertices in the
        ranges' order, byte-shuffled; every other expression is 0 there (asserted when written).
    The service expands both into dense bases at load (``service.engine.head._with_mouth``).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import zipfile
from pathlib import Path

import numpy as np

from .facekit import FaceKit, facekit_path
from .region import FaceRegion
from .uvmap import UVLayout, rasterize_uv

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "service" / "assets" / "ict"
ASSET_FILE = "ict_head.npz"
HEAD_PARTS = ("face", "head_and_neck", "mouth_socket", "eye_socket_left", "eye_socket_right",
              "gums_and_tongue", "teeth", "eyeball_left", "eyeball_right")
# The stores the service runs (0.7.0: 128; the tiny test store: 64). A store at another S is fitted
# through the plain selection of its region vertices (service.engine.head._seen_operator); adding
# 256 (the paper configuration) costs 0.5 MB.
LAYOUT_SIZES = (64, 128)
# What ``region=head`` outputs besides the face region and the eyeballs: ICT's whole face part (ears,
# neck), the back of the head, the mouth and eye sockets that close the openings, and the teeth, gums
# and tongue inside the mouth (7,389 vertices, stored compactly: ``MOUTH_PARTS``).
OUTPUT_HEAD_PARTS = ("face", "head_and_neck", "mouth_socket", "eye_socket_left", "eye_socket_right",
                     "gums_and_tongue", "teeth")
# Each part's entry of ``head_palette_uv`` (0: the photo's layout, tile 0). The parts outside tile 0
# read one flat texel each: skin for the back of the head, the sockets' dark interior, teeth, gums.
PALETTE = ("skin", "interior", "teeth", "gums")
# The parts stored compactly (``mouth_arrays``): an affine map per identity component each, and the
# deltas of the only expressions that move them.
MOUTH_PARTS = ("teeth", "gums_and_tongue")
MOUTH_EXPRESSIONS = ("jawOpen", "jawForward", "jawLeft", "jawRight")
# An expression delta at or below this (cm: 0.01 mm) counts as none.
MOUTH_ZERO_CM = 1e-3
PART_PALETTE = {"face": 1, "head_and_neck": 1, "mouth_socket": 2, "eye_socket_left": 2, "eye_socket_right": 2,
                "gums_and_tongue": 4, "teeth": 3}


def head_arrays(kit: FaceKit) -> dict[str, np.ndarray]:
    """The asset's arrays (see the module docstring)."""
    n = max(kit.parts[p][1] for p in HEAD_PARTS)
    triangles = kit.triangles[np.all(kit.triangles < n, axis=1)].astype(np.int32)
    region = FaceRegion.build(kit)
    # The region's vertices and their neighbours along ICT's edges.
    touches = np.isin(triangles, region.vertex_ids).any(axis=1)
    basis = np.union1d(region.vertex_ids, triangles[touches].ravel())
    head_ids = np.concatenate([np.arange(*kit.parts[p]) for p in OUTPUT_HEAD_PARTS if p not in MOUTH_PARTS])
    basis = np.union1d(basis, head_ids)
    mouth = mouth_arrays(kit)
    # The mouth vertices some other expression moves keep their full bases (see mouth_arrays).
    basis = np.union1d(basis, mouth.pop("full_vertices")).astype(np.int32)
    out = {
        "neutral": kit.neutral[:n].astype(np.float32),
        "basis_vertices": basis,
        "identity_bytes": shuffled_half(kit.identity[:, basis]),
        "expression_bytes": shuffled_half(kit.expression[:, basis]),
        "expression_names": np.array(kit.expression_names),
        "triangles": triangles,
        "eyeballs": np.array([kit.parts["eyeball_left"], kit.parts["eyeball_right"]], np.int32),
        **mouth,
    }
    out.update(mesh_arrays("face", region.triangles, region.triangles_uv, kit.uv))
    eyes = [kit.parts["eyeball_left"], kit.parts["eyeball_right"]]
    in_eyes = np.zeros(len(kit.triangles), bool)
    for start, end in eyes:
        in_eyes |= np.all((kit.triangles >= start) & (kit.triangles < end), axis=1)
    out.update(mesh_arrays("eye", kit.triangles[in_eyes], kit.triangles_uv[in_eyes], kit.uv))
    out.update(head_mesh_arrays(kit))
    centres, maps = zip(*(part_affine(kit, start, end) for start, end in eyes))
    out["eyeball_centres"] = np.stack(centres).astype(np.float32)
    out["eyeball_identity"] = np.stack(maps).astype(np.float32)
    for size in LAYOUT_SIZES:
        layout = UVLayout.build(region.triangles, region.tri_uv, size)
        # The layout's triangles are the region's, so the fit never reads a vertex without bases.
        assert np.isin(layout.pixel_vertices, basis).all()
        out[f"layout{size}_pixels"] = layout.flat_index.astype(np.int32)
        out[f"layout{size}_vertices"] = layout.pixel_vertices.astype(np.int32)
        out[f"layout{size}_bary"] = layout.pixel_bary.astype(np.float32)
    return out


def mesh_arrays(prefix: str, triangles: np.ndarray, triangles_uv: np.ndarray, uv: np.ndarray) -> dict[str, np.ndarray]:
    """An ICT sub-mesh as an output mesh: one vertex per (ICT vertex, texture coordinate) pair its
    triangles use, in ICT's vertex order; ``<prefix>_vertices``, ``_uv`` and ``_triangles``."""
    pairs, inverse = np.unique(np.stack([triangles.ravel(), triangles_uv.ravel()], 1), axis=0, return_inverse=True)
    return {f"{prefix}_vertices": pairs[:, 0].astype(np.int32), f"{prefix}_uv": uv[pairs[:, 1]].astype(np.float32),
            f"{prefix}_triangles": inverse.reshape(-1, 3).astype(np.int32)}


def head_mesh_arrays(kit: FaceKit) -> dict[str, np.ndarray]:
    """``head_vertices``, ``_uv``, ``_triangles``: the parts of ``OUTPUT_HEAD_PARTS`` as one output mesh
    textured by the face's S x S layout (ICT's tile 0). Triangles with a corner outside tile 0 (the
    back of the head, the sockets, teeth, gums and tongue: ICT's other UDIM tiles, which the photo
    never shows) take one texture coordinate for all their corners, a texel of tile 0 that no
    face-part triangle covers: ``head_palette_uv`` (4, 2), one per ``PALETTE`` entry [skin, interior,
    teeth, gums], where the service paints skin colour, the mouth's dark interior, the teeth's
    off-white and the gums' pink-red (one mesh and one texture for the whole head: no extra material
    or draw call for the mouth). A triangle of several parts takes the darker (the sockets' rim)."""
    parts = np.zeros(kit.num_vertices, np.int8)  # 0: not output, else its PALETTE entry + 1
    for name in OUTPUT_HEAD_PARTS:
        parts[slice(*kit.parts[name])] = PART_PALETTE[name]
    tris, tris_uv = kit.triangles, kit.triangles_uv
    keep = np.all(parts[tris] > 0, axis=1)
    tris, tris_uv = tris[keep], tris_uv[keep].copy()
    corner_uv = kit.uv[tris_uv]
    in_tile0 = np.all((corner_uv >= 0) & (corner_uv <= 1), axis=(1, 2))
    tile0_face = in_tile0 & np.all(parts[tris] == 1, axis=1)
    palette = unused_texels(corner_uv[tile0_face], len(PALETTE))
    uv = np.concatenate([kit.uv, palette])
    # Interior (2) wins over skin (1) at the sockets' rims, as before; teeth and gums are not joined to
    # other parts by ICT's triangles, so their triangles are theirs alone.
    entry = np.where(np.any(parts[tris] == 2, axis=1), 2, parts[tris].max(axis=1)).astype(np.int64)
    unseen = ~tile0_face
    tris_uv[unseen] = (len(kit.uv) + entry[unseen] - 1)[:, None]
    out = mesh_arrays("head", tris, tris_uv, uv)
    out["head_palette_uv"] = palette.astype(np.float32)
    return out


def unused_texels(tri_uv: np.ndarray, count: int, size: int = 64) -> np.ndarray:
    """(count, 2) texture coordinates of pixel centres of a ``size``² map that lie farthest from every
    triangle of ``tri_uv`` (T, 3, 2), far enough apart that texture filtering keeps them apart."""
    from scipy import ndimage

    from .uvmap import pixel_to_uv

    covered = rasterize_uv(tri_uv, size)[0] >= 0
    distance = ndimage.distance_transform_edt(~covered)
    out = []
    for _ in range(count):
        r, c = np.unravel_index(np.argmax(distance), distance.shape)
        out.append(pixel_to_uv(np.array([c, r], np.float64), size))
        yy, xx = np.mgrid[0:size, 0:size]
        distance[(yy - r) ** 2 + (xx - c) ** 2 <= 16] = 0
    return np.array(out)


def mouth_arrays(kit: FaceKit) -> dict[str, np.ndarray]:
    """The teeth's and the gums and tongue's compact bases (``MOUTH_PARTS``, see the module docstring),
    and ``full_vertices``: the part vertices that keep full bases instead (not an asset array).

    ICT moves these parts nearly rigidly with the identity (an affine map per component errs by at most
    0.30 mm on the teeth and 0.57 mm on the gums and tongue at unit coefficients, against 4.3 / 5.3 mm
    of motion), and only the jaw's four expressions move them. Two gum vertices (15857 and 15922, where
    the gums meet the lips in ICT's sculpt) are also moved by 22 other expressions, up to 0.29 mm each
    (4.1 mm all at 1): they keep their full bases, 2 of 7,389 vertices, rather than lose that."""
    names = list(kit.expression_names)
    jaw = np.array([names.index(name) for name in MOUTH_EXPRESSIONS])
    other = np.setdiff1d(np.arange(len(names)), jaw)
    ranges = np.array([kit.parts[p] for p in MOUTH_PARTS], np.int32)
    ids = np.concatenate([np.arange(*r) for r in ranges])
    moved = np.linalg.norm(kit.expression[other][:, ids], axis=2).max(axis=0)  # (Nm,) cm
    full = ids[moved > MOUTH_ZERO_CM]
    compact = ids[moved <= MOUTH_ZERO_CM]
    # What the asset leaves out: no other expression moves a compact vertex (float32 noise of ICT's
    # sculpt aside, 0.002 mm at most); a FaceKit where one did would be stored wrongly, so stop.
    assert len(full) <= 2 and np.abs(kit.expression[other][:, compact]).max() <= MOUTH_ZERO_CM, full
    centres, maps = zip(*(part_affine(kit, start, end) for start, end in ranges))
    return {
        "mouth_ranges": ranges,
        "mouth_centres": np.stack(centres).astype(np.float32),
        "mouth_identity": np.stack(maps).astype(np.float32),
        "mouth_expressions": jaw.astype(np.int32),
        "mouth_expression_bytes": shuffled_half(kit.expression[jaw][:, compact]),
        "full_vertices": full,
    }


def part_affine(kit: FaceKit, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    """The part ``start:end``'s (an eyeball, the teeth, the gums and tongue) neutral centre (3,) and, per
    identity component, the least-squares affine map (100, 4, 3) from ``[x - centre, 1]`` to the
    component's delta at x."""
    x = kit.neutral[start:end].astype(np.float64)
    centre = x.mean(0)
    design = np.c_[x - centre, np.ones(len(x))]
    deltas = kit.identity[:, start:end].astype(np.float64)  # (100, n, 3)
    maps = np.linalg.lstsq(design, deltas.transpose(1, 0, 2).reshape(len(x), -1), rcond=None)[0]
    return centre, maps.reshape(4, -1, 3).transpose(1, 0, 2)


def shuffled_half(basis: np.ndarray) -> np.ndarray:
    """(K, Nb, 3) -> (2, K, 3, Nb) uint8: the float16 values' low and high bytes in separate planes,
    each component's vertices in a row. The high bytes (sign, exponent) of neighbouring vertices
    repeat, which LZMA finds once they are adjacent: 2.8 MB for the identity instead of 3.2 MB
    (deflate: 3.8 MB), the same float16 values (``service.engine.head.unshuffled_half`` reverses it)."""
    half = np.ascontiguousarray(basis.astype("<f2").transpose(0, 2, 1))
    return np.ascontiguousarray(np.moveaxis(half.view(np.uint8).reshape(*half.shape, 2), -1, 0))


def save_npz(target: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` with LZMA (the bases, with ``shuffled_half``: 3.5 MB against deflate's
    5.0 MB) and fixed timestamps (the same arrays give the same bytes); ``np.load`` reads it as any npz."""
    with zipfile.ZipFile(target, "w") as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_LZMA
            with archive.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)


def write_head_asset(out: Path, kit_path: Path | None = None) -> tuple[Path, str]:
    """Write ``out/ict_head.npz`` and ICT's LICENSE beside it; returns the file and its sha256."""
    kit_path = Path(kit_path) if kit_path else facekit_path()
    out.mkdir(parents=True, exist_ok=True)
    target = out / ASSET_FILE
    save_npz(target, head_arrays(FaceKit.load(kit_path)))
    shutil.copyfile(kit_path.parent / "LICENSE", out / "LICENSE")
    return target, hashlib.sha256(target.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.facemodel.head_asset", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--facekit", type=Path, help="ict_facekit.npz (default: $FACEKIT_PATH or ../shared)")
    args = parser.parse_args(argv)
    target, digest = write_head_asset(args.out, args.facekit)
    print(f"{target}: {target.stat().st_size:,} bytes, sha256 {digest} (service.engine.head.HEAD_ASSET_SHA256)")


if __name__ == "__main__":
    main()
