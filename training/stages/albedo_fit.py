"""The texture stream's p_t fitted to each photo's seen skin during training, as the service fits it
(``service.engine.albedo_fit``): the same subset of vertices, the same float16 basis, the same solver,
fed from the training batch's tensors instead of the service's types."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from service.engine.albedo_basis import AlbedoBasis
from service.engine.albedo_fit import fitted_albedo_coefficients
from service.engine.relight import MIN_FACING
from training.export.onnx import albedo_fit_arrays
from training.models.pose import pose_to_camera
from training.models.texture import AlbedoModel
from training.render.shading import vertex_normals


def stored_basis(albedo: AlbedoModel, uv_mask: np.ndarray) -> AlbedoBasis:
    """The basis an export of this albedo model writes into ``topology.npz`` (``training.export``)."""
    return AlbedoBasis.from_topology(albedo_fit_arrays(albedo, uv_mask), int(uv_mask.sum()))


@torch.no_grad()
def fitted_p_t(basis: AlbedoBasis, vertices: torch.Tensor, faces: torch.Tensor, p_h: torch.Tensor, p_l: torch.Tensor,
               image: torch.Tensor, seen: torch.Tensor, prior_p_t: torch.Tensor) -> torch.Tensor:
    """(B, K) p_t fitted per face, float32 on ``prior_p_t``'s device.

    vertices: (B, V, 3) the mesh's canonical positions; faces: (F, 3); p_h: (B, 6); p_l: (B, 27) the
    light's starting point; image: (B, 3, H, H) in [0, 1]; seen: (B, V) bool, the vertices the photo
    shows (UV visibility at their pixels); prior_p_t: (B, K), kept where too little skin is seen.
    """
    size = image.shape[-1]
    camera = pose_to_camera(p_h, size)
    at = torch.from_numpy(basis.vertices).to(vertices.device)
    normals = vertex_normals(camera.to_view(vertices), faces)[:, at]  # (B, M, 3)
    screen = camera.transform_points_screen(vertices[:, at])[..., :2]
    colours = F.grid_sample(image, (2.0 * screen / size - 1.0)[:, None], mode="bilinear", padding_mode="border",
                            align_corners=False)[:, :, 0].transpose(1, 2)  # (B, M, 3)
    facing = seen[:, at] & (normals[..., 2] > MIN_FACING)
    out = []
    for i in range(len(image)):
        mask = facing[i].cpu().numpy()
        out.append(fitted_albedo_coefficients(basis, mask, colours[i].cpu().numpy()[mask].astype(np.float64),
                                              normals[i].cpu().numpy().astype(np.float64), prior_p_t[i].cpu().numpy(),
                                              p_l[i].reshape(9, 3).cpu().numpy().astype(np.float64)))
    return torch.from_numpy(np.stack(out)).to(prior_p_t.device)
