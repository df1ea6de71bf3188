"""Slow, obvious reference implementations — Python loops over triangles and pixels.

Written independently of the fast path (Cramer's rule instead of edge functions, hand-written
bilinear filtering instead of ``grid_sample``, explicit per-face accumulation of normals) so
the tests can compare the two. Only for tiny meshes and images (think 12 triangles, 16x16).
Every function keeps autograd intact, so gradients can be compared too.
"""

from __future__ import annotations

import math

import torch


def _solve_bary(x0, y0, x1, y1, x2, y2, px, py):
    """Barycentrics of (px, py) by Cramer's rule on p = v0 + b1 (v1 - v0) + b2 (v2 - v0).

    Works on Python floats and on scalar tensors alike. Returns None for degenerate triangles.
    """
    a, b = x1 - x0, x2 - x0
    c, d = y1 - y0, y2 - y0
    det = a * d - b * c
    if float(det.detach() if torch.is_tensor(det) else det) == 0.0:
        return None
    rx, ry = px - x0, py - y0
    b1 = (rx * d - b * ry) / det
    b2 = (a * ry - rx * c) / det
    return 1 - b1 - b2, b1, b2


def rasterize_reference(verts_screen, faces, image_size, cull_backfaces=False,
                        perspective_correct=False):
    """Brute force: every pixel against every triangle.

    Args:
        verts_screen: (B, V, 3) screen vertices (x right, y down, depth smaller = closer).
        faces: (F, 3); image_size: (H, W).

    Returns:
        pix_to_face (B, H, W) int64 (-1 background; nearest wins, ties to the lower face id),
        bary (B, H, W, 3) and depth (B, H, W), differentiable w.r.t. ``verts_screen``.
    """
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    faces_l = faces.tolist()
    p2f_all, bary_all, depth_all = [], [], []
    for bi in range(verts_screen.shape[0]):
        vs = verts_screen[bi].detach().double().tolist()
        p2f = [[-1] * w for _ in range(h)]
        for i in range(h):
            for j in range(w):
                px, py = j + 0.5, i + 0.5
                best = None
                for fi, (ia, ib, ic) in enumerate(faces_l):
                    (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = vs[ia], vs[ib], vs[ic]
                    if cull_backfaces:
                        # Front = counter-clockwise with y flipped back up.
                        ccw = (x1 - x0) * (-(y2 - y0)) - (-(y1 - y0)) * (x2 - x0)
                        if ccw <= 0:
                            continue
                    bc = _solve_bary(x0, y0, x1, y1, x2, y2, px, py)
                    if bc is None or min(bc) < 0:
                        continue
                    z = bc[0] * z0 + bc[1] * z1 + bc[2] * z2
                    if best is None or z < best:
                        best = z
                        p2f[i][j] = fi
        bary_rows, depth_rows = [], []
        zero3 = verts_screen.new_zeros(3)
        for i in range(h):
            for j in range(w):
                fi = p2f[i][j]
                if fi < 0:
                    bary_rows.append(zero3)
                    depth_rows.append(verts_screen.new_zeros(()))
                    continue
                v = [verts_screen[bi, k] for k in faces_l[fi]]
                bc = _solve_bary(v[0][0], v[0][1], v[1][0], v[1][1], v[2][0], v[2][1],
                                 j + 0.5, i + 0.5)
                bc = torch.stack(list(bc))
                zs = torch.stack([v[0][2], v[1][2], v[2][2]])
                if perspective_correct:
                    q = bc / zs
                    bary_rows.append(q / q.sum())
                    depth_rows.append(1 / q.sum())
                else:
                    bary_rows.append(bc)
                    depth_rows.append((bc * zs).sum())
        p2f_all.append(torch.tensor(p2f, dtype=torch.int64))
        bary_all.append(torch.stack(bary_rows).reshape(h, w, 3))
        depth_all.append(torch.stack(depth_rows).reshape(h, w))
    return torch.stack(p2f_all), torch.stack(bary_all), torch.stack(depth_all)


def interpolate_reference(pix_to_face, bary, faces, attrs):
    """Per-pixel loop; ``attrs`` (V, C) or (B, V, C) -> (B, H, W, C), zero on background."""
    b, h, w = pix_to_face.shape
    out = []
    for bi in range(b):
        a = attrs if attrs.dim() == 2 else attrs[bi]
        for i in range(h):
            for j in range(w):
                fi = int(pix_to_face[bi, i, j])
                if fi < 0:
                    out.append(a.new_zeros(a.shape[-1]))
                    continue
                acc = 0
                for k in range(3):
                    acc = acc + bary[bi, i, j, k] * a[int(faces[fi, k])]
                out.append(acc)
    return torch.stack(out).reshape(b, h, w, -1)


def sample_texture_reference(texture, uv):
    """Hand-written bilinear lookup, u right / v up, (0, 0) = bottom-left image corner.

    Args: texture (B, C, Ht, Wt); uv (B, H, W, 2). Returns (B, H, W, C).
    """
    b, _, ht, wt = texture.shape
    _, h, w, _ = uv.shape
    out = []
    for bi in range(b):
        for i in range(h):
            for j in range(w):
                # Continuous texel coordinates where texel (r, c) has its centre at (c, r).
                cx = uv[bi, i, j, 0] * wt - 0.5
                cy = (1 - uv[bi, i, j, 1]) * ht - 0.5
                cx = cx.clamp(0, wt - 1)
                cy = cy.clamp(0, ht - 1)
                c0, r0 = int(math.floor(cx.item())), int(math.floor(cy.item()))
                c1, r1 = min(c0 + 1, wt - 1), min(r0 + 1, ht - 1)
                fx, fy = cx - c0, cy - r0
                t = texture[bi]
                top = t[:, r0, c0] * (1 - fx) + t[:, r0, c1] * fx
                bottom = t[:, r1, c0] * (1 - fx) + t[:, r1, c1] * fx
                out.append(top * (1 - fy) + bottom * fy)
    return torch.stack(out).reshape(b, h, w, -1)


def vertex_normals_reference(verts, faces):
    """Loop over faces adding their area-weighted normals to their corners. (B, V, 3)."""
    out = []
    for bi in range(verts.shape[0]):
        acc = [verts.new_zeros(3) for _ in range(verts.shape[1])]
        for ia, ib, ic in faces.tolist():
            a, b, c = verts[bi, ia], verts[bi, ib], verts[bi, ic]
            e1, e2 = b - a, c - a
            n = torch.stack([
                e1[1] * e2[2] - e1[2] * e2[1],
                e1[2] * e2[0] - e1[0] * e2[2],
                e1[0] * e2[1] - e1[1] * e2[0],
            ])
            for k in (ia, ib, ic):
                acc[k] = acc[k] + n
        out.append(torch.stack([n / torch.sqrt((n * n).sum()) for n in acc]))
    return torch.stack(out)


def sh_shading_reference(normal, coeffs):
    """One normal (3,), coefficients (9, C) -> (C,) irradiance, constants spelled out."""
    x, y, z = normal[0], normal[1], normal[2]
    pi = math.pi
    a0, a1, a2 = pi, 2 * pi / math.sqrt(3), 2 * pi / math.sqrt(8)
    c0 = 1 / math.sqrt(4 * pi)
    c1 = math.sqrt(3) / math.sqrt(4 * pi)
    c2 = 3 * math.sqrt(5) / math.sqrt(12 * pi)
    basis = [
        a0 * c0 + 0 * x,
        -a1 * c1 * y,
        a1 * c1 * z,
        -a1 * c1 * x,
        a2 * c2 * x * y,
        -a2 * c2 * y * z,
        a2 * c2 * 0.5 / math.sqrt(3) * (3 * z ** 2 - 1),
        -a2 * c2 * x * z,
        a2 * c2 * 0.5 * (x ** 2 - y ** 2),
    ]
    total = 0
    for k in range(9):
        total = total + basis[k] * coeffs[k]
    return total


def render_reference(verts, faces, camera, image_size, vertex_colors=None, texture=None,
                     verts_uvs=None, faces_uvs=None, sh_coeffs=None, background=0.0,
                     cull_backfaces=False, perspective_correct=False):
    """The whole pipeline with the loops above; mirrors :func:`render_mesh`.

    ``texture`` is a (B, C, Ht, Wt) tensor here, with ``verts_uvs`` / ``faces_uvs`` beside it.
    Returns (image (B, H, W, C), pix_to_face, bary, depth).
    """
    screen = camera.transform_points_screen(verts)
    p2f, bary, depth = rasterize_reference(screen, faces, image_size, cull_backfaces,
                                           perspective_correct and camera.is_perspective)
    b, h, w = p2f.shape
    if texture is not None:
        if faces_uvs is None:
            uv = interpolate_reference(p2f, bary, faces, verts_uvs)
        else:
            # Per-corner UVs: expand to a "vertex" per face corner.
            corner_uv = verts_uvs[faces_uvs.reshape(-1)]
            corner_faces = torch.arange(faces.numel()).reshape(-1, 3)
            uv = interpolate_reference(p2f, bary, corner_faces, corner_uv)
        albedo = sample_texture_reference(texture, uv)
    elif vertex_colors is not None:
        albedo = interpolate_reference(p2f, bary, faces, vertex_colors)
    else:
        c = sh_coeffs.shape[-1] if sh_coeffs is not None else 3
        albedo = verts.new_ones(b, h, w, c)
    if sh_coeffs is not None:
        vn = vertex_normals_reference(camera.to_view(verts), faces)
        pn = interpolate_reference(p2f, bary, faces, vn)
    pixels = []
    for bi in range(b):
        for i in range(h):
            for j in range(w):
                if p2f[bi, i, j] < 0:
                    pixels.append(torch.full_like(albedo[bi, i, j], background))
                    continue
                colour = albedo[bi, i, j]
                if sh_coeffs is not None:
                    n = pn[bi, i, j]
                    n = n / torch.sqrt((n * n).sum())
                    colour = colour * sh_shading_reference(n, sh_coeffs[bi])
                pixels.append(colour)
    return torch.stack(pixels).reshape(b, h, w, -1), p2f, bary, depth
