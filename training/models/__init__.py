"""The dual-stream network: geometry stream, texture stream and discriminator."""

from .config import POSE_DIM, PRESETS, SH_DIM, GeometryConfig, NetworkConfig, TextureConfig, cpu_small, paper, tiny
from .geometry import AttributeDecoder, GeometryOutput, GeometryStream, MultiTaskEncoder, ParametricSubNetwork
from .texture import SRSM, SSRPM, AlbedoModel, PatchDiscriminator, TextureStream, region_stats

__all__ = [
    "POSE_DIM", "PRESETS", "SH_DIM", "GeometryConfig", "NetworkConfig", "TextureConfig", "cpu_small", "paper",
    "tiny", "AttributeDecoder", "GeometryOutput", "GeometryStream", "MultiTaskEncoder", "ParametricSubNetwork",
    "SRSM", "SSRPM", "AlbedoModel", "PatchDiscriminator", "TextureStream", "region_stats",
]
