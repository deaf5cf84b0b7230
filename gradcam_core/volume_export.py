"""A volume's heatmap written back in the scan's space: NIfTI for 3D Slicer or ITK-SNAP, a Parametric Map for PACS.

The heatmap is given on the volume's grid, ``(D, H, W)`` like :attr:`~gradcam_core.volumes.Volume.shape`::

    Path("cam.nii.gz").write_bytes(heatmap_nifti(volume, cam))     # same affine as the scan
    Path("cam.dcm").write_bytes(heatmap_dicom(volume, cam))        # DICOM input only; show EXPORT_NOTICE first

The DICOM object is a Parametric Map (highdicom) with new UIDs, in the source's Frame of Reference, referencing
every source instance of the source series. Of the source it carries only :data:`COPIED_ATTRIBUTES`, so that it
files into the same study (empty Type 2 attributes such as Patient's Birth Date stay empty).

A single-frame 2-D DICOM image placed in the patient (a CT or MR slice) gets the same object from its file's bytes,
the heatmap on its ``(rows, columns)`` pixel grid, as a one-slice volume; a radiograph that states no Frame of
Reference (which a Parametric Map must have) is refused with one sentence::

    check_image_export(data)                                        # cheap, before offering the download
    Path("cam.dcm").write_bytes(heatmap_dicom_image(data, cam))     # on click
"""

from __future__ import annotations

import gzip
import io
from typing import Any

import numpy as np

from . import __version__
from .dicom import is_dicom
from .errors import VolumeError
from .volume_dicom import LPS_TO_RAS, DicomSource
from .volumes import Volume, read_volume

__all__ = ["COPIED_ATTRIBUTES", "EXPORT_NOTICE", "check_image_export", "heatmap_dicom", "heatmap_dicom_image",
           "heatmap_nifti"]

COPIED_ATTRIBUTES: tuple[str, ...] = ("PatientName", "PatientID", "StudyInstanceUID", "StudyID", "AccessionNumber")
"""The only source attributes a DICOM export carries, besides the references to the source series (its Series
Instance UID, SOP Class and Instance UIDs) and its Frame of Reference UID, which place the map over it."""

EXPORT_NOTICE: str = (
    "This file carries the patient's and study's identifiers of the source so that it files into the same study; "
    "nothing else of the source is copied."
)
"""The sentence a page shows before offering a DICOM export for download."""

_SERIES_NUMBER = 9901
_EMPTY_TYPE2 = ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "ReferringPhysicianName")


def heatmap_nifti(volume: Volume, heatmap: np.ndarray) -> bytes:
    """The heatmap as a gzipped NIfTI-1 file with the volume's affine (``.nii.gz`` bytes).

    Example: ``Path("cam.nii.gz").write_bytes(heatmap_nifti(volume, cam))``; it opens over the scan in 3D Slicer.

    Raises:
        VolumeError: The heatmap is not a finite array of the volume's ``(D, H, W)`` shape.
    """
    import nibabel as nib

    values = _checked(heatmap, volume.shape)
    image = nib.Nifti1Image(np.ascontiguousarray(values.T), volume.affine)  # (D, H, W) -> nibabel's (i, j, k)
    image.header.set_xyzt_units("mm")
    image.set_sform(volume.affine, code=1)
    image.set_qform(volume.affine, code=1)
    return gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)


