"""training.render: the fast rasterizer against the loop-based reference, values and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from training.render import (
    MeshRenderer,
    PerspectiveCamera,
    RenderSettings,
    TexturesUV,
    WeakPerspectiveCamera,
    compute_barycentrics,
    euler_to_rotation,
    interpolate_vertex_attributes,
    rasterize,
    rasterize_pix_to_face,
    render_mesh,
    sample_texture,
    sh_shading,
    vertex_normals,
)
from training.render import reference as ref

DT = torch.float64


# --------------------------------------------------------------------------------- fixtures


def cube():
    """Unit cube [-1, 1]^3, 12 triangles wound counter-clockwise seen from outside."""
    v = torch.tensor(
        [[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)], dtype=DT
    )
    # Vertex id = 4*(x>0) + 2*(y>0) + (z>0).
    quads = [
        (1, 5, 7, 3),  # +z
        (0, 2, 6, 4),  # -z
        (4, 6, 7, 5),  # +x
        (0, 1, 3, 2),  # -x
        (2, 3, 7, 6),  # +y
        (0, 4, 5, 1),  # -y
    ]
    f = []
    for a, b, c, d in quads:
        f += [(a, b, c), (a, c, d)]
    return v, torch.tensor(f, dtype=torch.int64)


def patch(seed=0):
    """A 4 x 3 grid (12 vertices, 12 triangles) bent along x and jittered, CCW seen from +z."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = torch.meshgrid(torch.linspace(-1, 1, 4, dtype=DT), torch.linspace(-0.8, 0.8, 3,
                            dtype=DT), indexing="xy")
    xs = xs + 0.05 * torch.randn(xs.shape, generator=g, dtype=DT)
    ys = ys + 0.05 * torch.randn(ys.shape, generator=g, dtype=DT)
    zs = 0.4 * torch.cos(xs * 1.2) + 0.1 * ys
    v = torch.stack([xs, ys, zs], -1).reshape(-1, 3)
    f = []
    for r in range(2):
        for c in range(3):
            i = r * 4 + c
            f += [(i, i + 1, i + 5), (i, i + 5, i + 4)]
    return v, torch.tensor(f, dtype=torch.int64)


def weak_cam(b=1, size=16, yaw=0.3, pitch=-0.2, roll=0.1, scale=5.3):
    yaw = torch.tensor([yaw + 0.4 * k for k in range(b)], dtype=DT)
    return WeakPerspectiveCamera(
        euler_to_rotation(yaw, torch.full((b,), pitch, dtype=DT), torch.full((b,), roll, dtype=DT)),
        torch.full((b,), scale, dtype=DT),
        torch.tensor([[0.37, -0.21]] * b, dtype=DT),
        (size, size),
    )


def assert_same_coverage(p2f, p2f_ref, bary_ref, allowed=0):
    """pix_to_face must match except (at most ``allowed``) pixels within 1e-6 of an edge."""
    diff = p2f != p2f_ref
    near_edge = bary_ref.min(-1).values.abs() < 1e-6
    assert int((diff & ~near_edge).sum()) == 0, "coverage differs away from edges"
    assert int(diff.sum()) <= allowed


# ------------------------------------------------------------------------------------ cameras


def test_weak_perspective_projects_known_point():
    cam = WeakPerspectiveCamera(torch.eye(3)[None], torch.tensor([10.0]),
                                torch.tensor([[1.0, -2.0]]), (32, 48))
    s = cam.transform_points_screen(torch.tensor([[[1.0, 2.0, 3.0]]]))
    # x = W/2 + 10*1 + 1; y = H/2 - 10*2 - 2 (y down); depth = -z (closer is smaller).
    torch.testing.assert_close(s, torch.tensor([[[35.0, -6.0, -3.0]]]))


