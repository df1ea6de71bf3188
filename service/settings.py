"""All service settings in one place; each can be set from the environment as ``FACERECON_<NAME>``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

GPU_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACERECON_", protected_namespaces=())

    # Which model to serve: <model_store>/<model_name>/<model_version>; None picks the only model
    # and its highest version (service.model_store.find_model_store).
    model_store: Path = Path("model_store")
    model_name: str | None = None
    model_version: str | None = None

    host: str = "0.0.0.0"
    port: int = 8000

    # onnxruntime
    providers: list[str] = ["CPUExecutionProvider"]
    intra_op_threads: int = Field(2, ge=0)  # 0 lets onnxruntime choose
    tensorrt_cache_dir: Path | None = None
    tensorrt_fp16: bool = True  # TensorRT engines in half precision (the providers list decides whether TensorRT runs)
    # Run an int8 store's graphs in float32 (service.engine.float_graph: weights dequantized at start-up,
    # activations not rounded; needs the onnx package, which the gpu extra has). None: float where the
    # first provider is CUDA or TensorRT, whose int8 path for these graphs has not been measured; on CPU the
    # graphs run as stored.
    float_graphs: bool | None = None

    # Input limits
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1)
    max_pixels: int = Field(40_000_000, ge=1)  # decompression-bomb guard, checked before decoding
    image_formats: list[str] = ["JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "PPM"]

    # Detection
    # yunet: OpenCV's FaceDetectorYN with service/assets/yunet (sha256-checked at start-up); hog, cnn: dlib's
    # (cnn about 1 s a photo on a CPU). docs/detection.md compares them.
    detector: Literal["yunet", "hog", "cnn"] = "yunet"
    # YuNet's model file; start-up refuses one whose sha256 is not the shipped file's.
    yunet_path: Path = Path(__file__).resolve().parent / "assets" / "yunet" / "face_detection_yunet_2023mar.onnx"
    detect_score_threshold: float = Field(0.5, ge=0.0, le=1.0)  # YuNet's faces scoring less are dropped
    # Detection runs on a copy whose long side is at most this (service.engine.detect.detection_scale);
    # in a larger photo YuNet finds faces from 32 px x long side / detect_max_side.
    detect_max_side: int = Field(640, ge=64)
    detect_upsample: int = Field(0, ge=0, le=2)  # dlib only
    min_face_px: int = Field(40, ge=1)  # smaller faces (box side in input pixels) are refused
    crop_scale: float = Field(1.6, gt=1.0)  # crop side / face box side; matches the training crops
    # A detected face may run the geometry graph twice, the second time on a crop around the first pass's
    # landmarks (service.engine.recrop). It pays for dlib's box (AFLW2000-3D mean of the yaw bins' NME
    # 8.96 -> 6.40 %, 0.7.0) and not for YuNet's calibrated crop box (7.72 -> 8.50 %). None: recrop
    # for hog and cnn only (Settings.recrops).
    recrop_detected: bool | None = None
    # Geometry on the crop and its mirror image, averaged (service.engine.mirror): a second row per face
    # in the geometry batch for a lower landmark error. Off by default: on 2 CPU cores it adds 20-40 ms
    # (p50 at or over the 150 ms goal); on a GPU it is nearly free. Needs a left-right symmetric UV layout.
    mirror_average: bool = False
    # The SH lighting refitted to the photo's seen skin under the texture stream's albedo
    # (service.engine.relight), for `shaded` and the returned `lighting`; off: the geometry graph's p_l.
    relight: bool = True
    # Fit texture.onnx's p_t to the photo's seen skin (service.engine.albedo_fit) when the store carries the
    # albedo basis for it; off: the geometry graph's p_t.
    albedo_fit: bool = True

    # Output
    default_texture_size: int = Field(512, ge=16)
    max_texture_size: int = Field(2048, ge=16)
    # `albedo` and `shaded` above the network's map size carry the photo's fine detail, a luminance ratio
    # (service.engine.texture.photo_detail); off: the map resized alone.
    texture_detail: bool = True
    # JPEG encodes a 512^2 texture in ~1 ms where PNG takes ~50-100 ms; glTF reads both.
    glb_texture_format: Literal["jpeg", "png"] = "jpeg"
    max_batch_images: int = Field(8, ge=1)
    # Poses beyond the training range are flagged in `quality` (degrees).
    max_yaw_degrees: float = 90.0
    max_pitch_degrees: float = 45.0
    max_roll_degrees: float = 30.0

    # Scheduling
    workers: int = Field(4, ge=1)  # requests processed at once (pre/post-processing threads)
    queue_size: int = Field(32, ge=1)  # requests admitted (running + waiting); beyond it, 503
    max_batch_size: int = Field(8, ge=1)  # crops per ONNX call
    max_batch_delay_ms: float = Field(5.0, ge=0)  # how long a batch waits for company (only while other requests run)
    retry_after_s: int = Field(1, ge=0)

    # Async jobs (POST /v1/jobs): a SQLite file, as a plain path or sqlite:///path (sqlite:////abs/path),
    # or Redis, redis://host:port/db or rediss://... (replicas may share it).
    job_store: str = "var/jobs.db"
    # Threads running jobs; 0 accepts and keeps jobs without running them (e.g. while draining a node).
    job_workers: int = Field(1, ge=0)
    max_queued_jobs: int = Field(64, ge=1)  # jobs waiting to run; beyond it, 503
    job_poll_s: float = Field(0.5, gt=0)  # how often idle workers look for jobs the wake-up missed
    job_shutdown_s: float = Field(10.0, ge=0)  # how long shutdown waits for running jobs; the rest re-run
    # Redis only: a job claimed by a process that stops renewing it (dead, hung) runs again after this.
    job_lease_s: float = Field(30.0, gt=0)

    @property
    def runs_float_graphs(self) -> bool:
        """Whether the graphs run in float32 (``float_graphs``, or by the first provider)."""
        gpu = self.providers[0] in GPU_PROVIDERS
        return gpu if self.float_graphs is None else self.float_graphs

    @property
    def recrops(self) -> bool:
        """Whether a detected face gets the second geometry pass (``recrop_detected``, or by detector)."""
        return self.detector != "yunet" if self.recrop_detected is None else self.recrop_detected
