"""Uploaded images: decoded and checked in the API process before a predictor sees them."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import Invalid, TooLarge

# The caps could become settings; these defaults fit phone photos with room to spare.
MAX_IMAGE_BYTES = 20_000_000  # 20 MB, in the decimal units every size is shown in
MAX_IMAGE_PIXELS = 30_000_000
# Larger images are scaled down (antialiased) before the model sees them: the sample resizes
# to 32x32 anyway, and this bounds what crosses to the predictor per request.
MAX_SIDE = 1024
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
FIELD = "file"


@dataclass(frozen=True)
class DecodedImage:
    """An upload as RGB pixels, with what it was."""

    rgb: bytes
    width: int
    height: int
    format: str
    original_width: int
    original_height: int


def _invalid(message: str) -> Invalid:
    return Invalid(f"{FIELD}: {message}", fields=[{"field": FIELD, "message": message}])


def decode_image(data: bytes, *, max_bytes: int = MAX_IMAGE_BYTES,
                 max_pixels: int = MAX_IMAGE_PIXELS) -> DecodedImage:
    """Decode an upload fully (JPEG, PNG, WebP, GIF, BMP), refusing what cannot be predicted.

    EXIF orientation is applied, transparency is composited on white, grayscale and palette
    images become RGB; the first frame of an animation is used.
    """
    if not data:
        raise _invalid("the uploaded file is empty")
    if len(data) > max_bytes:
        raise TooLarge(f"{FIELD}: the image has {len(data)} bytes; the limit is {max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise TooLarge(f"{FIELD}: the image is {width}x{height} pixels; the limit is "
                               f"{max_pixels} pixels")
            fmt = image.format or "unknown"
            if max(width, height) > MAX_SIDE:
                image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at a reduced scale
            image.load()
    except TooLarge:
        raise
    except UnidentifiedImageError as exc:
        raise _invalid("not an image this service reads; send a JPEG, PNG, WebP, GIF or BMP "
                       "file") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TooLarge(f"{FIELD}: the image has too many pixels: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _invalid(f"the {fmt_of(data)} image is damaged or truncated ({exc})") from exc
    rgb = _to_rgb(image)
    if max(rgb.size) > MAX_SIDE:
        rgb.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return DecodedImage(rgb=rgb.tobytes(), width=rgb.width, height=rgb.height, format=fmt,
                        original_width=width, original_height=height)


def fmt_of(data: bytes) -> str:
    """A format name guessed from the magic bytes, for error messages."""
    if data.startswith(b"\xff\xd8"):
        return "JPEG"
    if data.startswith(b"\x89PNG"):
        return "PNG"
    return "uploaded"


def _to_rgb(image: Image.Image) -> Image.Image:
    image = ImageOps.exif_transpose(image) or image
    if image.mode in ("P", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "La", "RGBa"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image