def test_perspective_projects_known_point():
    cam = PerspectiveCamera(torch.eye(3)[None], torch.tensor([[0.0, 0.0, -10.0]]),
                            torch.tensor([100.0]), None, (60, 80))
    s = cam.transform_points_screen(torch.tensor([[[1.0, 2.0, 0.0], [0.0, 0.0, 5.0]]]))
    torch.testing.assert_close(s, torch.tensor([[[50.0, 10.0, 10.0], [40.0, 30.0, 5.0]]]))
    cam.principal_point = torch.tensor([[10.0, 20.0]])
    cam.focal_length = torch.tensor([[100.0, 50.0]])
    s = cam.transform_points_screen(torch.tensor([[[1.0, 2.0, 0.0]]]))
    torch.testing.assert_close(s, torch.tensor([[[20.0, 10.0, 10.0]]]))


def test_euler_rotation_convention():
    z = torch.tensor([[0.0], [0.0], [1.0]])
    x = torch.tensor([[1.0], [0.0], [0.0]])
    q, zero = torch.tensor([math.pi / 2]), torch.zeros(1)
    torch.testing.assert_close(euler_to_rotation(q, zero, zero)[0] @ z, x.new_tensor([[1.0], [0.0], [0.0]]))
    torch.testing.assert_close(euler_to_rotation(zero, q, zero)[0] @ z, x.new_tensor([[0.0], [-1.0], [0.0]]))
    torch.testing.assert_close(euler_to_rotation(zero, zero, q)[0] @ x, x.new_tensor([[0.0], [1.0], [0.0]]))
    r = euler_to_rotation(torch.tensor([0.3, -1.0]), torch.tensor([0.2, 0.5]), torch.tensor([-0.7, 2.0]))
    torch.testing.assert_close(r @ r.transpose(1, 2), torch.eye(3).expand(2, 3, 3))


def test_world_up_is_screen_top():
    # A triangle in the upper half of the world (y > 0) lands in the top rows of the image.
    v, f = torch.tensor([[[-1.0, 0.2, 0], [1.0, 0.2, 0], [0.0, 1.0, 0]]]), torch.tensor([[0, 1, 2]])
    cam = WeakPerspectiveCamera(torch.eye(3)[None], torch.tensor([7.0]), torch.zeros(1, 2), (16, 16))
    p2f = rasterize_pix_to_face(cam.transform_points_screen(v), f, (16, 16))
    rows = p2f[0].ge(0).any(1).nonzero().squeeze(1)
    assert rows.numel() > 0 and rows.max() < 8


# ------------------------------------------------------------------------------ rasterization


def test_single_triangle_matches_reference_both_windings():
    v = torch.tensor([[[2.3, 1.7, 0.5], [13.1, 4.2, 0.2], [5.6, 12.9, 0.8]]], dtype=DT)
    for f in (torch.tensor([[0, 1, 2]]), torch.tensor([[0, 2, 1]])):
        frag = rasterize(v, f, (16, 16))
        p2f_r, bary_r, depth_r = ref.rasterize_reference(v, f, (16, 16))
        assert 40 < int((p2f_r >= 0).sum()) < 80
        assert_same_coverage(frag.pix_to_face, p2f_r, bary_r)
        torch.testing.assert_close(frag.bary_coords, bary_r)
        torch.testing.assert_close(frag.zbuf, depth_r)


def test_cull_backfaces():
    v = torch.tensor([[[2.3, 1.7, 0.5], [13.1, 4.2, 0.2], [5.6, 12.9, 0.8]]])
    # On a y-down screen, (0, 1, 2) here runs clockwise as seen -> its world normal faces away.
    back, front = torch.tensor([[0, 1, 2]]), torch.tensor([[0, 2, 1]])
    assert (rasterize_pix_to_face(v, back, 16, cull_backfaces=True) < 0).all()
    assert (rasterize_pix_to_face(v, front, 16, cull_backfaces=True) >= 0).any()
    p2f_r, _, _ = ref.rasterize_reference(v.double(), front, (16, 16), cull_backfaces=True)
    assert torch.equal(rasterize_pix_to_face(v, front, 16, cull_backfaces=True), p2f_r)


