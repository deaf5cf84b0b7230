"""The heatmap as DICOM: a 2-D image's Parametric Map (engine and Explanation tab) and the 3-D tab's series export.

Sources are generated CT slices and series whose tags hold a patient's name, birth date, institution, physician
and address (``tests.test_volumes``); each export is read back with pydicom and highdicom.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
import streamlit as st
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from dashboard import cache, downloads
from gradcam_core.errors import VolumeError
from gradcam_core.volume_export import COPIED_ATTRIBUTES, EXPORT_NOTICE, check_image_export, heatmap_dicom_image
from gradcam_core.volume_view import map_volume
from gradcam_core.volumes import read_volume
from tests.browser_support import ROOT
from tests.page_text import shown
from tests.test_dashboard_scan import _scan_tab, calls, weights_path  # noqa: F401 - fixtures used by name
from tests.test_volumes import SECRETS, assert_frames_on_slices, ct_series, ct_slice

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

APP = str(ROOT / "dashboard" / "app.py")
ROWS, COLUMNS = 24, 40  # not square: a transposed map would not fit
OTHERS = [value for key, value in SECRETS.items() if key not in COPIED_ATTRIBUTES]
"""The source's values an export must not carry (birth date, institution, physician, address...)."""


def one_slice() -> tuple[bytes, dict[str, str]]:
    """A single-frame CT slice (ROWS x COLUMNS, tilted, placed in the patient) and its UIDs."""
    uids = {"series": generate_uid(), "study": generate_uid(), "frame": generate_uid()}
    pixels = np.random.default_rng(5).integers(0, 2000, (ROWS, COLUMNS))
    return ct_slice(0, pixels, **uids), uids


def radiograph() -> bytes:
    """A slice made a CR radiograph: no Frame of Reference, position or orientation."""
    ds = pydicom.dcmread(io.BytesIO(one_slice()[0]))
    for keyword in ("FrameOfReferenceUID", "ImagePositionPatient", "ImageOrientationPatient", "SliceThickness"):
        delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR Image Storage
    ds.Modality = "CR"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def assert_a_map_of(exported: pydicom.Dataset, source: bytes) -> None:
    """A Parametric Map with new UIDs in the source's study, referencing the source image, carrying its patient's
    name and ID and nothing else of it."""
    original = pydicom.dcmread(io.BytesIO(source), stop_before_pixels=True)
    assert exported.SOPClassUID.name == "Parametric Map Storage"
    assert exported.SeriesInstanceUID not in ("", original.SeriesInstanceUID)
    assert exported.SOPInstanceUID != original.SOPInstanceUID
    assert exported.StudyInstanceUID == original.StudyInstanceUID
    [series] = exported.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == original.SeriesInstanceUID
    assert [item.ReferencedSOPInstanceUID for item in series.ReferencedInstanceSequence] == [original.SOPInstanceUID]
    assert (exported.PatientName, exported.PatientID, exported.AccessionNumber) == ("Doe^Jane", "PID-4711", "ACC-99")
    for keyword in SECRETS.keys() - set(COPIED_ATTRIBUTES):
        assert not exported.get(keyword), keyword
    text = str(exported)
    assert not [value for value in OTHERS if value in text]


# --------------------------------------------------------------------------- engine


def test_a_ct_slice_exports_in_its_frame_of_reference_with_the_heatmap_on_its_pixels() -> None:
    data, uids = one_slice()
    heat = np.random.default_rng(6).random((ROWS, COLUMNS)).astype(np.float32)
    exported = pydicom.dcmread(io.BytesIO(heatmap_dicom_image(data, heat)))
    assert_a_map_of(exported, data)
    assert exported.FrameOfReferenceUID == uids["frame"]
    assert (exported.NumberOfFrames, exported.Rows, exported.Columns) == (1, ROWS, COLUMNS)
    np.testing.assert_array_equal(exported.pixel_array, heat)
    source = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    plane = exported.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    np.testing.assert_allclose(np.array(plane.ImagePositionPatient, float), source.ImagePositionPatient, atol=1e-4)
    shared = exported.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose(np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float),
                               source.ImageOrientationPatient, atol=1e-6)
    np.testing.assert_allclose(np.array(shared.PixelMeasuresSequence[0].PixelSpacing, float), [0.7, 0.9])
    import highdicom as hd

    assert hd.pm.ParametricMap.from_dataset(exported).SOPInstanceUID == exported.SOPInstanceUID


def test_what_cannot_be_exported_is_one_sentence() -> None:
    dose = Path(get_testdata_file("rtdose.dcm")).read_bytes()
    with pytest.raises(VolumeError, match=r"^The heatmap can be exported as DICOM for a single-frame image only; "
                                          r"this file holds 15 frames\.$"):
        check_image_export(dose)
    data, _ = one_slice()
    check_image_export(data)  # a single frame passes
    with pytest.raises(VolumeError, match=r"^The heatmap is 40x24 but the image is 24x40; give it on the image's "
                                          r"pixel grid\.$"):
        heatmap_dicom_image(data, np.zeros((COLUMNS, ROWS)))
    with pytest.raises(VolumeError, match=r"^Only a DICOM image can be exported as DICOM\.$"):
        check_image_export(b"\x89PNG" + bytes(200))
    with pytest.raises(VolumeError, match=r"^The image does not state where it lies in the patient \(a Frame of "
                                          r"Reference and a position\), which a DICOM Parametric Map needs\.$"):
        check_image_export(radiograph())  # the Parametric Map IOD makes the Frame of Reference mandatory


