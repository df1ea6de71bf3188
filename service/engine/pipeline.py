"""The engine: photo bytes + options -> figures and mesh bytes, stage by stage, each stage timed.

Pre- and post-processing run in the caller's (worker) thread; the two ONNX graphs run through
micro-batchers shared by all requests.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np

from service import errors
from service.metrics import Metrics
from service.schemas import Face as FaceFigures
from service.schemas import FaceSelection, Format, ModelRef, Options, Pose, Quality, ReconstructResult
from service.settings import Settings

from .albedo_fit import fit_face
from .align import crop_face
from .asm_decode import FaceGeometry, decode_asm
from .batching import MicroBatcher
from .decode import decode_image
from .detect import Face, LandmarkPredictor, dlib_model_path, make_detector
from .export import MEDIA_TYPES, export_glb, export_json, export_obj_zip
from .eyes import eye_texture, iris_colour
from .fuse import fuse_meshes
from .mirror import require_mirror_ready, run_geometry
from .recrop import recrop
from .runtime import GEOMETRY_OUTPUTS, Model
from .relight import relight
from .texture import compose_texture
from .topology import MeshTopology
from .unwrap import heatmaps, unwrap


@dataclass
class Reconstruction:
    result: ReconstructResult
    body: bytes
    media_type: str


def checked_texture_size(options: Options, settings: Settings) -> int:
    size = options.texture_size or settings.default_texture_size
    if size > settings.max_texture_size:
        raise errors.bad_request(f"texture_size {size} is above the maximum {settings.max_texture_size}",
                                 max_texture_size=settings.max_texture_size)
    return size


class StageTimer:
    """Times named stages into a dict (for the response) and the stage histogram."""

    def __init__(self, metrics: Metrics):
        self.metrics, self.ms = metrics, {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.ms[stage] = round(self.ms.get(stage, 0.0) + elapsed * 1000.0, 3)
            self.metrics.stage_duration.labels(stage=stage).observe(elapsed)


class Engine:
    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings, self.metrics = settings, metrics
        self.model = Model.from_settings(settings)
        self.topology = MeshTopology.from_store(self.model.store)
        self.pose_fields = self.model.store.manifest["camera"].get("pose_fields")
        if settings.mirror_average:
            require_mirror_ready(self.topology, f"{self.model.name} {self.model.version}")
        # The morph targets are the model's: encoded here (~0.3 s) rather than in the first request that asks.
        if self.topology.morph_targets is not None:
            self.topology.morph_targets.encoded
        if self.topology.ict is not None:
            self.topology.ict.face_targets.encoded
        # A missing or altered detector model stops start-up here (readiness reports it).
        self.detector = make_detector(settings.detector, settings.detect_score_threshold, settings.min_face_px,
                                      settings.detect_max_side, settings.detect_upsample, settings.yunet_path)
        predictor_path = dlib_model_path("shape_predictor_68_face_landmarks.dat")
        self.landmarks = LandmarkPredictor(predictor_path) if predictor_path else None
        delay = settings.max_batch_delay_ms / 1000.0
        # Requests inside reconstruct (HTTP, batch items, jobs): the batchers wait only for these.
        self._running = 0
        self.geometry = MicroBatcher("geometry", self.model.run_geometry, settings.max_batch_size, delay, self._on_batch,
                                     lambda: self._running)
        self.texture = MicroBatcher("texture", self.model.run_texture, settings.max_batch_size, delay, self._on_batch,
                                    lambda: self._running)
        self._inflight, self._lock = 0, threading.Lock()
        self.warm_up()

    @property
    def ref(self) -> ModelRef:
        return ModelRef(name=self.model.name, version=self.model.version)

    def close(self) -> None:
        self.geometry.close()
        self.texture.close()

    def warm_up(self) -> None:
        """One pass through both graphs, so the first request does not pay for onnxruntime's set-up."""
        n, s = self.model.store.input_size, self.topology.size
        outputs = self.model.run_geometry({"image": np.zeros((1, 3, n, n), np.float32)})
        self.model.run_texture({
            "p_t": outputs[GEOMETRY_OUTPUTS.index("p_t")], "image": np.zeros((1, 3, n, n), np.float32),
            "heatmaps": np.zeros((1, 68, n, n), np.float32), "uv_grid": np.zeros((1, s, s, 2), np.float32),
            "uv_visibility": np.zeros((1, 1, s, s), np.float32),
        })

    def _on_batch(self, rows: int, waits: list[float]) -> None:
        self.metrics.batch_size.observe(rows)
        for wait in waits:
            self.metrics.queue_duration.observe(wait)

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Bound the requests in the engine; beyond ``queue_size``, refuse at once (503)."""
        with self._lock:
            if self._inflight >= self.settings.queue_size:
                raise errors.overloaded(self.settings.retry_after_s)
            self._inflight += 1
            self.metrics.queue_depth.set(self._inflight)
        try:
            yield
        finally:
            with self._lock:
                self._inflight -= 1
                self.metrics.queue_depth.set(self._inflight)

    def reconstruct(self, data: bytes, options: Options) -> Reconstruction:
        """Everything after the upload; raises :class:`errors.Problem` for the caller's mistakes."""
        with self._lock:
            self._running += 1
        try:
            return self._reconstruct(data, options)
        finally:
            with self._lock:
                self._running -= 1

    def _reconstruct(self, data: bytes, options: Options) -> Reconstruction:
        timer = StageTimer(self.metrics)
        texture_size = checked_texture_size(options, self.settings)
        with timer("decode"):
            photo = decode_image(data, max_pixels=self.settings.max_pixels, formats=self.settings.image_formats)
        with timer("detect"):
            faces = self.select_faces(photo, options)
        with timer("align"):
            crops = [crop_face(photo, f.crop_box, self.model.store.input_size, self.settings.crop_scale) for f in faces]
            dlib_landmarks = [self.landmarks(photo, f.box) if self.landmarks else None for f in faces]
        with timer("geometry"):
            outputs = run_geometry(self.geometry, np.stack([c.image for c in crops]), self.settings.mirror_average)
        if options.box is None and self.settings.recrops:
            with timer("recrop"):
                crops = recrop(photo, [f.box for f in faces], crops, outputs, self.topology, self.settings.crop_scale,
                               self.pose_fields)
                outputs = run_geometry(self.geometry, np.stack([c.image for c in crops]), self.settings.mirror_average)
        with timer("decode_asm"):
            geos = [decode_asm({k: out[i] for k, out in zip(self.model.geometry_outputs, outputs)}, crop, self.topology,
                               self.pose_fields) for i, crop in enumerate(crops)]
        with timer("unwrap"):
            unwrapped = [unwrap(g, self.topology) for g in geos]
            marks = [heatmaps(g.landmarks_crop, g.crop.size) for g in geos]
        p_t = outputs[GEOMETRY_OUTPUTS.index("p_t")]
        if self.topology.albedo_basis is not None and self.settings.albedo_fit:
            with timer("albedo_fit"):
                p_t = np.stack([fit_face(self.topology.albedo_basis, g, u, self.topology, p_t[i])
                                for i, (g, u) in enumerate(zip(geos, unwrapped))])
        with timer("texture"):
            feeds = {
                "p_t": p_t,
                "image": np.stack([c.image for c in crops]),
                "heatmaps": np.stack(marks),
                "uv_grid": np.stack([u.uv_grid for u in unwrapped]),
                "uv_visibility": np.stack([u.visibility[None].astype(np.float32) for u in unwrapped]),
            }
            albedo = self.texture(feeds)[0]
        if self.settings.relight:
            with timer("relight"):
                geos = [replace(g, lighting=relight(g, u, albedo[i], self.topology))
                        for i, (g, u) in enumerate(zip(geos, unwrapped))]
        with timer("compose"):
            textures = [compose_texture(options.texture.value, albedo[i], g, u, self.topology, photo, texture_size,
                                        self.settings.texture_detail)
                        for i, (g, u) in enumerate(zip(geos, unwrapped))]
            # The eyeballs of ICT's topology: their iris colour read off the photo at the eye landmarks.
            eyes = [eye_texture(iris_colour(photo, g.landmarks_photo)) if self.topology.ict is not None else None
                    for g in geos]
        with timer("fuse"):
            morph = options.morph_targets and options.format is Format.glb
            meshes = [m for i, (g, t, e) in enumerate(zip(geos, textures, eyes))
                      for m in fuse_meshes(options.mesh.value, g, self.topology, t, f"face_{i}", morph, e,
                                           options.region.value)]
        figures = [self.face_figures(f, g, u, d) for f, g, u, d in zip(faces, geos, unwrapped, dlib_landmarks)]
        result = ReconstructResult(model=self.ref, faces=figures, timings_ms=timer.ms)
        with timer("export"):
            document = result.model_dump(mode="json")
            if options.format is Format.glb:
                body = export_glb(meshes, document, self.settings.glb_texture_format)
            elif options.format is Format.obj:
                body = export_obj_zip(meshes, document)
            else:
                body = b""
        result.timings_ms = timer.ms
        if options.format is Format.json:
            body = export_json(result.model_dump(mode="json"))
        self.metrics.faces_per_image.observe(len(faces))
        return Reconstruction(result, body, MEDIA_TYPES[options.format.value])

    def select_faces(self, photo: np.ndarray, options: Options) -> list[Face]:
        h, w = photo.shape[:2]
        minimum = self.settings.min_face_px
        if options.box is not None:
            x0, y0, x1, y1 = options.box
            box = (min(x0, w), min(y0, h), min(x1, w), min(y1, h))
            if box[2] <= box[0] or box[3] <= box[1]:
                raise errors.box_outside_image(options.box, w, h)
            face = Face(box, None, "caller")
            if face.side < minimum:
                raise errors.face_too_small(face.side, minimum)
            return [face]
        found = self.detector(photo)
        if not found:
            smallest = max(minimum, self.detector.smallest_face(h, w))
            raise errors.no_face(f"no face found in the {w}x{h} image (faces under about {smallest:.0f} px may be "
                                 "missed; pass `box` to skip detection)")
        # Largest box first (the detectors sort so): `largest` takes the first, `all` every one big enough.
        big = [f for f in found if f.side >= minimum]
        if not big:
            raise errors.face_too_small(found[0].side, minimum)
        return big if options.faces is FaceSelection.all else big[:1]

    def face_figures(self, face: Face, geo: FaceGeometry, unwrapped, dlib_landmarks: np.ndarray | None) -> FaceFigures:
        topo, s = self.topology, self.settings
        mask_texels = int(topo.uv_mask.sum())
        agreement = None
        if dlib_landmarks is not None:
            x0, y0, x1, y1 = face.box
            diagonal = float(np.hypot(x1 - x0, y1 - y0))
            agreement = float(np.linalg.norm(geo.landmarks_photo[:, :2] - dlib_landmarks, axis=1).mean() / diagonal)
        yaw, pitch, roll = geo.pose_degrees
        limits = {"yaw": (yaw, s.max_yaw_degrees), "pitch": (pitch, s.max_pitch_degrees),
                  "roll": (roll, s.max_roll_degrees)}
        weights = None
        if geo.blendshapes is not None:
            names = topo.blendshape_names or [str(i) for i in range(len(geo.blendshapes))]
            weights = {name: round(float(v), 5) for name, v in zip(names, geo.blendshapes)}
        return FaceFigures(
            box=tuple(round(v, 2) for v in face.box), score=face.score, detector=face.detector,
            landmarks68=[tuple(round(float(v), 3) for v in p) for p in geo.landmarks_photo],
            pose=Pose(yaw=yaw, pitch=pitch, roll=roll, translation=geo.translation_px, scale=geo.pixels_per_metre),
            blendshapes=weights,
            lighting=geo.lighting.tolist(),
            quality=Quality(texture_coverage=unwrapped.coverage / max(mask_texels, 1),
                            landmark_agreement=agreement,
                            pose_out_of_range=[k for k, (v, lim) in limits.items() if abs(v) > lim]),
        )
