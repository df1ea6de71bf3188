"""The HTTP routes; thin: parse, hand to the engine off the event loop, wrap the answer."""

from __future__ import annotations

import asyncio
import anyio
from fastapi import APIRouter, Request, Response, UploadFile
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service import errors
from service.dependencies import BatchRequest, EngineDep, JobsDep, MetricsDep, ReconstructRequest, SettingsDep
from service.engine.decode import open_image
from service.engine.pipeline import Engine, checked_texture_size
from service.jobs import Job, JobStore
from service.schemas import (
    BatchItem, BatchResult, Format, JobInfo, JobStatus, Live, ModelMetadata, Options, Ready, ReconstructResult,
    TensorMetadata,
)
from service.settings import Settings

# operationId = the handler's name: short, stable, and what the OpenAPI links below refer to.
router = APIRouter(generate_unique_id_function=lambda route: route.name)

PROBLEM_CONTENT = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDocument"}}}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again",
                               "schema": {"type": "integer", "minimum": 0}}}
PROBLEM_RESPONSES = {
    code: {"content": PROBLEM_CONTENT, "description": text} | ({"headers": RETRY_AFTER} if code == 503 else {})
    for code, text in {400: "Undecodable image, a box outside the image or an option beyond the server's limits",
                       413: "Upload or image too large", 415: "Not a supported image",
                       422: "No face, face too small, an invalid, unknown or conflicting option",
                       503: "Queue full, model not ready or job store unavailable (see Retry-After)",
                       404: "No such job or model", 409: "The job has not succeeded (yet)"}.items()
}
MESH_CONTENT = {"model/gltf-binary": {"schema": {"type": "string", "contentMediaType": "model/gltf-binary"}},
                "application/zip": {"schema": {"type": "string", "contentMediaType": "application/zip"}},
                "application/json": {"schema": {"$ref": "#/components/schemas/ReconstructResult"}}}
MESH_RESPONSES = {200: {"content": MESH_CONTENT, "model": ReconstructResult,
                        "description": "GLB, OBJ zip (OBJ + MTL + PNG + result.json) or JSON, as `format` asks"}}
# The stateful fuzzer (and a client generator) follows these from a new job to its status and result.
JOB_LINKS = {"status": {"operationId": "job_status", "parameters": {"job_id": "$response.body#/id"},
                        "description": "poll the job"},
             "result": {"operationId": "job_result", "parameters": {"job_id": "$response.body#/id"},
                        "description": "fetch the result once the job has succeeded"}}
JOB_ACCEPTED = {202: {"description": "Accepted: stored and queued", "links": JOB_LINKS,
                      "headers": {"Location": {"description": "the job's status URL", "schema": {"type": "string"}}}}}
EXTENSIONS = {"glb": "glb", "obj": "zip", "json": "json"}


def problems(*codes: int) -> dict:
    return {code: PROBLEM_RESPONSES[code] for code in codes}


INPUT_PROBLEMS = problems(400, 413, 415, 422, 503)


async def read_upload(upload: UploadFile, settings: Settings) -> bytes:
    data = await upload.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise errors.too_large(f"the upload is over {settings.max_upload_bytes} bytes",
                               max_upload_bytes=settings.max_upload_bytes)
    return data


def label_format(request: Request, fmt: str) -> None:
    """The ``format`` label of this request's latency and outcome metrics (recorded by the app's middleware)."""
    request.state.format = fmt


async def run_engine(request: Request, engine: Engine, data: bytes, options: Options):
    with engine.admit():
        return await anyio.to_thread.run_sync(engine.reconstruct, data, options,
                                              limiter=request.app.state.limiter)


@router.post("/v1/reconstruct", responses={**MESH_RESPONSES, **INPUT_PROBLEMS}, summary="Photo in, 3D face out")
async def reconstruct(request: Request, engine: EngineDep, settings: SettingsDep, upload: ReconstructRequest) -> Response:
    options = upload.options
    label_format(request, options.format.value)
    data = await read_upload(upload.images[0], settings)
    out = await run_engine(request, engine, data, options)
    headers = {"X-Faces": str(len(out.result.faces))}
    if options.format is not Format.json:
        headers["Content-Disposition"] = f'attachment; filename="face.{EXTENSIONS[options.format.value]}"'
    return Response(out.body, media_type=out.media_type, headers=headers)


