"""Safe image decoding shared by the engine, the CLI and the dashboard.

Every input (a path, raw bytes or a PIL image) goes through :func:`load_image`, which
returns an upright, fully loaded 8-bit RGB image or raises
:class:`~gradcam_core.errors.ImageError` with one sentence meant for the end user.

Safety rules:

* Pillow only tries the decoders in :data:`ALLOWED_FORMATS` (``Image.open(formats=...)``),
  so exotic or hostile formats (EPS, PSD, ICNS, ICO, ...) are refused before any decoding.
* The pixel limit is checked on the header size right after ``Image.open``, before pixels
  are decoded, and does not depend on the process-global ``Image.MAX_IMAGE_PIXELS``
  (which is never modified here). Pillow's own decompression-bomb warning/error, if it
  fires, is turned into an :class:`ImageError` too.
* Truncated files are errors (``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set here).
* Decoding cost is bounded too: a JPEG's scans are counted in its bytes before decoding (a progressive
  JPEG of thousands of tiny scans costs minutes of CPU in under 1 MB), and only frame 0 of an
  animation or multi-page file is ever decoded.
"""

from __future__ import annotations

import io
import os
import re
from typing import IO

import numpy as np
from PIL import Image, ImageOps

from .errors import ImageError
from .files import open_bounded, read_bounded
from .formats import image_format_list
from .units import format_megapixels

__all__ = ["ALLOWED_FORMATS", "DEFAULT_MAX_BYTES", "MAX_JPEG_SCANS", "MAX_PIXELS", "jpeg_counts", "load_image"]

MAX_PIXELS: int = 50_000_000
"""Default limit on width x height (50 megapixels)."""

ALLOWED_FORMATS: frozenset[str] = frozenset({"PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"})
"""Pillow format names that may be decoded: the upload formats (:mod:`.formats`), and GIF, which a caller may
still pass by path or as a PIL image."""

DEFAULT_MAX_BYTES: int = 200 * 2**20

_CORRUPT = "The file is not a readable image (truncated or corrupt)."
_UNKNOWN = f"The file is not a readable image (use {image_format_list()})."

# Modes whose samples exceed 8 bits: rescaled by the image's own min..max.
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})

MAX_JPEG_SCANS: int = 100
"""Most scans (SOS markers) a JPEG may hold. libjpeg's standard progressive scripts use 10 scans (6 for
grayscale) and the most elaborate encoders' stay well under 100, while each scan can cost the decoder a
pass over the whole image: thousands of scans are a denial-of-service file, never a photograph. (libjpeg-turbo
suggests refusing more than 1000; we can afford to be stricter.)"""
MAX_JPEG_SEGMENTS: int = 10_000
"""Most marker segments a JPEG may hold: real files have tens (a large ICC profile in 64 KB pieces, a few
hundred). Pillow parses each header segment in Python (0.3 s per megabyte of empty segments), and so does
the scan count: this bounds both."""

_JPEG_ANY_MARKER = re.compile(rb"\xff[^\x00\xff]")  # 0xFF00 is a stuffed data byte, 0xFFFF a fill byte
_JPEG_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # restart markers belong to the scan
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RST0..7, SOI: no length field
_CHUNK = 1 << 16


def load_image(
    source: str | os.PathLike[str] | bytes | Image.Image,
    *,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
) -> Image.Image:
    """Decode an image safely into an upright 8-bit RGB image.

    Example: ``load_image("scan.png", max_bytes=25 * 2**20).size  # (width, height)``.

    Args:
        source: A file path, the file's raw bytes, or a PIL image (never mutated).
        max_pixels: Largest accepted width x height.
        max_bytes: Largest accepted file size in bytes (``None``: no limit). Not applied
            to PIL images.

    Returns:
        A new, fully loaded ``"RGB"`` image detached from any file, EXIF orientation
        applied, transparency composited on white, first frame of animations.

    Raises:
        ImageError: The input cannot be decoded safely (missing, empty, too large,
            unsupported format, truncated or corrupt).
        TypeError: ``source`` is of an unsupported type.
    """
    if isinstance(source, Image.Image):
        return _from_pil(source, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(read_bounded(source, max_bytes)), max_pixels)
    if isinstance(source, (str, os.PathLike)):
        with open_bounded(source, max_bytes) as handle:
            return _decode(handle, max_pixels)
    raise TypeError(
        f"load_image() expects a path, bytes or a PIL image, not {type(source).__name__}"
    )


