"""DICOM images: decoding with pydicom, modality rescale, window/level and 8-bit RGB rendering.

DICOM files are kept apart from :func:`~gradcam_core.imaging.load_image` on purpose: their
pixels are measurements (Hounsfield units, signal intensities, ...) on up to 16 bits or more,
and what the model and the user see depends on a window chosen by the user. The pipeline is:

1. :func:`read_dicom` decodes every frame and applies the Modality LUT (Rescale Slope and
   Intercept, or a Modality LUT Sequence), keeping the values at full depth as float32.
2. :func:`render_frame` applies a linear window (DICOM PS3.3 C.11.2.1.2) to one frame,
   inverts MONOCHROME1 and returns an 8-bit RGB image (grey replicated), ready for
   :func:`~gradcam_core.explain.explain` and for display. Colour DICOMs are returned as RGB
   without windowing.

Privacy: nothing identifying ever leaves this module. :meth:`DicomImage.summary` holds only
technical fields, and error messages never quote a value read from the file (nor the file's
name, which often carries a patient's name).

Every failure is an :class:`~gradcam_core.errors.ImageError` with one sentence.
"""

from __future__ import annotations

import io
import math
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from PIL import Image

from .errors import ImageError
from .files import read_bounded
from .imaging import DEFAULT_MAX_BYTES, MAX_JPEG_SCANS, MAX_PIXELS, jpeg_counts
from .units import format_megapixels, format_size, plural

__all__ = ["DicomImage", "Window", "apply_window", "is_dicom", "percentile_window", "read_dicom", "render_frame"]

_CORRUPT = "The file is not a readable DICOM file (truncated or corrupt)."
_NOT_DICOM = "The file is not a DICOM file (it has no DICM marker)."
_NO_PIXELS = "The DICOM file has no pixel data."

