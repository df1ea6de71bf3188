"""Stages ``heatmaps``/``texture`` inputs and the texture composition by option.

``albedo`` is the texture stream's delit output; ``shaded`` multiplies it by the estimated SH
lighting (p_l, fixed relative to the camera, so normals are taken in the view frame); ``photo`` is
the photo itself unwrapped into UV at the output resolution, with unseen texels from the albedo.

The stream's map is S x S (128²), coarser than a face in most photos, so the albedo at a larger size (in
all three modes: ``photo`` fills what the photo does not show with it) also carries the photo's *detail*
(:func:`photo_detail`): at each seen texel, the photo's
luminance over its local mean at the scale of one map texel. A ratio, it is unchanged when the photo is
darkened or brightened as a whole and nearly so under a smooth change of light, so the albedo stays
delit; it holds the pores, brows, lashes and lip lines the map is too coarse for.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from .asm_decode import FaceGeometry
from .mirror import mirror_ready
from .topology import MeshTopology
from .unwrap import Unwrap

TEXTURE_KINDS = ("albedo", "shaded", "photo")

# Lambertian SH basis constants (Ramamoorthi & Hanrahan), the order and signs of training.render.shading.
_A = (math.pi, 2 * math.pi / math.sqrt(3.0), 2 * math.pi / math.sqrt(8.0))
_C = (1 / math.sqrt(4 * math.pi), math.sqrt(3.0) / math.sqrt(4 * math.pi), 3 * math.sqrt(5.0) / math.sqrt(12 * math.pi))


def sh_basis(normals: np.ndarray) -> np.ndarray:
    """(..., 3) unit normals -> (..., 9) Lambertian-convolved SH basis."""
    x, y, z = normals[..., 0], normals[..., 1], normals[..., 2]
    a0c0, a1c1, a2c2 = _A[0] * _C[0], _A[1] * _C[1], _A[2] * _C[2]
    return np.stack([np.full_like(x, a0c0), -a1c1 * y, a1c1 * z, -a1c1 * x, a2c2 * x * y, -a2c2 * y * z,
                     0.5 * a2c2 / math.sqrt(3.0) * (3 * z * z - 1), -a2c2 * x * z, 0.5 * a2c2 * (x * x - y * y)], -1)


def compose_texture(kind: str, albedo: np.ndarray, geo: FaceGeometry, unwrapped: Unwrap, topo: MeshTopology,
                    photo: np.ndarray, size: int, detail: bool = True, skin_test: bool = True) -> np.ndarray:
    """(size, size, 3) uint8 texture in the UV layout (row 0 = top = v near 1).

    albedo: (3, S, S) float in [0, 1], the texture graph's output for this face. ``detail``: the albedo
    (``albedo``, ``shaded``'s albedo and ``photo``'s fill where the photo is not seen) times
    :func:`photo_detail` (False: the map resized alone). ``skin_test``: neither the detail nor ``photo``
    copies what :func:`skin_trust` finds is not the face's skin (False: the photo wherever seen, as
    before the test; the evaluation's baseline).
    """
    with_detail = detail and size > topo.size
    needs_shading = kind in ("shaded", "photo") or with_detail
    shading = view_shading(geo, unwrapped, topo) if needs_shading else None  # once for every use
    expected = albedo.transpose(1, 2, 0) * np.clip(shading, 0.0, None) if needs_shading else None
    skin = skin_trust(photo, unwrapped, geo, topo, expected) if skin_test and (with_detail or kind == "photo") else None
    if with_detail:
        # 512² x 3 products: float32 halves them
        base = cv2.resize(albedo.transpose(1, 2, 0).astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
        base *= photo_detail(photo, unwrapped, geo, topo, size, expected, skin)[..., None]
    else:
        base = resize(albedo.transpose(1, 2, 0), size)
    if kind == "albedo":
        out = base
    elif kind == "shaded":
        out = base * np.clip(resize(shading, size), 0.0, None)
    elif kind == "photo":
        out = unwrap_photo(photo, unwrapped, geo, size, base, topo, trust=skin)
    else:
        raise ValueError(f"unknown texture kind {kind!r}")
    return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def view_shading(geo: FaceGeometry, unwrapped: Unwrap, topo: MeshTopology) -> np.ndarray:
    """(S, S, 3) the SH shading of ``geo.lighting`` at each UV pixel, normals in the view frame."""
    normals = np.zeros((topo.size, topo.size, 3))
    normals[..., 2] = 1.0  # outside the mask only bleeds into texture filtering; face the camera
    normals[topo.rows, topo.cols] = unwrapped.normals_view
    return sh_basis(normals) @ geo.lighting


def unwrap_photo(photo: np.ndarray, unwrapped: Unwrap, geo: FaceGeometry, size: int, fill: np.ndarray,
                 topo: MeshTopology, feather: bool = True, trust: np.ndarray | None = None) -> np.ndarray:
    """The full-resolution photo sampled at each texel's projected position, blended by
    :func:`photo_weight` into ``fill`` (size, size, 3), which is first scaled per channel to the photo's
    mean colour over the well-seen texels so that the two meet at the same brightness. ``trust``: (S, S)
    in [0, 1] at the map's resolution (:func:`skin_trust`), which the weight is multiplied by after the
    fill's colour is matched: where it is 0 the texel is the fill's.

    ``feather=False``: the plain switch by the resized visibility, unscaled fill (before issue 22; the
    seam figures' baseline)."""
    sampled = sample_photo(photo, unwrapped, geo, size)
    if not feather:
        seen = resize(unwrapped.visibility.astype(np.float64), size)[..., None]
        return seen * sampled.astype(np.float64) / 255.0 + (1.0 - seen) * fill
    # In float32 and in place: at 512² the blend's arithmetic is most of this stage's time.
    colour = sampled.astype(np.float32)
    colour *= np.float32(1.0 / 255.0)
    weight = photo_weight(unwrapped, topo, size).astype(np.float32)
    step = max(1, size // 128)  # the means from every step-th texel: as good, and cheaper at 512²
    well_seen = weight[::step, ::step] > 0.5
    gain = np.ones(3)
    if well_seen.any():
        gain = colour[::step, ::step][well_seen].mean(0) / np.maximum(fill[::step, ::step][well_seen].mean(0), 1e-3)
    if trust is not None:
        weight *= cv2.resize(trust.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    out = fill.astype(np.float32)
    out *= np.clip(gain, 0.25, 4.0).astype(np.float32)
    colour -= out
    colour *= weight[..., None]
    out += colour
    return out


def sample_photo(photo: np.ndarray, unwrapped: Unwrap, geo: FaceGeometry, size: int) -> np.ndarray:
    """(size, size, C) uint8: the full-resolution photo (H, W, C) or (H, W) bilinearly sampled at each
    texel's projected position (:func:`photo_positions`)."""
    photo_xy = photo_positions(unwrapped, geo, size).astype(np.float32)
    # cv2.remap indexes pixel centres at integers; ours sit at +0.5.
    return cv2.remap(photo, photo_xy[..., 0] - 0.5, photo_xy[..., 1] - 0.5, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


# The detail is what one texel of the network's S x S map cannot hold: the photo against its Gaussian
# mean of this many map texels. Wider copies the photo's shading gradients too (AFLW2000 dev, 40
# photos, before the agreement test: identity 0.917 without detail, 0.943 at 1 texel, 0.951 at 2).
# The ratio is clipped, so a specular highlight or a dark frame of glasses marks the albedo only so far.
DETAIL_SIGMA = 1.0
DETAIL_RANGE = (0.6, 1.6)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # Rec. 601, the weights of cv2.COLOR_RGB2GRAY


def photo_detail(photo: np.ndarray, unwrapped: Unwrap, geo: FaceGeometry, topo: MeshTopology, size: int,
                 expected: np.ndarray, skin: np.ndarray | None = None) -> np.ndarray:
    """(size, size) float32 factor, 1 where the photo is not trusted: the photo's luminance at each texel
    over its local mean (a Gaussian of ``DETAIL_SIGMA`` map texels, weighted by :func:`photo_weight` so
    that neither the background nor the unseen side enters it), clipped to ``DETAIL_RANGE`` and faded
    in by that weight and by :func:`agreement`; for a left-right symmetric layout, the mirror side's
    detail fills in where this side's is not trusted (the far cheek of a turned head). ``expected``:
    (S, S, 3) the reconstruction's own colour at the map's resolution, albedo times shading in [0, 1].
    ``skin``: (S, S) :func:`skin_trust`, which the trust is multiplied by too (None: no such test).
    At ``size`` <= S there is nothing finer than the map to add: all ones."""
    if size <= topo.size:
        return np.ones((size, size), np.float32)
    resolved = detail_size(unwrapped, geo, topo, size)  # no finer than the photo holds
    factor = _detail_at(photo, unwrapped, geo, topo, resolved, expected, skin)
    return factor if resolved == size else cv2.resize(factor, (size, size), interpolation=cv2.INTER_LINEAR)


def _detail_at(photo: np.ndarray, unwrapped: Unwrap, geo: FaceGeometry, topo: MeshTopology, size: int,
               expected: np.ndarray, skin: np.ndarray | None = None) -> np.ndarray:
    """:func:`photo_detail`'s factor computed at ``size``."""
    s = topo.size
    # Sampled, then made grey: the texels are fewer than a large photo's pixels.
    luma = cv2.cvtColor(sample_photo(photo, unwrapped, geo, size), cv2.COLOR_RGB2GRAY).astype(np.float32)
    weight = photo_weight(unwrapped, topo, size).astype(np.float32)
    mean = local_mean(luma, weight, DETAIL_SIGMA * size / s)
    ratio = np.clip(luma / np.maximum(mean, 1.0), *DETAIL_RANGE)  # luma in 0-255: below 1 is black either way
    # The agreement is a test at the map's scale, so it is made there (a sixteenth of the texels at 512²).
    coarse = cv2.resize(mean, (s, s), interpolation=cv2.INTER_AREA)
    agreed = agreement(coarse, expected.astype(np.float32) @ (255.0 * _LUMA))
    if skin is not None:
        agreed *= skin
    trust = weight * cv2.resize(agreed, (size, size), interpolation=cv2.INTER_LINEAR)
    deviation = trust * (ratio - 1.0)
    if mirror_ready(topo):  # where the photo is not trusted, the other side's detail if it is seen
        deviation += (1.0 - trust) * deviation[:, ::-1]
    return 1.0 + deviation


def detail_size(unwrapped: Unwrap, geo: FaceGeometry, topo: MeshTopology, size: int) -> int:
    """The texture size (even, from 2 S up to ``size``) at which a seen texel spans about one photo pixel:
    the photo holds nothing finer, so :func:`photo_detail` is computed there and resized. A face 250
    photo pixels across needs about 300², not 512², and a 2048² request costs what that size does."""
    s = topo.size
    xy = photo_positions(unwrapped, geo, s)  # (S, S, 2)
    seen = unwrapped.visibility & topo.uv_mask
    across = seen[:, 1:] & seen[:, :-1]
    if not across.any():
        return size
    pixels_per_map_texel = float(np.median(np.linalg.norm(np.diff(xy, axis=1), axis=-1)[across]))
    return int(min(size, max(2 * s, 2 * math.ceil(pixels_per_map_texel * s / 2))))


def local_mean(values: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """(T, T) or (T, T, C) float32: the ``weight`` (T, T)-weighted Gaussian mean of ``values`` (T, T) or
    (T, T, C), each channel alone, at ``sigma`` texels.
    Blurred at half the resolution when ``sigma`` is 2 or more, at a quarter of the cost (1 ms at 512²):
    on the trusted texels of six eval photos' luminance at 512², sigma 4, within 0.11-0.25 grey levels
    of the full-resolution mean on average (0.5-1.3 at the 99th percentile)."""
    t = values.shape[0]
    half = sigma >= 2.0 and t % 2 == 0
    per_texel = weight if values.ndim == 2 else weight[..., None]
    if half:
        values, weight = (cv2.resize(a, (t // 2, t // 2), interpolation=cv2.INTER_AREA) for a in (values * per_texel, weight))
        sigma /= 2.0
    else:
        values = values * per_texel
    total = np.maximum(cv2.GaussianBlur(weight, (0, 0), sigma), 1e-4)
    mean = cv2.GaussianBlur(values, (0, 0), sigma) / (total if values.ndim == 2 else total[..., None])
    return cv2.resize(mean, (t, t), interpolation=cv2.INTER_LINEAR) if half else mean


# Where the photo's local mean and the reconstruction's own colour disagree by more than this (a log
# ratio), the photo shows something the texture stream left out (glasses, hair over the brow, a hand, a
# cast shadow), whose detail stays out too; full detail within the first figure, none past the second.
AGREEMENT_LOG = (0.1, 0.3)
AGREEMENT_ERODE = 2  # map texels: the edges of what disagrees (a frame's rim) stay out too


def agreement(mean: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """(S, S) float32 in [0, 1]: 1 where the photo's local mean luminance ``mean`` (S, S) matches the
    reconstruction's ``expected`` (S, S) (both 0-255) within ``AGREEMENT_LOG``, falling to 0 beyond; then
    eroded by ``AGREEMENT_ERODE`` texels."""
    lo, hi = AGREEMENT_LOG
    gap = np.abs(np.log(np.maximum(mean, 1.0) / np.maximum(expected, 1.0)))
    trust = 1.0 - _smoothstep((gap - lo) / (hi - lo))
    k = 2 * AGREEMENT_ERODE + 1
    return cv2.erode(trust.astype(np.float32), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))


# Where the photo's colour around a texel is not skin at all, the photo shows something else there: a
# blue sky or a wall where the mesh overhangs the face, a microphone, sunglasses or black hair in front of
# it. Neither ``photo`` nor the detail copies it (issue 22): the fill shows there. Two tests, each from
# full trust at its first figure to none at its second, on the photo's local mean colour:
# - hue: skin's reflectance falls from red to green to blue, so a photo's skin does too under all but a
#   strongly coloured light: green over red, or blue over green, by these log ratios is something else
#   (unless most of the face fails it: then it is the light that is blue or green, and the test is off);
# - luminance: its log ratio to the reconstruction's own colour (albedo x shading, brought to the
#   photo's exposure and tint), far beyond what brows, lids, lips and cast shadows make.
# docs/evaluation.md#the-skin-test has the measurements.
SKIN_HUE_LOG = (0.1, 0.25)
SKIN_HUE_MOST = 0.5  # when the hue test fails more of the well-seen face than this, the light is coloured
SKIN_LUMA_LOG = (0.6, 1.0)
SKIN_ERODE = 2  # map texels: an occluder's edge, which the local mean blurs, goes too
_SKIN_FLOOR = 8.0  # 0-255: below this a channel is black, and its ratio says nothing
# The brows, eyes and mouth are not skin either (dark brows and lashes, a blue iris, white teeth), but
# they are the face: the photo shows them there, and the tests leave them alone: each landmark outline's
# hull widened by this many map texels, as far as the photo's features may sit from the mesh's.
FEATURE_MARGIN = 3
_FEATURES = (range(17, 22), range(22, 27), range(36, 42), range(42, 48), range(48, 60))  # of the 68 landmarks


def skin_trust(photo: np.ndarray, unwrapped: Unwrap, geo: FaceGeometry, topo: MeshTopology,
               expected: np.ndarray) -> np.ndarray:
    """(S, S) float32 in [0, 1]: 1 where the photo's local mean colour (a Gaussian of one map texel over
    the seen texels, :func:`photo_weight`) is skin by the hue and luminance tests above, against the
    reconstruction's ``expected`` colour (S, S, 3), albedo times shading in [0, 1]; 0 where it is
    something else; eroded by ``SKIN_ERODE`` map texels. 1 wherever the photo is not seen."""
    s = topo.size
    weight = photo_weight(unwrapped, topo, s).astype(np.float32)
    well_seen = weight > 0.5
    if well_seen.sum() < 16:
        return np.ones((s, s), np.float32)
    mean = local_mean(sample_photo(photo, unwrapped, geo, s).astype(np.float32), weight, 1.0)
    logs = np.log(np.maximum(mean, _SKIN_FLOOR))
    hue_gap = np.maximum(logs[..., 1] - logs[..., 0], logs[..., 2] - logs[..., 1])
    trust = 1.0 - _smoothstep((hue_gap - SKIN_HUE_LOG[0]) / (SKIN_HUE_LOG[1] - SKIN_HUE_LOG[0]))
    if (trust[well_seen] < 0.5).mean() > SKIN_HUE_MOST:  # a coloured light, not a face of sky: no hue test
        trust[:] = 1.0
    # The photo's exposure and tint against the reconstruction's (each channel's median ratio over every
    # other well-seen texel each way: as good as all, a quarter of the cost) are taken out first.
    reconstructed = expected.astype(np.float32) * np.float32(255.0)
    sample = np.zeros_like(well_seen)
    sample[::2, ::2] = well_seen[::2, ::2]
    gain = np.median(mean[sample] / np.maximum(reconstructed[sample], 1.0), axis=0).astype(np.float32)
    luma = (logs - np.log(np.maximum(reconstructed * gain, _SKIN_FLOOR))).mean(-1)
    trust *= 1.0 - _smoothstep((np.abs(luma) - SKIN_LUMA_LOG[0]) / (SKIN_LUMA_LOG[1] - SKIN_LUMA_LOG[0]))
    trust[weight == 0] = 1.0  # the photo is not taken there anyway: the erosion must not reach in from there
    k = 2 * SKIN_ERODE + 1
    trust = cv2.erode(trust.astype(np.float32), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    trust[feature_texels(topo)] = 1.0
    return trust


def feature_texels(topo: MeshTopology) -> np.ndarray:
    """(S, S) bool: the brows, eyes and mouth in the layout (``_FEATURES`` of its 68 landmarks), which
    :func:`skin_trust` leaves to the photo."""
    return _feature_texels(topo.size, np.asarray(topo.landmarks_uv, np.float64).tobytes())


@functools.lru_cache(maxsize=8)
def _feature_texels(s: int, landmarks_bytes: bytes) -> np.ndarray:
    landmarks = np.frombuffer(landmarks_bytes, np.float64).reshape(68, 2)
    mask = np.zeros((s, s), np.uint8)
    for feature in _FEATURES:
        cv2.fillConvexPoly(mask, cv2.convexHull(np.round(landmarks[list(feature)]).astype(np.int32)), 1)
    k = 2 * FEATURE_MARGIN + 1
    return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))).astype(bool)


# How far the photo is trusted (``photo``): fully where the surface faces the camera within about 66°
# (cosine 0.4), not at all beyond about 84° (cosine 0.1), since a grazing view stretches a few photo
# pixels, often the background's, over many texels; and fading in over FEATHER_TEXELS (at the unwrap's
# resolution) from where the visibility ends, so that an occlusion edge (the nose over the far cheek)
# is a ramp rather than a step.
GRAZING_COSINE = (0.1, 0.4)
FEATHER_TEXELS = 4.0


def photo_weight(unwrapped: Unwrap, topo: MeshTopology, size: int) -> np.ndarray:
    """(size, size) weight in [0, 1] of the photo against the fill: zero where unseen, rising with the
    surface's facing and the distance from the visibility's edge inside the UV mask."""
    lo, hi = GRAZING_COSINE
    facing = np.zeros((topo.size, topo.size))
    facing[topo.rows, topo.cols] = _smoothstep((unwrapped.normals_view[:, 2] - lo) / (hi - lo))
    seen = unwrapped.visibility
    # Distance to the nearest unseen texel of the mask; beyond the mask there is nothing to blend with.
    distance = cv2.distanceTransform((seen | ~topo.uv_mask).astype(np.uint8), cv2.DIST_L2, 5)
    edge = _smoothstep((distance - 0.5) / FEATHER_TEXELS)
    # Blurred against texel-sized steps (z-buffer speckle), then cut back to the seen texels: an unseen
    # texel shows whatever hides it, so none of the photo goes there (the ramp is ~0 at the edge already).
    weight = cv2.GaussianBlur((seen * facing * edge).astype(np.float32), (0, 0), 0.7) * seen
    return np.clip(resize(weight, size), 0.0, 1.0)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def photo_positions(unwrapped: Unwrap, geo: FaceGeometry, size: int) -> np.ndarray:
    """(size, size, 2) photo pixels (x, y) each texel projects to, the UV grid's positions resized
    (texel centres aligned) to the output resolution."""
    crop_xy = (unwrapped.uv_grid.astype(np.float64) + 1.0) * geo.crop.size / 2.0
    return resize(geo.crop.to_photo(crop_xy), size)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """(S, S, C) or (S, S) float map -> (size, size, ...) bilinear, pixel centres aligned."""
    if image.shape[0] == size:
        return image.astype(np.float64)
    return cv2.resize(image.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float64)


def bleed(texture: np.ndarray, uv_mask: np.ndarray) -> np.ndarray:
    """(T, T, 3) texture in the layout, each texel whose bilinear taps of the S x S maps leave
    ``uv_mask`` (S, S) less its outermost pixels set to the nearest texel whose taps do not. ICT's rim
    vertices have UVs up to a map pixel beyond the mask's outermost pixel centres (the grid mesh's
    vertices sit on them), where the maps hold nothing the network was trained to predict; this is the
    texture's clamp-to-edge."""
    moved, source = _bleed_moves(texture.shape[0], uv_mask.shape[0], uv_mask.tobytes())
    out = np.ascontiguousarray(texture).copy()
    # Only the texels outside move (a 2D fancy index of all T^2 texels cost 4-6 ms at 512), each as one
    # item of its channels' bytes (1.5 -> 0.9 ms at 512² against a row gather of (T^2, 3)).
    texels = out.view(np.dtype((np.void, out.shape[-1] * out.itemsize))).reshape(-1)
    texels[moved] = texels[source]
    return out


@functools.lru_cache(maxsize=8)
def _bleed_moves(size: int, s: int, mask_bytes: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The flat indices of the texels :func:`bleed` sets and of the texels they take (once per size)."""
    rows, cols = _nearest_inside(size, s, mask_bytes)
    source = (rows * size + cols).ravel()
    moved = np.flatnonzero(source != np.arange(size * size))
    return moved, source[moved]


@functools.lru_cache(maxsize=8)
def _nearest_inside(size: int, s: int, mask_bytes: bytes) -> tuple[np.ndarray, np.ndarray]:
    # The mask's outermost pixels count as outside: a network's maps are least trained there (0.8.0's
    # albedo has dark and coloured specks along them), and ICT's rim would show them as a fringe.
    mask = ndimage.binary_erosion(np.frombuffer(mask_bytes, bool).reshape(s, s), border_value=0)
    x = (np.arange(size) + 0.5) * s / size - 0.5
    lo = np.clip(np.floor(x).astype(np.intp), 0, s - 1)
    hi = np.clip(lo + 1, 0, s - 1)
    inside = np.ones((size, size), bool)
    for r in (lo, hi):
        for c in (lo, hi):
            inside &= mask[np.ix_(r, c)]
    if not inside.any():
        grid = np.mgrid[0:size, 0:size]
        return grid[0], grid[1]
    rows, cols = ndimage.distance_transform_edt(~inside, return_distances=False, return_indices=True)
    return rows, cols


INTERIOR_COLOUR = np.array([0.30, 0.12, 0.11])  # the mouth and eye sockets' inside: a dark red
TEETH_COLOUR = np.array([0.85, 0.82, 0.74])  # an albedo: off-white, a little yellow, not paper-white
GUMS_COLOUR = np.array([0.70, 0.33, 0.33])  # gums and tongue: a pink-red, lighter than the socket
# The flat colours of the palette's texels after the first (skin, from the face): the asset's PALETTE order.
PALETTE_COLOURS = (INTERIOR_COLOUR, TEETH_COLOUR, GUMS_COLOUR)
FADE = 1.0 / 24  # of the texture's side: the rim's colour fades into skin colour over this (about 1 cm)


def head_texture(texture: np.ndarray, uv_mask: np.ndarray, palette_uv: np.ndarray) -> np.ndarray:
    """(T, T, 3) uint8 texture for ``region=head``: the face's ``texture`` (clamped as :func:`bleed`)
    where the maps are, fading over ``FADE`` into skin colour (the face texels' per-channel median,
    from the fitted albedo or whichever texture was asked for) everywhere the photo cannot show (ears,
    neck, the back of the head read tile 0's texels beyond the mask); ``palette_uv`` (P, 2) [skin,
    interior, teeth, gums]: the texels the back of the head, the sockets, the teeth and the gums and
    tongue read, skin and ``PALETTE_COLOURS`` (a shorter palette paints its first P)."""
    size, channels = texture.shape[0], texture.shape[-1]
    plan = _head_plan(size, uv_mask.shape[0], uv_mask.tobytes(), np.asarray(palette_uv, np.float64).tobytes())
    flat = texture.reshape(-1, channels)
    skin = _median_u8(np.take(flat, plan.inside, axis=0))
    # Texel by texel the arithmetic of t (1 - fade) + skin fade, clipped and rounded; where fade is 0
    # that is t and where it is 1 skin, exactly, so only the ramp between is computed in float64.
    out = np.take(flat, plan.source, axis=0)
    ramp = out[plan.ramp] * (1.0 - plan.ramp_fade) + skin * plan.ramp_fade
    out[plan.ramp] = np.clip(ramp + 0.5, 0, 255).astype(np.uint8)
    out[plan.skin] = np.clip(skin + 0.5, 0, 255).astype(np.uint8)
    for texels, colour in zip(plan.painted, PALETTE_COLOURS):
        out[texels] = np.clip(colour * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out.reshape(texture.shape)


def _median_u8(values: np.ndarray) -> np.ndarray:
    """(C,) float64: ``np.median(values, axis=0)`` of (n, C) uint8 by counting, not sorting (19 ms -> 2 ms
    for 162k texels): the middle value, or the mean of the middle two for an even n."""
    n, channels = values.shape
    counts = np.bincount((values + np.arange(channels, dtype=np.intp) * 256).ravel(), minlength=256 * channels)
    cumulative = np.cumsum(counts.reshape(channels, 256), axis=1)
    low = np.array([np.searchsorted(c, (n - 1) // 2, side="right") for c in cumulative], np.float64)
    high = np.array([np.searchsorted(c, n // 2, side="right") for c in cumulative], np.float64)
    return (low + high) / 2.0


@dataclass(frozen=True)
class _HeadPlan:
    """:func:`head_texture`'s flat texel indices, once per texture size and mask."""

    inside: np.ndarray  # the texels the maps cover (the skin colour's median)
    source: np.ndarray  # (T^2,) the texel each texel starts from (``bleed``'s clamp)
    ramp: np.ndarray  # the texels fading into skin colour (0 < fade < 1)
    ramp_fade: np.ndarray  # (R, 1) their fade
    skin: np.ndarray  # the texels of skin colour alone (fade 1, or the palette's skin texel)
    painted: tuple[np.ndarray, ...]  # the palette's texels after skin's, one array per PALETTE_COLOURS entry


@functools.lru_cache(maxsize=8)
def _head_plan(size: int, s: int, mask_bytes: bytes, palette_bytes: bytes) -> _HeadPlan:
    inside, fade, palette = _head_fade(size, s, mask_bytes, palette_bytes)
    rows, cols = _nearest_inside(size, s, mask_bytes)
    fade, palette = fade.reshape(-1), palette.reshape(-1)
    ramp = np.flatnonzero((fade > 0.0) & (fade < 1.0) & (palette == 0))
    return _HeadPlan(inside=np.flatnonzero(inside), source=(rows * size + cols).ravel(), ramp=ramp,
                     ramp_fade=fade[ramp][:, None], skin=np.flatnonzero((fade >= 1.0) | (palette == 1)),
                     painted=tuple(np.flatnonzero(palette == i) for i in range(2, 2 + len(PALETTE_COLOURS))))


@functools.lru_cache(maxsize=8)
def _head_fade(size: int, s: int, mask_bytes: bytes,
               palette_bytes: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What :func:`head_texture` needs of the mask alone, once per texture size: the texels it keeps
    (T, T) bool, the skin colour's share (T, T, 1), and the palette's texels (T, T) (1 skin, 2 interior,
    3 teeth, 4 gums; 0 elsewhere)."""
    rows, cols = _nearest_inside(size, s, mask_bytes)
    inside = (rows == np.arange(size)[:, None]) & (cols == np.arange(size)[None, :])
    distance = ndimage.distance_transform_edt(~inside) / (FADE * size)
    fade = _smoothstep(np.clip(distance, 0.0, 1.0))[..., None]
    palette = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    radius = max(1.5, size / 64)
    for index, (u, v) in enumerate(np.frombuffer(palette_bytes, np.float64).reshape(-1, 2), start=1):
        cx, cy = u * size - 0.5, (1.0 - v) * size - 0.5
        palette[(xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2] = index
    return inside, fade, palette
