"""Tests of gradcam_core.volumes and volume_export: generated volumes and series, and nibabel's own test files."""

from __future__ import annotations

import gzip
import io
import random
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from gradcam_core import volume_dicom
from gradcam_core.errors import VolumeError
from gradcam_core.volume_export import COPIED_ATTRIBUTES, EXPORT_NOTICE, heatmap_dicom, heatmap_nifti
from gradcam_core.volumes import Volume, read_volume

nib = pytest.importorskip("nibabel")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SHAPE = (8, 32, 32)  # slices, rows, columns
SECRETS = {"PatientName": "Doe^Jane", "PatientID": "PID-4711", "PatientBirthDate": "19500101",
           "InstitutionName": "Saint Nowhere Hospital", "ReferringPhysicianName": "House^Gregory",
           "PatientAddress": "1 Secret Road", "StudyDescription": "Head of Jane Doe", "OperatorsName": "Op^Erator"}


# --------------------------------------------------------------------------- builders


def ct_slice(k: int, pixels: np.ndarray, *, series: str, study: str, frame: str, step: float = 2.5,
             position: list[float] | None = None) -> bytes:
    """One CT slice, tilted orientation, at position ``k`` along the normal."""
    row_dir, col_dir = np.array([0.8, 0.6, 0.0]), np.array([0.0, 0.0, -1.0])
    normal = np.cross(row_dir, col_dir)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
    ds.StudyID, ds.AccessionNumber, ds.Modality = "S1", "ACC-99", "CT"
    for keyword, value in SECRETS.items():
        setattr(ds, keyword, value)
    ds.ImageOrientationPatient = [*row_dir, *col_dir]
    ds.ImagePositionPatient = position or [float(v) for v in np.array([10.0, -20.0, 30.0]) + k * step * normal]
    ds.PixelSpacing = [0.7, 0.9]
    ds.SliceThickness = 5.0  # deliberately not the step: spacing comes from the positions
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = pixels.astype(np.int16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def ct_series(depth: int = SHAPE[0], **kwargs) -> tuple[list[bytes], np.ndarray, dict[str, str]]:
    """A series of ``depth`` slices whose pixel values are ``k * 100 + row``, and its UIDs."""
    uids = {"series": generate_uid(), "study": generate_uid(), "frame": generate_uid()}
    stack = np.array([np.add.outer(np.arange(SHAPE[1]), np.zeros(SHAPE[2])) + 100 * k for k in range(depth)])
    files = [ct_slice(k, stack[k], **uids, **kwargs) for k in range(depth)]
    return files, stack - 1024, uids


def nifti_bytes(values: np.ndarray, affine: np.ndarray, *, gz: bool = True) -> bytes:
    data = nib.Nifti1Image(values, affine).to_bytes()
    return gzip.compress(data) if gz else data


AFFINE = np.array([[0.0, -1.2, 0.1, 40.0], [0.9, 0.0, 0.0, -12.5], [0.0, 0.2, 2.5, 7.0], [0.0, 0.0, 0.0, 1.0]])


# --------------------------------------------------------------------------- NIfTI


def test_nifti_round_trip_keeps_affine_and_values() -> None:
    values = np.random.default_rng(0).random((16, 12, 6)).astype(np.float32)  # nibabel's (i, j, k)
    volume = read_volume(nifti_bytes(values, AFFINE))
    assert volume.shape == (6, 12, 16) and volume.source_format == "NIfTI"
    np.testing.assert_allclose(volume.affine, AFFINE, atol=1e-6)
    np.testing.assert_array_equal(volume.voxels, values.T)
    assert volume.spacing == pytest.approx((np.hypot(0.1, 2.5), np.hypot(1.2, 0.2), 0.9))
    heat = np.linspace(0, 1, volume.voxels.size, dtype=np.float32).reshape(volume.shape)
    back = read_volume(heatmap_nifti(volume, heat))
    np.testing.assert_allclose(back.affine, AFFINE, atol=1e-6)
    np.testing.assert_array_equal(back.voxels, heat)
    image = nib.Nifti1Image.from_bytes(gzip.decompress(heatmap_nifti(volume, heat)))  # as 3D Slicer reads it
    np.testing.assert_allclose(image.affine, AFFINE, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(image.dataobj), heat.T)


def test_nifti_4d_puts_channels_first_and_a_path_reads_too(tmp_path: Path) -> None:
    values = np.arange(4 * 5 * 6 * 2, dtype=np.int16).reshape(4, 5, 6, 2)
    path = tmp_path / "four.nii"
    path.write_bytes(nifti_bytes(values, AFFINE, gz=False))
    volume = read_volume(path)
    assert volume.voxels.shape == (2, 6, 5, 4) and volume.channels == 2
    np.testing.assert_array_equal(volume.voxels[1], values[..., 1].T)


@pytest.mark.parametrize("name", ["anatomical.nii", "functional.nii", "example4d.nii.gz", "example_nifti2.nii.gz",
                                  "standard.nii.gz"])
def test_nibabels_own_volumes_read(name: str) -> None:
    from nibabel.testing import data_path

    path = Path(data_path) / name
    reference = nib.load(path)
    volume = read_volume(path)
    np.testing.assert_allclose(volume.affine, reference.affine, atol=1e-5)
    expected = np.asarray(reference.dataobj, dtype=np.float32)
    np.testing.assert_allclose(volume.voxels, expected.reshape(volume.voxels.shape[::-1]).T, rtol=1e-6)


def test_gzip_bomb_is_refused_from_the_header_without_inflating(monkeypatch: pytest.MonkeyPatch) -> None:
    header = nib.Nifti1Header()
    header.set_data_shape((2000, 2000, 2000))
    header.set_data_dtype(np.uint8)
    raw = header.binaryblock + b"\0" * 4
    bomb = gzip.compress(raw + b"\0" * 2**20)  # far smaller than the 8 GB it claims
    with pytest.raises(VolumeError, match=r"^The NIfTI image is 2000 x 2000 x 2000 voxels, more than the 80-million"):
        read_volume(bomb)
    header.set_data_shape((200, 200, 200))  # 8 MB of voxels: under the voxel limit, over a 4 MB byte limit
    with pytest.raises(VolumeError, match=r"needs 7.6 MB, more than the 4 MB limit"):
        read_volume(gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * 8_000_000), max_bytes=4 * 2**20)