@router.post("/v1/reconstruct/batch", response_model=BatchResult, responses=INPUT_PROBLEMS,
             summary="Several photos in one request; JSON figures per photo")
async def reconstruct_batch(request: Request, engine: EngineDep, settings: SettingsDep,
                            upload: BatchRequest) -> BatchResult:
    options = upload.options
    label_format(request, "batch")
    checked_texture_size(options, settings)  # refused whole, not as a failed item per photo

    async def one(upload: UploadFile) -> BatchItem:
        try:
            out = await run_engine(request, engine, await read_upload(upload, settings), options)
            return BatchItem(filename=upload.filename, result=out.result)
        except errors.Problem as problem:
            return BatchItem(filename=upload.filename, problem=problem.document())

    # Side by side, so that the photos share micro-batches.
    items = await asyncio.gather(*(one(u) for u in upload.images))
    return BatchResult(model=engine.ref, items=list(items))


async def find_job(jobs: JobStore, job_id: str) -> Job:
    job = await anyio.to_thread.run_sync(jobs.get, job_id)
    if job is None:
        raise errors.Problem(404, "not-found", "No such job", f"there is no job {job_id!r}")
    return job


@router.post("/v1/jobs", status_code=202, response_model=JobInfo, responses={**JOB_ACCEPTED, **INPUT_PROBLEMS},
             summary="Queue a reconstruction (same fields as /v1/reconstruct); poll Location, then fetch /result")
async def submit_job(response: Response, jobs: JobsDep, settings: SettingsDep, upload: ReconstructRequest) -> JobInfo:
    image, options = upload.images[0], upload.options
    data = await read_upload(image, settings)
    # What can be refused without the model is refused now, rather than as a failed job later.
    open_image(data, max_pixels=settings.max_pixels, formats=settings.image_formats)
    checked_texture_size(options, settings)
    job = await anyio.to_thread.run_sync(jobs.submit, data, options, image.filename)  # fsyncs: off the loop
    if job is None:
        raise errors.overloaded(settings.retry_after_s, f"{settings.max_queued_jobs} jobs are already waiting")
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job.info()


@router.get("/v1/jobs/{job_id}", response_model=JobInfo, responses=problems(404, 503), summary="A job's status")
async def job_status(job_id: str, jobs: JobsDep) -> JobInfo:
    return (await find_job(jobs, job_id)).info()


@router.get("/v1/jobs/{job_id}/result", responses={**MESH_RESPONSES, **problems(404, 409, 503)},
            summary="A succeeded job's result: the bytes /v1/reconstruct would have returned")
async def job_result(job_id: str, jobs: JobsDep, settings: SettingsDep) -> Response:
    job = await find_job(jobs, job_id)
    if job.status is JobStatus.failed:
        raise errors.Problem(409, "job-failed", "Job failed", f"the job failed: {job.problem['detail']}",
                             problem=job.problem)
    if job.status is not JobStatus.succeeded:
        raise errors.Problem(409, "job-not-finished", "Job not finished", f"the job is {job.status.value}",
                             headers={"Retry-After": str(settings.retry_after_s)})
    body = await anyio.to_thread.run_sync(jobs.result, job_id)
    extension = EXTENSIONS[job.options.format.value]
    return Response(body, media_type=job.media_type,
                    headers={"Content-Disposition": f'attachment; filename="face.{extension}"'})


@router.get("/v2/health/live", response_model=Live)
async def live() -> Live:
    return Live(live=True)


@router.get("/v2/health/ready", response_model=Ready, responses={503: PROBLEM_RESPONSES[503]})
async def ready(engine: EngineDep) -> Ready:
    return Ready(ready=True)


@router.get("/v2/models/{name}", response_model=ModelMetadata, responses=problems(404, 503))
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
        providers=engine.model.providers, float_graphs=engine.model.float_graphs, input_size=store.input_size, uv_size=store.uv_size,
        evaluation=store.manifest["evaluation"],
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(metrics: MetricsDep) -> Response:
    # Off the event loop: collecting asks the job store how many jobs wait (a Redis round trip).
    body = await anyio.to_thread.run_sync(generate_latest, metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