# --------------------------------------------------------------------------- the pages


@pytest.fixture
def deferred(monkeypatch) -> dict:
    """Each deferred download's callable by file name: what a click on the button runs."""
    kept, real = {}, MediaFileManager.add_deferred

    def keep(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        kept[file_name] = data_callable
        return real(self, data_callable, mimetype, coordinates, file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", keep)
    return kept


def _healthy(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _in_order(at: AppTest) -> list[str]:
    """The page's captions and download buttons' labels, top to bottom."""
    return [shown(e.value) if e.type == "caption" else e.proto.label
            for e in at.main if e.type in ("caption", "download_button")]


def _page_text(at: AppTest) -> str:
    """Every text of every element (as shown), except pictures, charts (numbers and base64 may spell anything)
    and uploaders."""
    skipped = {"plotly_chart", "imgs", "image", "file_uploader"}
    return "\n".join(shown(text) for root in (at.main, at.sidebar) for e in root
                     if e.type not in skipped for text in _strings(e.proto))


def _strings(message: object) -> Iterator[str]:
    """The strings of a protobuf message, nested messages included."""
    for field, value in getattr(message, "ListFields", list)():
        for item in value if isinstance(value, Sequence) and not isinstance(value, str) else [value]:
            if isinstance(item, str):
                yield item
            else:
                yield from _strings(item)


def _fresh() -> AppTest:
    st.cache_data.clear()
    cache.shared_results().clear()
    at = AppTest.from_file(APP, default_timeout=180).run()
    _healthy(at)
    return at


def test_the_explanation_tab_offers_the_heatmap_as_dicom_built_on_click(deferred, monkeypatch) -> None:
    built = []
    real = downloads.heatmap_dicom_image
    monkeypatch.setattr(downloads, "heatmap_dicom_image", lambda *args: built.append(args) or real(*args))
    data, uids = one_slice()
    at = _fresh()
    at.file_uploader(key="upload").upload("Doe^Jane_PID-4711.dcm", data).run()
    _healthy(at)
    order = _in_order(at)
    notice = order.index(EXPORT_NOTICE)
    assert order[notice + 1] == "Heatmap (DICOM)"  # the sentence right before the button
    [button] = [b.proto for b in at.get("download_button") if b.proto.label == "Heatmap (DICOM)"]
    assert button.deferred_file_id and not button.url and built == []  # drawing the page builds nothing
    [name] = [name for name in deferred if name.endswith("-heatmap.dcm")]
    exported = pydicom.dcmread(io.BytesIO(deferred[name]()))  # what a click runs
    assert len(built) == 1
    assert_a_map_of(exported, data)
    assert exported.FrameOfReferenceUID == uids["frame"]
    values = np.load(io.BytesIO(deferred[name.replace(".dcm", ".npy")]()))  # the "Values .npy" download
    assert values.shape == (ROWS, COLUMNS) and 0.0 <= values.min() < values.max() <= 1.0
    np.testing.assert_array_equal(exported.pixel_array, values)
    text = _page_text(at)
    for held in ("Heatmap (DICOM)", "CT image, frame 1 of 1", "viridis (colour-blind friendly)"):
        assert held in text  # the dump holds labels, captions and a menu's options
    leaked = [value for value in [*SECRETS.values(), *uids.values(), "ACC-99"] if value in text]
    assert not leaked


def test_a_multi_frame_file_gets_one_sentence_instead() -> None:
    at = _fresh()
    at.file_uploader(key="upload").upload("dose.dcm", Path(get_testdata_file("rtdose.dcm")).read_bytes()).run()
    _healthy(at)
    order = _in_order(at)
    assert "The heatmap can be exported as DICOM for a single-frame image only; this file holds 15 frames." in order
    assert "Heatmap (DICOM)" not in order and EXPORT_NOTICE not in order


def test_the_scan_tab_exports_the_series_map_as_dicom(calls, weights_path, deferred) -> None:  # noqa: F811
    files, _, uids = ct_series()
    at = _scan_tab()
    at.file_uploader(key="scan-upload").set_value([(f"Doe^Jane_{k}.dcm", f, "application/dicom")
                                                   for k, f in enumerate(files)])
    at.file_uploader(key="scan-weights").upload("densenet3d.safetensors", weights_path.read_bytes()).run()
    _healthy(at)
    order = _in_order(at)
    notice = order.index(EXPORT_NOTICE)
    assert order[notice + 1].startswith("Heatmap (DICOM")
    exported = pydicom.dcmread(io.BytesIO(deferred["heatmap.dcm"]()))
    volume = read_volume(files)
    assert exported.SOPClassUID.name == "Parametric Map Storage" and exported.NumberOfFrames == volume.shape[0]
    assert exported.FrameOfReferenceUID == uids["frame"] and exported.StudyInstanceUID == uids["study"]
    [series] = exported.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == uids["series"] != exported.SeriesInstanceUID
    sources = {pydicom.dcmread(io.BytesIO(f), stop_before_pixels=True).SOPInstanceUID for f in files}
    assert {item.ReferencedSOPInstanceUID for item in series.ReferencedInstanceSequence} == sources
    [result] = calls
    heat = map_volume(result.raw_map, volume.shape)
    assert 0.0 <= heat.min() < heat.max() <= 1.0  # a map that varies over the scan
    assert_frames_on_slices(exported, volume, heat)
    assert not [value for value in OTHERS if value in str(exported)]