def test_truncated_and_foreign_files_are_one_sentence() -> None:
    data = nifti_bytes(np.zeros((8, 8, 8), np.float32), AFFINE, gz=False)
    with pytest.raises(VolumeError, match=r"^The NIfTI file is truncated\.$"):
        read_volume(data[:-100])
    with pytest.raises(VolumeError, match=r"^The file is not a volume this app reads"):
        read_volume(b"hello world" * 100)
    with pytest.raises(VolumeError, match=r"^The file is not a single-file NIfTI image"):
        read_volume(gzip.compress(b"just text" * 100))


# --------------------------------------------------------------------------- NumPy


def test_npy_reads_with_assumed_geometry_said() -> None:
    values = np.random.default_rng(1).random(SHAPE).astype(np.float64)
    buffer = io.BytesIO()
    np.save(buffer, values)
    volume = read_volume(buffer.getvalue())
    np.testing.assert_allclose(volume.voxels, values.astype(np.float32))
    assert volume.geometry_assumed and volume.spacing == (1.0, 1.0, 1.0)
    assert "assumed" in volume.summary()["Geometry"]


def test_npy_with_pickle_is_refused_before_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}, None], dtype=object).reshape(1, 1, 2), allow_pickle=True)
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("loaded"))
    with pytest.raises(VolumeError, match=r"^The .npy file holds Python objects, which could run code"):
        read_volume(buffer.getvalue())


def test_npy_over_the_voxel_limit_is_refused_from_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (900, 900, 900)})
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("loaded"))
    with pytest.raises(VolumeError, match=r"^The .npy image is 900 x 900 x 900 voxels, more than"):
        read_volume(header.getvalue() + b"\0" * 64)


# --------------------------------------------------------------------------- DICOM series


def test_shuffled_series_is_sorted_by_position_with_spacing_from_positions() -> None:
    files, expected, uids = ct_series()
    shuffled = files[:]
    random.Random(3).shuffle(shuffled)
    volume = read_volume(shuffled)
    assert volume.source_format == "DICOM series" and volume.modality == "CT"
    np.testing.assert_array_equal(volume.voxels, expected)
    assert volume.spacing == pytest.approx((2.5, 0.7, 0.9))
    first = np.array([10.0, -20.0, 30.0])
    np.testing.assert_allclose(volume.affine[:3, 3], [-first[0], -first[1], first[2]])  # LPS -> RAS
    assert volume.dicom is not None and volume.dicom.series_instance_uid == uids["series"]
    shown = repr(volume) + str(volume.summary())
    assert not any(value in shown for value in [*SECRETS.values(), uids["study"], "ACC-99"])


