"""A DICOM series or an enhanced multi-frame DICOM stacked into one volume, within limits, nothing identifying shown.

Slices are ordered along the slice normal (the cross product of ImageOrientationPatient's row and column
directions) by the projection of ImagePositionPatient on it; the slice step is measured from the positions,
never taken from Slice Thickness. Mixed series, duplicate or missing slices and uneven spacing are refused with
one sentence. Headers are read first (no pixel data), the voxel count is checked, and only then is every file
decoded by :func:`~gradcam_core.dicom.read_dicom` (the 2-D reader: bounded, compressed frames checked against
Rows x Columns before decoding, Modality LUT applied)::

    stack = read_dicom_stack([Path(p).read_bytes() for p in paths], max_voxels=80_000_000, max_bytes=2**29)
    stack.voxels.shape      # (slices, rows, columns), float32 in modality units

The identifiers an export needs to file into the source's study are kept apart in :class:`DicomSource`, whose
``repr`` shows none of them; messages never quote a value read from a file, nor a file's name.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .dicom import Window, is_dicom, read_dicom
from .errors import ImageError, VolumeError
from .units import format_megapixels, plural

__all__ = ["DicomSource", "DicomStack", "read_dicom_stack"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""DICOM's patient axes (x to the Left, y to Posterior, z to Superior) to RAS+ (NIfTI's), and back."""

_POSITION_TOLERANCE = 0.01  # mm: positions closer than this are the same place
_SPACING_TOLERANCE = 0.01  # relative: steps within 1 % of the median are even
_ORIENTATION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class DicomSource:
    """What a DICOM export needs to reference its source and file into its study; never shown on a page.

    Attributes:
        patient_name, patient_id: The Patient Name and Patient ID, copied into an export and nowhere else.
        study_instance_uid, study_id, accession_number: The study's identifiers, copied likewise.
        series_instance_uid: The source series, referenced by an export.
        frame_of_reference_uid: The source's Frame of Reference UID (``""`` when absent).
        sop_class_uid: The source images' SOP Class UID.
        sop_instance_uids: Every source instance's SOP Instance UID, in the volume's slice order (one UID for
            an enhanced multi-frame file).
        frame_numbers: For an enhanced multi-frame file, the file's frame number (from 1) of each slice of the
            volume; empty for a series of single-frame files.
    """

    patient_name: str = field(repr=False)
    patient_id: str = field(repr=False)
    study_instance_uid: str = field(repr=False)
    study_id: str = field(repr=False)
    accession_number: str = field(repr=False)
    series_instance_uid: str = field(repr=False)
    frame_of_reference_uid: str = field(repr=False)
    sop_class_uid: str = field(repr=False)
    sop_instance_uids: tuple[str, ...] = field(repr=False)
    frame_numbers: tuple[int, ...] = field(default=(), repr=False)


@dataclass(frozen=True, eq=False)
class DicomStack:
    """DICOM slices stacked in order: what :func:`read_dicom_stack` returns.

    Attributes:
        voxels: float32 ``(slices, rows, columns)`` in modality units (rescale applied).
        affine_lps: 4x4 map from ``(column, row, slice, 1)`` indices to DICOM patient coordinates (LPS, mm).
        modality: A defined DICOM modality term, or ``""``.
        default_window: The first slice's window (the file's own, else its percentiles).
        enhanced: Whether the volume came from one enhanced multi-frame file.
        source: The identifiers kept for an export.
    """

    voxels: np.ndarray
    affine_lps: np.ndarray
    modality: str
    default_window: Window | None
    enhanced: bool
    source: DicomSource = field(repr=False)


@dataclass(frozen=True)
class _Slice:
    """One frame's header facts (no pixels)."""

    position: np.ndarray
    orientation: np.ndarray
    spacing: tuple[float, float]
    rows: int
    columns: int


def read_dicom_stack(files: Sequence[bytes], *, max_voxels: int, max_bytes: int | None) -> DicomStack:
    """Stack the files of one DICOM series, or the frames of one enhanced multi-frame file, into a volume.

    Example: ``read_dicom_stack(slices, max_voxels=10**7, max_bytes=2**28).voxels.shape  # (40, 512, 512)``.

    Args:
        files: Each file's bytes (already read within the byte limit); one file may be a multi-frame image.
        max_voxels: Largest accepted slices x rows x columns, checked on the headers before decoding.
        max_bytes: Passed to :func:`~gradcam_core.dicom.read_dicom` for each file.

    Raises:
        VolumeError: A file is not DICOM or is unreadable, the files mix series, a slice is duplicated or
            missing, the slices disagree on size, orientation or spacing, or the volume is over the limit.
    """
    if not files:
        raise VolumeError("No DICOM file was given.")
    headers = [_header(data, index, len(files)) for index, data in enumerate(files)]
    series = {str(ds.get("SeriesInstanceUID") or "") for ds in headers}
    if len(series) > 1:
        raise VolumeError(
            f"The files come from {len(series)} different series; give the files of one series only."
        )
    if len(files) == 1 and _frame_count(headers[0]) > 1:
        return _enhanced(files[0], headers[0], max_voxels, max_bytes)
    return _series(files, headers, max_voxels, max_bytes)


