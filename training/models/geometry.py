"""The geometry stream (paper Sec. III-A): photo -> A_id, A_exp and the parameters p_t, p_l, p_h."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from training.facemodel import N_EXPRESSION, N_IDENTITY, UVFaceModel

from .basis import LinearFaceBasis
from .config import POSE_DIM, SH_DIM, GeometryConfig
from .landmarks import LandmarkHead, LandmarkToFace


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def position_moments(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) feature maps -> (B, 2C): each map's mean of x * u, then of x * v, with (u, v) the
    pixel centres' coordinates in [-1, 1] (u right, v down). With the plain mean these say where a
    map's activation lies; a network ending in global average pooling cannot see that."""
    h, w = x.shape[-2:]
    u = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, dtype=x.dtype, device=x.device)
    v = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, dtype=x.dtype, device=x.device)
    return torch.cat([(x * u).mean(dim=(2, 3)), (x * v[:, None]).mean(dim=(2, 3))], dim=1)


class MultiTaskEncoder(nn.Module):
    """VGG-style encoder trained from scratch (no VGG-Face weights exist here).

    (B, 3, H, W) photo in [0, 1] -> (B, latent_dim) latent f_L (the paper's 1x1x512).
    With ``cfg.position_pooling`` the last maps' ``position_moments`` join the pooled mean through
    ``locate``, initialised to zero so that a network trained without it computes the same at first.
    """

    def __init__(self, cfg: GeometryConfig):
        super().__init__()
        layers, cin = [], 3
        for width in cfg.encoder_widths:
            for _ in range(cfg.convs_per_stage):
                layers.append(conv_bn_relu(cin, width))
                cin = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.project = nn.Linear(cin, cfg.latent_dim)
        self.locate = None
        if cfg.position_pooling:
            self.locate = nn.Linear(2 * cin, cfg.latent_dim)
            nn.init.zeros_(self.locate.weight)
            nn.init.zeros_(self.locate.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.latent_and_features(image)[0]

    def latent_and_features(self, image: torch.Tensor, taps: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, 3, H, W) -> the latent (B, latent_dim) and the last ``taps`` stages' feature maps
        (after their pooling; strides 2^(n - taps + 1) ... 2^n for n stages), coarsest last."""
        # Centring the input here keeps exported models free of preprocessing the service must copy.
        x, stage_outputs = image * 2.0 - 1.0, []
        for layer in self.features:
            x = layer(x)
            if isinstance(layer, nn.MaxPool2d):
                stage_outputs.append(x)
        latent = self.project(x.mean(dim=(2, 3)))
        if self.locate is not None:
            latent = latent + self.locate(position_moments(x))
        return torch.relu(latent), stage_outputs[len(stage_outputs) - taps:] if taps else []


class AttributeDecoder(nn.Module):
    """Pix2pix-style decoder with bilinear upsampling: (B, latent) -> (B, 3, S, S) in (-1, 1).

    With ``cfg.linear_basis`` it gives a residual on the linear model's maps, so its last layer
    starts at zero (the stream starts as the linear model)."""

    def __init__(self, cfg: GeometryConfig):
        super().__init__()
        stages, cin = [], cfg.latent_dim
        for width in cfg.decoder_widths:
            stages += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), conv_bn_relu(cin, width)]
            cin = width
        self.stages = nn.Sequential(*stages)
        self.out = nn.Conv2d(cin, 3, 3, padding=1)
        if cfg.linear_basis:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.out(self.stages(latent[:, :, None, None])))


class ParametricSubNetwork(nn.Module):
    """Two FC layers: (B, latent) -> p_t (B, K), p_l (B, 27), p_h (B, 6)."""

    def __init__(self, cfg: GeometryConfig):
        super().__init__()
        self.sizes = (cfg.albedo_dim, SH_DIM, POSE_DIM)
        self.net = nn.Sequential(nn.Linear(cfg.latent_dim, cfg.psn_hidden), nn.ReLU(inplace=True),
                                 nn.Linear(cfg.psn_hidden, sum(self.sizes)))

    def forward(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p_t, p_l, p_h = torch.split(self.net(latent), self.sizes, dim=1)
        return p_t, p_l, p_h


# Blendshape weights start near zero (most of a face's 53 are), not at the sigmoid's 0.5.
EXPRESSION_BIAS_INIT = -4.0


class CoefficientHead(nn.Module):
    """Two FC layers: (B, latent) -> identity coefficients (B, 100), unbounded (ICT's scale: about
    unit variance), and blendshape weights (B, 53) in (0, 1) through a sigmoid, as ICT's are.
    The last layer's weights start at zero: the first prediction is the mean face with weights ~0.02."""

    def __init__(self, cfg: GeometryConfig):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(cfg.latent_dim, cfg.psn_hidden), nn.ReLU(inplace=True),
                                 nn.Linear(cfg.psn_hidden, N_IDENTITY + N_EXPRESSION))
        nn.init.zeros_(self.net[-1].weight)
        with torch.no_grad():
            self.net[-1].bias.zero_()
            self.net[-1].bias[N_IDENTITY:] = EXPRESSION_BIAS_INIT

    def forward(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        id_coeffs, exp_logits = torch.split(self.net(latent), (N_IDENTITY, N_EXPRESSION), dim=1)
        return id_coeffs, torch.sigmoid(exp_logits)


@dataclass
class GeometryOutput:
    """a_id, a_exp: (B, 3, S, S) canonical positions (A = a_id + a_exp); p_t (B, K) albedo
    coefficients; p_l (B, 27) SH lighting (9 x RGB, coefficient-major); p_h (B, 6) pose (config.POSE_DIM).
    With a linear basis also id_coeffs (B, 100), exp_weights (B, 53) and the decoders' residuals
    id_residual, exp_residual (B, 3, S, S), zero outside the UV mask; otherwise these are None."""

    a_id: torch.Tensor
    a_exp: torch.Tensor
    p_t: torch.Tensor
    p_l: torch.Tensor
    p_h: torch.Tensor
    id_coeffs: torch.Tensor | None = None
    exp_weights: torch.Tensor | None = None
    id_residual: torch.Tensor | None = None
    exp_residual: torch.Tensor | None = None
    landmarks: torch.Tensor | None = None  # (B, 68, 2) input pixels, with shape_from_landmarks

    @property
    def a_full(self) -> torch.Tensor:
        return self.a_id + self.a_exp


class GeometryStream(nn.Module):
    """With ``cfg.linear_basis`` or ``cfg.shape_from_landmarks`` the stream needs the face model at
    S = ``cfg.uv_size`` (built from ICT-FaceKit when not given)."""

    LANDMARK_TAPS = 3  # the encoder stages the landmark head reads, the last three

    def __init__(self, cfg: GeometryConfig, face_model: UVFaceModel | None = None):
        super().__init__()
        self.cfg = cfg
        self.encoder = MultiTaskEncoder(cfg)
        self.identity_decoder = self.expression_decoder = None
        if not cfg.shape_from_landmarks:
            self.identity_decoder = AttributeDecoder(cfg)
            self.expression_decoder = AttributeDecoder(cfg)
        self.psn = ParametricSubNetwork(cfg)
        self.appearance = ParametricSubNetwork(cfg) if cfg.appearance_head else None  # its p_h is unused
        self.coefficients = self.basis = self.landmark_head = self.landmarks_to_face = None
        if cfg.linear_basis or cfg.shape_from_landmarks:
            face_model = face_model if face_model is not None else UVFaceModel.build(cfg.uv_size)
            if face_model.size != cfg.uv_size:
                raise ValueError(f"face model S = {face_model.size}, network S = {cfg.uv_size}")
            self.basis = LinearFaceBasis(face_model)
            self.register_buffer("uv_mask", torch.from_numpy(face_model.layout.mask).float(), persistent=False)
        if cfg.linear_basis:
            self.coefficients = CoefficientHead(cfg)
        if cfg.shape_from_landmarks:
            self.landmark_head = LandmarkHead(cfg.encoder_widths[-self.LANDMARK_TAPS:])
            self.landmarks_to_face = LandmarkToFace()

    def forward(self, image: torch.Tensor) -> GeometryOutput:
        """image: (B, 3, H, W) RGB in [0, 1]."""
        taps = self.LANDMARK_TAPS if self.landmark_head is not None else 0
        latent, features = self.encoder.latent_and_features(image, taps)
        if self.landmark_head is not None and self.appearance is not None:
            p_t, p_l, _ = self.appearance(latent)  # the PSN would give nothing used: p_h is the landmarks'
        else:
            p_t, p_l, p_h = self.psn(latent)
            if self.appearance is not None:
                p_t, p_l, _ = self.appearance(latent)
        if self.landmark_head is not None:
            landmarks = self.landmark_head(features, image.shape[-1])
            id_coeffs, exp_weights, p_h = self.landmarks_to_face(landmarks, image.shape[-1])
            a_id, a_exp = self.basis(id_coeffs, exp_weights)
            return GeometryOutput(a_id, a_exp, p_t, p_l, p_h, id_coeffs, exp_weights, landmarks=landmarks)
        a_id, a_exp = self.identity_decoder(latent), self.expression_decoder(latent)
        if self.basis is None:
            return GeometryOutput(a_id, a_exp, p_t, p_l, p_h)
        id_coeffs, exp_weights = self.coefficients(latent)
        base_id, base_exp = self.basis(id_coeffs, exp_weights)
        id_residual, exp_residual = a_id * self.uv_mask, a_exp * self.uv_mask
        return GeometryOutput(base_id + id_residual, base_exp + exp_residual, p_t, p_l, p_h,
                              id_coeffs, exp_weights, id_residual, exp_residual)
