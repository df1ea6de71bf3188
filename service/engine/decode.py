"""Stage ``decode``: untrusted bytes -> an upright 8-bit RGB array, within the size limits."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service import errors

Image.init()  # registers every format plugin, so that Image.open(formats=...) knows all their names


def decode_image(data: bytes, *, max_pixels: int, formats: list[str]) -> np.ndarray:
    """(H, W, 3) uint8 RGB with the EXIF orientation applied; raises :class:`errors.Problem`."""
    image = open_image(data, max_pixels=max_pixels, formats=formats)
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise errors.undecodable(f"the image data is truncated or corrupt: {error}") from None


def open_image(data: bytes, *, max_pixels: int, formats: list[str]) -> Image.Image:
    """The image with only its header read: format and size checked, no pixel decoded yet.

    Cheap enough for the event loop, so the job API refuses what is not an image at acceptance.
    """
    if not data:
        raise errors.undecodable("the image is empty")
    try:
        with warnings.catch_warnings():
            # Pillow warns (rather than raises) between max_pixels and twice that; we check below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[f for f in formats if f in Image.OPEN])
    except UnidentifiedImageError:
        raise errors.not_an_image(f"not an image in a supported format ({', '.join(formats)})") from None
    except Image.DecompressionBombError as error:
        raise errors.too_large(str(error), max_pixels=max_pixels) from None
    except (OSError, ValueError, SyntaxError) as error:
        raise errors.undecodable(f"cannot read the image header: {error}") from None
    # Checked on the header, before any pixel is decoded: this is the decompression-bomb guard.
    width, height = image.size
    if width * height > max_pixels:
        raise errors.too_large(f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
                               max_pixels=max_pixels)
    return image


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode (greyscale, 16-bit, CMYK, palette, alpha) -> (H, W, 3) uint8 RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # Pillow's own convert("L") clips 16-bit values at 255 instead of rescaling them.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode != "F" or values.max() > 1.0 else 1.0
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels may hold anything; put them on white, as a viewer would show them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
