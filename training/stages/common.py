"""What the three training stages share: the synthetic validation seed, moving a batch to a device,
stage 1's loss L_gs (stage 3 keeps it as an anchor) with its weights and Table III's ablations, the
68 landmarks projected from a position map and their NME, and the texture stream's inputs (stage 2
builds them from ground truth, stage 3 from the geometry stream's output)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from training import losses
from training.checkpoints import stream_weights
from training.evaluate.metrics import nme_2d
from training.export.from_store import checkpoint_from_store
from training.facemodel import UVFaceModel
from training.models import GeometryStream, NetworkConfig
from training.models.pose import pose_to_camera

VALIDATION_SEED = 999_999  # the synthetic validation batches, disjoint from the training seed
HEATMAP_SIGMA_AT_128 = 1.5  # the service's landmark heatmaps (service/engine/unwrap.py) use the same


@dataclass(frozen=True)
class GeometryLossWeights:
    parametric: float = 0.5
    asm: float = 1.0
    symmetry: float = 0.5
    laplacian: float = 1e-3
    region_weighting: bool = True  # W in L_asm; off, A_id's error is a plain masked MSE
    # With a linear basis (GeometryConfig.linear_basis): the squared error of the 53 blendshape weights
    # and of the 100 identity coefficients where a batch knows them (synthetic and profiled faces), and
    # the decoders' residual kept small (its mean square over the UV mask). Unused without one.
    expression_weights: float = 0.1
    identity_coefficients: float = 1e-3
    residual: float = 1.0


# The paper's Table III, one loss term added at a time (L_p is always on).
GEOMETRY_LOSS_ABLATIONS = {
    "asm": GeometryLossWeights(symmetry=0.0, laplacian=0.0, region_weighting=False),
    "asm+w": GeometryLossWeights(symmetry=0.0, laplacian=0.0),
    "asm+w+sym": GeometryLossWeights(laplacian=0.0),
    "full": GeometryLossWeights(),
}


class GeometryTargets:
    """The constant UV arrays the geometry losses need, as tensors."""

    def __init__(self, model: UVFaceModel, device: torch.device):
        topo = model.topology
        self.mask = torch.from_numpy(topo.uv_mask).to(device)
        self.weight = torch.from_numpy(topo.weight_mask).to(device)
        self.mirror = torch.from_numpy(topo.mirror_map).long().to(device)
        self.landmarks_uv = torch.from_numpy(topo.landmarks_uv).to(device)


def geometry_loss(net_out, batch, targets: GeometryTargets, weights: GeometryLossWeights) -> dict[str, torch.Tensor]:
    """L_gs (Eq. 8). Batches without lighting ground truth (fitted photos) supervise p_h only, and
    p_t is supervised where the synthetic faces were drawn from the albedo model."""
    has_light = getattr(batch, "p_l", None) is not None
    pred = torch.cat([net_out.p_h, net_out.p_l], 1) if has_light else net_out.p_h
    gt = torch.cat([batch.p_h, batch.p_l], 1) if has_light else batch.p_h
    parametric = losses.parametric_loss(pred, gt, net_out.p_t)
    p_t_gt = getattr(batch, "p_t", None)
    if p_t_gt is not None and p_t_gt.shape[1] == net_out.p_t.shape[1]:
        # Averaged over the K coefficients so that 80 albedo values do not drown the 33 pose and light ones.
        parametric = parametric + (net_out.p_t - p_t_gt).square().mean()
    w = targets.weight if weights.region_weighting else targets.mask
    terms = {
        "parametric": parametric,
        "asm": losses.asm_loss(net_out.a_id, batch.a_id, net_out.a_exp, batch.a_exp, w, targets.mask),
        "symmetry": losses.symmetry_loss(net_out.a_id, targets.mirror),
        "laplacian": losses.laplacian_loss(net_out.a_full, targets.mask),
    }
    if net_out.id_coeffs is not None:
        terms |= coefficient_terms(net_out, batch, targets.mask)
    terms["total"] = sum(getattr(weights, k) * v for k, v in terms.items())
    return terms


def coefficient_terms(net_out, batch, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """The linear basis's terms of L_gs: squared coefficient errors (zero for a batch without true
    coefficients, such as fitted photos, whose ICT fits are pseudo-ground truth in A only) and the
    residuals' mean square over the (S, S) UV ``mask`` (zero for a shape read from landmarks, which has none)."""
    zero = net_out.id_coeffs.new_zeros(())
    exp_gt, id_gt = getattr(batch, "exp_weights", None), getattr(batch, "id_coeffs", None)
    if net_out.id_residual is None:
        residual = zero
    else:
        inside = mask.sum() * 3 * net_out.id_residual.shape[0]
        residual = (net_out.id_residual.square().sum() + net_out.exp_residual.square().sum()) / inside
    return {
        "expression_weights": zero if exp_gt is None else (net_out.exp_weights - exp_gt).square().mean(),
        "identity_coefficients": zero if id_gt is None else (net_out.id_coeffs - id_gt).square().mean(),
        "residual": residual,
    }


def project_landmarks(a_full: torch.Tensor, p_h: torch.Tensor, landmarks_uv: torch.Tensor, image_size: int) -> torch.Tensor:
    """Sample A (B, 3, S, S) at the 68 UV landmarks and project with p_h -> (B, 68, 2) pixels."""
    s = a_full.shape[-1]
    grid = (landmarks_uv + 0.5) / s * 2 - 1  # pixel coords -> grid_sample's [-1, 1]
    points = torch.nn.functional.grid_sample(a_full, grid[None, None].expand(a_full.shape[0], 1, 68, 2),
                                             align_corners=False)[:, :, 0].permute(0, 2, 1)
    return pose_to_camera(p_h, image_size).transform_points_screen(points)[..., :2]


