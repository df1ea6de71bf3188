"""The FastAPI application: ``create_app(settings)`` wires settings, metrics, the engine, the job store and the routes.

The engine loads in a background thread so that the liveness probe answers at once and readiness
turns true only once both graphs are loaded and warm.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import uuid
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from prometheus_fastapi_instrumentator import Instrumentator
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import errors
from service.jobs import JobRunner, JobStore, JobStoreError, open_job_store, store_outage_errors
from service.metrics import Metrics
from service.model_store import ModelStoreError, find_model_store
from service.openapi import install_contract_schema
from service.routes import router
from service.schemas import Options
from service.settings import Settings
from service.viewer import mount_viewer
from service.viewer.api_docs import mount_api_docs

log = logging.getLogger("service")
PROBLEM_MEDIA_TYPE = "application/problem+json"
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def problem_response(problem: errors.Problem, request: Request) -> JSONResponse:
    return JSONResponse(problem.document(request.url.path), status_code=problem.status,
                        media_type=PROBLEM_MEDIA_TYPE, headers=problem.headers)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()

    def load_engine(app: FastAPI) -> None:
        from service.engine.pipeline import Engine  # onnxruntime and dlib load here, off the event loop

        try:
            engine = Engine(settings, metrics)
        except Exception as error:  # noqa: BLE001 - reported by the readiness probe and the log
            log.exception("model failed to load")
            app.state.load_error = str(error)
            return
        app.state.engine = engine
        metrics.model_info.labels(name=engine.model.name, version=engine.model.version,
                                  providers=",".join(engine.model.providers)).set(1)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loader = threading.Thread(target=load_engine, args=(app,), name="model-loader", daemon=True)
        loader.start()
        runner = start_jobs(app)
        yield
        if runner is not None:
            runner.stop(settings.job_shutdown_s)
        loader.join(timeout=60)
        if app.state.engine is not None:
            app.state.engine.close()
        if app.state.jobs is not None:
            app.state.jobs.close()
            app.state.jobs = None

    def start_jobs(app: FastAPI) -> JobRunner | None:
        try:
            app.state.jobs = open_job_store(settings.job_store, settings.max_queued_jobs, settings.job_lease_s)
        except JobStoreError as error:
            # Synchronous reconstruction needs no store (e.g. a read-only container without a volume):
            # keep serving it, and let the job routes answer 503 with the reason.
            log.error("job store %s cannot be opened: %s", settings.job_store, error)
            app.state.jobs_error = f"the job store {settings.job_store!r} cannot be opened: {error}"
            return None
        # Workers wait for the engine themselves, so jobs are accepted while the model loads.
        runner = JobRunner(app.state.jobs, lambda: app.state.engine, settings.job_workers, settings.job_poll_s)
        runner.start()
        return runner

    app = FastAPI(title="facerecon", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  summary="Photo in, textured 3D face mesh out (expression-aware dual-stream network).")
    app.state.settings, app.state.metrics = settings, metrics
    app.state.engine, app.state.load_error = None, None
    app.state.jobs, app.state.jobs_error = None, None  # opened by the lifespan
    app.state.limiter = anyio.CapacityLimiter(settings.workers)
    app.state.model_ref = served_model(settings)
    metrics.queue_capacity.set(settings.queue_size)
    metrics.jobs_queue_capacity.set(settings.max_queued_jobs)
    # Read at each scrape, so that they are never stale.
    metrics.model_ready.set_function(lambda: float(app.state.engine is not None))
    metrics.jobs_queued.set_function(lambda: queued_jobs(app.state.jobs))
    app.include_router(router)
    mount_viewer(app)  # GET / and /viewer/: a page for people; not part of the API schema
    mount_api_docs(app)  # GET /docs: Swagger UI from the same npm build, no CDN
    # HTTP-level metrics (per handler template and status class) into the same registry as ours.
    Instrumentator(registry=metrics.registry, excluded_handlers=["/metrics"]).instrument(app)
    install_error_handlers(app)
    install_middleware(app)
    install_contract_schema(app, settings, app.state.model_ref[0])
    return app


def served_model(settings: Settings) -> tuple[str, str]:
    """(name, version) from the store's folder names, known before the model has loaded."""
    try:
        folder = find_model_store(settings.model_store, settings.model_name, settings.model_version)
        return folder.parent.name, folder.name
    except ModelStoreError:
        return settings.model_name or "unknown", settings.model_version or "unknown"


