"""The OpenAPI document as the server enforces it: FastAPI's, plus the limits that come from settings and
problem+json as the only error body.

FastAPI writes a response ``model`` under ``application/json`` and adds its own ``HTTPValidationError``
422 to every route with parameters; this service answers every error as ``application/problem+json``
(``service.errors``), so each error response is rewritten to say exactly that.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from PIL import Image

from service.settings import Settings

PROBLEM = "application/problem+json"
PROBLEM_SCHEMA = {"$ref": "#/components/schemas/ProblemDocument"}


def contract_schema(app: FastAPI, settings: Settings, model_name: str) -> dict[str, Any]:
    """The app's OpenAPI document with ``settings``' limits stated; built once per app."""
    schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    for path in schema["paths"].values():
        for operation in path.values():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    response["content"] = {PROBLEM: {"schema": PROBLEM_SCHEMA}}
                    if status == "422":
                        response["description"] = "An invalid, unknown or conflicting option, or no usable face"
            for parameter in operation.get("parameters", []):
                state_limits(parameter["name"], parameter["schema"], settings)
                if parameter["name"] == "name" and parameter["in"] == "path":
                    parameter["example"] = model_name  # GET /v2/models/{name}: the one this server serves
            body = operation.get("requestBody", {}).get("content", {}).get("multipart/form-data")
            # The image formats the server decodes (it reads the bytes, not the part's Content-Type). Not on the
            # batch's `images`: array parts sent with a Content-Type but no filename (schemathesis does that)
            # would reach the server as text fields, not files.
            if body is not None and "image" in components_of(schema, body):
                body["encoding"] = {"image": {"contentType": ", ".join(image_media_types(settings))}}
    components = schema["components"]["schemas"]
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for model in components.values():
        for name, property_schema in model.get("properties", {}).items():
            state_limits(name, property_schema, settings)
    return schema


def components_of(schema: dict[str, Any], content: dict[str, Any]) -> dict[str, Any]:
    """The properties of a request body's schema (a $ref into components)."""
    name = content["schema"]["$ref"].rsplit("/", 1)[-1]
    return schema["components"]["schemas"][name]["properties"]


def image_media_types(settings: Settings) -> list[str]:
    """The media types of the image formats the server decodes (``settings.image_formats``, PIL's names)."""
    Image.init()
    return list(dict.fromkeys(Image.MIME[f] for f in settings.image_formats if f in Image.MIME))


def state_limits(name: str, schema: dict[str, Any], settings: Settings) -> None:
    """Set the bounds that are settings (the models cannot know them) on an option's schema, in place."""
    if name == "texture_size" and schema.get("type") == "integer":
        schema["maximum"] = settings.max_texture_size
    elif name == "images" and schema.get("type") == "array":
        schema["maxItems"] = settings.max_batch_images


def install_contract_schema(app: FastAPI, settings: Settings, model_name: str) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = contract_schema(app, settings, model_name)
        return app.openapi_schema

    app.openapi = openapi