def heatmap_dicom(volume: Volume, heatmap: np.ndarray) -> bytes:
    """The heatmap of a DICOM volume as one DICOM Parametric Map (float values, one frame per slice).

    Example: ``Path("cam.dcm").write_bytes(heatmap_dicom(volume, cam))``; it shows over the series in OHIF.

    Raises:
        VolumeError: The volume did not come from DICOM, has no Frame of Reference, highdicom is missing, or the
            heatmap is not a finite array of the volume's shape.
    """
    source = volume.dicom
    if source is None:
        raise VolumeError("Only a scan read from DICOM can be exported as DICOM.")
    if not source.frame_of_reference_uid:
        raise VolumeError("The DICOM scan has no Frame of Reference, so a heatmap cannot be placed over it.")
    values = _checked(heatmap, volume.shape)
    try:
        import highdicom as hd
        from pydicom.uid import generate_uid
    except ImportError:
        raise VolumeError("DICOM export needs the highdicom package, which is not installed.") from None
    affine_lps = LPS_TO_RAS @ volume.affine
    grid = hd.Volume(
        values,
        affine_lps[:, [2, 1, 0, 3]],  # highdicom indexes (slice, row, column), the array's order
        coordinate_system="PATIENT",
        frame_of_reference_uid=source.frame_of_reference_uid,
    )
    low, high = float(values.min()), float(values.max())
    high = high if high > low else low + 1.0
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="GRADCAM",
        lut_explanation="Grad-CAM relevance",
        unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
        value_range=(low, high),
        slope=1,
        intercept=0,
    )
    try:
        pmap = hd.pm.ParametricMap(
            _references(volume, source, affine_lps),
            grid,
            series_instance_uid=generate_uid(),
            series_number=_SERIES_NUMBER,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer="gradcam-dashboard",
            manufacturer_model_name="Grad-CAM",
            software_versions=__version__,
            device_serial_number="none",
            contains_recognizable_visual_features=False,
            real_world_value_mappings=[mapping],
            voi_lut_transformations=[hd.VOILUTTransformation(window_center=(low + high) / 2, window_width=high - low)],
            content_label="GRADCAM",
            content_description="Grad-CAM heatmap",
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise VolumeError("The heatmap cannot be written as a DICOM Parametric Map for this scan.") from exc
    buffer = io.BytesIO()
    pmap.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def check_image_export(data: bytes) -> None:
    """Refuse, from the header alone, a DICOM image whose heatmap :func:`heatmap_dicom_image` cannot export.

    Example: ``check_image_export(Path("slice.dcm").read_bytes())`` returns ``None`` for a single CT slice.

    Raises:
        VolumeError: The bytes are not a readable DICOM file, the file holds several frames, or the image does not
            state its place in the patient (a radiograph without a Frame of Reference, which a Parametric Map
            needs).
    """
    _image_header(data)


def heatmap_dicom_image(data: bytes, heatmap: np.ndarray) -> bytes:
    """The heatmap of a single-frame DICOM image (the file's bytes) as a Parametric Map on its pixel grid.

    The image is read as a one-slice volume and exported by :func:`heatmap_dicom`: in its Frame of Reference,
    referencing it, with only :data:`COPIED_ATTRIBUTES` of it.

    Example: ``Path("cam.dcm").write_bytes(heatmap_dicom_image(data, cam))`` with ``cam`` of shape (Rows, Columns).

    Raises:
        VolumeError: As :func:`check_image_export`, or the heatmap is not a finite array of the image's
            ``(rows, columns)`` shape, or the image's geometry is invalid.
    """
    header = _image_header(data)
    shape = (int(header.get("Rows") or 0), int(header.get("Columns") or 0))
    values = _checked(heatmap, shape, "the image", "the image's pixel grid")
    return heatmap_dicom(read_volume(data), values[np.newaxis])


def _image_header(data: bytes) -> Any:
    """The header (no pixels) of a single-frame DICOM image; one sentence otherwise."""
    import pydicom

    if not is_dicom(data):
        raise VolumeError("Only a DICOM image can be exported as DICOM.")
    try:
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        frames = int(header.get("NumberOfFrames") or 1)
    except Exception as exc:  # noqa: BLE001 - any parser failure is a bad file for the user
        raise VolumeError("The file is not a readable DICOM file (truncated or corrupt).") from exc
    if frames > 1:
        raise VolumeError(
            f"The heatmap can be exported as DICOM for a single-frame image only; this file holds {frames} frames."
        )
    if not _placed(header):
        raise VolumeError(
            "The image does not state where it lies in the patient (a Frame of Reference and a position), which "
            "a DICOM Parametric Map needs."
        )
    return header


def _placed(header: Any) -> bool:
    """Whether a single-frame image states its place in the patient: a Frame of Reference and a plane position."""
    if not header.get("FrameOfReferenceUID"):
        return False
    groups = [*(header.get("SharedFunctionalGroupsSequence") or []),
              *(header.get("PerFrameFunctionalGroupsSequence") or [])]
    return "ImagePositionPatient" in header or any("PlanePositionSequence" in item for item in groups)


def _checked(
    heatmap: np.ndarray, shape: tuple[int, ...], what: str = "the scan's grid", grid: str = "the scan's voxel grid"
) -> np.ndarray:
    values = np.asarray(heatmap, dtype=np.float32)
    if values.shape != shape:
        raise VolumeError(
            f"The heatmap is {'x'.join(map(str, values.shape))} but {what} is {'x'.join(map(str, shape))}; "
            f"give it on {grid}."
        )
    if not np.isfinite(values).all():
        raise VolumeError("The heatmap holds values that are not finite numbers.")
    return values


def _references(volume: Volume, source: DicomSource, affine_lps: np.ndarray) -> list:
    """Stand-ins for the source images: their UIDs and geometry, :data:`COPIED_ATTRIBUTES`, and nothing else.

    highdicom copies patient and study attributes from the images it is given; giving it these instead of the
    source files is what keeps everything else of the source out of the export.
    """
    from pydicom.dataset import Dataset

    depth, rows, columns = volume.shape
    positions = [(affine_lps @ np.array([0.0, 0.0, k, 1.0]))[:3] for k in range(depth)]
    row_spacing, column_spacing = volume.spacing[1], volume.spacing[2]
    orientation = np.concatenate([affine_lps[:3, 0] / column_spacing, affine_lps[:3, 1] / row_spacing])

    def stub(sop_instance_uid: str) -> Dataset:
        ds = Dataset()
        ds.SOPClassUID = source.sop_class_uid
        ds.SOPInstanceUID = sop_instance_uid
        ds.SeriesInstanceUID = source.series_instance_uid
        ds.FrameOfReferenceUID = source.frame_of_reference_uid
        ds.PatientName = source.patient_name
        ds.PatientID = source.patient_id
        ds.StudyInstanceUID = source.study_instance_uid
        ds.StudyID = source.study_id
        ds.AccessionNumber = source.accession_number
        for keyword in _EMPTY_TYPE2:
            setattr(ds, keyword, "")
        ds.Modality = volume.modality or "OT"
        ds.Rows, ds.Columns = rows, columns
        return ds

    if not source.frame_numbers:  # a series: one stand-in per slice, in the volume's order
        stubs = []
        for uid, position in zip(source.sop_instance_uids, positions):
            ds = stub(uid)
            ds.ImagePositionPatient = [float(v) for v in position]
            ds.ImageOrientationPatient = [float(v) for v in orientation]
            ds.PixelSpacing = [row_spacing, column_spacing]
            ds.SliceThickness = volume.spacing[0]
            stubs.append(ds)
        return stubs
    # An enhanced multi-frame file: one stand-in whose frames keep the file's own frame order.
    ds = stub(source.sop_instance_uids[0])
    ds.NumberOfFrames = depth
    frame_to_slice = {frame: index for index, frame in enumerate(source.frame_numbers)}
    shared = Dataset()
    shared.PlaneOrientationSequence = [Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = [float(v) for v in orientation]
    shared.PixelMeasuresSequence = [Dataset()]
    shared.PixelMeasuresSequence[0].PixelSpacing = [row_spacing, column_spacing]
    shared.PixelMeasuresSequence[0].SliceThickness = volume.spacing[0]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for frame in range(1, depth + 1):
        item = Dataset()
        item.PlanePositionSequence = [Dataset()]
        item.PlanePositionSequence[0].ImagePositionPatient = [float(v) for v in positions[frame_to_slice[frame]]]
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = frames
    return [ds]
