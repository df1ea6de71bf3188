"""Stage 3: end-to-end self-supervised fine-tuning through our rasterizer on real photos (paper Sec.
III-C, IV-B).

    python -m training.train finetune --config cpu-small --geometry-from runs/geometry/checkpoint.pt \\
        --texture-from runs/texture/checkpoint.pt --fitted data/fitted --out runs/finetune

Both streams run on real photos (the fitted ones, and with ``--extra-landmarks`` UTKFace photos
with dlib landmarks for half of each batch); the UV-grid mesh (A at the mask's pixels) is rendered with the
texture stream's albedo and the predicted SH lighting in the predicted pose, and compared with the
photo: L = 0.1 L_pix + 1e-2 L_ali (Eqs. 19-23), Adam at 5e-5.

Adaptations, each for a reason:
- L_pix is the squared colour error over the render's face mask, which is already the visibility
  mask M: the mesh has no eye or mouth interior, so those pixels are never compared.
- L_id is dropped: no differentiable face-recognition network exists here (DESIGN.md, 3), and dlib's
  descriptor, which does, is not differentiable. Identity is measured with it instead.
- L_ali uses the photos' annotated 68 landmarks, in crop pixels, and the jaw points of the side
  turned away are compared with the silhouette, where annotators put them, not with the fixed jaw
  points the service returns (``training.jaw_marching``; ``--no-jaw-marching``: the fixed points, as
  up to 0.3.0). The held-out real NME is scored the same way.
- An anchor term keeps stage 1's supervised loss on a small synthetic batch. Without it a photometric
  loss on ~1,100 photos can trade geometry for colour (a known failure of self-supervised
  fine-tuning); the geometry stream's landmark accuracy is what the service is judged on first.
- ``--geometry-from`` / ``--texture-from`` may name a model-store version folder instead of a
  checkpoint: its ONNX graphs are read back (``training.export.from_store``), so a shipped model
  fine-tunes after its training run is gone, with BatchNorm frozen (the exporter folded it).
- With ``--profiled N`` the anchor also holds N profiled faces per step (fitted photos turned to
  45-85° of yaw with their own texture, DESIGN.md 4b): the photos stop near 50°. Validation then
  scores profiled held-out photos too, and ``best.pt`` goes by the mean of the two landmark NMEs.
- The photos are turned in the image plane (up to ``roll_degrees``) and half of them mirrored,
  landmarks re-paired (``training.photos.CropJitter``): nothing here depends on their fitted pose,
  the ~1,100 Helen and AFW photos hold few rolled heads, and a mirror image is a new face to the
  network at no cost (the service's mirror averaging showed its errors are not mirror-symmetric).
- ``--lr-schedule cosine`` decays the learning rate to 0 over ``--steps`` (a function of the step,
  so a resumed run continues the same curve): a fine-tune from a shipped model ends with small steps
  instead of the full rate's step-to-step noise (0.6.0's held-out real NME went from 3.4-4.2 % early
  in the run to 3.2 % at its end). The paper's constant rate is the default.
- The albedo is kept an albedo (issue 22; ``--albedo-weight``, ``--exposure-weight``,
  ``--appearance-only``). E_pho alone rewards copying the photo, its light and background included,
  into the albedo (0.7.0: albedo MAE 0.147 on synthetic faces after stage 3, 0.021 after stage 2). So
  the anchor's synthetic faces (then with occluders and photo backgrounds, as in stage 2) also score
  the texture stream's albedo, computed from the geometry stream's own output as the service does,
  against their true albedo (L_rec); each anchor face is darkened or brightened by a random exposure,
  its true lighting scaled with it, so that exposure is taught to be light; and each photo's albedo is
  held to that of a copy at another exposure; with ``--lighting-weight`` each anchor face's albedo is
  also held to that of the same face rendered under another SH lighting (and exposure), as the synthetic
  report's lighting change measures it. With ``--appearance-only`` (needs the geometry stream's
  appearance head) only the texture stream and the geometry stream's p_t/p_l head train: the encoder,
  the ASM decoders and the pose head are frozen, so shape and landmarks stay exactly the start's.
  ``--reset-albedo-correction`` zeroes the texture stream's output layer first, so that it starts
  again from the linear albedo at p_t, as stage 2 does, rather than from a stream that copies photos.
  ``best.pt`` then goes by the sum of the synthetic albedo error, the real photometric error, the
  real exposure change and the synthetic lighting change (fixed faces under two fixed lightings).
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from service.engine.albedo_basis import AlbedoBasis
from training import losses
from training.checkpoints import BestCheckpoint, load_checkpoint, save_checkpoint, stream_weights
from training.evaluate.metrics import nme_2d
from training.export.from_store import FOLDED, freeze_batchnorm
from training.facemodel import UVFaceModel
from training.fitting.crops import FittedPhotos
from training.jaw_marching import JawMarching
from training.photos import CropJitter, LandmarkedPhotos
from training.models import AlbedoModel, GeometryStream, NetworkConfig, TextureStream
from training.models.pose import pose_to_camera
from training.prefetch import Deadline, step_inputs
from training.render import RenderSettings, render_mesh
from training.stages.albedo_fit import fitted_p_t, stored_basis
from training.stages.common import (VALIDATION_SEED, GeometryLossWeights, GeometryTargets, TextureInputs, geometry_loss,
                                    grown_geometry_weights, landmark_heatmaps, landmark_nmes, project_landmarks,
                                    start_checkpoint, to_device, uv_grid_from_geometry)
from training.synth import SynthBatch, SynthFaceGenerator, SynthSettings, uv_visibility
from training.synth.clutter import photo_patches
from training.synth.profiling import BACKGROUND_PATCHES, ProfiledFaces, profile_generator


@dataclass(frozen=True)
class FinetuneLossWeights:
    pixel: float = 0.1
    landmark: float = 1e-2
    anchor: float = 1.0  # stage 1's L_gs on a synthetic batch (see the module docstring)
    albedo: float = 0.0  # L_rec of the anchor faces' albedo against their true albedo (issue 22)
    exposure: float = 0.0  # each photo's albedo against that of a copy at another exposure (squared error)
    lighting: float = 0.0  # each anchor face's albedo against that of the same face under another SH lighting


@dataclass(frozen=True)
class FinetuneSettings:
    steps: int = 1000
    batch_size: int = 8  # real photos per step
    anchor_batch_size: int = 4  # synthetic faces per step for the anchor term
    profiled_batch_size: int = 0  # profiled fitted photos (training.synth.profiling) per step, in the anchor term
    background_patches: int = BACKGROUND_PATCHES  # photo patches behind the profiled faces
    lr: float = 5e-5
    lr_schedule: str = "constant"  # or "cosine": from lr to 0 over `steps` (learning_rate())
    seed: int = 0
    log_every: int = 25
    checkpoint_every: int = 100
    validate_every: int = 100
    workers: int = 0  # processes making each step's inputs ahead (training.prefetch); 0: inline
    minutes: float | None = None  # stop (checkpointing) after this much wall time
    jaw_marching: bool = True  # L_ali's turned-away jaw points on the silhouette (training.jaw_marching)
    roll_degrees: float = 20.0  # the photos turned in the image plane, uniform in +-roll_degrees
    mirror_photos: bool = True  # half the photos mirrored left-right
    locate_lr_scale: float = 1.0  # the encoder's position-pooling layer learns at this multiple of the rate
    appearance_only: bool = False  # only the texture stream and the p_t/p_l head train (module docstring)
    reset_albedo_correction: bool = False  # the texture stream's output layer zeroed: it starts as the linear albedo
    fit_albedo: bool = False  # the texture stream's p_t fitted to each photo as the service fits it (albedo_fit.py);
    # with appearance_only the appearance head then stays the start's too, so only the texture stream trains
    exposure_range: tuple[float, float] = (0.45, 1.2)  # photo brightness factors, drawn log-uniformly
    anchor_occluder_fraction: float = 0.25  # with an albedo weight: anchor faces with a hand, hair or glasses


def learning_rate(settings: FinetuneSettings, step: int) -> float:
    """The learning rate of step ``step`` (0-based)."""
    if settings.lr_schedule == "constant":
        return settings.lr
    if settings.lr_schedule == "cosine":
        return settings.lr * 0.5 * (1 + math.cos(math.pi * min(step / settings.steps, 1.0)))
    raise ValueError(f"unknown learning-rate schedule {settings.lr_schedule!r}")


def parameter_groups(geometry: GeometryStream, texture: TextureStream, locate_lr_scale: float) -> list[dict]:
    """Adam's parameter groups over the parameters that train, each with the ``lr_scale`` its rate is
    multiplied by: the encoder's position-pooling layer (``locate``) apart, since grown at stage 3 from
    zeros at the fine-tune's small rate it hardly moves (2,200 steps at 5e-5 left its weights at a mean
    |w| of 3.5e-4)."""
    locate = [] if geometry.encoder.locate is None else [p for p in geometry.encoder.locate.parameters() if p.requires_grad]
    apart = {id(p) for p in locate}
    rest = [p for p in [*geometry.parameters(), *texture.parameters()] if id(p) not in apart and p.requires_grad]
    groups = [dict(params=rest, lr_scale=1.0)]
    if locate:
        groups.append(dict(params=locate, lr_scale=locate_lr_scale))
    return groups


class FaceRenderer:
    """Renders the UV-grid mesh of a (B, 3, S, S) position map with a (B, 3, S, S) albedo map."""

    def __init__(self, model: UVFaceModel, image_size: int, device: torch.device):
        # The albedo basis the texture stream's p_t is fitted with (``albedo_fit.fitted_p_t``), as the
        # service fits it; None feeds the geometry stream's p_t.
        self.albedo_fit: AlbedoBasis | None = None
        topo = model.topology
        self.rows = torch.from_numpy(topo.vertex_pixels[:, 0]).long().to(device)
        self.cols = torch.from_numpy(topo.vertex_pixels[:, 1]).long().to(device)
        self.faces = torch.from_numpy(topo.triangles).long().to(device)
        self.uv_mask = torch.from_numpy(topo.uv_mask).to(device)
        self.settings = RenderSettings(image_size=image_size)
        self.image_size = image_size

    def vertices(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, V, C) values at the mesh vertices."""
        return maps[:, :, self.rows, self.cols].permute(0, 2, 1)

    def render(self, a_full, p_h, albedo=None, p_l=None):
        camera = pose_to_camera(p_h, self.image_size)
        colours = self.vertices(albedo) if albedo is not None else None
        sh = p_l.reshape(-1, 9, 3) if p_l is not None else None
        return camera, render_mesh(self.vertices(a_full), self.faces, camera, self.settings, vertex_colors=colours, sh_coeffs=sh)