_GREY = frozenset({"MONOCHROME1", "MONOCHROME2"})
# Colour spaces the decoders turn into RGB (as_rgb=True) or that convert_color_space handles.
_COLOR = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT"})
_PALETTE = "PALETTE COLOR"
# Only these enumerated values are ever shown or quoted: a file can hold anything in any element.
_PHOTOMETRICS = frozenset(
    {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "HSV", "ARGB", "CMYK", "YBR_FULL", "YBR_FULL_422",
     "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "XYB"}
)
_MODALITIES = frozenset(
    """AR ASMT AU BDUS BI BMD CD CF CFM CP CR CS CT CTPROTOCOL DD DF DG DM DMS DOC DS DX EC ECG EEG EMG EOG EPS
    ES FA FID FS GM HC HD IO IOL IVOCT IVUS KER KO LEN LP LS M3D MA MG MR MS NM OAM OCT OP OPM OPR OPT OPTBSV
    OPTENF OPV OSS OT PLAN POS PR PT PX REG RESP RF RG RTDOSE RTIMAGE RTINTENT RTPLAN RTRAD RTRECORD RTSEGANN
    RTSTRUCT RWV SEG SM SMR SR SRF ST STAIN TEXTUREMAP TG US VA VF XA XAPROTOCOL XC""".split()
)
_DEFLATED_UID = b"1.2.840.10008.1.2.1.99"


@dataclass(frozen=True)
class Window:
    """A linear VOI window in modality units (e.g. Hounsfield units for CT).

    Attributes:
        center: Window centre (level).
        width: Window width, > 0.
    """

    center: float
    width: float

    def __post_init__(self) -> None:
        if isinstance(self.center, bool) or isinstance(self.width, bool):
            raise ImageError("The window centre and width must be numbers.")
        try:
            center, width = float(self.center), float(self.width)
        except (TypeError, ValueError):
            raise ImageError("The window centre and width must be numbers.") from None
        if not math.isfinite(center):
            raise ImageError("The window centre must be a finite number.")
        if not (math.isfinite(width) and width > 0):
            raise ImageError("The window width must be a positive number.")
        object.__setattr__(self, "center", center)
        object.__setattr__(self, "width", width)


@dataclass(frozen=True, eq=False)
class DicomImage:
    """A decoded DICOM image; no identifying attribute of the file is kept.

    Attributes:
        frames: Read-only float32 pixel values. Greyscale: ``(F, H, W)`` in modality units (Modality
            LUT or Rescale Slope/Intercept applied, full depth). Colour: ``(F, H, W, 3)`` RGB samples
            in ``0..max_sample`` (YBR converted to RGB, palettes applied).
        photometric: The file's Photometric Interpretation (e.g. ``"MONOCHROME2"``, ``"YBR_FULL"``).
        modality: The file's Modality (e.g. ``"CT"``), ``""`` when absent.
        rows: Image height in pixels.
        columns: Image width in pixels.
        num_frames: Number of frames ``F``.
        bits_stored: Bits Stored of the file.
        default_window: The file's Window Center/Width (first value), else a window over the 0.5-99.5
            percentiles of the data; ``None`` for colour images.
        max_sample: Largest possible sample of a colour image (rendered as 255); ``None`` for greyscale.
        pixel_spacing: ``(row spacing, column spacing)`` in mm, when the file states it.
        slice_thickness: In mm, when the file states it.
        burned_in_annotation: Whether the file says its pixels carry burned-in text (Burned In Annotation
            ``YES``), which may show the patient's name: the picture itself may identify them.
    """

    frames: np.ndarray
    photometric: str
    modality: str
    rows: int
    columns: int
    num_frames: int
    bits_stored: int
    default_window: Window | None
    max_sample: float | None = None
    pixel_spacing: tuple[float, float] | None = None
    slice_thickness: float | None = None
    burned_in_annotation: bool = False

    @property
    def is_color(self) -> bool:
        """Whether the frames are RGB (no windowing)."""
        return self.frames.ndim == 4

    def summary(self) -> dict[str, str]:
        """Technical, non-identifying facts to show next to the image (no patient or study data)."""
        info = {
            "Modality": self.modality or "unknown",
            "Image size": f"{self.columns} × {self.rows} px",
            "Frames": str(self.num_frames),
            "Bits stored": str(self.bits_stored),
            "Photometric interpretation": self.photometric,
        }
        if self.pixel_spacing is not None:
            row, col = self.pixel_spacing
            info["Pixel spacing"] = f"{row:.4g} × {col:.4g} mm"
        if self.slice_thickness is not None:
            info["Slice thickness"] = f"{self.slice_thickness:.4g} mm"
        if self.burned_in_annotation:
            info["Burned-in annotation"] = "YES: the pixels may show the patient's name or other details"
        return info


def is_dicom(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` starts like a DICOM Part 10 file: a 128-byte preamble then ``b"DICM"``.

    Example: ``is_dicom(Path("scan.dcm").read_bytes()[:132])  # True``.
    """
    return bytes(data[128:132]) == b"DICM"


def read_dicom(
    source: bytes | bytearray | memoryview | str | os.PathLike[str],
    *,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
) -> DicomImage:
    """Decode a DICOM Part 10 file (preamble and ``DICM`` marker required).

    Example: ``read_dicom("CT_small.dcm").summary()["Modality"]  # "CT"``.

    Args:
        source: The file's bytes or its path.
        max_bytes: Largest accepted file size, and largest size of a deflated dataset once
            inflated (``None``: no limit).
        max_pixels: Largest accepted rows x columns x frames.

    Returns:
        The decoded image; see :class:`DicomImage`.

    Raises:
        ImageError: The file is missing, too large, not DICOM, corrupt or truncated, has no pixel
            data, or uses a compression or colour space that cannot be decoded here.
        TypeError: ``source`` is of an unsupported type.
    """
    if not isinstance(source, (bytes, bytearray, memoryview, str, os.PathLike)):
        raise TypeError(f"read_dicom() expects bytes or a path, not {type(source).__name__}")
    # Never named in messages: DICOM file names often hold a patient's name.
    data = read_bounded(source, max_bytes, what="DICOM file", named=False)
    if not is_dicom(data):
        raise ImageError(_NOT_DICOM)
    _check_deflated_size(data, max_bytes)
    try:
        return _decode(data, max_pixels)
    except ImageError:
        raise
    except MemoryError:
        raise ImageError("The DICOM image is too large to decode in the available memory.") from None
    except Exception as exc:  # noqa: BLE001 - any parser or decoder failure is a bad file for the user
        raise ImageError(_CORRUPT) from exc


def render_frame(image: DicomImage, frame: int = 0, window: Window | None = None) -> Image.Image:
    """One frame as an 8-bit RGB image: what the model and the user see.

    Greyscale frames are windowed linearly (DICOM PS3.3 C.11.2.1.2; for widths below 1, the
    exact form ``(x - c) / w + 0.5``) on the full-depth values, then MONOCHROME1 is inverted so that
    higher values are darker; the grey level is replicated on R, G and B. Colour frames are scaled
    from ``0..max_sample`` to 0..255 and ``window`` is ignored.
    Example: ``render_frame(read_dicom("CT_small.dcm"), window=Window(40, 400))`` (a soft-tissue window).

    Args:
        image: What :func:`read_dicom` returned.
        frame: Frame index, from 0.
        window: Window in modality units; default: ``image.default_window``.

    Raises:
        ImageError: The frame index is out of range.
    """
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)):
        raise ImageError("The frame number must be a whole number.")
    if not 0 <= frame < image.num_frames:
        raise ImageError(
            f"Frame {int(frame)} is out of range; the file has {plural(image.num_frames, 'frame')} (numbered from 0)."
        )
    values = image.frames[int(frame)]
    if image.is_color:
        scale = 255.0 / float(image.max_sample or 255.0)
        rgb = np.clip(np.rint(values * np.float32(scale)), 0, 255).astype(np.uint8)
        return Image.fromarray(rgb, mode="RGB")
    window = window if window is not None else image.default_window
    if window is None:  # defensive: greyscale images always have one
        window = percentile_window(values)
    grey = apply_window(values, window)
    if image.photometric == "MONOCHROME1":
        np.subtract(255, grey, out=grey)
    return Image.fromarray(grey, mode="L").convert("RGB")


# --------------------------------------------------------------------------- decoding


def _check_deflated_size(data: bytes, max_bytes: int | None) -> None:
    """Refuse a deflated dataset that would inflate beyond ``max_bytes`` before pydicom inflates it whole."""
    if max_bytes is None:
        return
    # File meta: (0002,0000) UL group length, explicit VR little endian, right after "DICM".
    if data[132:138] != b"\x02\x00\x00\x00UL" or len(data) < 144:
        if _DEFLATED_UID in data[132:65536]:
            raise ImageError(_CORRUPT)  # cannot find where the deflated stream starts
        return
    meta_end = 144 + struct.unpack("<I", data[140:144])[0]
    if _DEFLATED_UID not in data[132:meta_end]:
        return
    try:
        inflated = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data[meta_end:], max_bytes + 1)
    except zlib.error:
        raise ImageError(_CORRUPT) from None
    if len(inflated) > max_bytes:
        raise ImageError(f"The DICOM file inflates to more than the {format_size(max_bytes)} limit.")


def _decode(data: bytes, max_pixels: int) -> DicomImage:
    import pydicom
    from pydicom.pixels import apply_color_lut, apply_modality_lut, convert_color_space, get_decoder
    from pydicom.uid import UID_dictionary

    ds = pydicom.dcmread(io.BytesIO(data), force=False)
    if _looks_truncated(ds, len(data)):
        raise ImageError(_CORRUPT)
    if not any(key in ds for key in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageError(_NO_PIXELS)

    rows, columns = int(ds.Rows), int(ds.Columns)
    num_frames = int(ds.get("NumberOfFrames") or 1)
    samples = int(ds.get("SamplesPerPixel") or 1)
    if rows <= 0 or columns <= 0 or num_frames <= 0:
        raise ImageError(_NO_PIXELS)
    if rows * columns * num_frames > max_pixels:
        raise ImageError(
            f"The DICOM image is {columns} x {rows} pixels x {num_frames} frame{'s' if num_frames != 1 else ''}, "
            f"more than the {format_megapixels(max_pixels)}-megapixel limit."
        )
    photometric = str(ds.get("PhotometricInterpretation") or "").strip().upper()
    if not (photometric in _GREY or photometric in _COLOR or photometric == _PALETTE):
        raise ImageError(_unsupported_colour(photometric))
    if samples != (3 if photometric in _COLOR else 1):
        raise ImageError(_CORRUPT)

    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if not tsyntax:
        raise ImageError(_CORRUPT)
    ts_name = tsyntax.name if tsyntax in UID_dictionary else "unknown"
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        if ts_name == "unknown":
            raise ImageError("The DICOM file uses an unknown transfer syntax.") from None
        raise ImageError(f"The DICOM file uses a transfer syntax that cannot be decoded here ({ts_name}).") from None
    if not decoder.is_available:
        raise ImageError(
            f"The DICOM file is compressed with a transfer syntax that cannot be decoded here ({ts_name})."
        )
    if tsyntax.is_encapsulated:
        _check_frames(ds, tsyntax, rows, columns, num_frames)
    try:
        raw, meta = decoder.as_array(ds, as_rgb=True)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001
        if not tsyntax.is_compressed:
            raise ImageError(_CORRUPT) from exc
        raise ImageError(
            f"The DICOM file's {ts_name} pixel data cannot be decoded here (corrupt, or a variant that no "
            "installed decoder supports)."
        ) from exc

    bits_stored = int(ds.get("BitsStored") or ds.get("BitsAllocated") or raw.dtype.itemsize * 8)
    max_sample: float | None = None
    default_window: Window | None = None
    if photometric in _GREY:
        raw = raw.reshape(-1, rows, columns)
        if ds.get("ModalityLUTSequence"):
            values = apply_modality_lut(raw, ds).astype(np.float32)
        else:
            values = _rescale(raw, *_rescale_parameters(ds, raw.shape[0]))
        default_window = _file_window(ds) or percentile_window(values)
    else:
        if photometric == _PALETTE:
            raw = apply_color_lut(raw, ds)
            max_sample = float(np.iinfo(raw.dtype).max) if raw.dtype.kind in "ui" else 255.0
        else:
            decoded = str(meta.get("photometric_interpretation", photometric))
            if decoded in ("YBR_FULL", "YBR_FULL_422"):
                raw = convert_color_space(raw, decoded, "RGB")
            elif decoded != "RGB":
                raise ImageError(_unsupported_colour(photometric))
            max_sample = float(2 ** min(bits_stored, 32) - 1)
        values = raw.reshape(-1, rows, columns, 3).astype(np.float32)
    values.setflags(write=False)

    return DicomImage(
        frames=values,
        photometric=photometric,
        modality=_modality(ds.get("Modality")),
        rows=rows,
        columns=columns,
        num_frames=int(values.shape[0]),
        bits_stored=bits_stored,
        default_window=default_window,
        max_sample=max_sample,
        pixel_spacing=_pixel_spacing(ds),
        slice_thickness=_positive_float(ds.get("SliceThickness")),
        burned_in_annotation=str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES",
    )


def _check_frames(ds: Any, tsyntax: Any, rows: int, columns: int, num_frames: int) -> None:
    """Refuse compressed frames whose own header promises more work than Rows x Columns, before decoding.

    A decoder sizes its output from the frame's header, not from the file's Rows and Columns: a 500 KB JPEG 2000
    frame of 13000 x 13000 pixels in a file declaring 64 x 64 would cost a gigabyte to decode. The frames of
    other encapsulated syntaxes (video, for which pydicom has no decoder) are left to the decoders.
    """
    from pydicom.encaps import generate_frames
    from pydicom.uid import JPEG2000TransferSyntaxes, JPEGLSTransferSyntaxes, JPEGTransferSyntaxes, RLELossless

    check: Callable[[bytes], None]
    if tsyntax == RLELossless:
        check = partial(_check_rle_frame, pixels=rows * columns)
    elif tsyntax in JPEGTransferSyntaxes or tsyntax in JPEGLSTransferSyntaxes:
        check = partial(_check_jpeg_frame, rows=rows, columns=columns)
    elif tsyntax in JPEG2000TransferSyntaxes:
        check = partial(_check_j2k_frame, rows=rows, columns=columns)
    else:
        return
    extended = None
    if ds.get("ExtendedOffsetTable") is not None and ds.get("ExtendedOffsetTableLengths") is not None:
        extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
        if len(extended[0]) != len(extended[1]):
            extended = None  # pydicom ignores a mismatched table too
    for frame in generate_frames(ds.PixelData, number_of_frames=num_frames, extended_offsets=extended):
        check(frame)


def _check_frame_size(size: tuple[int, int] | None, rows: int, columns: int) -> None:
    if size is None:
        raise ImageError("The DICOM file's compressed frame has no readable image header; it is refused.")
    if size != (columns, rows):
        raise ImageError(
            f"The DICOM file's compressed frame is {size[0]} x {size[1]} pixels but the file declares "
            f"{columns} x {rows}; it is refused."
        )


def _check_jpeg_frame(frame: bytes, rows: int, columns: int) -> None:
    """A JPEG or JPEG-LS frame: its SOF size, and its number of scans (see ``imaging.MAX_JPEG_SCANS``)."""
    _check_frame_size(_jpeg_frame_size(frame) if frame.startswith(b"\xff\xd8") else None, rows, columns)
    if jpeg_counts(io.BytesIO(frame))[0] > MAX_JPEG_SCANS:
        raise ImageError(
            f"The DICOM file's compressed frame has more than {MAX_JPEG_SCANS} JPEG scans, which would make "
            "decoding it far too slow."
        )


def _check_j2k_frame(frame: bytes, rows: int, columns: int) -> None:
    _check_frame_size(_j2k_frame_size(frame), rows, columns)


def _frame_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) from a compressed frame's own header: JPEG/JPEG-LS SOF or JPEG 2000 SIZ."""
    return _jpeg_frame_size(frame) if frame.startswith(b"\xff\xd8") else _j2k_frame_size(frame)


# SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC); SOF55 (F7) is JPEG-LS.
_SOF_MARKERS = frozenset({*range(0xC0, 0xD0), 0xF7}) - {0xC4, 0xC8, 0xCC}


def _jpeg_frame_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) of the first SOF segment, walking the marker segments before it."""
    offset = 2
    while offset + 4 <= len(frame):
        if frame[offset] != 0xFF:
            return None
        marker = frame[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in _SOF_MARKERS:
            if offset + 9 > len(frame):
                return None
            height, width = struct.unpack(">HH", frame[offset + 5 : offset + 9])
            return width, height
        if marker in (0xD9, 0xDA):  # EOI or a scan before any frame header
            return None
        offset += 2 + struct.unpack(">H", frame[offset + 2 : offset + 4])[0]
    return None


def _j2k_frame_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) from the SIZ marker of a JPEG 2000 codestream (bare, or in a JP2 file's jp2c box)."""
    offset = 0
    if frame.startswith(b"\x00\x00\x00\x0cjP  "):
        offset = _jp2_codestream_offset(frame)
        if offset is None:
            return None
    siz = frame[offset : offset + 24]
    if len(siz) < 24 or siz[:4] != b"\xff\x4f\xff\x51":  # SOC, then SIZ as the standard requires
        return None
    xsiz, ysiz, x0, y0 = struct.unpack(">IIII", siz[8:24])
    return max(xsiz - x0, 0), max(ysiz - y0, 0)


def _jp2_codestream_offset(data: bytes) -> int | None:
    """Where the codestream of a JP2 file starts (inside its ``jp2c`` box)."""
    offset = 0
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        header = 8
        if length == 1:  # a 64-bit length follows
            if offset + 16 > len(data):
                return None
            length, header = struct.unpack(">Q", data[offset + 8 : offset + 16])[0], 16
        if kind == b"jp2c":
            return offset + header
        if length < header:  # 0 means "to the end of the file": no jp2c box after it
            return None
        offset += length
    return None


def _check_rle_frame(frame: bytes, pixels: int) -> None:
    """Refuse an RLE frame whose segments could decode to far more than ``pixels`` bytes each.

    pydicom decodes every segment in full (in Python) before comparing its length with Rows x Columns, and a
    two-byte run makes 128 bytes: a small segment could inflate to gigabytes. The slack (twice the size, for
    sloppy encoders' padding) keeps the cost proportional to the declared size.
    """
    limit = 2 * pixels + 256
    if len(frame) < 64:
        raise ImageError(_CORRUPT)
    header = struct.unpack("<16I", frame[:64])
    count = header[0]
    if not 1 <= count <= 15:
        raise ImageError(_CORRUPT)
    offsets = [*header[1 : count + 1], len(frame)]
    for start, end in zip(offsets, offsets[1:]):
        if not 64 <= start <= end <= len(frame):
            raise ImageError(_CORRUPT)
        if end - start > limit or _rle_decoded_length(frame, start, end, limit) > limit:
            raise ImageError(
                "The DICOM file's RLE-compressed frame decodes to more pixels than the file declares; it is refused."
            )


def _rle_decoded_length(data: bytes, start: int, end: int, limit: int) -> int:
    """Bytes the PackBits segment ``data[start:end]`` decodes to, counting stopped past ``limit``."""
    if (end - start) * 64 <= limit:  # at most 128 bytes out of every 2 in: cannot pass the limit
        return 0
    total, pos = 0, start
    while pos < end and total <= limit:
        code = data[pos]
        if code < 128:  # a literal run of code + 1 bytes
            total += code + 1
            pos += code + 2
        elif code > 128:  # the next byte, 257 - code times
            total += 257 - code
            pos += 2
        else:  # 128: no operation
            pos += 1
    return total


def _looks_truncated(ds: Any, size: int) -> bool:
    """Whether pydicom stopped early: pydicom reads a cut file silently (short last value, lost elements)."""
    keys = list(ds.keys())
    if not keys:
        return True
    last = ds.get_item(keys[-1])
    length = getattr(last, "length", None)
    value = getattr(last, "value", None)
    if length is None or not isinstance(value, (bytes, bytearray)):
        return False  # already converted by pydicom: no offsets to check
    undefined = length == 0xFFFFFFFF
    if not undefined and len(value) < length:
        return True
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax == "1.2.840.10008.1.2.1.99":
        return False  # offsets are in the inflated stream
    end = last.value_tell + (len(value) + 8 if undefined else length)
    return 0 < size - end < 8  # an element header was cut off


def _rescale_parameters(ds: Any, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (slope, intercept): top level, else shared, else per-frame functional groups."""
    slope = np.ones(num_frames, np.float64)
    intercept = np.zeros(num_frames, np.float64)
    top = _transformation(ds)
    if top is None:
        shared = ds.get("SharedFunctionalGroupsSequence")
        top = _transformation(_first_item(shared, "PixelValueTransformationSequence"))
    if top is not None:
        slope[:], intercept[:] = top
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if top is None and per_frame:
        for index, item in enumerate(list(per_frame)[:num_frames]):
            found = _transformation(_first_item([item], "PixelValueTransformationSequence"))
            if found is not None:
                slope[index], intercept[index] = found
    return slope, intercept


def _transformation(item: Any) -> tuple[float, float] | None:
    if item is None or ("RescaleSlope" not in item and "RescaleIntercept" not in item):
        return None
    slope = _finite_float(item.get("RescaleSlope"), 1.0)
    intercept = _finite_float(item.get("RescaleIntercept"), 0.0)
    if slope is None or intercept is None or slope == 0:
        raise ImageError("The DICOM file has an invalid rescale slope or intercept.")
    return slope, intercept


def _rescale(raw: np.ndarray, slope: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """raw * slope + intercept per frame, computed in float64, stored as float32."""
    out = np.empty(raw.shape, np.float32)
    for index in range(raw.shape[0]):
        frame = raw[index].astype(np.float64)
        if slope[index] != 1.0:
            frame *= slope[index]
        if intercept[index] != 0.0:
            frame += intercept[index]
        out[index] = frame
    return out


def _file_window(ds: Any) -> Window | None:
    """The file's first Window Center/Width: top level, else shared, else the first frame's."""
    candidates = [ds]
    shared = ds.get("SharedFunctionalGroupsSequence")
    candidates.append(_first_item(shared, "FrameVOILUTSequence"))
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame:
        candidates.append(_first_item([list(per_frame)[0]], "FrameVOILUTSequence"))
    for item in candidates:
        if item is None:
            continue
        center = _finite_float(_first_value(item.get("WindowCenter")), None)
        width = _finite_float(_first_value(item.get("WindowWidth")), None)
        if center is not None and width is not None and width > 0:
            return Window(center, width)
    return None


def percentile_window(values: np.ndarray) -> Window:
    """A window over the 0.5-99.5 percentiles of the finite values (sampled when large)."""
    flat = values.reshape(-1)
    if flat.size > 4_000_000:
        flat = flat[:: flat.size // 2_000_000]
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return Window(0.0, 1.0)
    lo, hi = (float(v) for v in np.percentile(flat, (0.5, 99.5)))
    if hi <= lo:
        lo, hi = float(flat.min()), float(flat.max())
    if hi <= lo:
        return Window(lo, 1.0)
    return Window((lo + hi) / 2.0, hi - lo)


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """Linear VOI window (PS3.3 C.11.2.1.2.1) to uint8 0..255."""
    center, width = window.center, window.width
    x = values.astype(np.float64)  # keeps 32-bit data exact
    if width > 1.0:
        # y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255, clipped: equals the standard's three cases.
        y = (x - (center - 0.5)) * (255.0 / (width - 1.0)) + 127.5
    elif width == 1.0:
        y = np.where(x > center - 0.5, 255.0, 0.0)
    else:  # LINEAR_EXACT form, the only one defined for widths below 1
        y = (x - center) * (255.0 / width) + 127.5
    y = np.nan_to_num(y, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- attribute helpers


def _first_item(sequence: Any, keyword: str) -> Any:
    """``sequence[0].<keyword>[0]`` or None."""
    try:
        inner = sequence[0].get(keyword) if sequence else None
        return inner[0] if inner else None
    except (IndexError, AttributeError, TypeError):
        return None


def _first_value(value: Any) -> Any:
    if value is None or isinstance(value, (str, bytes)):
        return value
    try:
        return value[0] if len(value) else None
    except TypeError:
        return value


def _finite_float(value: Any, default: float | None) -> float | None:
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _positive_float(value: Any) -> float | None:
    number = _finite_float(_first_value(value), None)
    return number if number is not None and number > 0 else None


def _pixel_spacing(ds: Any) -> tuple[float, float] | None:
    value = ds.get("PixelSpacing")
    try:
        row, col = (_positive_float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (row, col) if row is not None and col is not None else None


def _modality(value: Any) -> str:
    """A defined DICOM modality term, else ``""``: free text in the element never leaks."""
    text = str(value or "").strip().upper()
    return text if text in _MODALITIES else ""


def _unsupported_colour(photometric: str) -> str:
    if photometric in _PHOTOMETRICS:
        return f"The DICOM file uses the {photometric} colour space, which is not supported here."
    return "The DICOM file uses an unknown colour space."