def test_zip_of_a_series_reads_like_its_files() -> None:
    files, expected, _ = ct_series()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, data in enumerate(reversed(files)):
            archive.writestr(f"series/IM{index:04d}", data)
        archive.writestr("DICOMDIR", b"ignored")
    np.testing.assert_array_equal(read_volume(buffer.getvalue()).voxels, expected)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f[:3] + f[4:], r"^The series is missing 1 slice \(gaps in the slice positions\)\.$"),
        (lambda f: f + [f[2]], r"^The series holds the same slice file twice \(1 duplicate\)\.$"),
        (lambda f: f + [ct_series(1)[0][0]], r"^The files come from 2 different series; give the files of one series"),
        (lambda f: f + [b"not dicom" * 20], r"^File 9 of 9 is not a DICOM file"),
    ],
    ids=["missing", "duplicate", "mixed", "foreign"],
)
def test_broken_series_are_named_in_one_sentence(change, message: str) -> None:
    files, _, _ = ct_series()
    with pytest.raises(VolumeError, match=message):
        read_volume(change(files))


def test_two_slices_at_one_position_are_refused() -> None:
    files, stack, uids = ct_series(3)
    twin = ct_slice(1, stack[1] + 1024, series=uids["series"], study=uids["study"], frame=uids["frame"])
    with pytest.raises(VolumeError, match=r"^The series holds 2 slices at the same position"):
        read_volume([*files, twin])


def test_uneven_spacing_is_refused() -> None:
    uids = {"series": generate_uid(), "study": generate_uid(), "frame": generate_uid()}
    pixels = np.zeros(SHAPE[1:])
    files = [ct_slice(k, pixels, **uids, step=2.5) for k in range(3)]
    files.append(ct_slice(3, pixels, **uids, step=2.5 * 1.4))
    with pytest.raises(VolumeError, match=r"^The series' slices are not evenly spaced"):
        read_volume(files)


def test_oversize_series_is_refused_before_any_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    files, _, _ = ct_series()
    monkeypatch.setattr(volume_dicom, "read_dicom", lambda *a, **k: pytest.fail("decoded"))
    with pytest.raises(VolumeError, match=r"^The volume is 32 x 32 pixels x 8 slices, more than the 0.001-million"):
        read_volume(files, max_voxels=1000)