def test_cube_zbuffer_picks_front_faces():
    v, f = cube()
    cam = weak_cam()
    screen = cam.transform_points_screen(v[None])
    frag = rasterize(screen, f, (16, 16))
    p2f_r, bary_r, depth_r = ref.rasterize_reference(screen, f, (16, 16))
    assert_same_coverage(frag.pix_to_face, p2f_r, bary_r)
    torch.testing.assert_close(frag.bary_coords, bary_r)
    torch.testing.assert_close(frag.zbuf, depth_r)
    # Every visible face must face the camera (view-frame normal z > 0).
    fn = torch.linalg.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    fn_view = fn @ cam.rotation[0].T
    visible = frag.pix_to_face[frag.pix_to_face >= 0].unique()
    assert (fn_view[visible, 2] > 0).all()
    assert visible.numel() >= 4
    # Culling back faces changes nothing for a closed convex mesh.
    assert torch.equal(rasterize_pix_to_face(screen, f, 16, cull_backfaces=True), frag.pix_to_face)


def test_chunking_and_out_of_image_triangles():
    v, f = patch()
    cam = weak_cam(size=16, scale=11.0)  # the patch overflows the image
    screen = cam.transform_points_screen(v[None])
    full = rasterize_pix_to_face(screen, f, (16, 20))
    tiny = rasterize_pix_to_face(screen, f, (16, 20), max_candidates=5)
    assert torch.equal(full, tiny)
    p2f_r, bary_r, _ = ref.rasterize_reference(screen, f, (16, 20))
    assert_same_coverage(full, p2f_r, bary_r)


# ----------------------------------------------------------- full pipeline: values and gradients


def _pipeline_inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    v, f = patch()
    verts = v[None].clone().requires_grad_(True)
    colors = torch.rand(1, 12, 3, generator=g, dtype=DT).requires_grad_(True)
    sh = (0.3 * torch.randn(1, 9, 3, generator=g, dtype=DT)).requires_grad_(True)
    with torch.no_grad():
        sh[:, 0] += 0.8
    tex = torch.rand(1, 3, 5, 7, generator=g, dtype=DT).requires_grad_(True)
    uvs = torch.rand(12, 2, generator=g, dtype=DT) * 0.8 + 0.1
    return verts, f, colors, sh, tex, uvs


def _grads(out, weights, tensors):
    return torch.autograd.grad((out * weights).sum(), tensors)


@pytest.mark.parametrize("camera_kind", ["weak", "perspective"])
@pytest.mark.parametrize("albedo", ["vertex", "texture"])
def test_render_matches_reference_values_and_gradients(camera_kind, albedo):
    verts, f, colors, sh, tex, uvs = _pipeline_inputs()
    size = (14, 16)
    if camera_kind == "weak":
        cam = weak_cam(size=16)
        cam.image_size = size
    else:
        r = euler_to_rotation(torch.tensor([0.25], dtype=DT), torch.tensor([0.1], dtype=DT),
                              torch.tensor([0.05], dtype=DT))
        cam = PerspectiveCamera(r, torch.tensor([[0.1, 0.05, -4.0]], dtype=DT),
                                torch.tensor([20.0], dtype=DT), None, size)
    settings = RenderSettings(image_size=size, background=0.25)
    kw = dict(vertex_colors=colors) if albedo == "vertex" else {}
    if albedo == "texture":
        out = render_mesh(verts, f, cam, settings, texture=TexturesUV(tex, uvs), sh_coeffs=sh)
    else:
        out = render_mesh(verts, f, cam, settings, sh_coeffs=sh, **kw)
    img_r, p2f_r, bary_r, depth_r = ref.render_reference(
        verts, f, cam, size, texture=tex if albedo == "texture" else None, verts_uvs=uvs,
        sh_coeffs=sh, background=0.25, perspective_correct=True, **kw)

    assert 60 < int(out.mask.sum()) < 200  # the patch covers part of the image
    assert torch.equal(out.pix_to_face, p2f_r)
    torch.testing.assert_close(out.bary, bary_r)
    torch.testing.assert_close(out.depth, depth_r)
    torch.testing.assert_close(out.image, img_r)

    wts = torch.randn(out.image.shape, generator=torch.Generator().manual_seed(3), dtype=DT)
    wrt = [verts, sh, colors if albedo == "vertex" else tex]
    g_fast = _grads(out.image, wts, wrt)
    g_ref = _grads(img_r, wts, wrt)
    for name, a, b in zip(["verts", "sh", "albedo"], g_fast, g_ref):
        assert a.abs().sum() > 0, name
        torch.testing.assert_close(a, b, msg=lambda m: f"{name}: {m}")