# --------------------------------------------------------------------------- the two shapes of input


def _series(files: Sequence[bytes], headers: list[Any], max_voxels: int, max_bytes: int | None) -> DicomStack:
    if any(_frame_count(ds) > 1 for ds in headers):
        raise VolumeError("A series of several files must hold one frame per file; a multi-frame file is mixed in.")
    uids = [str(ds.get("SOPInstanceUID") or "") for ds in headers]
    repeated = len(uids) - len(set(uids))
    if repeated:
        raise VolumeError(f"The series holds the same slice file twice ({plural(repeated, 'duplicate')}).")
    slices = [_slice_of(_groups(ds), ds) for ds in headers]
    _check_size(slices, max_voxels)
    order = _order(slices)
    first = slices[0]
    voxels = np.empty((len(files), first.rows, first.columns), np.float32)
    window = None
    for place, index in enumerate(order):
        image = _decode(files[index], first.rows * first.columns, max_bytes)
        if image.frames.shape[1:] != (first.rows, first.columns):
            raise VolumeError("The series' slices are not all the same size.")
        voxels[place] = image.frames[0]
        window = window or image.default_window
    source = _source(headers[0], tuple(uids[index] for index in order), ())
    return DicomStack(voxels, _affine([slices[i] for i in order]), image.modality, window, False, source)


def _enhanced(data: bytes, ds: Any, max_voxels: int, max_bytes: int | None) -> DicomStack:
    count = _frame_count(ds)
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    if len(per_frame) != count:
        raise VolumeError(
            "The multi-frame DICOM file does not state each frame's position (no per-frame functional groups)."
        )
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    slices = [_slice_of(_FrameGroups(item, shared), ds) for item in per_frame]
    _check_size(slices, max_voxels)
    order = _order(slices)
    image = _decode(data, count * slices[0].rows * slices[0].columns, max_bytes)
    voxels = np.ascontiguousarray(image.frames[order], dtype=np.float32)
    source = _source(ds, (str(ds.get("SOPInstanceUID") or ""),), tuple(int(i) + 1 for i in order))
    return DicomStack(voxels, _affine([slices[i] for i in order]), image.modality, image.default_window, True, source)


# --------------------------------------------------------------------------- headers and geometry


def _header(data: bytes, index: int, total: int) -> Any:
    import pydicom

    where = f"File {index + 1} of {total}" if total > 1 else "The file"
    if not is_dicom(data):
        raise VolumeError(f"{where} is not a DICOM file (it has no DICM marker).")
    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - any parser failure is a bad file for the user
        raise VolumeError(f"{where} is not a readable DICOM file (truncated or corrupt).") from exc


