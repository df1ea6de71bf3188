"""RFC 9457 problem details: every error the service returns is ``application/problem+json``."""

from __future__ import annotations

from typing import Any

PROBLEM_TYPE_BASE = "https://facerecon.example/problems/"


class Problem(Exception):
    """An error with an HTTP status; ``extra`` members are added to the problem document."""

    def __init__(self, status: int, slug: str, title: str, detail: str, headers: dict[str, str] | None = None,
                 **extra: Any):
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail
        self.headers = headers or {}
        self.extra = extra

    def document(self, instance: str | None = None) -> dict[str, Any]:
        doc = {"type": PROBLEM_TYPE_BASE + self.slug, "title": self.title, "status": self.status,
               "detail": self.detail, **self.extra}
        if instance:
            doc["instance"] = instance
        return doc


def too_large(detail: str, **extra) -> Problem:
    return Problem(413, "too-large", "Payload too large", detail, **extra)


def not_an_image(detail: str) -> Problem:
    return Problem(415, "unsupported-media-type", "Not a supported image", detail)


def undecodable(detail: str) -> Problem:
    return Problem(400, "undecodable-image", "Image cannot be decoded", detail)


def bad_request(detail: str, **extra) -> Problem:
    return Problem(400, "bad-request", "Bad request", detail, **extra)


def invalid_options(place: str, names: list[str], why: str) -> Problem:
    """A 422 shaped like a validation error (``errors`` lists each name with its location)."""
    fields = [{"loc": [place, name], "msg": why} for name in names]
    return Problem(422, "invalid-request", "Invalid request", "; ".join(f"{place}.{n}: {why}" for n in names),
                   errors=fields)


def conflicting_options(names: list[str]) -> Problem:
    return Problem(422, "conflicting-option", "Conflicting option",
                   f"{', '.join(names)}: given as a query parameter and as a form field with different values; "
                   "give each option once, or the same value in both", options=names)


def box_outside_image(box, width: int, height: int) -> Problem:
    return Problem(400, "box-outside-image", "Box outside the image",
                   f"box {list(box)} lies outside the {width}x{height} image")


def no_face(detail: str) -> Problem:
    return Problem(422, "no-face", "No face found", detail)


def face_too_small(side: float, minimum: int) -> Problem:
    return Problem(422, "face-too-small", "Face too small",
                   f"the largest face is {side:.0f} px across; the minimum is {minimum} px",
                   face_px=round(side, 1), min_face_px=minimum)


def overloaded(retry_after_s: int, detail: str = "the inference queue is full; retry later") -> Problem:
    return Problem(503, "overloaded", "Service overloaded", detail, headers={"Retry-After": str(retry_after_s)})


def not_ready(detail: str, retry_after_s: int) -> Problem:
    return Problem(503, "not-ready", "Model not ready", detail, headers={"Retry-After": str(retry_after_s)})
