"""schemathesis hooks for fuzzing the facerecon API (loaded by benchmarks/fuzz.py through SCHEMATHESIS_HOOKS).

The schema says which image formats ``image`` and ``images`` may hold (their multipart ``encoding``), but
no schema can say "a photo with a face in it"; bytes drawn at random are (rightly) a 415. So each of those
media types gets a strategy: the photo at ``$FACERECON_FUZZ_PHOTO`` saved in that format. schemathesis
uses them for schema-valid parts; schema-invalid cases keep their drawn bytes.
"""

from __future__ import annotations

import io
import os

import schemathesis
from hypothesis import strategies as st
from PIL import Image

# Refusals of a schema-valid request that depend on the photo, or on two places of the same option,
# which a schema cannot state (docs/api.md); any other problem type is a contract failure.
CONTENT_REFUSALS = {"box-outside-image", "face-too-small", "no-face", "conflicting-option"}
STATE_STATUSES = {404, 409}  # an unknown job id, a job not (yet) succeeded
FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP", "image/bmp": "BMP",
           "image/tiff": "TIFF", "image/x-portable-anymap": "PPM"}


def _encoded(photo: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    photo.save(buffer, format=fmt)
    return buffer.getvalue()


_PHOTO = Image.open(os.environ["FACERECON_FUZZ_PHOTO"]).convert("RGB")
for _media_type, _fmt in FORMATS.items():
    schemathesis.openapi.media_type(_media_type, st.just(_encoded(_PHOTO, _fmt)))


@schemathesis.check
def schema_valid_request_refused_only_for_content(ctx, response, case):
    """A schema-valid request may get a 4xx only for its photo's content, a conflict or a job's state."""
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if not positive or not 400 <= response.status_code < 500 or response.status_code in STATE_STATUSES:
        return None
    try:
        slug = str(response.json().get("type", "")).rsplit("/", 1)[-1]
    except ValueError:
        slug = ""
    if slug not in CONTENT_REFUSALS:
        raise AssertionError(f"a schema-valid request was refused with {response.status_code} {slug or '(no type)'}: "
                             f"{response.text[:300]}")
    return None