def test_cube_render_with_face_corner_uvs_matches_reference():
    v, f = cube()
    g = torch.Generator().manual_seed(5)
    verts = v[None].clone().requires_grad_(True)
    tex = torch.rand(1, 3, 6, 6, generator=g, dtype=DT).requires_grad_(True)
    # Per-face-corner UVs: every triangle gets its own three UV ids (seams everywhere).
    verts_uvs = (torch.rand(36, 2, generator=g, dtype=DT) * 0.9 + 0.05).requires_grad_(True)
    faces_uvs = torch.arange(36).reshape(12, 3)
    sh = torch.zeros(1, 9, 3, dtype=DT)
    sh[:, 0] = 0.6
    sh[:, 2] = 0.3  # light from the camera side
    sh.requires_grad_(True)
    cam = weak_cam()
    out = MeshRenderer(RenderSettings(image_size=16))(
        verts, f, cam, texture=TexturesUV(tex, verts_uvs, faces_uvs), sh_coeffs=sh)
    img_r, p2f_r, _, _ = ref.render_reference(
        verts, f, cam, (16, 16), texture=tex, verts_uvs=verts_uvs, faces_uvs=faces_uvs,
        sh_coeffs=sh)
    assert torch.equal(out.pix_to_face, p2f_r)
    torch.testing.assert_close(out.image, img_r)
    wts = torch.randn(out.image.shape, generator=g, dtype=DT)
    wrt = [verts, tex, verts_uvs, sh]
    for a, b in zip(_grads(out.image, wts, wrt), _grads(img_r, wts, wrt)):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b)


def test_batch_equals_per_item():
    v, f = cube()
    cam = weak_cam(b=2)
    verts = torch.stack([v, v * 0.8 + 0.1])
    sh = torch.rand(2, 9, 3, generator=torch.Generator().manual_seed(0), dtype=DT)
    colors = torch.rand(2, 8, 3, generator=torch.Generator().manual_seed(1), dtype=DT)
    renderer = MeshRenderer(RenderSettings(image_size=16))
    batched = renderer(verts, f, cam, vertex_colors=colors, sh_coeffs=sh)
    assert not torch.equal(batched.pix_to_face[0], batched.pix_to_face[1])  # poses differ
    for i in range(2):
        cam_i = WeakPerspectiveCamera(cam.rotation[i:i + 1], cam.scale[i:i + 1],
                                      cam.translation[i:i + 1], cam.image_size)
        single = renderer(verts[i:i + 1], f, cam_i, vertex_colors=colors[i:i + 1],
                          sh_coeffs=sh[i:i + 1])
        assert torch.equal(batched.pix_to_face[i], single.pix_to_face[0])
        torch.testing.assert_close(batched.image[i], single.image[0])
        torch.testing.assert_close(batched.depth[i], single.depth[0])


# ----------------------------------------------------------------------- pieces: conventions


def test_uv_v_points_up():
    # Top texel row = 1, bottom row = 0: v near 1 must read the top row.
    tex = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    uv = torch.tensor([[[[0.5, 0.75], [0.5, 0.25], [0.25, 0.9]]]])
    out = sample_texture(tex, uv)
    torch.testing.assert_close(out[..., 0], torch.tensor([[[1.0, 0.0, 1.0]]]))
    torch.testing.assert_close(out, ref.sample_texture_reference(tex, uv))
    # Between texel centres it blends bilinearly, outside them it clamps.
    uv2 = torch.tensor([[[[0.5, 0.5], [0.1, 0.6], [0.9, 0.01]]]])
    torch.testing.assert_close(sample_texture(tex, uv2), ref.sample_texture_reference(tex, uv2))
    torch.testing.assert_close(sample_texture(tex, uv2)[0, 0, :, 0], torch.tensor([0.5, 0.7, 0.0]))


