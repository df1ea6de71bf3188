"""The HTTP routes; thin: parse, hand to the engine off the event loop, wrap the answer."""

from __future__ import annotations

import asyncio
from typing import Annotated

import anyio
from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service import errors
from service.dependencies import EngineDep, MetricsDep, SettingsDep
from service.engine.pipeline import Engine
from service.schemas import (
    BatchItem, BatchResult, Format, Live, ModelMetadata, Options, ProblemDocument, Ready, ReconstructResult,
    TensorMetadata,
)
from service.settings import Settings

router = APIRouter()

PROBLEM_RESPONSES = {
    code: {"model": ProblemDocument, "content": {"application/problem+json": {}}, "description": text}
    for code, text in {400: "Undecodable image or invalid option", 413: "Upload or image too large",
                       415: "Not a supported image", 422: "No face, face too small or invalid field",
                       503: "Queue full or model not ready (see Retry-After)"}.items()
}
MESH_RESPONSES = {200: {"content": {"model/gltf-binary": {}, "application/zip": {}, "application/json": {}},
                        "model": ReconstructResult,
                        "description": "GLB, OBJ zip (OBJ + MTL + PNG + result.json) or JSON"}}
EXTENSIONS = {"glb": "glb", "obj": "zip", "json": "json"}


async def read_upload(upload: UploadFile, settings: Settings) -> bytes:
    data = await upload.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise errors.too_large(f"the upload is over {settings.max_upload_bytes} bytes",
                               max_upload_bytes=settings.max_upload_bytes)
    return data


async def run_engine(request: Request, engine: Engine, data: bytes, options: Options):
    with engine.admit():
        return await anyio.to_thread.run_sync(engine.reconstruct, data, options,
                                              limiter=request.app.state.limiter)


@router.post("/v1/reconstruct", responses={**MESH_RESPONSES, **PROBLEM_RESPONSES}, summary="Photo in, 3D face out")
async def reconstruct(request: Request, engine: EngineDep, settings: SettingsDep,
                      image: Annotated[UploadFile, File(description="JPEG, PNG, WebP, BMP or TIFF")],
                      options: Annotated[Options, Form()]) -> Response:
    data = await read_upload(image, settings)
    out = await run_engine(request, engine, data, options)
    headers = {"X-Faces": str(len(out.result.faces))}
    if options.format is not Format.json:
        headers["Content-Disposition"] = f'attachment; filename="face.{EXTENSIONS[options.format.value]}"'
    return Response(out.body, media_type=out.media_type, headers=headers)


@router.post("/v1/reconstruct/batch", response_model=BatchResult, responses=PROBLEM_RESPONSES,
             summary="Several photos in one request; JSON figures per photo")
async def reconstruct_batch(request: Request, engine: EngineDep, settings: SettingsDep,
                            images: Annotated[list[UploadFile], File(description="up to max_batch_images photos")],
                            options: Annotated[Options, Form()]) -> BatchResult:
    if len(images) > settings.max_batch_images:
        raise errors.too_large(f"{len(images)} images; at most {settings.max_batch_images} per batch",
                               max_batch_images=settings.max_batch_images)
    if options.format is not Format.json:
        raise errors.bad_request("the batch endpoint returns JSON only; use format=json")

    async def one(upload: UploadFile) -> BatchItem:
        try:
            out = await run_engine(request, engine, await read_upload(upload, settings), options)
            return BatchItem(filename=upload.filename, result=out.result)
        except errors.Problem as problem:
            return BatchItem(filename=upload.filename, problem=problem.document())

    # Side by side, so that the photos share micro-batches.
    items = await asyncio.gather(*(one(u) for u in images))
    return BatchResult(model=engine.ref, items=list(items))


@router.get("/v2/health/live", response_model=Live)
async def live() -> Live:
    return Live(live=True)


@router.get("/v2/health/ready", response_model=Ready, responses={503: PROBLEM_RESPONSES[503]})
async def ready(engine: EngineDep) -> Ready:
    return Ready(ready=True)


@router.get("/v2/models/{name}", response_model=ModelMetadata, responses={404: {"model": ProblemDocument}})
async def model_metadata(name: str, engine: EngineDep) -> ModelMetadata:
    store = engine.model.store
    if name != store.name:
        raise errors.Problem(404, "not-found", "No such model", f"this server serves {store.name!r}, not {name!r}")

    def tensors(entries):
        return [TensorMetadata(name=e["name"], datatype=e["dtype"].upper(),
                               shape=[-1 if isinstance(d, str) else d for d in e["shape"]]) for e in entries]

    parts = {p: {"inputs": tensors(store.onnx_inputs(p)), "outputs": tensors(store.onnx_outputs(p))}
             for p in store.parts}
    return ModelMetadata(
        name=store.name, versions=[store.version], platform="onnxruntime_onnx",
        inputs=parts["geometry"]["inputs"], outputs=parts["geometry"]["outputs"], parts=parts,
        providers=engine.model.providers, input_size=store.input_size, uv_size=store.uv_size,
        evaluation=store.manifest["evaluation"],
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
