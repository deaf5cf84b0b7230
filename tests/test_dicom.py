"""Tests of gradcam_core.dicom on pydicom's bundled test files and on broken DICOMs built in code."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_decoder
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, JPEGLSLossless, generate_uid

from gradcam_core import explain
from gradcam_core.dicom import DicomImage, Window, is_dicom, read_dicom, render_frame
from gradcam_core.errors import ImageError
from gradcam_core.imaging import load_image

# pydicom warns about the deliberately odd test files; the warnings are not what is tested here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def sample(name: str) -> Path:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not available")
    return Path(path)


def sample_bytes(name: str) -> bytes:
    return sample(name).read_bytes()


def dataset(name: str) -> pydicom.FileDataset:
    return pydicom.dcmread(sample(name))


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# Identifying values of the test files: none may ever reach a summary or a message.
def identifying_values(ds: Dataset) -> list[str]:
    values = []
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientAddress",
        "InstitutionAddress",
        "InstitutionName",
        "ReferringPhysicianName",
        "OtherPatientIDs",
    ):
        value = str(ds.get(keyword) or "").strip()
        if len(value) >= 3:
            values.append(value)
    return values


CT_IDENTIFIERS = identifying_values(pydicom.dcmread(get_testdata_file("CT_small.dcm")))


def assert_one_sentence(message: str) -> None:
    assert message, "empty message"
    assert "\n" not in message
    assert message.endswith("."), message
    assert message[0].isupper(), message
    assert not re.search(r"[.!?]\s+[A-Z]", message), f"more than one sentence: {message!r}"
    for leak in ("Traceback", "pydicom", "Dataset", "errno", "<_io", "0x"):
        assert leak not in message, message
    for value in CT_IDENTIFIERS:
        assert value not in message, message


def read_error(source, **kwargs) -> str:
    with pytest.raises(ImageError) as excinfo:
        read_dicom(source, **kwargs)
    message = str(excinfo.value)
    assert_one_sentence(message)
    return message


def grey(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img)
    assert arr.ndim == 3 and arr.shape[2] == 3
    assert np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])
    return arr[..., 0].astype(int)


# --------------------------------------------------------------------------- detection


def test_is_dicom() -> None:
    assert is_dicom(sample_bytes("CT_small.dcm"))
    assert not is_dicom(b"")
    assert not is_dicom(b"DICM" + b"\0" * 200)  # magic must be at offset 128
    assert not is_dicom((Path(__file__).parents[1] / "assets" / "chelsea.png").read_bytes())
    assert not is_dicom(sample_bytes("no_meta.dcm"))  # no preamble: refused by design


def test_load_image_still_refuses_dicom() -> None:
    with pytest.raises(ImageError, match="DICOM"):
        load_image(sample_bytes("CT_small.dcm"))


# --------------------------------------------------------------------------- CT: rescale, depth, window


def test_ct_rescale_applied_at_full_depth() -> None:
    ds = dataset("CT_small.dcm")
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    assert (slope, intercept) != (1.0, 0.0)
    image = read_dicom(sample("CT_small.dcm"))
    assert isinstance(image, DicomImage)
    assert image.frames.dtype == np.float32
    assert image.frames.shape == (1, 128, 128)
    expected = ds.pixel_array.astype(np.float64) * slope + intercept
    np.testing.assert_array_equal(image.frames[0], expected.astype(np.float32))
    # 16-bit data kept: Hounsfield units well outside 0..255.
    assert image.frames.min() < 0 and image.frames.max() > 255
    assert len(np.unique(image.frames)) > 256
    assert (image.rows, image.columns, image.num_frames) == (128, 128, 1)
    assert image.bits_stored == 16 and image.modality == "CT" and image.photometric == "MONOCHROME2"
    assert not image.frames.flags.writeable


def test_ct_bytes_and_path_agree() -> None:
    a = read_dicom(sample("CT_small.dcm"))
    b = read_dicom(sample_bytes("CT_small.dcm"))
    c = read_dicom(str(sample("CT_small.dcm")))
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.frames, c.frames)


def test_default_window_from_file() -> None:
    ds = dataset("CT_small.dcm")
    ds.WindowCenter = [40, 350]  # multi-valued: the first pair is the default
    ds.WindowWidth = [400, 2000]
    image = read_dicom(to_bytes(ds))
    assert image.default_window == Window(40.0, 400.0)

    mr = dataset("MR_small.dcm")
    image = read_dicom(sample("MR_small.dcm"))
    assert image.default_window == Window(float(mr.WindowCenter), float(mr.WindowWidth))


def test_default_window_from_percentiles_without_file_window() -> None:
    ds = dataset("CT_small.dcm")
    assert "WindowCenter" not in ds
    image = read_dicom(sample("CT_small.dcm"))
    lo, hi = np.percentile(image.frames, (0.5, 99.5))
    assert image.default_window.center == pytest.approx((lo + hi) / 2)
    assert image.default_window.width == pytest.approx(hi - lo)


def test_windowing_formula_and_defaults() -> None:
    image = read_dicom(sample("CT_small.dcm"))
    window = Window(40.0, 400.0)  # soft-tissue window, in HU
    out = grey(render_frame(image, 0, window))
    hu = image.frames[0]
    assert (out[hu <= 40 - 0.5 - 399 / 2] == 0).all()
    assert (out[hu > 40 - 0.5 + 399 / 2] == 255).all()
    inside = (hu > -160) & (hu < 240)
    assert inside.any()
    expected = np.clip(np.rint(((hu - 39.5) / 399 + 0.5) * 255), 0, 255)
    np.testing.assert_array_equal(out[inside], expected[inside])
    # No window argument: the default window.
    assert np.array_equal(np.asarray(render_frame(image)), np.asarray(render_frame(image, 0, image.default_window)))


def test_window_changes_rendering_monotonically() -> None:
    image = read_dicom(sample("CT_small.dcm"))
    previous = None
    for center in (-400.0, -100.0, 0.0, 100.0, 400.0, 1000.0):
        current = grey(render_frame(image, 0, Window(center, 400.0)))
        if previous is not None:
            assert (current <= previous).all()  # a higher level darkens every pixel
            assert (current < previous).any()
        previous = current
    narrow = grey(render_frame(image, 0, Window(0.0, 100.0)))
    wide = grey(render_frame(image, 0, Window(0.0, 3000.0)))
    assert narrow.std() > wide.std()  # a narrower window gives more contrast


def test_narrow_and_unit_windows() -> None:
    image = read_dicom(sample("CT_small.dcm"))
    out = grey(render_frame(image, 0, Window(0.0, 1.0)))
    assert set(np.unique(out)) <= {0, 255}
    out = grey(render_frame(image, 0, Window(0.5, 0.25)))  # integer HU never inside
    assert set(np.unique(out)) <= {0, 255}


@pytest.mark.parametrize(("center", "width"), [(0, 0), (0, -5), (float("nan"), 10), (0, float("inf")), ("a", 1)])
def test_bad_window(center, width) -> None:
    with pytest.raises(ImageError) as excinfo:
        Window(center, width)
    assert_one_sentence(str(excinfo.value))


# --------------------------------------------------------------------------- MR, multi-frame, MONOCHROME1, colour


def test_mr_small() -> None:
    image = read_dicom(sample("MR_small.dcm"))
    assert image.modality == "MR" and image.frames.shape == (1, 64, 64)
    assert image.frames.max() > 255
    picture = render_frame(image)
    assert picture.mode == "RGB" and picture.size == (64, 64)


def test_multi_frame_with_frame_picker() -> None:
    ds = dataset("rtdose.dcm")
    image = read_dicom(sample("rtdose.dcm"))
    assert image.num_frames == int(ds.NumberOfFrames) == 15
    assert image.frames.shape == (15, 10, 10)
    np.testing.assert_array_equal(image.frames, ds.pixel_array.astype(np.float32))
    assert image.bits_stored == 32 and image.frames.max() > 65535
    window = image.default_window
    renders = [grey(render_frame(image, i, window)) for i in range(image.num_frames)]
    assert any(not np.array_equal(renders[0], other) for other in renders[1:])
    assert render_frame(image, 14).size == (10, 10)
    for bad in (15, -1, 100):
        with pytest.raises(ImageError) as excinfo:
            render_frame(image, bad)
        assert_one_sentence(str(excinfo.value))
        assert "15 frames" in str(excinfo.value)
    with pytest.raises(ImageError):
        render_frame(image, 1.5)  # type: ignore[arg-type]


def test_monochrome1_is_inverted() -> None:
    ds = dataset("CT_small.dcm")
    ds.PhotometricInterpretation = "MONOCHROME1"
    inverted = read_dicom(to_bytes(ds))
    normal = read_dicom(sample("CT_small.dcm"))
    assert inverted.photometric == "MONOCHROME1"
    np.testing.assert_array_equal(inverted.frames, normal.frames)  # same values, only the display differs
    window = Window(40.0, 400.0)
    m1 = grey(render_frame(inverted, 0, window))
    m2 = grey(render_frame(normal, 0, window))
    np.testing.assert_array_equal(m1, 255 - m2)
    hu = inverted.frames[0]
    low, high = np.unravel_index(hu.argmin(), hu.shape), np.unravel_index(hu.argmax(), hu.shape)
    assert m1[high] < m1[low]  # a higher value renders darker


@pytest.mark.parametrize("name", ["SC_rgb_rle.dcm", "ExplVR_BigEnd.dcm", "SC_rgb_rle_16bit_2frame.dcm"])
def test_rgb_returned_without_windowing(name: str) -> None:
    ds = dataset(name)
    image = read_dicom(sample(name))
    assert image.is_color and image.default_window is None
    expected = ds.pixel_array.reshape(image.num_frames, image.rows, image.columns, 3)
    np.testing.assert_array_equal(image.frames, expected.astype(np.float32))
    scale = 255 / (2**image.bits_stored - 1)
    for index in range(image.num_frames):
        picture = render_frame(image, index, Window(0.0, 1.0))  # window ignored for colour
        assert picture.mode == "RGB" and picture.size == (image.columns, image.rows)
        np.testing.assert_array_equal(np.asarray(picture), np.rint(expected[index] * scale).astype(np.uint8))


def test_ybr_converted_to_rgb() -> None:
    image = read_dicom(sample("SC_ybr_full_422_uncompressed.dcm"))
    assert image.photometric == "YBR_FULL_422" and image.is_color
    reference = read_dicom(sample("SC_rgb_rle.dcm"))  # the same picture stored as RGB
    diff = np.abs(np.asarray(render_frame(image), int) - np.asarray(render_frame(reference), int))
    assert diff.mean() < 3


def test_palette_color() -> None:
    image = read_dicom(sample("examples_palette.dcm"))
    assert image.is_color and image.photometric == "PALETTE COLOR"
    arr = np.asarray(render_frame(image))
    assert arr.shape == (image.rows, image.columns, 3) and arr.std() > 0


# --------------------------------------------------------------------------- summary and privacy


def test_summary_is_technical_and_non_identifying() -> None:
    ds = dataset("CT_small.dcm")
    assert str(ds.PatientName) and CT_IDENTIFIERS
    summary = read_dicom(sample("CT_small.dcm")).summary()
    assert summary["Modality"] == "CT"
    assert summary["Image size"] == "128 × 128 px"
    assert summary["Frames"] == "1"
    assert summary["Bits stored"] == "16"
    assert summary["Photometric interpretation"] == "MONOCHROME2"
    assert summary["Pixel spacing"].endswith("mm") and summary["Slice thickness"] == "5 mm"
    assert set(summary) <= {
        "Modality",
        "Image size",
        "Frames",
        "Bits stored",
        "Photometric interpretation",
        "Pixel spacing",
        "Slice thickness",
    }
    text = str(summary)
    for value in CT_IDENTIFIERS + [str(ds.PatientName), str(ds.PatientID)]:
        assert value not in text
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in summary.items())


def test_free_text_never_leaks_through_code_strings() -> None:
    ds = dataset("CT_small.dcm")
    ds.PatientName = "Doe^Jane"
    ds.PatientAddress = "1 Main Street"
    for modality in ("Jane Doe 1970-01-01 hospital", "JANE DOE"):  # not a defined term: dropped
        ds.Modality = modality
        image = read_dicom(to_bytes(ds))
        assert image.modality == "" and image.summary()["Modality"] == "unknown"
        text = str(image.summary()) + repr(image)
        for secret in ("Doe", "DOE", "Jane", "JANE", "Main Street", "1970"):
            assert secret not in text


# --------------------------------------------------------------------------- broken files


def test_truncated_files() -> None:
    data = sample_bytes("MR_small.dcm")
    for cut in [*range(0, 400, 7), *range(400, len(data), 97), len(data) - 1]:
        message = read_error(data[:cut])
        assert "DICOM" in message or "empty" in message


def test_bundled_truncated_file() -> None:
    assert read_error(sample("MR_truncated.dcm")) == "The file is not a readable DICOM file (truncated or corrupt)."


@pytest.mark.parametrize("seed", range(8))
def test_dicm_header_with_garbage(seed: int) -> None:
    garbage = np.random.default_rng(seed).bytes(4000)
    read_error(b"\0" * 128 + b"DICM" + garbage)


def test_not_dicom_and_empty() -> None:
    assert read_error(b"") == "The DICOM file is empty."  # the one reader names what it reads (files.read_bounded)
    assert "not a DICOM file" in read_error(b"hello" * 100)
    assert "not a DICOM file" in read_error(sample_bytes("no_meta.dcm"))


def test_no_pixel_data() -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.PatientName = "CompressedSamples^CT1"
    ds.Modality = "OT"
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = 4, 4
    assert read_error(to_bytes(ds)) == "The DICOM file has no pixel data."

    ct = dataset("CT_small.dcm")
    del ct.PixelData
    assert read_error(to_bytes(ct)) == "The DICOM file has no pixel data."


def test_pixel_data_shorter_than_declared() -> None:
    ds = dataset("CT_small.dcm")
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    read_error(to_bytes(ds))


def test_missing_and_folder_paths(tmp_path: Path) -> None:
    patient_file = tmp_path / "Doe_Jane_CT.dcm"
    message = read_error(patient_file)
    assert "Doe" not in message  # file names often hold patient names
    read_error(tmp_path)


def test_too_large() -> None:
    data = sample_bytes("CT_small.dcm")
    assert "limit" in read_error(data, max_bytes=1000)
    assert "limit" in read_error(data, max_pixels=128 * 127)
    assert "limit" in read_error(sample("CT_small.dcm"), max_bytes=1000)
    assert read_dicom(data, max_pixels=128 * 128).num_frames == 1


def test_deflated_dataset_is_bounded() -> None:
    data = sample_bytes("image_dfl.dcm")
    image = read_dicom(data)
    assert image.frames.shape == (1, 512, 512)
    assert "inflates" in read_error(data, max_bytes=len(data) + 1000)


def test_decoder_not_installed(monkeypatch) -> None:
    decoder = get_decoder(JPEGLSLossless)
    monkeypatch.setattr(type(decoder), "is_available", property(lambda self: False))  # as without pyjpegls
    message = read_error(sample("MR_small_jpeg_ls_lossless.dcm"))
    assert message == (
        "The DICOM file is compressed with a transfer syntax that cannot be decoded here "
        "(JPEG-LS Lossless Image Compression)."
    )


def test_jpeg2000() -> None:
    if get_decoder(JPEG2000).is_available:
        image = read_dicom(sample("JPEG2000.dcm"))  # decoded at full depth
        assert image.frames.dtype == np.float32 and image.bits_stored == 16
        return
    message = read_error(sample("JPEG2000.dcm"))
    assert "JPEG 2000" in message


def test_unsupported_transfer_syntax() -> None:
    ds = dataset("CT_small.dcm")
    data = to_bytes(ds)
    uid = ExplicitVRLittleEndian.encode()
    hacked = data.replace(uid + b"\0", b"1.2.3.4.5.6.7.8.9.1" + b"\0", 1)
    assert len(hacked) == len(data)
    read_error(hacked)


def test_errors_never_quote_patient_data() -> None:
    ds = dataset("CT_small.dcm")
    name = str(ds.PatientName)
    for mutate in (
        lambda d: d.__delattr__("PixelData"),
        lambda d: setattr(d, "PhotometricInterpretation", "Doe^Jane"),
        lambda d: setattr(d, "PhotometricInterpretation", "JANE DOE"),
        lambda d: setattr(d, "PhotometricInterpretation", "CMYK"),
        lambda d: setattr(d, "RescaleSlope", "0"),
    ):
        copy = pydicom.dcmread(sample("CT_small.dcm"))
        mutate(copy)
        message = read_error(to_bytes(copy))
        for secret in (name, "Doe", "DOE", "Jane", "JANE"):
            assert secret not in message


# --------------------------------------------------------------------------- into the model


def test_explain_a_rendered_frame(lite0) -> None:
    image = read_dicom(sample("CT_small.dcm"))
    picture = render_frame(image, 0, Window(40.0, 400.0))
    result = explain(picture, model=lite0)
    assert result.image.size == (128, 128)
    assert result.heatmap.shape == (128, 128)
    assert np.isfinite(result.heatmap).all() and 0.0 <= result.heatmap.min() <= result.heatmap.max() <= 1.0
    assert len(result.predictions) == 5


def test_no_warnings_leak_from_valid_files() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_dicom(sample("MR_small.dcm"))
