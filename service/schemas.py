"""Every request option and response body of the HTTP API."""

from __future__ import annotations

import math
from datetime import datetime
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Format(str, Enum):
    glb = "glb"
    obj = "obj"
    json = "json"


class TextureKind(str, Enum):
    albedo = "albedo"
    shaded = "shaded"
    photo = "photo"


class FaceSelection(str, Enum):
    largest = "largest"
    all = "all"


class MeshKind(str, Enum):
    full = "full"
    identity = "identity"
    expression = "expression"


class Options(BaseModel):
    """The options of ``POST /v1/reconstruct`` (multipart form fields next to ``image``)."""

    format: Format = Format.glb
    texture: TextureKind = TextureKind.albedo
    faces: FaceSelection = FaceSelection.largest
    box: tuple[float, float, float, float] | None = Field(
        None, description="x0,y0,x1,y1 in input pixels (after EXIF orientation); skips detection and is used "
                          "as given: the face's 68-landmark bounding box suits it best (the crop is crop_scale x its "
                          "longer side)")
    texture_size: int | None = Field(None, ge=16, description="side of the square texture; server default if absent")
    mesh: MeshKind = MeshKind.full

    @field_validator("box", mode="before")
    @classmethod
    def _parse_box(cls, value):
        if value is None:
            return None
        # A form field arrives as a one-element list when the field type is a sequence.
        if isinstance(value, (list, tuple)) and len(value) == 1 and isinstance(value[0], str):
            value = value[0]
        if isinstance(value, str):
            value = [p for p in value.replace(" ", "").split(",") if p]
        try:
            x0, y0, x1, y1 = (float(v) for v in value)
        except (TypeError, ValueError):  # not four things, or not numbers
            raise ValueError("box must be four numbers x0,y0,x1,y1") from None
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or not (0 <= x0 < x1 and 0 <= y0 < y1):
            raise ValueError("box must be finite and satisfy 0 <= x0 < x1 and 0 <= y0 < y1")
        return x0, y0, x1, y1


class ModelRef(BaseModel):
    name: str
    version: str


class Pose(BaseModel):
    yaw: float = Field(description="degrees; positive turns the nose to the image's right")
    pitch: float = Field(description="degrees; positive turns the nose down")
    roll: float = Field(description="degrees; positive is counter-clockwise on screen")
    translation: tuple[float, float] = Field(description="input-image pixels where the head origin projects")
    scale: float = Field(description="input-image pixels per metre of the head")


class Quality(BaseModel):
    texture_coverage: float = Field(description="share of the face's UV texels seen in the photo, [0, 1]")
    landmark_agreement: float | None = Field(
        description="mean distance between the model's and dlib's 68 landmarks over the box diagonal "
                    "(lower is better); null when dlib's predictor is unavailable")
    pose_out_of_range: list[str] = Field(description="angles beyond the training range")


class Face(BaseModel):
    box: tuple[float, float, float, float]
    score: float | None = Field(description="detector score: YuNet's confidence in [0, 1], dlib HOG's SVM margin or "
                                            "CNN's confidence; null for a caller's box")
    detector: str = Field(description="what found the face: yunet, hog, cnn, or caller (the request's box)")
    landmarks68: list[tuple[float, float, float]] = Field(
        description="68 iBUG landmarks [x, y, z] in input pixels; z in the same scale, positive away from "
                    "the camera, relative to the head origin. Fixed points of the reconstructed face, as "
                    "AFLW2000-3D's: a jaw point of the side turned away stays on the hidden jaw, not on the silhouette")
    pose: Pose
    blendshapes: dict[str, float] | None = Field(
        description="weights in [0, 1] keyed by the model's expression names, or by index when it has none")
    lighting: list[list[float]] = Field(description="second-order SH, 9 coefficients x RGB")
    quality: Quality


class ReconstructResult(BaseModel):
    model: ModelRef
    faces: list[Face]
    timings_ms: dict[str, float]


class BatchItem(BaseModel):
    filename: str | None
    result: ReconstructResult | None = None
    problem: dict | None = None


class BatchResult(BaseModel):
    model: ModelRef
    items: list[BatchItem]


class ProblemDocument(BaseModel):
    # RFC 9457 extension members (e.g. min_face_px) ride along.
    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


class JobStatus(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class JobInfo(BaseModel):
    """An async job (``POST /v1/jobs``); its result is at ``result_url`` once it has succeeded."""

    id: str
    status: JobStatus
    filename: str | None
    options: Options
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result_url: str | None = Field(None, description="set once the job has succeeded")
    media_type: str | None = Field(None, description="media type of the result, once the job has succeeded")
    problem: ProblemDocument | None = Field(None, description="why the job failed, as the synchronous call would say")


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool
    detail: str | None = None


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int | str]


class ModelMetadata(BaseModel):
    """Open Inference Protocol model metadata, plus the texture graph and the providers in use."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parts: dict[str, dict[str, list[TensorMetadata]]]
    providers: list[str]
    input_size: int
    uv_size: int
    evaluation: dict
