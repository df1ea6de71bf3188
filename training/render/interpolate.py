"""Barycentric interpolation of per-vertex / per-face-corner attributes onto pixels."""

from __future__ import annotations

import torch


def _covered(pix_to_face: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat indices of covered pixels, their batch index and their face id."""
    b, h, w = pix_to_face.shape
    flat = pix_to_face.reshape(-1)
    pix = (flat >= 0).nonzero().squeeze(1)
    batch = torch.div(pix, h * w, rounding_mode="floor")
    return pix, batch, flat[pix]


def _scatter_pixels(pix_to_face: torch.Tensor, pix: torch.Tensor, values: torch.Tensor):
    """Place (N, C) values at flat pixel ids ``pix`` of a zero (B, H, W, C) image."""
    b, h, w = pix_to_face.shape
    out = values.new_zeros(b * h * w, values.shape[-1]).index_copy(0, pix, values)
    return out.reshape(b, h, w, values.shape[-1])


def interpolate_face_attributes(
    pix_to_face: torch.Tensor, bary: torch.Tensor, face_attrs: torch.Tensor
) -> torch.Tensor:
    """Interpolate attributes given per face corner.

    Args:
        pix_to_face: (B, H, W) int64, -1 = background.
        bary: (B, H, W, 3) barycentric coordinates.
        face_attrs: (F, 3, C) shared by the batch, or (B, F, 3, C).

    Returns:
        (B, H, W, C) ``sum_k bary[..., k] * face_attrs[face, k]``; zero on background.
        Differentiable w.r.t. ``bary`` and ``face_attrs``.
    """
    pix, batch, face = _covered(pix_to_face)
    n_faces, c = face_attrs.shape[-3], face_attrs.shape[-1]
    if face_attrs.dim() == 4:
        face = face + batch * n_faces
    corner = face_attrs.reshape(-1, 3, c).index_select(0, face)  # (N, 3, C)
    b_cov = bary.reshape(-1, 3).index_select(0, pix)
    values = (b_cov.unsqueeze(-1) * corner).sum(-2)
    return _scatter_pixels(pix_to_face, pix, values)


def interpolate_vertex_attributes(
    pix_to_face: torch.Tensor, bary: torch.Tensor, faces: torch.Tensor, attrs: torch.Tensor
) -> torch.Tensor:
    """Interpolate per-vertex attributes.

    Args:
        pix_to_face: (B, H, W) int64, -1 = background.
        bary: (B, H, W, 3).
        faces: (F, 3) int64 indices into the vertex axis of ``attrs``.
        attrs: (V, C) shared by the batch, or (B, V, C).

    Returns:
        (B, H, W, C), zero on background; differentiable w.r.t. ``bary`` and ``attrs``.
    """
    pix, batch, face = _covered(pix_to_face)
    # Gather only the covered pixels' corners rather than materialising (B, F, 3, C).
    vid = faces.long().index_select(0, face)  # (N, 3)
    if attrs.dim() == 3:
        vid = vid + (batch * attrs.shape[1])[:, None]
    c = attrs.shape[-1]
    corner = attrs.reshape(-1, c).index_select(0, vid.reshape(-1)).reshape(-1, 3, c)
    b_cov = bary.reshape(-1, 3).index_select(0, pix)
    values = (b_cov.unsqueeze(-1) * corner).sum(-2)
    return _scatter_pixels(pix_to_face, pix, values)