def queued_jobs(jobs: JobStore | None) -> float:
    """The jobs waiting in ``jobs``; NaN when there is no open store or it cannot answer now."""
    if jobs is None:
        return math.nan
    try:
        return float(jobs.queued())
    except Exception as error:  # noqa: BLE001 - a store outage must not fail the scrape of every other metric
        log.warning("the job store could not count its queued jobs: %s", error)
        return math.nan


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.Problem)
    async def on_problem(request: Request, problem: errors.Problem):
        return problem_response(problem, request)

    for outage in store_outage_errors():
        @app.exception_handler(outage)
        async def on_store_outage(request: Request, error: Exception):
            log.warning("job store unavailable: %s", error)
            retry = str(app.state.settings.retry_after_s)
            problem = errors.Problem(503, "job-store-unavailable", "Job store unavailable",
                                     "the job store cannot be reached right now; retry later", headers={"Retry-After": retry})
            return problem_response(problem, request)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, error: StarletteHTTPException):
        title = {404: "Not found", 405: "Method not allowed"}.get(error.status_code, "HTTP error")
        slug = title.lower().replace(" ", "-")
        problem = errors.Problem(error.status_code, slug, title, str(error.detail), headers=dict(error.headers or {}))
        return problem_response(problem, request)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, error: RequestValidationError):
        fields = [{"loc": list(e.get("loc", ())), "msg": validation_message(e)} for e in error.errors()]
        detail = "; ".join(f"{'.'.join(map(str, f['loc']))}: {f['msg']}" for f in fields) or "invalid request"
        problem = errors.Problem(422, "invalid-request", "Invalid request", detail, errors=jsonable_encoder(fields))
        return problem_response(problem, request)


def validation_message(error: dict) -> str:
    if error.get("type") == "extra_forbidden":
        # pydantic's "Extra inputs are not permitted" does not say what is allowed.
        place = "query parameter" if error.get("loc", ("",))[0] == "query" else "form field"
        return f"unknown {place}; the options are {', '.join(Options.model_fields)}"
    return error.get("msg", "")


RECONSTRUCT_PATHS = ("/v1/reconstruct", "/v1/reconstruct/batch")


class RequestGate:
    """Admission before the upload: reconstruction requests in flight, counted from their arrival,
    before their body is read. Beyond ``capacity`` a request is refused at once (503), so an overloaded
    server does not read and parse an upload only to refuse it (the engine's own bound,
    ``Engine.admit``, still holds for each photo). Used on the event loop only, so no lock."""

    def __init__(self, capacity: int):
        self.capacity, self.in_flight = capacity, 0

    def try_enter(self) -> bool:
        if self.in_flight >= self.capacity:
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1


def install_middleware(app: FastAPI) -> None:
    metrics: Metrics = app.state.metrics
    gate = app.state.gate = RequestGate(app.state.settings.queue_size)

    @app.middleware("http")
    async def request_context(request: Request, call_next):
        incoming = request.headers.get("x-request-id", "")
        request_id = incoming if REQUEST_ID.match(incoming) else uuid.uuid4().hex
        start = time.perf_counter()
        settings: Settings = app.state.settings
        length = request.headers.get("content-length", "")
        gated = request.method == "POST" and request.url.path in RECONSTRUCT_PATHS and app.state.engine is not None
        try:
            if length.isdigit() and int(length) > settings.max_upload_bytes * settings.max_batch_images + 65536:
                # Refused before the multipart body is read and spooled.
                response = problem_response(errors.too_large(
                    f"the request body is {length} bytes, over the limit",
                    max_upload_bytes=settings.max_upload_bytes), request)
            elif gated and not gate.try_enter():
                response = problem_response(errors.overloaded(
                    settings.retry_after_s, f"{settings.queue_size} requests are already in flight; retry later"), request)
            elif gated:
                try:
                    response = await call_next(request)
                finally:
                    gate.leave()
            else:
                response = await call_next(request)
        except Exception:  # noqa: BLE001 - the catch-all that keeps errors in problem+json
            log.exception("unhandled error on %s", request.url.path)
            response = problem_response(errors.Problem(500, "internal-error", "Internal error",
                                                       "an unexpected error occurred; it has been logged"), request)
        name, version = engine_ref(app)
        response.headers["X-Request-ID"] = request_id
        response.headers["X-Model-Name"], response.headers["X-Model-Version"] = name, version
        # Reconstruction requests only: job submissions and polls would swamp the latency figures.
        if request.url.path.startswith("/v1/reconstruct"):
            # The routes name the format once they have read the form (service.routes.label_format).
            fmt = getattr(request.state, "format", "unknown")
            metrics.request_duration.labels(format=fmt).observe(time.perf_counter() - start)
            metrics.requests.labels(format=fmt, outcome=outcome(response.status_code)).inc()
        return response


def engine_ref(app: FastAPI) -> tuple[str, str]:
    engine = app.state.engine
    return (engine.model.name, engine.model.version) if engine is not None else app.state.model_ref


def outcome(status: int) -> str:
    if status < 400:
        return "success"
    if status == 503:
        return "rejected"
    return "client_error" if status < 500 else "error"