def _frame_count(ds: Any) -> int:
    try:
        return max(int(ds.get("NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        raise VolumeError("A DICOM file states an invalid number of frames.") from None


def _groups(ds: Any) -> Any:
    """Where a single-frame file states its geometry: its first frame's functional groups if it has some."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        return ds
    return _FrameGroups(per_frame[0], (ds.get("SharedFunctionalGroupsSequence") or [None])[0])


class _FrameGroups:
    """One frame's functional groups, falling back on the shared ones: ``.get("PlanePositionSequence")``."""

    def __init__(self, item: Any, shared: Any) -> None:
        self._item, self._shared = item, shared

    def get(self, keyword: str) -> Any:
        for groups in (self._item, self._shared):
            if groups is not None and groups.get(keyword):
                return groups.get(keyword)
        return None


def _slice_of(groups: Any, ds: Any) -> _Slice:
    """The geometry of one frame: top-level attributes of a single-frame file, or a frame's functional groups."""
    if isinstance(groups, _FrameGroups):
        position = _first(groups.get("PlanePositionSequence"), "ImagePositionPatient")
        orientation = _first(groups.get("PlaneOrientationSequence"), "ImageOrientationPatient")
        spacing = _first(groups.get("PixelMeasuresSequence"), "PixelSpacing")
    else:
        position, orientation, spacing = (ds.get(k) for k in ("ImagePositionPatient", "ImageOrientationPatient",
                                                                 "PixelSpacing"))
    position_v, orientation_v, spacing_v = _numbers(position, 3), _numbers(orientation, 6), _numbers(spacing, 2)
    if position_v is None or orientation_v is None:
        raise VolumeError(
            "The DICOM slices do not state their position and orientation, so they cannot be stacked into a volume."
        )
    if spacing_v is None or min(spacing_v) <= 0:
        raise VolumeError("The DICOM slices do not state a valid pixel spacing.")
    row_dir, col_dir = orientation_v[:3], orientation_v[3:]
    lengths_off = max(abs(np.linalg.norm(row_dir) - 1), abs(np.linalg.norm(col_dir) - 1))
    if lengths_off > 0.01 or abs(row_dir @ col_dir) > 0.01:
        raise VolumeError("The DICOM slices state an invalid orientation (not two perpendicular unit directions).")
    rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows <= 0 or columns <= 0:
        raise VolumeError("The DICOM file has no pixel data.")
    return _Slice(position_v, orientation_v, (float(spacing_v[0]), float(spacing_v[1])), rows, columns)


def _check_size(slices: list[_Slice], max_voxels: int) -> None:
    first = slices[0]
    if any((s.rows, s.columns) != (first.rows, first.columns) for s in slices):
        raise VolumeError("The series' slices are not all the same size.")
    if any(np.abs(s.orientation - first.orientation).max() > _ORIENTATION_TOLERANCE for s in slices):
        raise VolumeError("The series' slices do not share one orientation.")
    if any(not np.allclose(s.spacing, first.spacing, rtol=1e-4) for s in slices):
        raise VolumeError("The series' slices do not share one pixel spacing.")
    voxels = len(slices) * first.rows * first.columns
    if voxels > max_voxels:
        raise VolumeError(
            f"The volume is {first.columns} x {first.rows} pixels x {plural(len(slices), 'slice')}, more than the "
            f"{format_megapixels(max_voxels)}-million-voxel limit."
        )


def _order(slices: list[_Slice]) -> np.ndarray:
    """Indices of ``slices`` sorted along the normal, after refusing duplicate, missing or uneven slices."""
    normal = np.cross(slices[0].orientation[:3], slices[0].orientation[3:])
    heights = np.array([s.position @ normal for s in slices])
    order = np.argsort(heights, kind="stable")
    if len(slices) < 2:
        return order
    steps = np.diff(heights[order])
    if (steps < _POSITION_TOLERANCE).any():
        same = int((steps < _POSITION_TOLERANCE).sum())
        raise VolumeError(
            f"The series holds {plural(same + 1, 'slice')} at the same position (a duplicate slice, or several "
            "acquisitions mixed); give one acquisition only."
        )
    step = float(np.median(steps))
    uneven = np.abs(steps - step) > max(_POSITION_TOLERANCE, _SPACING_TOLERANCE * step)
    if uneven.any():
        gaps = steps[uneven] / step
        if np.all(np.abs(gaps - np.rint(gaps)) < _SPACING_TOLERANCE * 5) and np.all(np.rint(gaps) >= 2):
            missing = int((np.rint(gaps) - 1).sum())
            raise VolumeError(f"The series is missing {plural(missing, 'slice')} (gaps in the slice positions).")
        raise VolumeError("The series' slices are not evenly spaced, so they cannot be stacked into a volume.")
    positions = np.array([slices[i].position for i in order])
    line = positions[0] + np.outer(np.arange(len(order)), (positions[-1] - positions[0]) / (len(order) - 1))
    if np.abs(positions - line).max() > max(_POSITION_TOLERANCE, _SPACING_TOLERANCE * step):
        raise VolumeError("The series' slice positions do not lie on one line, so they cannot be stacked.")
    return order


def _affine(ordered: list[_Slice]) -> np.ndarray:
    """LPS affine of ``(column, row, slice)`` indices; the slice step measured from the first and last positions."""
    first, last = ordered[0], ordered[-1]
    row_spacing, column_spacing = first.spacing
    affine = np.eye(4)
    affine[:3, 0] = first.orientation[:3] * column_spacing
    affine[:3, 1] = first.orientation[3:] * row_spacing
    if len(ordered) > 1:
        affine[:3, 2] = (last.position - first.position) / (len(ordered) - 1)
    else:  # one slice: no step to measure; a unit step along the normal keeps the affine invertible
        affine[:3, 2] = np.cross(first.orientation[:3], first.orientation[3:])
    affine[:3, 3] = first.position
    return affine


def _decode(data: bytes, max_pixels: int, max_bytes: int | None) -> Any:
    try:
        image = read_dicom(data, max_bytes=max_bytes, max_pixels=max_pixels)
    except ImageError as err:
        raise VolumeError(str(err)) from err
    if image.is_color:
        raise VolumeError("The DICOM volume is in colour; only greyscale volumes are supported.")
    return image


def _source(ds: Any, sop_instance_uids: tuple[str, ...], frame_numbers: tuple[int, ...]) -> DicomSource:
    def text(keyword: str) -> str:
        return str(ds.get(keyword) or "")

    return DicomSource(
        patient_name=text("PatientName"),
        patient_id=text("PatientID"),
        study_instance_uid=text("StudyInstanceUID"),
        study_id=text("StudyID"),
        accession_number=text("AccessionNumber"),
        series_instance_uid=text("SeriesInstanceUID"),
        frame_of_reference_uid=text("FrameOfReferenceUID"),
        sop_class_uid=text("SOPClassUID"),
        sop_instance_uids=sop_instance_uids,
        frame_numbers=frame_numbers,
    )


def _first(sequence: Any, keyword: str) -> Any:
    try:
        return sequence[0].get(keyword) if sequence else None
    except (IndexError, AttributeError, TypeError):
        return None


def _numbers(value: Any, count: int) -> np.ndarray | None:
    """``count`` finite floats from a multi-valued element, else ``None``."""
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    if len(numbers) != count or not all(math.isfinite(v) for v in numbers):
        return None
    return np.array(numbers)