def _decode(fp: IO[bytes], max_pixels: int) -> Image.Image:
    """Open ``fp`` with the allowlisted decoders, check the size, decode frame 0."""
    head = fp.read(1024)
    fp.seek(0)
    if head.startswith(b"\xff\xd8\xff"):  # Pillow's test for a JPEG (or MPO: frame 0 is a JPEG)
        _check_jpeg_cost(fp)
    # No warnings.catch_warnings() here: it swaps process-wide state and would have to serialise
    # decodes across threads. Our own size check runs before any pixel is decoded, and Pillow's
    # DecompressionBombError (twice its warning limit) is caught below.
    try:
        with Image.open(fp, formats=sorted(ALLOWED_FORMATS)) as img:
            _check_size(img.size, max_pixels)
            img.load()
            _check_size(img.size, max_pixels)
            return _normalise(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(_bomb_message(exc, max_pixels)) from None
    except Image.UnidentifiedImageError:
        raise ImageError(_unidentified_message(head)) from None
    except MemoryError:
        raise ImageError("The image is too large to decode in the available memory.") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file for the user
        raise ImageError(_CORRUPT) from exc


def _from_pil(img: Image.Image, max_pixels: int) -> Image.Image:
    """Normalise a caller's PIL image (current frame) without mutating it."""
    _check_size(img.size, max_pixels)
    try:
        if img.format in ("JPEG", "MPO") and getattr(img, "tile", None) and getattr(img, "fp", None) is not None:
            _check_jpeg_cost(img.fp)  # not decoded yet: its scans are still to pay for
        img.load()
        result = _normalise(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(_bomb_message(exc, max_pixels)) from None
    except MemoryError:
        raise ImageError("The image is too large to decode in the available memory.") from None
    except Exception as exc:  # noqa: BLE001
        raise ImageError(_CORRUPT) from exc
    return result  # a new image: _normalise never hands back its input


def _check_size(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError("The image has no pixels.")
    if width * height > max_pixels:
        raise ImageError(
            f"The image is {width} x {height} pixels, more than the "
            f"{format_megapixels(max_pixels)}-megapixel limit."
        )


def _check_jpeg_cost(fp: IO[bytes]) -> None:
    """Refuse a JPEG whose scans or segments would make decoding slow, from its bytes alone (``fp`` is rewound)."""
    start = fp.tell()
    try:
        fp.seek(0)
        scans, segments = jpeg_counts(fp)
    finally:
        fp.seek(start)
    if scans > MAX_JPEG_SCANS:
        raise ImageError(
            f"The JPEG file has more than {MAX_JPEG_SCANS} scans, which would make decoding it far too slow."
        )
    if segments > MAX_JPEG_SEGMENTS:
        raise ImageError(
            f"The JPEG file has more than {MAX_JPEG_SEGMENTS} marker segments, which would make reading it far too "
            "slow."
        )


def jpeg_counts(fp: IO[bytes]) -> tuple[int, int]:
    """(scans, marker segments) of the first image of a JPEG, walking its segments up to EOI.

    Markers are found the way libjpeg finds them (stray bytes and fill bytes skipped), so nothing it would
    decode escapes the count. Counting stops one past either limit. Example:
    ``jpeg_counts(open("photo.jpg", "rb"))  # (1, 9)`` for a baseline JPEG (one scan).
    """
    if fp.read(2) != b"\xff\xd8":
        return 0, 0
    scans = segments = 0
    while scans <= MAX_JPEG_SCANS and segments <= MAX_JPEG_SEGMENTS:
        if not _skip_to(fp, _JPEG_ANY_MARKER):
            break
        marker = fp.read(2)[1]
        if marker == 0xD9:  # EOI
            break
        if marker in _JPEG_STANDALONE:
            continue
        segments += 1
        length = int.from_bytes(fp.read(2), "big")
        if length < 2:
            break
        fp.seek(length - 2, os.SEEK_CUR)
        if marker == 0xDA:  # SOS: entropy-coded data follows, restart markers included
            scans += 1
            _skip_to(fp, _JPEG_SCAN_END)
    return scans, segments


def _skip_to(fp: IO[bytes], pattern: re.Pattern[bytes]) -> bool:
    """Move ``fp`` to the next match of a two-byte ``pattern``; ``False`` at the end of the file."""
    size = 256
    while chunk := fp.read(size):
        found = pattern.search(chunk)
        if found is not None:
            fp.seek(found.start() - len(chunk), os.SEEK_CUR)
            return True
        if len(chunk) > 1 and chunk.endswith(b"\xff"):
            fp.seek(-1, os.SEEK_CUR)  # the marker may straddle two reads
        size = min(size * 4, _CHUNK)
    return False


def _normalise(img: Image.Image) -> Image.Image:
    """Loaded image (any mode) -> new upright 8-bit RGB image."""
    upright = _exif_upright(img)
    mode = upright.mode
    if mode in _HIGH_DEPTH_MODES:
        return _rescale_to_rgb(upright)
    if mode == "La":
        upright = upright.convert("LA")
        mode = "LA"
    if mode in _ALPHA_MODES or upright.has_transparency_data:
        rgba = upright.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "RGB":
        return upright.copy() if upright is img else upright
    try:
        return upright.convert("RGB")
    except (ValueError, OSError):
        raise ImageError(f"The image uses an unsupported colour mode ({mode}).") from None


def _exif_upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a corrupt EXIF block leaves the image as stored."""
    try:
        upright = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - orientation is a nicety, not a reason to fail
        return img
    return img if upright is None else upright


def _rescale_to_rgb(img: Image.Image) -> Image.Image:
    """High-bit-depth grayscale -> 8-bit by the image's own finite min..max."""
    values = np.asarray(img).astype(np.float32)
    finite = np.isfinite(values)
    if not finite.all():
        values[~finite] = np.nan
    if not finite.any():
        lo = hi = 0.0
    else:
        lo = float(np.nanmin(values))
        hi = float(np.nanmax(values))
    if hi > lo:
        values -= lo
        values *= np.float32(255.0 / (hi - lo))
        np.nan_to_num(values, copy=False, nan=0.0)
        np.rint(values, out=values)
        np.clip(values, 0.0, 255.0, out=values)
        out = values.astype(np.uint8)
    else:
        # Constant image: no contrast to stretch. Zero stays black, anything else is mid-grey.
        level = 0 if hi <= 0.0 else 128
        out = np.full(values.shape, level, dtype=np.uint8)
        if not finite.all():
            out[~finite] = 0
    return Image.fromarray(out).convert("RGB")


def _bomb_message(exc: BaseException, max_pixels: int) -> str:
    """Message for Pillow's own decompression-bomb guard (it reports the pixel counts)."""
    numbers = [int(n) for n in re.findall(r"\d+", str(exc))]
    if len(numbers) < 2:
        return f"The image is larger than the {format_megapixels(max_pixels)}-megapixel limit."
    pixels, pillow_limit = numbers[0], numbers[1]
    limit = min(pillow_limit, max_pixels)  # Pillow's process-wide guard may be the stricter one
    return (
        f"The image has {format_megapixels(pixels)} megapixels, more than the "
        f"{format_megapixels(limit)}-megapixel limit."
    )


# (prefix bytes, offset, user-facing name) of common files we refuse to decode.
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"8BPS", 0, "Photoshop (PSD)"),
    (b"%!PS", 0, "PostScript (EPS)"),
    (b"\xc5\xd0\xd3\xc6", 0, "PostScript (EPS)"),
    (b"%PDF", 0, "PDF"),
    (b"icns", 0, "Apple icon (ICNS)"),
    (b"\x00\x00\x00\x0cjP  ", 0, "JPEG 2000"),
    (b"\xff\x4f\xff\x51", 0, "JPEG 2000"),
    (b"qoif", 0, "QOI"),
    (b"DDS ", 0, "DirectDraw Surface (DDS)"),
    (b"ftypheic", 4, "HEIC"),
    (b"ftypheix", 4, "HEIC"),
    (b"ftypmif1", 4, "HEIF"),
    (b"ftypavif", 4, "AVIF"),
    (b"DICM", 128, "DICOM"),
)


def _unidentified_message(head: bytes) -> str:
    """Name the real format of a refused file when it is a well-known one."""
    label = None
    for magic, offset, name in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            label = name
            break
    if label is None and _looks_like_ico(head):
        label = "Windows icon (ICO)"
    if label is None and b"<svg" in head.lower():
        label = "SVG"
    if label is not None:
        return f"The file is in the {label} format, which is not supported (use {image_format_list()})."
    if head.startswith(b"PK\x03\x04"):
        return "The file is a ZIP archive, not an image."
    return _UNKNOWN


def _looks_like_ico(head: bytes) -> bool:
    """ICO header: reserved 0, type 1, 1..255 entries, first entry's reserved byte 0."""
    return (
        head[:4] == b"\x00\x00\x01\x00"
        and head[4:5] != b"\x00"
        and head[5:6] == b"\x00"
        and head[9:10] == b"\x00"
    )

