"""Synthetic faces with exact ground truth (the paper's ASMD / FTD, rebuilt from ICT-FaceKit).

A sample draws an identity, an expression (``expressions.py``), a UV albedo (drawn from our PCA albedo
model when one is given, its coefficients p_t kept as ground truth, plus procedural detail the
linear model cannot express; procedural alone otherwise), SH lighting,
a weak-perspective pose (p_h, ``training.models.pose``) and a background, renders the ICT head
(face, head and neck, eyeballs) and returns the image with A_id, A_exp, the albedo map, p_l, p_h,
68 landmarks, the face mask, the visible-UV mask and the expression category.

Everything is in torch and batched; a batch is a pure function of (seed, batch index).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from training.facemodel import UVFaceModel, blend
from training.models.pose import pose_to_camera
from training.render import RenderSettings, euler_to_rotation, render_mesh

from .clutter import OCCLUDER_KINDS, SKIN_DARK, SKIN_LIGHT, draw_occluder
from .expressions import CATEGORIES, sample_expressions

RENDERED_PARTS = ("face", "head_and_neck", "eyeball_left", "eyeball_right")


@dataclass
class SynthBatch:
    """B samples. image (B, 3, H, H) in [0, 1]; a_id, a_exp (B, 3, S, S) canonical; albedo (B, 3, S, S);
    p_l (B, 27) SH as 9 x RGB flattened coefficient-major; p_h (B, 6); landmarks (B, 68, 2) pixels;
    face_mask (B, H, H) bool; uv_visible (B, S, S) bool; category (B,) int64; id_coeffs (B, 100);
    exp_weights (B, 53); p_t (B, K) albedo-model coefficients, (B, 0) without an albedo model."""

    image: torch.Tensor
    a_id: torch.Tensor
    a_exp: torch.Tensor
    albedo: torch.Tensor
    p_l: torch.Tensor
    p_h: torch.Tensor
    landmarks: torch.Tensor
    face_mask: torch.Tensor
    uv_visible: torch.Tensor
    category: torch.Tensor
    id_coeffs: torch.Tensor
    exp_weights: torch.Tensor
    p_t: torch.Tensor


@dataclass
class GivenFaces:
    """Faces to render instead of random draws (face profiling, ``profiling.py``): ICT identity (B, 100)
    and expression (B, 53) coefficients, a UV albedo (B, 3, S, S) in [0, 1], and yaw, pitch, roll
    (B, 3) in radians."""

    identity: torch.Tensor
    expression: torch.Tensor
    albedo: torch.Tensor
    rotation: torch.Tensor


@dataclass(frozen=True)
class SynthSettings:
    image_size: int = 128
    identity_std: float = 1.0
    max_yaw_degrees: float = 90.0
    max_pitch_degrees: float = 45.0
    max_roll_degrees: float = 30.0
    # Of the faces, this share near-frontal (|yaw| < 30 degrees), the rest spread evenly to the profile:
    # real photos hold few profiles; 0 gives the held-out set's balance (a third per yaw bin).
    frontal_fraction: float = 0.5
    # With an albedo model, the share of samples whose albedo it draws; the rest get the procedural
    # albedo drawn without one (their p_t zeros, so a stage that learns p_t keeps this at 1): variety
    # of skin for what learns landmarks alone.
    model_albedo_fraction: float = 1.0
    # Faces are framed as the service frames real ones: a square of ``crop_scale`` x the 68-landmark
    # box's longer side, centred on the box. The jitter stands in for detector boxes, which are
    # neither the landmark box nor centred on it.
    crop_scale: float = 1.6
    scale_jitter: tuple[float, float] = (0.85, 1.15)
    translation_std: float = 0.06
    occluder_fraction: float = 0.0  # samples with a hand, hair strands or glasses over the face (clutter.py)
    photo_background_fraction: float = 0.5  # of the samples, when photo patches are given


class SynthFaceGenerator:
    """``albedo_model``: a ``python -m training.albedo`` npz at the model's UV size (optional), of which
    the first ``albedo_components`` components are used (all by default)."""

    def __init__(self, model: UVFaceModel, settings: SynthSettings = SynthSettings(), albedo_model=None,
                 albedo_components: int | None = None, backgrounds: np.ndarray | None = None):
        """``backgrounds``: (N, H, H, 3) uint8 photo patches (``clutter.photo_patches``) for a share of the samples."""
        self.model, self.settings = model, settings
        self.backgrounds = torch.from_numpy(backgrounds).permute(0, 3, 1, 2).float() / 255.0 if backgrounds is not None and len(backgrounds) else None
        self.albedo_model = None
        if albedo_model is not None:
            with np.load(albedo_model) as d:
                k = albedo_components or len(d["std"])
                mean, basis, std = (torch.from_numpy(d[name][:k] if name != "mean" else d[name]).float()
                                    for name in ("mean", "basis", "std"))
            if mean.shape[-1] != model.size:
                raise ValueError(f"{albedo_model} is a {mean.shape[-1]}-px albedo model; the face model is {model.size} px")
            self.albedo_model = (mean, basis.reshape(len(std), -1), std, torch.from_numpy(model.layout.mask)[None])
        kit, frame = model.kit, model.frame
        ranges = [kit.parts[p] for p in RENDERED_PARTS]
        keep = np.zeros(kit.num_vertices, bool)
        for a, b in ranges:
            keep[a:b] = True
        tri_keep = keep[kit.triangles].all(1)
        self.vertex_ids = np.flatnonzero(keep)
        remap = np.full(kit.num_vertices, -1)
        remap[self.vertex_ids] = np.arange(len(self.vertex_ids))
        self.faces = torch.from_numpy(remap[kit.triangles[tri_keep]]).long()
        scale, center = np.float32(frame.scale), np.asarray(frame.center, np.float32)
        self.neutral = torch.from_numpy((kit.neutral[self.vertex_ids] - center) / scale)
        self.identity = torch.from_numpy(kit.identity[:, self.vertex_ids] / scale)
        self.expression = torch.from_numpy(kit.expression[:, self.vertex_ids] / scale)
        self.landmark_index = torch.from_numpy(remap[kit.landmarks68]).long()
        # Per-vertex UV of the face part (tile 0) to colour it from the albedo map; other parts get flat colours.
        face_a, face_b = kit.parts["face"]
        vert_uv = np.full((len(self.vertex_ids), 2), -1.0, np.float32)
        corner_v, corner_uv = kit.triangles.ravel(), kit.uv[kit.triangles_uv.ravel()]
        tile0 = (corner_uv[:, 0] <= 1) & (corner_v >= face_a) & (corner_v < face_b)
        vert_uv[remap[corner_v[tile0]]] = corner_uv[tile0]
        self.vertex_uv = torch.from_numpy(vert_uv)
        self.is_face = torch.from_numpy(vert_uv[:, 0] >= 0)
        head = remap[np.arange(*kit.parts["head_and_neck"])]
        self.is_scalp = torch.zeros(len(self.vertex_ids), dtype=torch.bool)
        self.is_scalp[head[kit.neutral[np.arange(*kit.parts["head_and_neck"]), 1] > 6.0]] = True
        self.is_eye = torch.zeros(len(self.vertex_ids), dtype=torch.bool)
        for part in ("eyeball_left", "eyeball_right"):
            self.is_eye[remap[np.arange(*kit.parts[part])]] = True
        layout = model.layout
        self.uv_mask = torch.from_numpy(layout.mask)
        self.region_labels = torch.from_numpy(model.topology.region_labels.astype(np.int64))
        # A_id / A_exp are rasterized from the full ICT arrays at the layout's pixels.
        self.pixel_vertices = torch.from_numpy(layout.pixel_vertices).long()
        self.pixel_bary = torch.from_numpy(layout.pixel_bary)
        self.flat_index = torch.from_numpy(layout.flat_index).long()
        self.full_identity = torch.from_numpy(kit.identity / scale)
        self.full_expression = torch.from_numpy(kit.expression / scale)
        self.full_neutral = torch.from_numpy((kit.neutral - center) / scale)

    def _to_uv(self, per_vertex: torch.Tensor) -> torch.Tensor:
        """(B, N_ict, 3) -> (B, 3, S, S), zero outside the mask."""
        b, s = per_vertex.shape[0], self.model.size
        corners = per_vertex[:, self.pixel_vertices]  # (B, P, 3, 3)
        values = (corners * self.pixel_bary[None, :, :, None]).sum(2)
        out = per_vertex.new_zeros(b, s * s, 3)
        out[:, self.flat_index] = values
        return out.reshape(b, s, s, 3).permute(0, 3, 1, 2)

    def batch(self, seed: int, index: int, batch_size: int, categories: np.ndarray | None = None,
              yaw_degrees: np.ndarray | None = None, faces: GivenFaces | None = None,
              lighting: torch.Tensor | None = None) -> SynthBatch:
        """Sample ``batch_size`` faces; ``categories`` (B,) and ``yaw_degrees`` (B,) fix those draws
        (for balanced test sets); ``faces`` replaces the drawn identity, expression, albedo and
        rotation (their category is -1 and p_t is (B, 0)); ``lighting`` (B, 27) replaces the drawn SH
        lighting (the draw is still made, so the same seed gives the same faces under other light)."""
        rng = np.random.default_rng([seed, index])
        g = torch.Generator().manual_seed(int(rng.integers(2**31)))
        st, b, h = self.settings, batch_size, self.settings.image_size
        if faces is None:
            ids, exp, cats = self._draw_shapes(rng, b, categories)
        else:
            ids, exp, cats = faces.identity, faces.expression, np.full(b, -1)
        verts = self.neutral + blend(self.identity, ids) + blend(self.expression, exp)
        p_h = self._sample_pose(rng, b)
        if yaw_degrees is not None:
            p_h[:, 0] = torch.from_numpy(np.deg2rad(np.asarray(yaw_degrees, np.float32)))
        if faces is not None:
            p_h[:, :3] = faces.rotation
        p_h = self._frame(rng, p_h, verts[:, self.landmark_index])
        p_l = self.sample_lighting(rng, b)
        if lighting is not None:
            p_l = lighting.to(p_l.dtype).reshape(b, -1).clone()
        albedo, p_t = self._sample_albedo(rng, g, b) if faces is None else (faces.albedo, torch.zeros(b, 0))
        colours = self._vertex_colours(rng, albedo)
        camera = pose_to_camera(p_h, h)
        out = render_mesh(verts, self.faces, camera, RenderSettings(image_size=h), vertex_colors=colours,
                          sh_coeffs=p_l.reshape(b, 9, 3))
        image = out.image.permute(0, 3, 1, 2).clamp(0, 1)
        background = self._background(rng, g, b, h)
        image = torch.where(out.mask[:, None], image, background)
        screen = camera.transform_points_screen(verts[:, self.landmark_index])
        image, occluded = self._occlude(rng, image, screen[..., :2])
        a_id = self._to_uv(self.full_neutral + blend(self.full_identity, ids))
        a_exp = self._to_uv(blend(self.full_expression, exp))
        visible = uv_visibility(a_id + a_exp, camera, out, self.uv_mask, occluded)
        return SynthBatch(
            image=image, a_id=a_id, a_exp=a_exp, albedo=albedo, p_l=p_l, p_h=p_h,
            landmarks=screen[..., :2], face_mask=out.mask & ~occluded, uv_visible=visible,
            category=torch.from_numpy(cats), id_coeffs=ids, exp_weights=exp, p_t=p_t,
        )

    def landmark_draws(self, seed: int, index: int, batch_size: int) -> tuple[torch.Tensor, ...]:
        """What ``batch(seed, index, batch_size)`` draws, without rendering it: landmarks (B, 68, 2)
        pixels, id_coeffs (B, 100), exp_weights (B, 53), p_h (B, 6), equal to the batch's. Thousands a
        second, for what learns from landmarks alone (``training.models.landmarks.LandmarkToFace``)."""
        rng = np.random.default_rng([seed, index])
        rng.integers(2**31)  # the batch's render generator's seed, drawn first there
        ids, exp, _ = self._draw_shapes(rng, batch_size, None)
        li = self.landmark_index
        points = self.neutral[li] + blend(self.identity[:, li], ids) + blend(self.expression[:, li], exp)
        p_h = self._frame(rng, self._sample_pose(rng, batch_size), points)
        screen = pose_to_camera(p_h, self.settings.image_size).transform_points_screen(points)
        return screen[..., :2], ids, exp, p_h

    def _draw_shapes(self, rng, b: int, categories: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """Identity coefficients (B, 100), blendshape weights (B, 53) and their categories (B,)."""
        ids = torch.from_numpy(rng.standard_normal((b, 100)).astype(np.float32) * self.settings.identity_std)
        exp_np, cats = sample_expressions(self.model.kit.expression_names, b, rng, categories)
        return ids, torch.from_numpy(exp_np), cats

    def _sample_pose(self, rng, b) -> torch.Tensor:
        st = self.settings
        yaw = np.where(rng.random(b) < st.frontal_fraction, rng.uniform(-30, 30, b),
                       rng.uniform(-st.max_yaw_degrees, st.max_yaw_degrees, b))
        pitch = np.clip(rng.normal(0, st.max_pitch_degrees / 3, b), -st.max_pitch_degrees, st.max_pitch_degrees)
        roll = np.clip(rng.normal(0, st.max_roll_degrees / 3, b), -st.max_roll_degrees, st.max_roll_degrees)
        pose = np.stack([np.deg2rad(yaw), np.deg2rad(pitch), np.deg2rad(roll)] + [np.zeros(b)] * 3, 1)
        return torch.from_numpy(pose.astype(np.float32))

    def _frame(self, rng, p_h: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """Fill in scale and translation of p_h (B, 6) so the landmark box sits as the service's crop puts it.

        In image units (the image spans [-1, 1]) a point lands at (s q_x + tx, -s q_y + ty) with
        q = R X; the crop is ``crop_scale`` x the box's longer side wide and centred on the box.
        """
        st, b = self.settings, p_h.shape[0]
        q = landmarks @ euler_to_rotation(p_h[:, 0], p_h[:, 1], p_h[:, 2]).transpose(1, 2)
        lo, hi = q[..., :2].amin(1), q[..., :2].amax(1)
        side = (hi - lo).amax(1)
        jitter = torch.from_numpy(rng.uniform(*st.scale_jitter, b).astype(np.float32))
        scale = 2.0 * jitter / (st.crop_scale * side)
        centre = (lo + hi) / 2
        shift = torch.from_numpy(rng.normal(0, st.translation_std, (b, 2)).astype(np.float32))
        out = p_h.clone()
        out[:, 3] = -scale * centre[:, 0] + shift[:, 0]
        out[:, 4] = scale * centre[:, 1] + shift[:, 1]
        out[:, 5] = torch.log(scale)
        return out

    @staticmethod
    def sample_lighting(rng: np.random.Generator, b: int) -> torch.Tensor:
        """SH irradiance: a tinted ambient term, a random key light direction, weak second order."""
        sh = np.zeros((b, 9, 3), np.float32)
        tint = rng.uniform(0.85, 1.15, (b, 1, 3))
        sh[:, 0] = rng.uniform(0.6, 1.0, (b, 1)) * 1.0
        direction = rng.normal(0, 1, (b, 3)) + [0, 0.5, 1.5]
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        strength = rng.uniform(0.0, 0.45, (b, 1))
        sh[:, 1:4] = (direction[:, [1, 2, 0]] * strength)[:, :, None]  # SH order y, z, x
        sh[:, 4:] = rng.normal(0, 0.05, (b, 5, 1))
        return torch.from_numpy((sh * tint).reshape(b, 27).astype(np.float32))

    def _sample_albedo(self, rng, g, b) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) albedo over the whole UV square and its p_t (B, K).

        With an albedo model the face region is the model's draw for p_t ~ N(0, I) (clipped at 3
        sigma) and the rest of the square its mean skin colour; the procedural detail below (colour
        fields, noise, lips, brows, spots) is added on top at half strength, because the model
        already holds lips and brows but none of that detail.
        """
        s = self.model.size
        if self.albedo_model is not None:
            mean, basis, std, mask = self.albedo_model
            p_t = torch.from_numpy(np.clip(rng.standard_normal((b, len(std))), -3, 3).astype(np.float32))
            face = (mean + ((p_t * std) @ basis).reshape(b, 3, s, s)).clamp(0.02, 1.0)
            skin = (face * mask).sum((2, 3), keepdim=True) / mask.sum()
            albedo = self._add_detail(rng, g, torch.where(mask > 0, face, skin), strength=0.5)
            if self.settings.model_albedo_fraction < 1.0:  # drawn only then: the default's draws stay as they were
                procedural = torch.from_numpy(rng.random(b) >= self.settings.model_albedo_fraction)
                albedo = torch.where(procedural[:, None, None, None], self._procedural_albedo(rng, g, b), albedo)
                p_t[procedural] = 0.0
            return albedo, p_t
        return self._procedural_albedo(rng, g, b), torch.zeros(b, 0)

    def _procedural_albedo(self, rng, g, b) -> torch.Tensor:
        """(B, 3, S, S): a skin tone between light and dark over the whole square, with the detail below."""
        s = self.model.size
        tone = rng.beta(2, 2, (b, 1))
        base = SKIN_LIGHT * (1 - tone) + SKIN_DARK * tone
        base = base * rng.uniform(0.92, 1.08, (b, 3))
        albedo = torch.from_numpy(base.astype(np.float32))[:, :, None, None].expand(b, 3, s, s).clone()
        return self._add_detail(rng, g, albedo, strength=1.0)

    def _add_detail(self, rng, g, albedo: torch.Tensor, strength: float) -> torch.Tensor:
        """Procedural detail on a (B, 3, S, S) base: smooth colour fields, pore noise, lips, brows, spots."""
        b, s = albedo.shape[0], self.model.size
        low = F.interpolate(torch.rand(b, 3, 6, 6, generator=g) - 0.5, size=(s, s), mode="bicubic", align_corners=False)
        albedo = albedo * (1 + 0.15 * low) + 0.03 * (torch.rand(b, 1, s, s, generator=g) - 0.5)
        lip_mix, brow_mix = 0.6 * strength, 0.7 * strength
        labels = self.region_labels
        lips = F.avg_pool2d((labels == 7).float()[None, None], 3, 1, 1)[0]  # mouth region, softened
        lip_colour = torch.from_numpy(rng.uniform([0.45, 0.15, 0.15], [0.8, 0.4, 0.4], (b, 3)).astype(np.float32))
        albedo = albedo * (1 - lip_mix * lips) + lip_mix * lips * lip_colour[:, :, None, None]
        brows = ((labels == 2) | (labels == 3)).float()[None, None]
        hair = torch.from_numpy(rng.uniform(0.05, 0.35, (b, 1)).astype(np.float32)).expand(b, 3)[:, :, None, None]
        albedo = albedo * (1 - brow_mix * brows) + brow_mix * brows * hair
        spots = (torch.rand(b, 1, s, s, generator=g) < torch.from_numpy(rng.uniform(0, 0.004, (b, 1, 1, 1)).astype(np.float32))).float()
        albedo = albedo * (1 - 0.3 * F.max_pool2d(spots, 3, 1, 1))
        return albedo.clamp(0.02, 1.0)

    def _vertex_colours(self, rng, albedo: torch.Tensor) -> torch.Tensor:
        b = albedo.shape[0]
        grid = torch.stack([self.vertex_uv[:, 0] * 2 - 1, 1 - self.vertex_uv[:, 1] * 2], -1)[None, None].expand(b, 1, -1, 2)
        colours = F.grid_sample(albedo, grid, align_corners=False)[:, :, 0].permute(0, 2, 1)  # (B, N, 3)
        skin = albedo.mean(dim=(2, 3))[:, None]
        hair = torch.from_numpy(rng.uniform(0.03, 0.4, (b, 1, 1)).astype(np.float32)).expand(b, 1, 3)
        colours = torch.where(self.is_face[None, :, None], colours, skin)
        colours = torch.where(self.is_scalp[None, :, None], hair, colours)
        return torch.where(self.is_eye[None, :, None], torch.full_like(colours, 0.8), colours)

    def _background(self, rng, g, b, h) -> torch.Tensor:
        """(B, 3, H, H): smooth procedural colour fields, or photo patches for a share of the samples."""
        coarse = torch.rand(b, 3, 5, 5, generator=g)
        smooth = F.interpolate(coarse, size=(h, h), mode="bicubic", align_corners=False)
        out = (smooth + 0.05 * torch.randn(b, 3, h, h, generator=g)).clamp(0, 1)
        if self.backgrounds is not None:
            use = torch.from_numpy(rng.random(b) < self.settings.photo_background_fraction)
            picked = self.backgrounds[torch.from_numpy(rng.integers(len(self.backgrounds), size=b))]
            out = torch.where(use[:, None, None, None], picked, out)
        return out

    def _occlude(self, rng, image: torch.Tensor, landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Occluders over a share of the images: the new images and the (B, H, H) bool occluded pixels."""
        b, h = image.shape[0], image.shape[-1]
        occluded = torch.zeros(b, h, h, dtype=torch.bool)
        if self.settings.occluder_fraction <= 0:  # draws nothing from rng: batches stay as they were
            return image, occluded
        image = image.clone()
        for i in np.flatnonzero(rng.random(b) < self.settings.occluder_fraction):
            colour, cover = draw_occluder(str(rng.choice(OCCLUDER_KINDS)), h, landmarks[i].numpy(), rng)
            cover_t = torch.from_numpy(cover)
            image[i] = image[i] * (1 - cover_t) + torch.from_numpy(colour).permute(2, 0, 1) * cover_t
            occluded[i] = cover_t > 0.5
        return image.clamp(0, 1), occluded


def uv_visibility(a_full: torch.Tensor, camera, out, uv_mask: torch.Tensor, occluded: torch.Tensor | None = None) -> torch.Tensor:
    """(B, S, S) bool: UV pixels of ``uv_mask`` whose surface point is the front-most one at its image
    pixel and, given ``occluded`` (B, H, H) bool, not hidden by an occluder there.

    a_full: (B, 3, S, S) positions; camera and ``out`` (a ``RenderOutput``) are those of the render.
    """
    b, s = a_full.shape[0], a_full.shape[-1]
    points = a_full.permute(0, 2, 3, 1).reshape(b, s * s, 3)
    screen = camera.transform_points_screen(points)
    h = out.depth.shape[-1]
    col = screen[..., 0].floor().long().clamp(0, h - 1)
    row = screen[..., 1].floor().long().clamp(0, h - 1)
    idx = torch.arange(b, device=a_full.device)[:, None]
    depth = out.depth[idx, row, col]
    covered = out.mask[idx, row, col]
    tol = 0.05  # canonical units (~9 mm): slack for depth interpolated across a pixel on slopes
    visible = covered & (screen[..., 2] <= depth + tol) & uv_mask.reshape(1, -1)
    if occluded is not None:
        visible &= ~occluded.to(visible.device)[idx, row, col]
    return visible.reshape(b, s, s)


__all__ = ["CATEGORIES", "SynthBatch", "SynthFaceGenerator", "SynthSettings", "uv_visibility"]
