"""Every request option and response body of the HTTP API."""

from __future__ import annotations

import math
import re
from datetime import datetime
from enum import Enum
from typing import Annotated, Literal

from fastapi import UploadFile
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema


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


class Region(str, Enum):
    face = "face"
    head = "head"


# One coordinate: a plain decimal of at most 8 integer digits, so that every match is a finite float.
_COORDINATE = r"[0-9]{1,8}(?:\.[0-9]{1,8})?"
BOX_PATTERN = rf"^ *{_COORDINATE} *(?:, *{_COORDINATE} *){{3}}$"
MIN_TEXTURE_SIZE = 16
# An uploaded file: any bytes but none. `format: binary` (OpenAPI 3.0's spelling, kept beside 3.1's
# contentMediaType) tells tools that a part's bytes are opaque: a number sent as a file is still a file.
FILE = {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream", "minLength": 1}


def parse_box(value):
    """``"x0,y0,x1,y1"`` (the request form, see BOX_PATTERN) or four numbers (a stored job) -> (x0, y0, x1, y1)
    with x0 <= x1 and y0 <= y1: the two corners may come in either order."""
    if value is None:
        return None
    # FastAPI hands a form field whose type is a sequence over as the list of its values.
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        value = value[0]
    if isinstance(value, str):
        if not re.fullmatch(BOX_PATTERN, value):
            raise ValueError("box must be four non-negative numbers x0,y0,x1,y1")
        value = value.split(",")
    try:
        x0, y0, x1, y1 = (float(v) for v in value)
    except (TypeError, ValueError):  # not four things, or not numbers
        raise ValueError("box must be four non-negative numbers x0,y0,x1,y1") from None
    if not all(math.isfinite(v) and v >= 0 for v in (x0, y0, x1, y1)):
        raise ValueError("box must be four non-negative numbers x0,y0,x1,y1")
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


# What a request may send, stated in the request-side schema (the stored and echoed options keep the parsed
# values: box as four numbers); an absent option is simply left out, so neither admits null.
Box = Annotated[tuple[float, float, float, float] | None, BeforeValidator(parse_box), WithJsonSchema(
    {"type": "string", "pattern": BOX_PATTERN,
     "description": "two opposite corners x0,y0,x1,y1 in input pixels (after EXIF orientation), in either order, "
                    "e.g. 40,30,160,150; "
                    "skips detection and is used as given, without the recrop a detected face gets: the face's "
                    "68-landmark bounding box suits it best (the crop is crop_scale x its longer side). A box "
                    "that misses the image is a 400, one under min_face_px a 422"}, mode="validation")]
TextureSize = Annotated[int | None, Field(ge=MIN_TEXTURE_SIZE), WithJsonSchema(
    {"type": "integer", "minimum": MIN_TEXTURE_SIZE,
     "description": "side of the square texture in texels; the server's default if absent"}, mode="validation")]


class Options(BaseModel):
    """The options of the reconstruction routes, as query parameters or multipart form fields (see
    ``service.dependencies.merge_options`` for the rule when both are given); unknown names are refused."""

    model_config = ConfigDict(extra="forbid")

    format: Format = Format.glb
    texture: TextureKind = TextureKind.albedo
    faces: FaceSelection = FaceSelection.largest
    box: Box = None
    texture_size: TextureSize = None
    mesh: MeshKind = MeshKind.full
    morph_targets: bool = Field(
        False, description="GLB only: the 53 blendshapes as glTF morph targets (ARKit names in "
                           "mesh.extras.targetNames, default weights: the fitted ones, 0 for mesh=identity), so "
                           "that a glTF tool can animate the face; about 2.3 MB more per face")
    region: Region = Field(
        Region.face, description="GLB and OBJ: `face`, ICT-FaceKit's face region and eyeballs; `head`, ICT's "
                                 "whole head around them (ears, neck, back of the head, mouth and eye sockets, teeth, "
                                 "gums and tongue) "
                                 "from the fitted model, skin colour where the photo cannot show it")


class BatchOptions(Options):
    """The batch route answers JSON only: ``format`` may be left out or be ``json``."""

    format: Literal[Format.json] = Format.json


class ReconstructForm(Options):
    """The multipart body of ``POST /v1/reconstruct`` and ``POST /v1/jobs``: the photo and any options."""

    image: Annotated[UploadFile, WithJsonSchema(
        {**FILE, "description": "JPEG, PNG, WebP, BMP, TIFF or PPM; not empty"}, mode="validation")]


class BatchForm(BatchOptions):
    """The multipart body of ``POST /v1/reconstruct/batch``: the photos and any options."""

    images: Annotated[list[UploadFile], Field(min_length=1), WithJsonSchema(
        {"type": "array", "minItems": 1, "description": "the photos, at least one and at most the server's "
                                                       "max_batch_images; each not empty",
         "items": FILE},
        mode="validation")]


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
    float_graphs: bool = Field(description="whether an int8 store's graphs run in float32 (FACERECON_FLOAT_GRAPHS)")
    input_size: int
    uv_size: int
    evaluation: dict
