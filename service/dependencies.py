"""FastAPI dependencies, as ``Annotated`` aliases the routes declare."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Form, Query, Request, UploadFile

from service import errors
from service.engine.pipeline import Engine
from service.jobs import JobStore
from service.metrics import Metrics
from service.schemas import BatchForm, BatchOptions, Options, ReconstructForm
from service.settings import Settings

MULTIPART = "multipart/form-data"
O = TypeVar("O", bound=Options)


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_engine(request: Request) -> Engine:
    state = request.app.state
    if state.engine is None:
        detail = f"the model failed to load: {state.load_error}" if state.load_error else "the model is loading"
        raise errors.not_ready(detail, state.settings.retry_after_s)
    return state.engine


def get_jobs(request: Request) -> JobStore:
    state = request.app.state
    if state.jobs is None:
        raise errors.not_ready(state.jobs_error or "the job store is not open", state.settings.retry_after_s)
    return state.jobs


def merge_options(query: Options, form: Options, model: type[O]) -> O:
    """The one rule for options: each may come as a query parameter or as a form field; given in both
    places, the two must mean the same (``box=1,2,3,4`` equals ``box=3,4,1,2``), or the request is a 422
    naming the option. Names neither place knows were refused by the models (``extra="forbid"``)."""
    both = sorted(query.model_fields_set & form.model_fields_set)
    conflicts = [name for name in both if getattr(query, name) != getattr(form, name)]
    if conflicts:
        raise errors.conflicting_options(conflicts)
    given = {name: getattr(form, name) for name in form.model_fields_set if name in model.model_fields}
    given |= {name: getattr(query, name) for name in query.model_fields_set}
    return model.model_validate(given)


async def refuse_repeated_options(request: Request) -> None:
    """An option given twice in the query or twice in the form is refused, not resolved by the last value."""
    for place, items in (("query", request.query_params.multi_items()), ("form", (await request.form()).multi_items())):
        repeated = sorted(n for n, count in Counter(name for name, _ in items).items()
                          if count > 1 and n in Options.model_fields)
        if repeated:
            raise errors.invalid_options(place, repeated, "given more than once")


@dataclass
class Upload:
    """The uploaded photos (one for /v1/reconstruct and /v1/jobs) and the options that apply to them."""

    images: list[UploadFile]
    options: Options


async def reconstruct_request(request: Request, query: Annotated[Options, Query()],
                              form: Annotated[ReconstructForm, Form(media_type=MULTIPART)]) -> Upload:
    """The photo and its options from the query and the multipart body (``merge_options``'s rule)."""
    await refuse_repeated_options(request)
    return Upload([form.image], merge_options(query, form, Options))


async def batch_request(request: Request, query: Annotated[BatchOptions, Query()],
                        form: Annotated[BatchForm, Form(media_type=MULTIPART)]) -> Upload:
    """The photos and their options, as ``reconstruct_request``; the batch answers JSON only."""
    await refuse_repeated_options(request)
    settings: Settings = request.app.state.settings
    if len(form.images) > settings.max_batch_images:
        raise errors.invalid_options("body", ["images"], f"{len(form.images)} images; at most "
                                     f"{settings.max_batch_images} per batch (max_batch_images)")
    if any(upload.size == 0 for upload in form.images):
        # Refused whole, as the schema's minLength says, rather than as a 200 with a failed item.
        raise errors.invalid_options("body", ["images"], "an image is empty")
    return Upload(form.images, merge_options(query, form, BatchOptions))


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
EngineDep = Annotated[Engine, Depends(get_engine)]
JobsDep = Annotated[JobStore, Depends(get_jobs)]
ReconstructRequest = Annotated[Upload, Depends(reconstruct_request)]
BatchRequest = Annotated[Upload, Depends(batch_request)]
