"""Face profiling (DESIGN.md 4b): fitted real photos turned to large yaw, rendered with their own skin.

The fitted photos stop near 50° of yaw, and the synthetic faces, which reach 90°, wear a PCA albedo;
real profiles are where the model is worst. A profiled face takes a fitted photo's ICT identity and
expression and its photo unwrapped into UV, turns it to ``yaw_degrees`` *towards the side the photo
shows* (so the texels the photo never saw stay mostly hidden; the rest are the face's mean visible
colour), and renders it through the synthetic generator (its lighting, background and framing).
The ground truth is exact for the rendered face: A_id, A_exp, p_h and the 68 landmarks.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch

from training.fitting.crops import RealBatch, load_split

from .clutter import photo_patches
from .generator import GivenFaces, SynthBatch, SynthFaceGenerator, SynthSettings

BACKGROUND_PATCHES = 1000  # photo patches behind the profiled faces


def profile_generator(model, photos: str | Path, image_size: int, seed: int,
                      patches: int = BACKGROUND_PATCHES) -> SynthFaceGenerator:
    """The generator profiled faces render through (``ProfiledFaces``' ``generator``): ``model`` (a
    ``UVFaceModel``) at ``image_size`` px on ``patches`` background patches cut from ``photos``."""
    backgrounds = photo_patches(photos, patches, image_size, seed)
    return SynthFaceGenerator(model, SynthSettings(image_size=image_size), backgrounds=backgrounds)


def fill_unseen(texture: np.ndarray, visible: np.ndarray, erode: int = 2) -> np.ndarray:
    """(S, S, 3) uint8 unwrapped photo and its (S, S) visibility -> the texture with every texel not
    seen (after eroding the visible area by ``erode`` px, whose rim holds background) set to the mean
    seen colour."""
    seen = cv2.erode(visible.astype(np.uint8), np.ones((2 * erode + 1,) * 2, np.uint8)) > 0
    if not seen.any():
        seen = visible
    mean = texture[seen].mean(0) if seen.any() else np.full(3, 128.0)
    return np.where(seen[..., None], texture, mean.astype(np.uint8))


class ProfiledFaces:
    """The fitted photos of one split as a source of profiled faces (batches as ``RealBatch``)."""

    def __init__(self, fitted: str | Path, generator: SynthFaceGenerator, split: str = "train",
                 yaw_degrees: tuple[float, float] = (45.0, 85.0)):
        uv_size = json.loads((Path(fitted) / "index.json").read_text())["uv_size"]
        if uv_size != generator.model.size:
            raise ValueError(f"{fitted} was fitted at S = {uv_size}, the generator renders S = {generator.model.size}")
        _, gather = load_split(fitted, split)
        self.identity = gather("id_coeffs").astype(np.float32)
        self.expression = gather("exp_weights").astype(np.float32)
        self.rotation = gather("pose")[:, :3].astype(np.float32)
        textures = gather("texture")
        self.albedo = np.array([fill_unseen(t, v) for t, v in zip(textures, gather("visible"))], np.uint8).reshape(textures.shape)
        self.generator, self.yaw_degrees = generator, yaw_degrees

    def __len__(self) -> int:
        return len(self.identity)

    def batch(self, seed: int, index: int, batch_size: int) -> RealBatch:
        """``batch_size`` faces (a pure function of seed and index) turned to |yaw| in ``yaw_degrees``,
        with the ground truth stage 1 trains real photos on."""
        synth = self.synth_batch(seed, index, batch_size)
        return RealBatch(image=synth.image, a_id=synth.a_id, a_exp=synth.a_exp, p_h=synth.p_h, landmarks=synth.landmarks)

    def synth_batch(self, seed: int, index: int, batch_size: int) -> SynthBatch:
        """As ``batch``, with every field the generator fills (p_l is the render's lighting on top of
        the photo's own shading, and p_t is empty, so neither is ground truth to train on)."""
        rng = np.random.default_rng([seed, index, 4])
        pick = rng.choice(len(self), batch_size, replace=len(self) < batch_size)
        rotation = self.rotation[pick].copy()
        shown = np.sign(rotation[:, 0])
        # Near-frontal photos show both sides: either way will do.
        shown = np.where(np.abs(rotation[:, 0]) > np.deg2rad(5.0), shown, rng.choice([-1.0, 1.0], batch_size))
        rotation[:, 0] = shown * np.deg2rad(rng.uniform(*self.yaw_degrees, batch_size))
        albedo = torch.from_numpy(self.albedo[pick].astype(np.float32) / 255.0).permute(0, 3, 1, 2)
        faces = GivenFaces(identity=torch.from_numpy(self.identity[pick]), expression=torch.from_numpy(self.expression[pick]),
                           albedo=albedo, rotation=torch.from_numpy(rotation))
        return self.generator.batch(seed, index, batch_size, faces=faces)