def test_zip_bomb_and_path_traversal_are_refused_before_unpacking() -> None:
    files, _, _ = ct_series(2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.dcm", files[0])
        archive.writestr("huge.bin", b"\0" * 8 * 2**20)
    with pytest.raises(VolumeError, match=r"^The zip unpacks to 8.0 MB, more than the 1 MB limit\.$"):
        read_volume(buffer.getvalue(), max_bytes=2**20)
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("ok.dcm", files[0])
        archive.writestr("../../etc/evil.dcm", files[1])
    with pytest.raises(VolumeError, match=r"^The zip holds a file with an unsafe path; it is refused\.$"):
        read_volume(evil.getvalue())


def test_zip_that_lies_about_its_sizes_is_refused() -> None:
    files, _, _ = ct_series(2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("a.dcm", files[0])
    data = bytearray(buffer.getvalue())
    size = len(files[0]).to_bytes(4, "little")
    small = (100).to_bytes(4, "little")
    data = bytes(data).replace(size, small)  # the local header and the central directory both lie
    with pytest.raises(VolumeError, match=r"^The zip"):
        read_volume(data)


# --------------------------------------------------------------------------- enhanced multi-frame


def philips_enhanced() -> bytes:
    path = Path(nib.__file__).parent / "nicom" / "tests" / "data" / "philips_mprage.dcm.gz"
    if not path.exists():
        pytest.skip("nibabel's enhanced DICOM test file is not available")
    return gzip.decompress(path.read_bytes())


def test_enhanced_multiframe_uses_per_frame_positions() -> None:
    data = philips_enhanced()
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    volume = read_volume(data)
    assert volume.source_format == "Enhanced DICOM" and volume.shape == (176, 256, 256)
    positions = np.array([f.PlanePositionSequence[0].ImagePositionPatient for f in ds.PerFrameFunctionalGroupsSequence],
                         dtype=float)
    assert volume.spacing[0] == pytest.approx(np.linalg.norm(positions[1] - positions[0]), rel=1e-3)
    corner = np.diag([-1, -1, 1]) @ positions[np.array(volume.dicom.frame_numbers) - 1][0]
    np.testing.assert_allclose(volume.affine[:3, 3], corner, atol=1e-4)


# --------------------------------------------------------------------------- DICOM export


def test_dicom_export_references_the_series_and_carries_only_the_allowed_identifiers() -> None:
    files, _, uids = ct_series()
    volume = read_volume(files)
    heat = np.random.default_rng(2).random(volume.shape).astype(np.float32)
    exported = pydicom.dcmread(io.BytesIO(heatmap_dicom(volume, heat)))
    assert exported.SOPClassUID.name == "Parametric Map Storage"
    assert exported.SeriesInstanceUID != uids["series"] and exported.StudyInstanceUID == uids["study"]
    assert exported.FrameOfReferenceUID == uids["frame"]
    referenced = exported.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == uids["series"]
    sources = {pydicom.dcmread(io.BytesIO(f), stop_before_pixels=True).SOPInstanceUID for f in files}
    assert {item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence} == sources
    assert (exported.PatientName, exported.PatientID, exported.AccessionNumber) == ("Doe^Jane", "PID-4711", "ACC-99")
    for keyword in SECRETS.keys() - set(COPIED_ATTRIBUTES):
        assert not exported.get(keyword), keyword
    text = str(exported)
    assert not any(value in text for key, value in SECRETS.items() if key not in COPIED_ATTRIBUTES)
    # Every frame sits exactly on a source slice (highdicom may store them in reverse) and holds its heatmap.
    import highdicom as hd

    pmap = hd.pm.ParametricMap.from_dataset(exported)
    assert pmap.SeriesInstanceUID == exported.SeriesInstanceUID
    assert_frames_on_slices(exported, volume, heat)
    assert "nothing else of the source is copied" in EXPORT_NOTICE


def assert_frames_on_slices(exported: pydicom.Dataset, volume: Volume, heat: np.ndarray) -> None:
    """Every frame of the export sits exactly on one slice of the scan (highdicom may store them in reverse) and
    holds that slice's heatmap; every slice has its frame."""
    to_index = np.linalg.inv(np.diag([-1, -1, 1, 1]) @ volume.affine)
    slices = []
    for frame, groups in zip(exported.pixel_array, exported.PerFrameFunctionalGroupsSequence):
        position = np.array([*groups.PlanePositionSequence[0].ImagePositionPatient, 1.0], dtype=float)
        column, row, k, _ = to_index @ position
        assert (column, row) == pytest.approx((0, 0), abs=1e-3) and k == pytest.approx(round(k), abs=1e-3)
        np.testing.assert_array_equal(frame, heat[round(k)])
        slices.append(round(k))
    assert sorted(slices) == list(range(volume.shape[0]))


def test_dicom_export_of_an_enhanced_multiframe_scan_follows_its_frames() -> None:
    """nibabel's enhanced MPRAGE (176 frames): the map's frames lie on the scan's own frames, reference it, and
    carry none of its other attributes."""
    data = philips_enhanced()
    volume = read_volume(data)
    heat = np.zeros(volume.shape, np.float32)
    heat[:, 100:140, 90:130] = np.linspace(0.1, 1.0, volume.shape[0], dtype=np.float32)[:, None, None]
    exported = pydicom.dcmread(io.BytesIO(heatmap_dicom(volume, heat)))
    source = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    assert exported.SOPClassUID.name == "Parametric Map Storage" and exported.NumberOfFrames == volume.shape[0]
    assert exported.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert exported.StudyInstanceUID == source.StudyInstanceUID
    referenced = exported.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
    assert [item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence] == [source.SOPInstanceUID]
    for keyword in ("InstitutionName", "StudyDescription", "SeriesDescription", "ProtocolName", "StationName",
                    "PatientBirthDate", "ReferringPhysicianName"):  # all set in the source file
        assert not exported.get(keyword), keyword
    assert_frames_on_slices(exported, volume, heat)


def test_dicom_export_needs_a_dicom_source_and_the_grid_shape() -> None:
    volume = Volume(np.zeros(SHAPE, np.float32), np.eye(4), "NumPy")
    with pytest.raises(VolumeError, match=r"^Only a scan read from DICOM can be exported as DICOM\.$"):
        heatmap_dicom(volume, np.zeros(SHAPE))
    with pytest.raises(VolumeError, match=r"^The heatmap is 4x4x4 but the scan's grid is 8x32x32"):
        heatmap_nifti(volume, np.zeros((4, 4, 4)))


def test_pydicoms_single_ct_slice_reads_as_a_one_slice_volume() -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    if path is None:
        pytest.skip("pydicom's CT_small.dcm is not available")
    volume = read_volume(path)
    assert volume.shape == (1, 128, 128) and volume.modality == "CT"
    assert "CompressedSamples^CT1" not in repr(volume) + str(volume.summary())
