"""Z-buffer rasterization in pure PyTorch (CPU and CUDA, batched).

Two passes, the split used by pytorch3d and nvdiffrast:

1. :func:`rasterize_pix_to_face` — a non-differentiable visibility pass that picks, per pixel,
   the closest triangle whose closed interior contains the pixel centre.
2. :func:`compute_barycentrics` — recomputes barycentric coordinates (and depth) of the chosen
   triangles from the screen vertices with autograd, so gradients reach vertex positions
   through the barycentrics (no silhouette / edge gradients).

Screen convention (see ``cameras.py``): x right, y down, pixel (i, j) sampled at
(j + 0.5, i + 0.5), depth smaller = closer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .cameras import as_hw

_INT64_MAX = torch.iinfo(torch.int64).max
_FACE_BITS = 32
_FACE_MASK = (1 << _FACE_BITS) - 1


@dataclass
class Fragments:
    """Per-pixel rasterization result.

    Attributes:
        pix_to_face: (B, H, W) int64 index into ``faces`` (per mesh, not packed over the batch);
            -1 = background.
        bary_coords: (B, H, W, 3) barycentric weights of the triangle's three corners; zero on
            background. Differentiable w.r.t. the screen vertices.
        zbuf: (B, H, W) interpolated depth (smaller = closer); 0 on background (use the mask).
    """

    pix_to_face: torch.Tensor
    bary_coords: torch.Tensor
    zbuf: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """(B, H, W) bool, True where a triangle covers the pixel centre."""
        return self.pix_to_face >= 0


def _sortable_depth(depth: torch.Tensor) -> torch.Tensor:
    """Map float depths to int64 with the same order (exact, no quantization).

    IEEE floats order like sign-magnitude integers: non-negative floats already sort as their
    bit patterns; negative ones sort reversed, so flip their magnitude bits.
    """
    bits = depth.to(torch.float32).contiguous().view(torch.int32)
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return bits.to(torch.int64)


def _edge(ax, ay, bx, by, px, py):
    """Twice the signed area of (a, b, p); > 0 when p is clockwise of a->b on a y-down screen."""
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


@torch.no_grad()
def rasterize_pix_to_face(
    verts_screen: torch.Tensor,
    faces: torch.Tensor,
    image_size,
    cull_backfaces: bool = False,
    max_candidates: int = 1 << 22,
) -> torch.Tensor:
    """Visibility pass: the closest covering triangle per pixel.

    Every (triangle, pixel-in-bounding-box) pair is enumerated in chunks of at most
    ``max_candidates`` pairs (one oversized triangle may exceed it), tested with edge functions
    at the pixel centre (closed triangle: pixels exactly on an edge count as inside), and
    reduced per pixel with ``scatter_reduce('amin')`` on an int64 key ``depth << 32 | face``:
    the nearest triangle wins and equal depths go to the smaller face id, so the result is
    deterministic.

    Args:
        verts_screen: (B, V, 3) screen vertices (x, y pixels, y down; depth, smaller = closer).
        faces: (F, 3) int64 vertex ids (shared by the batch).
        image_size: int or (H, W).
        cull_backfaces: drop triangles whose corners appear clockwise to the viewer on screen,
            i.e. whose world normal ``(v1 - v0) x (v2 - v0)`` points away from the camera
            (OpenGL's counter-clockwise-is-front). Off by default: both windings rasterize.
        max_candidates: memory bound on pairs processed at once.

    Returns:
        (B, H, W) int64 pix_to_face, -1 = background.
    """
    h, w = as_hw(image_size)
    b, device = verts_screen.shape[0], verts_screen.device
    n_faces = faces.shape[0]
    if n_faces >= (1 << 31):
        raise ValueError("too many faces for the packed depth/face key")

    # Per-triangle set-up runs in float64 (cheap: O(F)); the per-pair tests in float32
    # (O(pairs), what hardware rasterizers use too).
    tri = verts_screen.detach().to(torch.float64)[:, faces.long()]  # (B, F, 3, 3)
    tri = tri.reshape(b * n_faces, 3, 3)
    x, y, z = tri[..., 0], tri[..., 1], tri[..., 2]

    area = _edge(x[:, 0], y[:, 0], x[:, 1], y[:, 1], x[:, 2], y[:, 2])
    # Pixel j has centre j + 0.5, so the columns with centres inside [xmin, xmax] are
    # ceil(xmin - 0.5) .. floor(xmax - 0.5).
    x0 = torch.ceil(x.amin(1) - 0.5).clamp(min=0)
    x1 = torch.floor(x.amax(1) - 0.5).clamp(max=w - 1)
    y0 = torch.ceil(y.amin(1) - 0.5).clamp(min=0)
    y1 = torch.floor(y.amax(1) - 0.5).clamp(max=h - 1)
    keep = (x1 >= x0) & (y1 >= y0) & (area != 0) & torch.isfinite(tri).all(2).all(1)
    if cull_backfaces:
        # Front faces (CCW in the y-up world) have negative area on the y-down screen.
        keep &= area < 0

    tri_ids = keep.nonzero().squeeze(1)
    keys = torch.full((b * h * w,), _INT64_MAX, dtype=torch.int64, device=device)
    if tri_ids.numel() > 0:
        ox, oy = x0[tri_ids], y0[tri_ids]
        nx = (x1[tri_ids] - ox + 1).long()
        counts = nx * (y1[tri_ids] - oy + 1).long()
        coef = _triangle_planes(tri[tri_ids], area[tri_ids], ox, oy)
        origin = torch.stack([oy.long(), ox.long()], 1)
        ends_cpu = torch.cumsum(counts, 0).cpu()
        start, done = 0, 0
        while start < tri_ids.numel():
            # Largest run of triangles whose pairs fit in the chunk (at least one triangle).
            stop = int(torch.searchsorted(ends_cpu, done + max_candidates, right=True))
            stop = max(stop, start + 1)
            end = int(ends_cpu[stop - 1])
            _rasterize_chunk(
                keys, tri_ids[start:stop], origin[start:stop], nx[start:stop],
                counts[start:stop], end - done, coef[start:stop], n_faces, h, w,
            )
            done, start = end, stop

    hit = keys != _INT64_MAX
    pix_to_face = torch.where(hit, keys & _FACE_MASK, torch.full_like(keys, -1))
    return pix_to_face.reshape(b, h, w)


def _triangle_planes(tri, area, ox, oy):
    """Per-triangle linear functions of the pixel offset (dx, dy) from its bbox corner.

    Args: tri (T, 3, 3) float64 screen corners; area (T,) twice the signed area; ox, oy (T,)
    first bbox column / row.

    Returns (T, 12) float32: for each edge i (opposite corner i) ``A_i, B_i, C_i`` with
    ``w_i = A_i dx + B_i dy + C_i`` the edge function at the centre of pixel
    (oy + dy, ox + dx), sign-flipped so the inside is ``w_i >= 0`` for either winding; then
    ``A, B, C`` of the depth plane. Expanding around the bbox corner rather than the image
    origin keeps the constants small, so float32 loses no more than the direct formula.
    """
    x, y, z = tri[..., 0], tri[..., 1], tri[..., 2]
    cx = (ox.double() + 0.5)[:, None] - x  # pixel-centre origin relative to each corner
    cy = (oy.double() + 0.5)[:, None] - y
    a_idx, b_idx = [1, 2, 0], [2, 0, 1]
    ex = x[:, b_idx] - x[:, a_idx]  # edge vectors a -> b, (T, 3)
    ey = y[:, b_idx] - y[:, a_idx]
    sgn = torch.sign(area)[:, None]
    ea, eb = -ey * sgn, ex * sgn
    ec = (ex * cy[:, a_idx] - ey * cx[:, a_idx]) * sgn
    absarea = area.abs()[:, None]
    depth = [((e * z).sum(1) / absarea[:, 0]) for e in (ea, eb, ec)]
    edges = torch.stack([ea, eb, ec], 2).reshape(-1, 9)
    return torch.cat([edges, torch.stack(depth, 1)], 1).to(torch.float32)


def _rasterize_chunk(keys, tri_ids, origin, nx, counts, total, coef, n_faces, h, w):
    """Test one chunk of (triangle, pixel) pairs and fold them into ``keys`` (B*H*W,)."""
    device = keys.device
    local = torch.repeat_interleave(torch.arange(tri_ids.numel(), device=device), counts,
                                    output_size=total)
    # index_select rather than tensor[idx]: several times faster for these big 1-D gathers.
    first = torch.cumsum(counts, 0) - counts
    k = torch.arange(total, device=device) - first.index_select(0, local)
    nxl = nx.index_select(0, local)
    dy = torch.div(k, nxl, rounding_mode="floor")
    dx = k - dy * nxl
    fx, fy = dx.to(torch.float32), dy.to(torch.float32)

    c = coef.index_select(0, local)  # one gather of everything per pair
    inside = c[:, 0] * fx + c[:, 1] * fy + c[:, 2] >= 0
    inside &= c[:, 3] * fx + c[:, 4] * fy + c[:, 5] >= 0
    inside &= c[:, 6] * fx + c[:, 7] * fy + c[:, 8] >= 0

    sel = inside.nonzero().squeeze(1)
    c, fx, fy = c.index_select(0, sel), fx.index_select(0, sel), fy.index_select(0, sel)
    li = local.index_select(0, sel)
    depth = c[:, 9] * fx + c[:, 10] * fy + c[:, 11]
    t = tri_ids.index_select(0, li)
    batch = torch.div(t, n_faces, rounding_mode="floor")
    face = t - batch * n_faces
    o = origin.index_select(0, li)
    pix = batch * (h * w) + (o[:, 0] + dy.index_select(0, sel)) * w + o[:, 1] + dx.index_select(0, sel)
    # Multiply rather than shift: the depth part may be negative.
    key = _sortable_depth(depth) * (1 << _FACE_BITS) + face
    keys.scatter_reduce_(0, pix, key, reduce="amin", include_self=True)


def compute_barycentrics(
    verts_screen: torch.Tensor,
    faces: torch.Tensor,
    pix_to_face: torch.Tensor,
    perspective_correct: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable barycentrics and depth of the visible triangle at each pixel centre.

    Args:
        verts_screen: (B, V, 3) screen vertices; gradients flow back to them.
        faces: (F, 3) int64.
        pix_to_face: (B, H, W) int64 from :func:`rasterize_pix_to_face` (-1 = background).
        perspective_correct: weight the screen-space barycentrics by 1/depth so attributes
            interpolate linearly in 3D (use with :class:`PerspectiveCamera`; needs depth > 0).
            The depth is then ``1 / sum(b_i / d_i)``.

    Returns:
        bary: (B, H, W, 3), zero on background; depth: (B, H, W), zero on background.
    """
    b, h, w = pix_to_face.shape
    flat = pix_to_face.reshape(-1)
    pix = (flat >= 0).nonzero().squeeze(1)
    face = flat[pix]
    batch = torch.div(pix, h * w, rounding_mode="floor")
    rem = pix - batch * (h * w)
    py = torch.div(rem, w, rounding_mode="floor").to(verts_screen.dtype) + 0.5
    px = (rem % w).to(verts_screen.dtype) + 0.5

    # Gather through flat global vertex ids: index_select's backward is a cheap index_add.
    n_verts = verts_screen.shape[1]
    vid = (faces.long().index_select(0, face) + (batch * n_verts)[:, None]).reshape(-1)
    tri = verts_screen.reshape(-1, 3).index_select(0, vid).reshape(-1, 3, 3)  # (N, 3, 3)
    x, y, z = tri[..., 0], tri[..., 1], tri[..., 2]
    area = _edge(x[:, 0], y[:, 0], x[:, 1], y[:, 1], x[:, 2], y[:, 2])
    bary = torch.stack(
        [
            _edge(x[:, 1], y[:, 1], x[:, 2], y[:, 2], px, py),
            _edge(x[:, 2], y[:, 2], x[:, 0], y[:, 0], px, py),
            _edge(x[:, 0], y[:, 0], x[:, 1], y[:, 1], px, py),
        ],
        dim=-1,
    ) / area[:, None]
    if perspective_correct:
        weighted = bary / z
        inv_depth = weighted.sum(-1, keepdim=True)
        bary = weighted / inv_depth
        depth = 1.0 / inv_depth.squeeze(-1)
    else:
        depth = (bary * z).sum(-1)

    bary_out = bary.new_zeros(b * h * w, 3).index_copy(0, pix, bary)
    depth_out = depth.new_zeros(b * h * w).index_copy(0, pix, depth)
    return bary_out.reshape(b, h, w, 3), depth_out.reshape(b, h, w)


def rasterize(
    verts_screen: torch.Tensor,
    faces: torch.Tensor,
    image_size,
    cull_backfaces: bool = False,
    perspective_correct: bool = False,
    max_candidates: int = 1 << 22,
) -> Fragments:
    """Visibility pass plus differentiable barycentrics; see the two functions it chains.

    Args:
        verts_screen: (B, V, 3) screen vertices; faces: (F, 3) int64; image_size: int or (H, W).

    Returns:
        :class:`Fragments` with (B, H, W) pix_to_face, (B, H, W, 3) bary_coords, (B, H, W) zbuf.
    """
    pix_to_face = rasterize_pix_to_face(
        verts_screen, faces, image_size, cull_backfaces, max_candidates
    )
    bary, depth = compute_barycentrics(verts_screen, faces, pix_to_face, perspective_correct)
    return Fragments(pix_to_face, bary, depth)