def test_sh_constant_term_and_reference():
    n = torch.nn.functional.normalize(torch.randn(5, 3, dtype=DT), dim=-1)
    c = torch.randn(1, 9, 2, dtype=DT)
    fast = sh_shading(n[None], c)[0]
    for i in range(5):
        torch.testing.assert_close(fast[i], ref.sh_shading_reference(n[i], c[0]))
    # Uniform unit radiance integrates to irradiance pi; (pi * 1/sqrt(4pi)) * sqrt(4pi) = pi.
    const = torch.zeros(1, 9, 1, dtype=DT)
    const[0, 0, 0] = math.sqrt(4 * math.pi) / math.pi
    torch.testing.assert_close(sh_shading(n[None], const), torch.ones(1, 5, 1, dtype=DT))


def test_vertex_normals_match_reference_and_point_out():
    v, f = cube()
    v = v + 0.05 * torch.randn(v.shape, generator=torch.Generator().manual_seed(2), dtype=DT)
    n = vertex_normals(v[None], f)
    torch.testing.assert_close(n, ref.vertex_normals_reference(v[None], f))
    assert ((n[0] * v).sum(-1) > 0).all()  # outward on a (roughly) centred cube


# ---------------------------------------------------------------------------------- gradcheck


def test_gradcheck_barycentrics_and_interpolation():
    v, f = patch()
    cam = weak_cam(size=12, scale=4.2)
    screen = cam.transform_points_screen(v[None]).detach()
    p2f = rasterize_pix_to_face(screen, f, (12, 12))
    attrs = torch.rand(1, 12, 2, dtype=DT)

    def fn(s, a):
        bary, depth = compute_barycentrics(s, f, p2f)
        return interpolate_vertex_attributes(p2f, bary, f, a), depth

    assert torch.autograd.gradcheck(fn, (screen.requires_grad_(), attrs.requires_grad_()))

    def fn_persp(s):
        s = s + torch.tensor([0.0, 0.0, 3.0], dtype=DT)  # positive depths
        return compute_barycentrics(s, f, p2f, perspective_correct=True)

    assert torch.autograd.gradcheck(fn_persp, (screen,))


def test_gradcheck_shading_normals_texture():
    v, f = patch()
    n = torch.nn.functional.normalize(torch.randn(1, 6, 3, dtype=DT), dim=-1)
    c = torch.randn(1, 9, 3, dtype=DT)
    assert torch.autograd.gradcheck(sh_shading, (n.requires_grad_(), c.requires_grad_()))
    assert torch.autograd.gradcheck(lambda x: vertex_normals(x, f), (v[None].requires_grad_(),))
    tex = torch.rand(1, 2, 4, 5, dtype=DT, requires_grad=True)
    uv = (torch.rand(1, 3, 3, 2, dtype=DT) * 0.8 + 0.1).requires_grad_(True)
    assert torch.autograd.gradcheck(sample_texture, (tex, uv))


# --------------------------------------------------------------------------------------- CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available on this machine")
def test_cuda_matches_cpu():
    v, f = cube()
    cam = weak_cam(b=2, size=32, scale=11.0)
    sh = torch.rand(2, 9, 3, dtype=DT, generator=torch.Generator().manual_seed(0))
    r = MeshRenderer(RenderSettings(image_size=32))
    verts = torch.stack([v, v * 0.9])
    cpu = r(verts.float(), f, WeakPerspectiveCamera(cam.rotation.float(), cam.scale.float(),
                                                    cam.translation.float(), cam.image_size),
            sh_coeffs=sh.float())
    dev = torch.device("cuda")
    vg = verts.float().to(dev).requires_grad_(True)
    camg = WeakPerspectiveCamera(cam.rotation.float().to(dev), cam.scale.float().to(dev),
                                 cam.translation.float().to(dev), cam.image_size)
    gpu = r(vg, f.to(dev), camg, sh_coeffs=sh.float().to(dev))
    # float32 edge tests may round differently on the GPU (FMA) for centres on an edge.
    same = gpu.pix_to_face.cpu() == cpu.pix_to_face
    assert int((~same).sum()) <= 3
    assert int(cpu.mask.sum()) > 100
    torch.testing.assert_close(gpu.image.cpu()[same], cpu.image[same], atol=1e-5, rtol=1e-4)
    gpu.image.sum().backward()
    assert vg.grad is not None and torch.isfinite(vg.grad).all()