def landmark_nmes(net_out, landmarks: torch.Tensor, landmarks_uv: torch.Tensor, image_size: int) -> list[float]:
    """Per-face 2D NME of the geometry stream's 68 landmarks against ``landmarks`` (B, 68, 2) crop pixels."""
    pred = project_landmarks(net_out.a_full, net_out.p_h, landmarks_uv, image_size)
    return [nme_2d(p, g) for p, g in zip(pred.cpu().numpy(), landmarks.cpu().numpy())]


def to_device(batch, device):
    """Move every tensor field of a batch dataclass (synthetic or real) to ``device``; returns the batch."""
    for name, value in vars(batch).items():
        setattr(batch, name, value.to(device))
    return batch


@dataclass
class TextureInputs:
    """What ``TextureStream.forward`` takes: stage 2 builds it from ground truth (``texture.texture_inputs``),
    stage 3 from the geometry stream's output (``finetune.reconstruct``)."""

    p_t: torch.Tensor  # (B, K)
    image: torch.Tensor  # (B, 3, H, H)
    heatmaps: torch.Tensor  # (B, 68, H, H)
    uv_grid: torch.Tensor  # (B, S, S, 2)
    uv_visibility: torch.Tensor  # (B, 1, S, S)

    def as_args(self):
        return self.p_t, self.image, self.heatmaps, self.uv_grid, self.uv_visibility


def landmark_heatmaps(landmarks: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 68, 2) pixel positions -> (B, 68, size, size) Gaussians with peak 1; sigma scales with size."""
    sigma = HEATMAP_SIGMA_AT_128 * size / 128.0
    centres = torch.arange(size, dtype=landmarks.dtype, device=landmarks.device) + 0.5
    gx = torch.exp(-(centres - landmarks[..., 0, None]).square() / (2 * sigma**2))  # (B, 68, size)
    gy = torch.exp(-(centres - landmarks[..., 1, None]).square() / (2 * sigma**2))
    return gy[..., :, None] * gx[..., None, :]


def uv_grid_from_geometry(a_full: torch.Tensor, p_h: torch.Tensor, image_size: int) -> torch.Tensor:
    """(B, 3, S, S) position map and (B, 6) pose -> (B, S, S, 2) photo positions in grid_sample units."""
    b, _, s, _ = a_full.shape
    screen = pose_to_camera(p_h, image_size).transform_points_screen(a_full.permute(0, 2, 3, 1).reshape(b, s * s, 3))
    return (2.0 * screen[..., :2] / image_size - 1.0).reshape(b, s, s, 2)


# Geometry options a run may add to a network trained without them: each adds a part that starts at
# zero (GeometryConfig's comments say what each does).
GROWABLE = ("position_pooling", "linear_basis", "appearance_head", "shape_from_landmarks")


def grows(cfg: NetworkConfig, start_config: dict) -> tuple[str, ...]:
    """The ``GROWABLE`` options ``cfg`` adds to the start's network; raises if ``cfg`` differs from the
    start in anything else (or drops an option the start had)."""
    start = NetworkConfig.from_dict(start_config)
    added = tuple(name for name in GROWABLE if getattr(cfg.geometry, name) and not getattr(start.geometry, name))
    if replace(start, geometry=replace(start.geometry, **{name: True for name in added})) != cfg:
        raise ValueError(f"the start was trained with another config than {cfg.name}")
    return added


def start_checkpoint(path: Path, cfg: NetworkConfig, device: torch.device) -> dict:
    """A stage-1, 2 or 3 checkpoint file, or a model-store version folder read back from its ONNX
    graphs, whose network is ``cfg``'s or grows into it (``grows``)."""
    path = Path(path)
    if path.is_dir():
        start_from = checkpoint_from_store(path)
        for stream in ("geometry_model", "texture_model"):
            start_from[stream] = {k: v.to(device) for k, v in start_from[stream].items()}
    else:
        start_from = torch.load(path, map_location=device, weights_only=False)
    try:
        grows(cfg, start_from["config"])
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return start_from


def grown_geometry_weights(net: GeometryStream, start: dict) -> dict:
    """The state dict that starts ``net`` from checkpoint ``start`` (``start_checkpoint``): the start's
    weights, and the parts ``net`` grows keep their initial values. Growing the position pooling
    computes exactly what the start did. Growing the linear basis keeps the encoder and the PSN (pose,
    light, albedo) but starts the shape again from the mean face: the attribute decoders, which gave
    the whole maps, now give a residual on the basis, so their last layer is reset to zero. Growing the
    appearance head copies the PSN into it, so the network computes exactly what the start did. Growing
    the shape from landmarks keeps the encoder, the PSN and the appearance head; the landmark head and
    its regressor start from their initial values, and the attribute decoders, which it drops, go."""
    own = net.state_dict()
    weights = own | {k: v for k, v in stream_weights(start, "geometry").items() if k in own}
    if net.cfg.appearance_head and not NetworkConfig.from_dict(start["config"]).geometry.appearance_head:
        weights |= {name.replace("psn.", "appearance.", 1): value.clone() for name, value in weights.items()
                    if name.startswith("psn.")}
    if net.cfg.linear_basis and not NetworkConfig.from_dict(start["config"]).geometry.linear_basis:
        for decoder in ("identity_decoder", "expression_decoder"):
            for name in ("weight", "bias"):
                weights[f"{decoder}.out.{name}"] = torch.zeros_like(weights[f"{decoder}.out.{name}"])
    return weights

