"""A model store run in this process through the service's own stages, no server needed.

The stages are the ones ``service.engine.pipeline.Engine.reconstruct`` chains (detect or the caller's
box -> align -> geometry.onnx, mirror-averaged when the settings say so, and again on a recrop for a
detected face -> ASM decode -> unwrap -> texture.onnx), called directly so that the evaluation sees
exactly what the service computes, plus what the service does not return: both texture outputs
(``albedo`` and the linear ``linear_albedo`` from p_t) and the geometry in the service's own types
(``FaceGeometry``: camera, crop, vertices, lighting).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from service.engine.albedo_basis import AlbedoBasis, topology_arrays
from service.engine.albedo_fit import fit_face
from service.engine.align import Crop, crop_face
from service.engine.asm_decode import FaceGeometry, decode_asm
from service.engine.detect import Detector, Face, make_detector
from service.engine.mirror import require_mirror_ready, run_geometry
from service.engine.relight import relight
from service.engine.recrop import Box, recrop
from service.engine.runtime import GEOMETRY_OUTPUTS, Model
from service.engine.topology import MeshTopology
from service.engine.unwrap import Unwrap, heatmaps, unwrap
from service.settings import Settings


@dataclass(frozen=True)
class Reconstruction:
    """One face. Maps are (3, S, S) in the UV layout (row 0 = top), nominally in [0, 1]."""

    box: Box  # the face box the crop was made from, photo pixels
    box_from: str  # "landmarks" (given) or the detector's name
    geometry: FaceGeometry
    unwrapped: Unwrap
    albedo: np.ndarray  # the texture stream's output
    linear_albedo: np.ndarray | None  # the albedo model at p_t; None if the graph lacks that output


class InProcessModel:
    """``model_dir``: a model-store version folder ``<root>/<name>/<version>``."""

    def __init__(self, model_dir: Path, settings: Settings | None = None, albedo_model: Path | None = None,
                 fit_solver: dict[str, float] | None = None):
        """``albedo_model``: an albedo model npz (``python -m training.albedo``) whose p_t is fitted to each
        photo's seen skin (``service.engine.albedo_fit``) and fed to texture.onnx in place of the geometry
        stream's p_t, for a store that lacks the basis; None keeps the service's path (the store's basis
        when it has one). ``fit_solver``: that fit's settings where they differ from the service's
        (``albedo_fit.fit_face``)."""
        model_dir = Path(model_dir).resolve()
        base = settings or Settings()
        self.settings = base.model_copy(update={"model_store": model_dir.parents[1], "model_name": model_dir.parent.name,
                                                "model_version": model_dir.name})
        s = self.settings
        self.model = Model.from_settings(s)
        self.topology = MeshTopology.from_store(self.model.store)
        if s.mirror_average:  # as the service refuses to start
            require_mirror_ready(self.topology, self.label)
        self.pose_fields = self.model.store.manifest["camera"].get("pose_fields")
        names = [o["name"] for o in self.model.store.onnx_outputs("texture")]
        self.texture_outputs = [n for n in ("albedo", "linear_albedo") if n in names]
        self._detector: Detector | None = None
        self.fit_solver = dict(fit_solver or {})
        if albedo_model is not None:
            self.albedo_basis = albedo_basis(albedo_model, self.topology, self.p_t_size)
        else:
            self.albedo_basis = self.topology.albedo_basis if s.albedo_fit else None

    @property
    def p_t_size(self) -> int:
        return self.model.store.onnx_input("texture", "p_t")["shape"][1]

    @property
    def label(self) -> str:
        return f"{self.model.name} {self.model.version}"

    def detect_all(self, photo: np.ndarray) -> list[Face]:
        """Every face the service's detector finds, largest first (``faces=all``); LookupError when none
        (the service's 422)."""
        if self._detector is None:
            s = self.settings
            self._detector = make_detector(s.detector, s.detect_score_threshold, s.min_face_px, s.detect_max_side,
                                           s.detect_upsample, s.yunet_path)
        faces = self._detector(photo)
        if not faces:
            raise LookupError(f"no face found in the {photo.shape[1]}x{photo.shape[0]} image")
        return faces

    def detect(self, photo: np.ndarray) -> Face:
        """The largest face the service's detector finds (``faces=largest``); LookupError when none."""
        return self.detect_all(photo)[0]

    def geometry(self, photo: np.ndarray, box: Box | None = None,
                 recrop_box: bool | None = None) -> tuple[Box, str, list[np.ndarray], FaceGeometry]:
        """Locate, crop, run geometry.onnx (for a detected face twice, the second time on the recrop the
        settings ask for) and decode: (box, where it came from, the graph's outputs, geometry).

        ``photo``: (H, W, 3) uint8 RGB; ``box``: (x0, y0, x1, y1) or None to detect; ``recrop_box``:
        None recrops as the service does, True or False overrides it (``training.evaluate.boxes``).
        Faces below the service's ``min_face_px`` raise LookupError, as the service refuses them (422).
        """
        if box is None:
            face = self.detect(photo)
        else:  # clipped to the photo as the service clips a caller's box
            h, w = photo.shape[:2]
            face = Face((min(box[0], w), min(box[1], h), min(box[2], w), min(box[3], h)), None, "landmarks")
        return self.geometry_of(photo, face, recrop_box)

    def geometry_of(self, photo: np.ndarray, face: Face,
                    recrop_box: bool | None = None) -> tuple[Box, str, list[np.ndarray], FaceGeometry]:
        """:meth:`geometry` for a face already located: the first crop around its ``crop_box``."""
        if face.side < self.settings.min_face_px:
            raise LookupError(f"face box side {face.side:.0f} px is below the service's minimum "
                              f"{self.settings.min_face_px}")
        crop = crop_face(photo, face.crop_box, self.model.store.input_size, self.settings.crop_scale)
        outputs = run_geometry(self.model.run_geometry, crop.image[None], self.settings.mirror_average)
        if recrop_box is None:
            recrop_box = face.detector != "landmarks" and self.settings.recrops
        if recrop_box:
            (crop,) = recrop(photo, [face.box], [crop], outputs, self.topology, self.settings.crop_scale,
                             self.pose_fields)
            outputs = run_geometry(self.model.run_geometry, crop.image[None], self.settings.mirror_average)
        geo = decode_asm({k: out[0] for k, out in zip(self.model.geometry_outputs, outputs)}, crop, self.topology, self.pose_fields)
        return tuple(float(v) for v in face.box), face.detector, outputs, geo

    def reconstruct(self, photo: np.ndarray, box: Box | None = None) -> Reconstruction:
        """Geometry as :meth:`geometry`, then the unwrap and texture.onnx (both its outputs)."""
        box, box_from, outputs, geo = self.geometry(photo, box)
        geo, unwrapped, maps = self._texture(outputs, geo)
        linear = maps.get("linear_albedo")
        return Reconstruction(box=box, box_from=box_from, geometry=geo, unwrapped=unwrapped,
                              albedo=maps["albedo"][0], linear_albedo=None if linear is None else linear[0])

    def crop_albedo(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(texture stream albedo, linear albedo or None), each (3, S, S), for a (3, N, N) float32 face crop
        already framed as the service frames one: geometry.onnx, ASM decode, unwrap, texture.onnx."""
        rec = self.crop_reconstruction(image)
        return rec.albedo, rec.linear_albedo

    def crop_reconstruction(self, image: np.ndarray) -> Reconstruction:
        """:meth:`reconstruct` for a (3, N, N) float32 face crop already framed as the service frames one
        (the crop is the photo; its box is the whole crop)."""
        n = image.shape[-1]
        outputs, geo = self.crop_geometry(image)
        geo, unwrapped, maps = self._texture(outputs, geo)
        linear = maps.get("linear_albedo")
        return Reconstruction(box=(0.0, 0.0, float(n), float(n)), box_from="crop", geometry=geo, unwrapped=unwrapped,
                              albedo=maps["albedo"][0], linear_albedo=None if linear is None else linear[0])

    def crop_geometry(self, image: np.ndarray) -> tuple[list[np.ndarray], FaceGeometry]:
        """geometry.onnx's outputs and the decoded face for a (3, N, N) float32 face crop already framed as
        the service frames one (the crop is the photo)."""
        crop = Crop(image=image, origin=(0.0, 0.0), step=1.0)
        outputs = run_geometry(self.model.run_geometry, image[None], self.settings.mirror_average)
        geo = decode_asm({k: out[0] for k, out in zip(self.model.geometry_outputs, outputs)}, crop, self.topology,
                         self.pose_fields)
        return outputs, geo

    def _texture(self, outputs: list[np.ndarray],
                 geo: FaceGeometry) -> tuple[FaceGeometry, Unwrap, dict[str, np.ndarray]]:
        """The unwrap, texture.onnx's outputs by name, and the geometry with its lighting refitted under the
        albedo when the settings say so, as the service's stages do."""
        unwrapped, feeds = self.texture_feeds(outputs, geo)
        maps = dict(zip(self.texture_outputs, self.model.texture.run(self.texture_outputs, feeds)))
        if self.settings.relight:
            geo = replace(geo, lighting=relight(geo, unwrapped, maps["albedo"][0], self.topology))
        return geo, unwrapped, maps

    def texture_feeds(self, outputs: list[np.ndarray], geo: FaceGeometry) -> tuple[Unwrap, dict[str, np.ndarray]]:
        """The unwrap and texture.onnx's inputs (batch 1) for one face, as the service's stages build them;
        ``outputs``: geometry.onnx's outputs for that face's crop."""
        crop = geo.crop
        unwrapped = unwrap(geo, self.topology)
        p_t = outputs[GEOMETRY_OUTPUTS.index("p_t")]
        if self.albedo_basis is not None:
            p_t = fit_face(self.albedo_basis, geo, unwrapped, self.topology, p_t[0], **self.fit_solver)[None]
        return unwrapped, {
            "p_t": p_t,
            "image": crop.image[None],
            "heatmaps": heatmaps(geo.landmarks_crop, crop.size)[None],
            "uv_grid": unwrapped.uv_grid[None],
            "uv_visibility": unwrapped.visibility[None, None].astype(np.float32),
        }

    def mean_shape_predictor(self):
        """The 3D baseline under this model's own placement: ICT's mean face (neutral identity, no
        expression) decoded with the model's predicted pose on the ground-truth box, so that the
        landmark error it scores is the shape's alone."""
        from training.facemodel import UVFaceModel

        mean_face = UVFaceModel.build(self.model.store.uv_size).identity_map().transpose(2, 0, 1)

        def predict(image, box):
            _, _, outputs, geo = self.geometry(image, box, False)
            face = {k: out[0] for k, out in zip(self.model.geometry_outputs, outputs) if k != "exp_weights"}
            face |= {"a_id": mean_face, "a_exp": np.zeros_like(mean_face)}
            return decode_asm(face, geo.crop, self.topology, self.pose_fields).landmarks_photo

        return predict

    def landmark_predictor(self, use_detector: bool = False, recrop_box: bool | None = None):
        """An ``aflw2000.Predictor``: (68, 3) landmarks in photo pixels, as the service's JSON gives them
        (``recrop_box`` as for :meth:`geometry`)."""

        def predict(image, box):
            return self.geometry(image, None if use_detector else box, recrop_box)[3].landmarks_photo

        return predict


def albedo_basis(npz: Path, topology: MeshTopology, components: int) -> AlbedoBasis:
    """The first ``components`` of an albedo model npz (mean (3, S, S), basis (K, 3, S, S), std (K,)) as a
    store carries them (``albedo_basis.topology_arrays``)."""
    with np.load(npz) as d:
        if len(d["std"]) < components:
            raise ValueError(f"{npz} holds {len(d['std'])} albedo components; the texture graph takes p_t of {components}")
        if d["mean"].shape[-1] != topology.size:
            raise ValueError(f"{npz} is a {d['mean'].shape[-1]}-px albedo model; the store's UV maps are {topology.size} px")
        arrays = topology_arrays(d["mean"], d["basis"][:components], d["std"][:components], topology.uv_mask)
    return AlbedoBasis.from_topology(arrays, topology.vertices)
