"""One typed config per network, with the presets the project trains.

``cpu_small`` trains on a 2-core CPU in hours; ``paper`` follows the paper (256 px, S = 256,
VGG-sized encoder); ``tiny`` exists for tests (32-px photos, S = 64, the smallest UV layout).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# Weak-perspective head pose p_h: (yaw, pitch, roll) in radians, (tx, ty) the image position of
# the canonical origin in [-1, 1] image units, and log of the scale (image half-widths per
# canonical unit). The paper writes p_h in R^3; a photo also needs where and how large the head is.
POSE_DIM = 6
SH_DIM = 27  # second-order spherical harmonics, 9 coefficients x RGB


@dataclass(frozen=True)
class GeometryConfig:
    image_size: int = 128  # input photo side
    uv_size: int = 128  # S, side of the Attribute Spatial Maps
    encoder_widths: tuple[int, ...] = (32, 64, 128, 256, 256)  # one VGG-style stage each, /2 per stage
    convs_per_stage: int = 2
    latent_dim: int = 512
    decoder_widths: tuple[int, ...] = (256, 256, 128, 128, 64, 32, 16)  # one per x2 upsampling, 1 -> S
    psn_hidden: int = 512
    albedo_dim: int = 80  # K, components of our albedo model (p_t)
    # The encoder's latent also sees where each last feature map's activation lies (position_moments):
    # global average pooling alone keeps only what a map holds, and the head's position and size in
    # the crop (p_h) must then come from zero padding's edge effects. False: as up to 0.7.0.
    position_pooling: bool = False
    # A_id and A_exp = ICT's linear model at predicted identity (100) and expression (53) coefficients
    # (training.models.basis), plus the attribute decoders' output as a residual that starts at zero.
    # False: the decoders alone give the maps, as up to 0.7.0.
    linear_basis: bool = False
    # p_t and p_l (albedo coefficients and lighting) from a second parametric sub-network, the first
    # keeping p_h: stage 3 then teaches light from skin (issue 22) without moving the pose. It grows as a
    # copy of the first, so it starts computing exactly what the network did. False: as up to 0.7.0.
    appearance_head: bool = False
    # The shape from the 68 landmarks (training.models.landmarks, issue 21): a landmark head on the
    # encoder's last three stages finds them, an MLP turns them into ICT identity coefficients,
    # blendshape weights and the pose p_h, and ICT's basis decodes A_id and A_exp. The attribute
    # decoders and the PSN's own p_h are not used (nor built: the decoders were most of the graph).
    # False: the shape from the latent, as up to 0.8.0.
    shape_from_landmarks: bool = False

    def __post_init__(self):
        if self.shape_from_landmarks and self.linear_basis:
            raise ValueError("shape_from_landmarks and linear_basis are two ways to the coefficients: choose one")
        if 2 ** len(self.decoder_widths) != self.uv_size:
            raise ValueError(f"{len(self.decoder_widths)} decoder stages give {2 ** len(self.decoder_widths)}, not S = {self.uv_size}")


@dataclass(frozen=True)
class TextureConfig:
    image_size: int = 128
    uv_size: int = 128
    albedo_dim: int = 80
    widths: tuple[int, ...] = (32, 64, 128, 128)  # U-Net encoder; the decoder mirrors it
    srsm_levels: tuple[int, ...] = (2, 3)  # U-Net levels (0 = full resolution) that get SRSM
    regions: int = 16  # n soft semantic regions of SSRPM
    plain: bool = False  # an ablation: one encoder-decoder over I_ua and the unwrapped photo, no skips, SSRPM or SRSM
    kappa_init: float = 1e-2  # initial scale of the landmark branch's regions
    landmarks: int = 68
    disc_widths: tuple[int, ...] = (32, 64, 128)  # PatchGAN


@dataclass(frozen=True)
class NetworkConfig:
    name: str
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    texture: TextureConfig = field(default_factory=TextureConfig)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "NetworkConfig":
        """The inverse of ``as_dict``; fields a checkpoint predates take their defaults."""
        def typed(kind, values):
            return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

        return cls(name=d["name"], geometry=typed(GeometryConfig, d["geometry"]), texture=typed(TextureConfig, d["texture"]))

    def matches(self, d: dict) -> bool:
        """Whether a checkpoint's config dict describes this network (older files lack newer fields)."""
        return NetworkConfig.from_dict(d) == self


def cpu_small(regions: int = 16) -> NetworkConfig:
    return NetworkConfig(
        name="cpu-small",
        geometry=GeometryConfig(),
        texture=TextureConfig(regions=regions),
    )


def paper(regions: int = 16) -> NetworkConfig:
    return NetworkConfig(
        name="paper",
        geometry=GeometryConfig(
            image_size=256, uv_size=256, encoder_widths=(64, 128, 256, 512, 512), convs_per_stage=3,
            decoder_widths=(512, 512, 512, 256, 128, 64, 32, 16), psn_hidden=1024, albedo_dim=199,
        ),
        texture=TextureConfig(image_size=256, uv_size=256, albedo_dim=199, widths=(64, 128, 256, 256, 512),
                              srsm_levels=(2, 3), regions=regions, disc_widths=(64, 128, 256)),
    )


def tiny(regions: int = 4) -> NetworkConfig:
    return NetworkConfig(
        name="tiny",
        geometry=GeometryConfig(image_size=32, uv_size=64, encoder_widths=(8, 16, 16), convs_per_stage=1,
                                latent_dim=32, decoder_widths=(16, 16, 8, 8, 8, 8), psn_hidden=32, albedo_dim=6),
        texture=TextureConfig(image_size=32, uv_size=64, albedo_dim=6, widths=(8, 16, 16), srsm_levels=(1, 2),
                              regions=regions, disc_widths=(8, 16)),
    )


PRESETS = {"cpu-small": cpu_small, "paper": paper, "tiny": tiny}
