"""FastAPI dependencies, as ``Annotated`` aliases the routes declare."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service import errors
from service.engine.pipeline import Engine
from service.jobs import JobStore
from service.metrics import Metrics
from service.settings import Settings


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


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
EngineDep = Annotated[Engine, Depends(get_engine)]
JobsDep = Annotated[JobStore, Depends(get_jobs)]
