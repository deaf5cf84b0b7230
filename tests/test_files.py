"""One bounded reader and one size formatter for every file the engine reads (images, DICOM, weights, labels)."""

from __future__ import annotations

import pytest

from gradcam_core import DICOM_SUFFIXES, IMAGE_SUFFIXES, UPLOAD_SUFFIXES, ImageError, ModelError, read_dicom
from gradcam_core.files import read_bounded
from gradcam_core.formats import image_format_list
from gradcam_core.imaging import load_image
from gradcam_core.labels import read_labels
from gradcam_core.units import format_megapixels, format_size, plural


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 bytes"), (1000, "1000 bytes"), (1024, "1 KB"), (3 * 2**19, "1.5 MB"), (200 * 2**20, "200 MB"),
     (25 * 2**20 + 8, "25.0 MB"), (int(2.25 * 2**30), "2.2 GB")],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


def test_format_megapixels_and_plural() -> None:
    assert [format_megapixels(n) for n in (50_000_000, 1_500_000, 12_345_678)] == ["50", "1.5", "12"]
    assert [plural(1, "key"), plural(2, "key"), plural(0, "frame")] == ["1 key", "2 keys", "0 frames"]


def test_every_reader_says_too_large_the_same_way(tmp_path) -> None:
    data = b"x" * (3 * 2**19)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    limit = 2**20
    with pytest.raises(ImageError, match=r"^The file is 1\.5 MB, more than the 1 MB limit\.$"):
        load_image(data, max_bytes=limit)
    with pytest.raises(ImageError, match=rf"^The file '{path}' is 1\.5 MB, more than the 1 MB limit\.$"):
        load_image(path, max_bytes=limit)
    with pytest.raises(ImageError, match=r"^The DICOM file is 1\.5 MB, more than the 1 MB limit\.$"):
        read_dicom(path, max_bytes=limit)  # never named: DICOM file names may hold a patient's name
    with pytest.raises(ModelError, match=rf"^The weights file '{path}' is 1\.5 MB, more than the 1 MB limit\.$"):
        read_bounded(path, limit, what="weights file", error=ModelError)


def test_every_reader_refuses_folders_missing_and_empty_files(tmp_path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match=r"^The labels file '.*empty\.txt' is empty\.$"):
        read_labels(empty, 2)
    with pytest.raises(ModelError, match=r"^The path '.*' is a folder, not a file\.$"):
        read_labels(tmp_path, 2)
    with pytest.raises(ImageError, match=r"^The DICOM file does not exist\.$"):
        read_dicom(tmp_path / "patient_name.dcm")
    with pytest.raises(ModelError, match=r"given as a path or bytes, not as int"):
        read_bounded(3, 10, what="weights file", error=ModelError)  # type: ignore[arg-type]


def test_upload_formats_are_listed_once() -> None:
    assert IMAGE_SUFFIXES == (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
    assert UPLOAD_SUFFIXES == IMAGE_SUFFIXES + DICOM_SUFFIXES
    assert image_format_list() == "PNG, JPEG, WebP, BMP or TIFF"
    with pytest.raises(ImageError, match=r"\(use PNG, JPEG, WebP, BMP or TIFF\)\.$"):
        load_image(b"not an image at all")