def albedo_from_geometry(geo, texture: TextureStream, renderer: FaceRenderer, image: torch.Tensor,
                         landmarks_uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The texture stream's albedo (B, 3, S, S) for (B, 3, H, H) photos from the geometry stream's output
    ``geo``, its inputs built as the service builds them; and the projected landmarks (B, 68, 2)."""
    size = image.shape[-1]
    a_full = geo.a_full
    marks = project_landmarks(a_full, geo.p_h, landmarks_uv, size)
    with torch.no_grad():  # where the service would look: visibility and heatmaps carry no gradient
        camera, depth_pass = renderer.render(a_full, geo.p_h)
        visible = uv_visibility(a_full, camera, depth_pass, renderer.uv_mask)
    p_t = geo.p_t
    if renderer.albedo_fit is not None:
        p_t = fitted_p_t(renderer.albedo_fit, renderer.vertices(a_full), renderer.faces, geo.p_h, geo.p_l, image,
                         visible[:, renderer.rows, renderer.cols], geo.p_t)
    inputs = TextureInputs(p_t=p_t, image=image, heatmaps=landmark_heatmaps(marks.detach(), size),
                           uv_grid=uv_grid_from_geometry(a_full, geo.p_h, size), uv_visibility=visible[:, None].float())
    albedo, _, _ = texture(*inputs.as_args())
    return albedo, marks


def exposed(image: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) photos in [0, 1] with each one's brightness scaled by its (B,) factor, clipped as a camera would."""
    return (image * factors[:, None, None, None]).clamp(0.0, 1.0)


def exposure_factors(rng: np.random.Generator, n: int, span: tuple[float, float]) -> torch.Tensor:
    """(n,) brightness factors drawn log-uniformly in ``span``."""
    return torch.from_numpy(np.exp(rng.uniform(np.log(span[0]), np.log(span[1]), n)).astype(np.float32))


def exposed_faces(batch: SynthBatch, factors: torch.Tensor) -> SynthBatch:
    """Synthetic faces at another exposure: the photo and its SH lighting scaled alike (render = albedo x
    shading is linear in the lighting), the albedo and everything else unchanged."""
    return replace(batch, image=exposed(batch.image, factors), p_l=batch.p_l * factors[:, None].to(batch.p_l.device))


def reconstruct(geometry: GeometryStream, texture: TextureStream, renderer: FaceRenderer, image: torch.Tensor,
                landmarks_uv: torch.Tensor, marching: JawMarching | None = None):
    """Both streams on (B, 3, H, H) photos and the shaded render. Returns (geometry output, albedo
    (B, 3, S, S), render output, projected landmarks (B, 68, 2)); with ``marching`` the landmarks are
    those an annotator would mark (the texture stream's heatmaps stay on the fixed points, as the
    service's)."""
    size = image.shape[-1]
    geo = geometry(image)
    a_full = geo.a_full
    albedo, marks = albedo_from_geometry(geo, texture, renderer, image, landmarks_uv)
    _, shaded = renderer.render(a_full, geo.p_h, albedo, geo.p_l)
    if marching is not None:
        marks = marching.landmarks(a_full, geo.p_h, marks, size)
    return geo, albedo, shaded, marks


def finetune_loss(image, landmarks, shaded, marks, weights: FinetuneLossWeights) -> dict[str, torch.Tensor]:
    mask = shaded.mask[:, None]
    return {
        "pixel": losses.reconstruction_loss(shaded.image_nchw(), image, mask),
        "landmark": losses.landmark_loss(marks, landmarks),
    }


@torch.no_grad()
def validate_finetune(geometry, texture, renderer, real: FittedPhotos, landmarks_uv, batch_size: int, device,
                      marching: JawMarching | None = None) -> dict[str, float]:
    """Landmark NME (with ``marching``: as annotated, the turned-away jaw on the silhouette) and mean
    absolute colour error of the render over its mask, on held-out fitted photos."""
    if len(real) == 0:
        return {}
    geometry.eval(), texture.eval()
    nmes, errors = [], []
    for start in range(0, len(real), batch_size):
        batch = real.photo_batch(range(start, min(start + batch_size, len(real))), None)
        image, landmarks = batch.image.to(device), batch.landmarks.to(device)
        _, _, shaded, marks = reconstruct(geometry, texture, renderer, image, landmarks_uv, marching)
        nmes += [nme_2d(p, g) for p, g in zip(marks.cpu().numpy(), landmarks.cpu().numpy())]
        diff = (shaded.image_nchw() - image).abs().mean(1)
        errors += [float(d[m].mean()) for d, m in zip(diff, shaded.mask) if m.any()]
    geometry.train(), texture.train()
    return {"val_real_landmark_nme": float(np.mean(nmes)), "val_real_photometric": float(np.mean(errors))}


VALIDATION_EXPOSURE = 0.55  # the darkening of issue 22's measurement through the API


@torch.no_grad()
def validate_appearance(geometry, texture, renderer, real: FittedPhotos, faces: list[SynthBatch], landmarks_uv,
                        batch_size: int, device, lit: list[SynthBatch] = ()) -> dict[str, float]:
    """Whether the albedo is an albedo: its mean absolute error against the truth on fixed synthetic faces
    (inputs from the geometry stream, as the service builds them), how much it changes on held-out
    photos darkened to ``VALIDATION_EXPOSURE``, and between ``lit``'s two renders of the same faces under
    two lightings (all over the UV face mask, colours in [0, 1])."""
    geometry.eval(), texture.eval()
    mask = renderer.uv_mask
    errors, changes = [], []
    for batch in faces:
        batch = to_device(batch, device)
        albedo, _ = albedo_from_geometry(geometry(batch.image), texture, renderer, batch.image, landmarks_uv)
        errors.append(float((albedo - batch.albedo).abs().mean(1)[:, mask].mean()))
    for start in range(0, len(real), batch_size):
        image = real.photo_batch(range(start, min(start + batch_size, len(real))), None).image.to(device)
        dark = exposed(image, torch.full((len(image),), VALIDATION_EXPOSURE))
        bright, _ = albedo_from_geometry(geometry(image), texture, renderer, image, landmarks_uv)
        darker, _ = albedo_from_geometry(geometry(dark), texture, renderer, dark, landmarks_uv)
        changes.append(float((bright - darker).abs().mean(1)[:, mask].mean()))
    out = {"val_synthetic_albedo": float(np.mean(errors))} | ({"val_real_exposure_change": float(np.mean(changes))} if changes else {})
    if len(lit) == 2:
        first, second = (albedo_from_geometry(geometry(b.image), texture, renderer, b.image, landmarks_uv)[0]
                         for b in (to_device(b, device) for b in lit))
        out["val_synthetic_lighting_change"] = float((first - second).abs().mean(1)[:, mask].mean())
    geometry.train(), texture.train()
    return out


@torch.no_grad()
def profiled_nme(geometry, batches, landmarks_uv, device) -> float:
    """Landmark NME of the geometry stream on fixed profiled held-out faces."""
    geometry.eval()
    nmes = []
    for batch in batches:
        nmes += landmark_nmes(geometry(batch.image.to(device)), batch.landmarks, landmarks_uv, batch.image.shape[-1])
    geometry.train()
    return float(np.mean(nmes))


def train_finetune(cfg: NetworkConfig, out: Path, settings: FinetuneSettings, geometry_from: Path, texture_from: Path,
                   fitted: Path, photos: Path, albedo: Path | None = None, device: str = "cpu",
                   extra: tuple[Path, Path] | None = None, weights: FinetuneLossWeights = FinetuneLossWeights(),
                   anchor_weights: GeometryLossWeights = GeometryLossWeights()) -> Path:
    """Run (or resume) stage 3 into ``out`` from stage-1 and stage-2 checkpoints; returns the checkpoint path.
    ``weights`` weigh L_pix, L_ali and the synthetic anchor; ``anchor_weights`` are the anchor's L_gs terms.

    ``extra`` = (a ``python -m training.photos`` landmarks file, its photo folder): more real photos,
    half of every batch (UTKFace in the paper's CelebA role); validation stays on the fitted photos.
    """
    torch.manual_seed(settings.seed)
    dev = torch.device(device)
    out.mkdir(parents=True, exist_ok=True)
    g, t = cfg.geometry, cfg.texture
    face_model = UVFaceModel.build(g.uv_size)
    geometry = GeometryStream(g, face_model).to(dev)
    texture = TextureStream(t, AlbedoModel.placeholder(t.albedo_dim, t.uv_size)).to(dev)  # buffers come from the checkpoint
    ckpt_path = out / "checkpoint.pt"
    ckpt = load_checkpoint(ckpt_path, cfg, dev)
    starts = None
    if ckpt is None:  # one read per file or store, which usually serves both streams
        read = {path: start_checkpoint(path, cfg, dev) for path in {Path(geometry_from), Path(texture_from)}}
        starts = {"geometry": read[Path(geometry_from)], "texture": read[Path(texture_from)]}
    # A model store's BatchNorm statistics are folded into its convolutions: such weights train with
    # BatchNorm frozen (training.export.from_store), and a resumed run remembers that.
    folded = (ckpt if ckpt is not None else starts["geometry"]).get("batchnorm") == FOLDED
    origin = ckpt.get("started_from") if ckpt is not None else starts["geometry"].get("source")  # a model store's name
    if folded:
        freeze_batchnorm(geometry)
        freeze_batchnorm(texture)
    if settings.appearance_only:
        if geometry.appearance is None:
            raise ValueError("--appearance-only needs the geometry stream's appearance head (GeometryConfig.appearance_head)")
        geometry.requires_grad_(False)
        # With p_t fitted to the photo the head's p_t is unused: the whole geometry stream stays the start's.
        geometry.appearance.requires_grad_(not settings.fit_albedo)
    groups = parameter_groups(geometry, texture, settings.locate_lr_scale)
    lr_scales = [group["lr_scale"] for group in groups]  # this run's, also when resuming an older checkpoint
    opt = torch.optim.Adam(groups, lr=settings.lr)
    step = 0
    if ckpt is not None:
        geometry.load_state_dict(ckpt["geometry_model"])
        texture.load_state_dict(ckpt["texture_model"])
        opt.load_state_dict(ckpt["optimizer"])
        step = ckpt["step"]
    else:
        geometry.load_state_dict(grown_geometry_weights(geometry, starts["geometry"]))
        texture.load_state_dict(stream_weights(starts["texture"], "texture"))
        if settings.reset_albedo_correction:  # as stage 2 starts: I_a = I_ua, the U-Net's features kept
            torch.nn.init.zeros_(texture.out.weight), torch.nn.init.zeros_(texture.out.bias)
    renderer = FaceRenderer(face_model, g.image_size, dev)
    if settings.fit_albedo:
        renderer.albedo_fit = stored_basis(texture.albedo, face_model.topology.uv_mask)
    targets = GeometryTargets(face_model, dev)
    landmarks_uv = targets.landmarks_uv
    marching = JawMarching(face_model, dev) if settings.jaw_marching else None
    # Stage 3 needs only the photos' pixels and landmarks, so they may turn and mirror (training.photos.CropJitter).
    jitter = CropJitter(roll_degrees=settings.roll_degrees,
                        mirror=face_model.topology.landmark_mirror() if settings.mirror_photos else None)
    real = FittedPhotos(fitted, photos, g.image_size)
    more = LandmarkedPhotos(extra[0], extra[1], g.image_size, jitter=jitter) if extra else None
    real_val = FittedPhotos(fitted, photos, g.image_size, split="validation")
    keeps_albedo = weights.albedo > 0 or weights.exposure > 0 or weights.lighting > 0
    if keeps_albedo:  # the anchor faces also train the albedo: cluttered as stage 2's, behind and in front
        anchor_faces = SynthSettings(image_size=g.image_size, occluder_fraction=settings.anchor_occluder_fraction)
        gen = SynthFaceGenerator(face_model, anchor_faces, albedo, g.albedo_dim,
                                 backgrounds=photo_patches(photos, settings.background_patches, g.image_size, settings.seed))
        plain = SynthFaceGenerator(face_model, SynthSettings(image_size=g.image_size), albedo, g.albedo_dim)
        albedo_val = [plain.batch(VALIDATION_SEED, i, settings.batch_size) for i in range(4)]
        lit_val = [plain.batch(VALIDATION_SEED, 0, settings.batch_size, lighting=light.expand(settings.batch_size, -1))
                   for light in SynthFaceGenerator.sample_lighting(np.random.default_rng(VALIDATION_SEED), 2)]
    else:
        gen = SynthFaceGenerator(face_model, SynthSettings(image_size=g.image_size), albedo, g.albedo_dim)
    profiled, profiled_val = None, []
    if settings.profiled_batch_size:
        profile_gen = profile_generator(face_model, photos, g.image_size, settings.seed, settings.background_patches)
        profiled = ProfiledFaces(fitted, profile_gen)
        held_out = ProfiledFaces(fitted, profile_gen, split="validation")
        profiled_val = [held_out.batch(VALIDATION_SEED, i, settings.batch_size) for i in range(4)] if len(held_out) else []
    if keeps_albedo:
        best = BestCheckpoint(out, "val_appearance")
    else:
        best = BestCheckpoint(out, "val_landmark_nme_mean" if profiled_val else "val_real_landmark_nme")
    log_path = out / "log.csv"
    new_log = not log_path.exists()
    with log_path.open("a", newline="") as log_file:
        log = csv.writer(log_file)
        if new_log:
            log.writerow(["step", "seconds", "total", "pixel", "landmark", "anchor", "albedo", "exposure",
                          "val_real_landmark_nme", "val_real_photometric", "val_profiled_landmark_nme",
                          "val_synthetic_albedo", "val_real_exposure_change", "lighting",
                          "val_synthetic_lighting_change"])
        start, deadline = time.time(), Deadline(settings.minutes)
        bar = tqdm(total=settings.steps, initial=step, desc="stage 3 fine-tune", unit="step")
        geometry.train(), texture.train()

        def make(k: int):
            """Step k's real photos (image, landmarks), synthetic anchor faces and profiled faces (or None)."""
            rng = np.random.default_rng([settings.seed, k, 3])
            n_more = settings.batch_size // 2 if more is not None else 0
            parts = [real.photo_batch(rng.choice(len(real), settings.batch_size - n_more, replace=False), rng, jitter)]
            if n_more:
                parts.append(more.batch(rng.choice(len(more), n_more, replace=False), rng))
            photos_k = (torch.cat([b.image for b in parts]), torch.cat([b.landmarks for b in parts]))
            turned = profiled.batch(settings.seed + 4, k, settings.profiled_batch_size) if profiled is not None else None
            synthetic = gen.batch(settings.seed + 3, k, settings.anchor_batch_size)
            relit = None
            if weights.lighting > 0:  # the same faces (same seed) under another light
                light = SynthFaceGenerator.sample_lighting(rng, settings.anchor_batch_size)
                relit = exposed_faces(gen.batch(settings.seed + 3, k, settings.anchor_batch_size, lighting=light),
                                      exposure_factors(rng, settings.anchor_batch_size, settings.exposure_range))
            if keeps_albedo:
                synthetic = exposed_faces(synthetic, exposure_factors(rng, settings.anchor_batch_size, settings.exposure_range))
                photos_k = (*photos_k, exposure_factors(rng, len(photos_k[0]), settings.exposure_range))
            return photos_k, synthetic, relit, turned

        uv_face = renderer.uv_mask[None, None]
        for step, ((image, landmarks, *factors), synthetic, relit, turned) in step_inputs(make, step, settings.steps,
                                                                                           settings.workers):
            image, landmarks = image.to(dev), landmarks.to(dev)
            _, albedo, shaded, marks = reconstruct(geometry, texture, renderer, image, landmarks_uv, marching)
            terms = finetune_loss(image, landmarks, shaded, marks, weights)
            synthetic = to_device(synthetic, dev)
            synthetic_geo = geometry(synthetic.image)
            terms["anchor"] = geometry_loss(synthetic_geo, synthetic, targets, anchor_weights)["total"]
            if keeps_albedo:
                synthetic_albedo, _ = albedo_from_geometry(synthetic_geo, texture, renderer, synthetic.image, landmarks_uv)
                terms["albedo"] = losses.reconstruction_loss(synthetic_albedo, synthetic.albedo, uv_face)
                other = exposed(image, factors[0].to(dev))
                other_albedo, _ = albedo_from_geometry(geometry(other), texture, renderer, other, landmarks_uv)
                terms["exposure"] = losses.reconstruction_loss(other_albedo, albedo.detach(), uv_face)
            if relit is not None:
                relit = to_device(relit, dev)
                relit_albedo, _ = albedo_from_geometry(geometry(relit.image), texture, renderer, relit.image, landmarks_uv)
                terms["lighting"] = losses.reconstruction_loss(relit_albedo, synthetic_albedo.detach(), uv_face)
            if turned is not None:
                turned = to_device(turned, dev)
                terms["anchor"] = terms["anchor"] + geometry_loss(geometry(turned.image), turned, targets, anchor_weights)["total"]
            terms["total"] = sum(getattr(weights, k) * v for k, v in terms.items())
            opt.zero_grad(set_to_none=True)
            terms["total"].backward()
            for group, scale in zip(opt.param_groups, lr_scales):
                group["lr"] = learning_rate(settings, step) * scale
            opt.step()
            step += 1
            bar.update(1)
            out_of_time = deadline.passed()
            validating = step % settings.validate_every == 0 or out_of_time
            val = validate_finetune(geometry, texture, renderer, real_val, landmarks_uv, settings.batch_size, dev,
                                    marching) if validating else {}
            if validating and keeps_albedo:
                val |= validate_appearance(geometry, texture, renderer, real_val, albedo_val, landmarks_uv,
                                           settings.batch_size, dev, lit_val)
                val["val_appearance"] = sum(val.get(k, 0.0) for k in ("val_synthetic_albedo", "val_real_photometric",
                                                                      "val_real_exposure_change",
                                                                      "val_synthetic_lighting_change"))
            if validating and profiled_val:
                val["val_profiled_landmark_nme"] = profiled_nme(geometry, profiled_val, landmarks_uv, dev)
                if "val_real_landmark_nme" in val:
                    val["val_landmark_nme_mean"] = (val["val_real_landmark_nme"] + val["val_profiled_landmark_nme"]) / 2
            if step % settings.log_every == 0 or validating:
                row = [step, round(time.time() - start, 1)] + [terms[k].item() if k in terms else "" for k in
                                                                 ("total", "pixel", "landmark", "anchor", "albedo", "exposure")]
                log.writerow(row + [val.get(k, "") for k in ("val_real_landmark_nme", "val_real_photometric",
                                                              "val_profiled_landmark_nme", "val_synthetic_albedo",
                                                              "val_real_exposure_change")]
                             + [terms["lighting"].item() if "lighting" in terms else "",
                                val.get("val_synthetic_lighting_change", "")])
                log_file.flush()
                bar.set_postfix(loss=f"{terms['total'].item():.4f}")
            state = dict(geometry_model=geometry.state_dict(), texture_model=texture.state_dict(), optimizer=opt.state_dict(),
                         config=cfg.as_dict(), step=step, stage="finetune", **({"batchnorm": FOLDED} if folded else {}),
                         **({"started_from": origin} if origin else {}))
            best.offer(val, state)
            if step % settings.checkpoint_every == 0 or step == settings.steps or out_of_time:
                save_checkpoint(ckpt_path, **state)
            if out_of_time:
                break
        bar.close()
    return ckpt_path
