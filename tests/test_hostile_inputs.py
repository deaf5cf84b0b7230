"""Hostile inputs: files cheap to send but costly to decode, non-regular files, terminal escapes in file names,
spreadsheet formulas in names, and races on a shared model. Every hostile file is generated here; each refusal
is one sentence, raised before the costly work starts."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
import torch
import torchvision
from PIL import Image, ImageFile, features
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import get_decoder
from safetensors.torch import save_file
from torch import nn

from gradcam_core import cli, compute_cam, load_custom_model, randomized_copy
from gradcam_core.checkpoints import MAX_INDEX_BYTES, MAX_TENSORS
from gradcam_core.dicom import _frame_size, read_dicom, render_frame
from gradcam_core.errors import ImageError, ModelError
from gradcam_core.imaging import MAX_JPEG_SCANS, load_image
from gradcam_core.layers import probe_forward
from gradcam_core.modes import eval_mode
from gradcam_core.tables import csv_table

ROOT = Path(__file__).resolve().parents[1]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the odd files


def assert_one_sentence(message: str) -> None:
    assert message and "\n" not in message and message.endswith("."), message
    assert message[0].isupper(), message
    assert not re.search(r"[.!?]\s+[A-Z]", message), f"more than one sentence: {message!r}"


# ------------------------------------------------------------------------------------------- JPEG builders


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each segment after SOI; a scan's segment runs to the end of its entropy data."""
    segments, pos = [], 2
    while data[pos + 1] != 0xD9:
        marker = data[pos + 1]
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:
            end = re.compile(rb"\xff[^\x00\xd0-\xd7]").search(data, end).start()
        segments.append((marker, pos, end))
        pos = end
    return segments


def progressive_jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", progressive=True, quality=90)
    return buffer.getvalue()


def scan_bomb(image: Image.Image, copies: int, glue: bytes = b"") -> bytes:
    """A progressive JPEG whose smallest scan is repeated ``copies`` times (``glue`` before each copy)."""
    data = progressive_jpeg(image)
    start, end = min(((s, e) for m, s, e in jpeg_segments(data) if m == 0xDA), key=lambda se: se[1] - se[0])
    return data[:end] + (glue + data[start:end]) * copies + data[end:]


def grey_gradient(size: int) -> Image.Image:
    return Image.fromarray(np.add.outer(np.arange(size), np.arange(size)).astype(np.uint8))


# ---------------------------------------------------------------------------------------- 1. image decoding


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any pixel decoding by Pillow fails the test: refusals must come before it."""

    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def test_jpeg_with_thousands_of_scans_is_refused_before_decoding(tmp_path: Path, no_decoding: None) -> None:
    data = scan_bomb(grey_gradient(16), 5000)
    assert len(data) < 1_000_000
    path = tmp_path / "scans.jpg"
    path.write_bytes(data)
    for source in (data, path, Image.open(io.BytesIO(data))):
        with pytest.raises(ImageError) as excinfo:
            load_image(source)
        assert str(excinfo.value) == (
            f"The JPEG file has more than {MAX_JPEG_SCANS} scans, which would make decoding it far too slow."
        )


def test_scan_count_cannot_be_hidden_from_the_walk() -> None:
    # libjpeg skips fill bytes and stray bytes between segments (it warns and goes on): so must the count.
    for glue in (b"\xff\xff\xff", b"\x00\x13\x37", b"\xff\x00"):
        data = scan_bomb(grey_gradient(16), 400, glue)
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # Pillow decodes it: a real file, not one it would refuse anyway
        with pytest.raises(ImageError, match="scans"):
            load_image(data)


def test_real_jpegs_still_decode() -> None:
    colour = Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8))
    restarts = io.BytesIO()
    colour.save(restarts, "JPEG", restart_marker_blocks=1)  # a restart marker after every MCU
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the EXIF block is a segment of its own
    with_exif = io.BytesIO()
    colour.save(with_exif, "JPEG", progressive=True, exif=exif.tobytes())
    assert load_image(progressive_jpeg(colour)).size == (160, 120)
    own_scans = sum(marker == 0xDA for marker, _, _ in jpeg_segments(progressive_jpeg(grey_gradient(16))))
    assert load_image(scan_bomb(grey_gradient(16), MAX_JPEG_SCANS - own_scans)).size == (16, 16)
    assert load_image(restarts.getvalue()).size == (160, 120)
    assert load_image(with_exif.getvalue()).size == (120, 160)


def test_jpeg_with_too_many_segments_is_refused(no_decoding: None) -> None:
    data = progressive_jpeg(grey_gradient(16))
    padded = data[:2] + b"\xff\xfe\x00\x02" * 20_000 + data[2:]  # 80 KB of empty comments
    with pytest.raises(ImageError) as excinfo:
        load_image(padded)
    assert str(excinfo.value) == (
        "The JPEG file has more than 10000 marker segments, which would make reading it far too slow."
    )


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_file(width: int, height: int, stream: bytes, *, extra: bytes = b"") -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + extra + png_chunk(b"IDAT", stream) + png_chunk(b"IEND", b"")
    )


def inflating_stream(size: int, prefix: bytes = b"") -> bytes:
    """A zlib stream of ``prefix`` then zeros, ``size`` bytes in all, built a megabyte at a time."""
    compressor = zlib.compressobj(9)
    out = [compressor.compress(prefix)]
    block = bytes(1 << 20)
    for _ in range((size - len(prefix)) >> 20):
        out.append(compressor.compress(block))
    return b"".join(out) + compressor.flush()


def bmp_header(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + 64, 0, 0, 14 + len(info)) + info + bytes(64)


def saved(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def animation(fmt: str, frames: int, mode: str = "RGB") -> bytes:
    pictures = [Image.new(mode, (16, 16), (i * 7 % 256,) * len(mode)) for i in range(frames)]
    return saved(pictures[0], fmt, save_all=True, append_images=pictures[1:])


def hostile_corpus() -> dict[str, tuple[bytes, str]]:
    """File name -> (bytes, expected outcome: "decoded" or a word of the refusal)."""
    real_png = saved(grey_gradient(256).convert("RGB"), "PNG")
    real_jpeg = saved(grey_gradient(256).convert("RGB"), "JPEG")
    palette = Image.new("P", (32, 32), 3)
    palette.info["transparency"] = 3
    floats = np.linspace(-1, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    floats[0, :3] = (np.nan, np.inf, -np.inf)
    corpus = {
        "scan_bomb.jpg": (scan_bomb(grey_gradient(16), 5000), "scans"),
        "segment_bomb.jpg": (real_jpeg[:2] + b"\xff\xfe\x00\x02" * 250_000 + real_jpeg[2:], "segments"),
        "pixel_bomb.png": (png_file(100_000, 100_000, zlib.compress(b"\x00" * 100_001)), "megapixel"),
        "pixel_bomb.bmp": (bmp_header(60_000, 60_000), "megapixel"),
        "truncated.png": (real_png[: len(real_png) // 2], "truncated"),
        "truncated.jpg": (real_jpeg[: len(real_jpeg) // 2], "truncated"),
        # 64 x 64 pixels declared, a 64 MB stream behind them: decoding stops when the image is full.
        "zip_bomb.png": (png_file(64, 64, inflating_stream(64 << 20, b"\x00" * 65 * 64)), "decoded"),
        "big_but_allowed.png": (saved(Image.new("L", (4000, 4000)), "PNG"), "decoded"),
        "many_chunks.png": (png_file(8, 8, zlib.compress(b"\x00" * 72), extra=png_chunk(b"tEXt", b"k\x00v") * 20_000),
                            "decoded"),
        "many_pages.tif": (animation("TIFF", 2000, "L"), "decoded"),
        "many_frames.gif": (animation("GIF", 2000, "L"), "decoded"),
        "palette_transparency.png": (saved(palette, "PNG"), "decoded"),
        "one_bit.bmp": (saved(Image.new("1", (33, 17), 1), "BMP"), "decoded"),
        "sixteen_bit.png": (saved(Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)), "PNG"),
                            "decoded"),
        "cmyk.jpg": (saved(Image.new("CMYK", (40, 30), (0, 255, 0, 0)), "JPEG"), "decoded"),
        "nan_float.tif": (saved(Image.fromarray(floats, mode="F"), "TIFF"), "decoded"),
    }
    if features.check("webp"):
        corpus["many_frames.webp"] = (animation("WEBP", 300), "decoded")
    return corpus


MEASURE = """
import json, resource, sys, time
from gradcam_core.errors import ImageError
from gradcam_core.imaging import load_image
load_image(sys.argv[1])  # warm up the decoders
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for path in sys.argv[2:]:
    started = time.perf_counter()
    try:
        load_image(path)
        outcome = "decoded"
    except ImageError as exc:
        outcome = str(exc)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"file": path, "outcome": outcome, "seconds": seconds, "peak_mb": (peak - baseline) / 1024}))
"""


@pytest.mark.timeout(300)
def test_hostile_corpus_is_refused_or_cheap(tmp_path: Path) -> None:
    corpus = hostile_corpus()
    paths = {}
    for name, (data, _) in corpus.items():
        paths[name] = tmp_path / name
        paths[name].write_bytes(data)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", MEASURE, str(ROOT / "assets" / "chelsea.png"), *map(str, paths.values())],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=280,
    )
    assert run.returncode == 0, run.stderr
    results = {Path(row["file"]).name: row for row in map(json.loads, run.stdout.splitlines())}
    for name, (_, expected) in corpus.items():
        row = results[name]
        if expected == "decoded":
            assert row["outcome"] == "decoded", (name, row)
        else:
            assert expected in row["outcome"], (name, row)
            assert_one_sentence(row["outcome"])
        # ru_maxrss only grows: each row's peak covers that file and every file before it.
        assert row["peak_mb"] < 300, (name, row)


# ------------------------------------------------------------------------------------------------- 2. DICOM


def dicom_sample(name: str) -> Path:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not available")
    return Path(path)


def with_frames(name: str, frames: list[bytes]) -> bytes:
    """The pydicom test file ``name`` with its encapsulated frames replaced by ``frames``."""
    ds = pydicom.dcmread(dicom_sample(name))
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def first_frame(name: str) -> bytes:
    ds = pydicom.dcmread(dicom_sample(name))
    return next(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames") or 1)))


def patched_siz(codestream: bytes, width: int, height: int) -> bytes:
    """A JPEG 2000 codestream whose SIZ marker declares ``width`` x ``height`` (no offsets)."""
    at = codestream.index(b"\xff\x4f\xff\x51")
    return codestream[: at + 8] + struct.pack(">IIII", width, height, 0, 0) + codestream[at + 24 :]


def patched_sof(jpeg: bytes, width: int, height: int) -> bytes:
    start = next(s for m, s, _ in jpeg_segments(jpeg) if m in (0xC0, 0xC1, 0xC2))
    return jpeg[: start + 5] + struct.pack(">HH", height, width) + jpeg[start + 9 :]


@pytest.fixture
def no_pillow_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """pydicom's Pillow plugin opens every JPEG and JPEG 2000 frame with Image.open: make that fail."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a compressed frame was decoded")

    monkeypatch.setattr(Image, "open", refuse)


def dicom_error(data: bytes) -> str:
    with pytest.raises(ImageError) as excinfo:
        read_dicom(data)
    message = str(excinfo.value)
    assert_one_sentence(message)
    return message


def test_jpeg2000_frame_larger_than_declared_is_refused_before_decoding(no_pillow_decoding: None) -> None:
    codestream = first_frame("JPEG2000.dcm")  # 256 x 1024 declared and encoded
    data = with_frames("JPEG2000.dcm", [patched_siz(codestream, 13000, 13000)])
    assert dicom_error(data) == (
        "The DICOM file's compressed frame is 13000 x 13000 pixels but the file declares 256 x 1024; it is refused."
    )
    # The same codestream in a JP2 file (signature, file type and codestream boxes).
    jp2 = (
        b"\x00\x00\x00\x0cjP  \r\n\x87\n" + struct.pack(">I4s4sI4s", 20, b"ftyp", b"jp2 ", 0, b"jp2 ")
        + struct.pack(">I4s", 8 + len(codestream), b"jp2c") + patched_siz(codestream, 13000, 13000)
    )
    assert "13000 x 13000" in dicom_error(with_frames("JPEG2000.dcm", [jp2]))


def test_jpeg_frame_larger_than_declared_is_refused_before_decoding(no_pillow_decoding: None) -> None:
    frame = first_frame("SC_rgb_jpeg_dcmtk.dcm")  # 100 x 100
    message = dicom_error(with_frames("SC_rgb_jpeg_dcmtk.dcm", [patched_sof(frame, 20000, 9000)]))
    assert message == (
        "The DICOM file's compressed frame is 20000 x 9000 pixels but the file declares 100 x 100; it is refused."
    )


def test_jpeg_frame_with_thousands_of_scans_is_refused_before_decoding(no_pillow_decoding: None) -> None:
    picture = Image.fromarray(np.random.default_rng(1).integers(0, 255, (100, 100, 3), dtype=np.uint8))
    message = dicom_error(with_frames("SC_rgb_jpeg_dcmtk.dcm", [scan_bomb(picture, 3000)]))
    assert f"more than {MAX_JPEG_SCANS} JPEG scans" in message


def test_jpeg_ls_header_is_read() -> None:
    # No JPEG-LS decoder here (refused by transfer syntax first), but the SOF55 header is understood.
    assert _frame_size(first_frame("MR_small_jpeg_ls_lossless.dcm")) == (64, 64)
    assert _frame_size(b"\x00" * 40) is None


def rle_frame(segments: list[bytes]) -> bytes:
    offsets = []
    position = 64
    for segment in segments:
        offsets.append(position)
        position += len(segment)
    header = struct.pack("<16I", len(segments), *offsets, *[0] * (15 - len(segments)))
    return header + b"".join(segments)


def test_rle_frame_that_inflates_past_the_declared_size_is_refused_before_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pydicom.pixels.decoders import rle

    def refuse(src: bytes) -> bytearray:
        raise AssertionError("an RLE segment was decoded")

    monkeypatch.setattr(rle, "_rle_decode_segment", refuse)
    # MR_small_RLE: 64 x 64, 16 bits: two segments of 4096 bytes each. These decode to 256 KB each.
    bomb = rle_frame([b"\x81\x00" * 2048, b"\x81\x00" * 2048])
    message = dicom_error(with_frames("MR_small_RLE.dcm", [bomb]))
    assert message == (
        "The DICOM file's RLE-compressed frame decodes to more pixels than the file declares; it is refused."
    )


@pytest.mark.parametrize(
    "name",
    ["JPEG2000.dcm", "MR_small_jp2klossless.dcm", "SC_rgb_jpeg_dcmtk.dcm", "MR_small_RLE.dcm", "SC_rgb_rle_2frame.dcm",
     "examples_ybr_color.dcm"],
)
def test_genuine_compressed_files_still_decode(name: str) -> None:
    ds = pydicom.dcmread(dicom_sample(name))
    if not get_decoder(ds.file_meta.TransferSyntaxUID).is_available:
        pytest.skip("no decoder for this transfer syntax")
    image = read_dicom(dicom_sample(name))
    assert image.frames.shape[1:3] == (ds.Rows, ds.Columns)
    assert np.isfinite(image.frames).all()


def float_dicom(values: np.ndarray) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 32
    ds.FloatPixelData = values.astype("<f4").tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_float_pixel_data_with_nan_and_infinity_windows_from_the_finite_values() -> None:
    values = np.linspace(0.0, 100.0, 64 * 64, dtype=np.float32).reshape(64, 64)
    values[0, :3] = (np.nan, np.inf, -np.inf)
    values[1, :] = np.nan
    image = read_dicom(float_dicom(values))
    finite = values[np.isfinite(values)]
    lo, hi = np.percentile(finite, (0.5, 99.5))
    assert image.default_window.center == pytest.approx((lo + hi) / 2, rel=1e-4)
    assert image.default_window.width == pytest.approx(hi - lo, rel=1e-4)
    grey = np.asarray(render_frame(image))[..., 0].astype(int)
    assert grey[0, :3].tolist() == [0, 255, 0]  # NaN black, +inf white, -inf black
    assert (grey[1] == 0).all()
    shown = grey.ravel()[np.isfinite(values).ravel()]  # the finite values, in increasing order
    assert shown.min() == 0 and shown.max() == 255 and (np.diff(shown) >= 0).all()


# ------------------------------------------------------------------------------------------ 3. weights files


def safetensors_file(header: dict, payload: bytes = b"") -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode()
    return len(text).to_bytes(8, "little") + text + payload


@pytest.fixture
def no_weights_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the weights were parsed")

    monkeypatch.setattr(safetensors.torch, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)


def test_safetensors_header_with_too_many_tensors_is_refused_from_the_header(no_weights_parsing: None) -> None:
    count = MAX_TENSORS + 1
    header = {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(count)}
    header["__metadata__"] = {"format": "pt"}
    data = safetensors_file(header)
    assert len(data) < MAX_INDEX_BYTES
    with pytest.raises(ModelError) as excinfo:
        load_custom_model("resnet18", data, ["a"])
    assert str(excinfo.value) == (
        f"The weights file holds {count:,} tensors, more than the {MAX_TENSORS:,} a classifier could have; "
        "it is refused."
    )


def test_safetensors_header_too_long_is_refused_before_reading_it(no_weights_parsing: None) -> None:
    # 1.45 million empty tensors take an 80 MB header (safetensors accepts up to 100 MB): the length alone refuses it.
    data = (80 * 1024**2).to_bytes(8, "little") + b'{"t0":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}'
    with pytest.raises(ModelError) as excinfo:
        load_custom_model("resnet18", data, ["a"])
    assert str(excinfo.value) == (
        "The weights file's safetensors header is 80 MB, over the 4 MB a classifier needs."
    )


def test_checkpoint_archive_with_too_many_members_is_refused_from_its_directory(no_weights_parsing: None) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        for index in range(MAX_TENSORS + 20):
            archive.writestr(f"archive/data/{index}", b"")
    data = buffer.getvalue()
    with pytest.raises(ModelError, match=r"holds 20,021 tensors, more than the 20,000"):
        load_custom_model("resnet18", data, ["a"])
    # A directory record understating the count: the parsed directory is counted too.
    end = data.rindex(b"PK\x05\x06")
    understated = data[: end + 8] + struct.pack("<HH", 10, 10) + data[end + 12 :]
    with pytest.raises(ModelError, match=r"holds 20,021 tensors"):
        load_custom_model("resnet18", understated, ["a"])


def resnet18_state(classes: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=classes).state_dict()


@pytest.mark.parametrize("weight", [torch.zeros(3), torch.tensor(1.0)])
def test_classifier_vector_is_a_wrong_shape_not_a_missing_key(weight: torch.Tensor, tmp_path: Path) -> None:
    state = resnet18_state()
    state["fc.weight"] = weight
    path = tmp_path / "head.safetensors"
    save_file(state, path)
    with pytest.raises(ModelError) as excinfo:
        load_custom_model("resnet18", path, ["a", "b", "c"])
    shape = "3" if weight.ndim else "a single number"
    assert str(excinfo.value) == (
        f"The weights do not fit resnet18: the classifier tensor 'fc.weight' has the wrong shape ({shape}, not N×512 "
        "for N classes); check the architecture name."
    )


# -------------------------------------------------------------------------------- 4. non-regular files, CLI


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    return path


@pytest.mark.timeout(20)
def test_fifo_and_devices_are_refused_without_hanging(fifo: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n", encoding="utf-8")
    weights = tmp_path / "w.safetensors"
    save_file(resnet18_state(), weights)
    for device in (fifo, Path("/dev/zero")):
        if not device.exists():
            continue
        with pytest.raises(ImageError, match="not a regular file"):
            load_image(device)
        with pytest.raises(ImageError, match="not a regular file"):
            read_dicom(device)
        with pytest.raises(ModelError, match="is not a regular file"):
            load_custom_model("resnet18", device, labels)
        with pytest.raises(ModelError, match="is not a regular file"):
            load_custom_model("resnet18", weights, device)


@contextlib.contextmanager
def captured() -> SimpleNamespace:
    out, err = io.StringIO(), io.StringIO()
    result = SimpleNamespace()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield result
    result.out, result.err = out.getvalue(), err.getvalue()


@pytest.mark.timeout(60)
def test_cli_refuses_a_fifo_without_hanging(fifo: Path, tmp_path: Path, monkeypatch, lite0) -> None:
    monkeypatch.setattr(cli, "load_model", lambda name: lite0)
    with captured() as run:
        code = cli.main([str(fifo), "--out", str(tmp_path / "out")])
    assert code == 1
    assert f"error: {fifo}: The path '{fifo}' is not a regular file." in run.err


def test_cli_escapes_control_characters_in_file_names(tmp_path: Path, monkeypatch, lite0) -> None:
    monkeypatch.setattr(cli, "load_model", lambda name: lite0)
    folder = tmp_path / "in\x1b]0;owned\x07"
    folder.mkdir()
    evil = "red\x1b[31m\rfake ok\x9b2J"
    images = []
    for index in range(5):  # enough for the progress bar, which shows the names
        images.append(folder / f"{evil}{index}.png")
        Image.new("RGB", (48, 48), (index * 40, 90, 160)).save(images[-1])
    missing = folder / f"{evil}missing.png"
    with captured() as run:
        code = cli.main([*map(str, images), str(missing), "--out", str(tmp_path / "out\x1b[2J"), "--progress"])
    assert code == 1
    printed = run.out + run.err
    for control in ("\x1b", "\x07", "\x9b"):
        assert control not in printed
    assert "\rfake" not in printed  # the progress bar's own carriage returns remain, the name's do not
    assert r"red\x1b[31m\rfake ok\x9b2J" in run.err  # progress names and the error line, escaped
    assert r"error: " in run.err and r"in\x1b]0;owned\x07" in run.err
    assert r"out\x1b[2J" in run.out
    with (tmp_path / "out\x1b[2J" / "summary.csv").open(encoding="utf-8", newline="") as table:
        rows = list(csv.reader(table))
    assert len(rows) == 6  # the carriage returns in the names did not split a row
    assert {row[0] for row in rows[1:]} == set(map(str, images))


def test_escape_function_covers_c0_c1_del_and_undecodable_bytes() -> None:
    assert cli._printable("a\x00b\x1bc\rd\ne\x7ff\x85g\x9bh\udcffi é 日本") == (
        r"a\x00b\x1bc\rd\ne\x7ff\x85g\x9bh\udcffi é 日本"
    )


def explained(**fields: str) -> SimpleNamespace:
    prediction = SimpleNamespace(index=0, label=fields.pop("label", "cat"), probability=0.5)
    return SimpleNamespace(
        predictions=[prediction], target=prediction, score=-1.5, strength=0.25,
        **{"model": "m", "layer": "l", "method": "gradcam", **fields},
    )


def test_every_text_cell_of_the_csv_is_spreadsheet_safe() -> None:
    row = explained(model='=HYPERLINK("http://x","y")', layer="+layer", method="@SUM(1)", label="-1+1")
    text = csv_table([("\tname.png", row), ("\rname.png", explained(model="@m"))])
    rows = list(csv.reader(io.StringIO(text)))[1:]
    for cells in rows:
        for column, cell in zip(("image", "model", "layer", "method", "top_class"), cells):
            assert not cell.startswith(FORMULA_STARTS), (column, cell)
    assert rows[0][:5] == ["'\tname.png", '\'=HYPERLINK("http://x","y")', "'+layer", "'@SUM(1)", "'-1+1"]
    assert rows[0][8] == "-1.500000"  # numbers stay numbers
    assert rows[1][0] == "'\rname.png"


def test_a_carriage_return_in_a_name_cannot_start_a_row_of_its_own() -> None:
    text = csv_table([("photo\r=HYPERLINK(\"http://x\")\r.png", explained()), ("plain.png", explained())])
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == 3 and rows[1][0] == "photo\r=HYPERLINK(\"http://x\")\r.png"
    assert text.endswith("\nplain.png,m,l,gradcam,cat,0.500000,cat,0.500000,-1.500000,0.25\n")  # others unquoted


def test_cli_csv_is_safe_for_a_custom_model_named_like_a_formula(tmp_path: Path) -> None:
    weights = tmp_path / '=HYPERLINK("evil.example","open").safetensors'
    save_file(resnet18_state(), weights)
    labels = tmp_path / "labels.txt"
    labels.write_text("=1+1\n@cmd\n-2\n", encoding="utf-8")
    image = tmp_path / "picture.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    out = tmp_path / "out"
    with captured():
        code = cli.main([str(image), "--out", str(out), "--weights", str(weights), "--labels", str(labels),
                         "--architecture", "resnet18", "--input-size", "64"])
    assert code == 0
    (row,) = list(csv.DictReader(io.StringIO((out / "summary.csv").read_text(encoding="utf-8"))))
    assert row["model"] == '\'=HYPERLINK("evil.example","open")'
    for cell in row.values():
        if not re.fullmatch(r"-?\d+(\.\d+)?(e-?\d+)?", cell):
            assert not cell.startswith(FORMULA_STARTS), cell


# --------------------------------------------------------------------------------------- races, shared model


@contextlib.contextmanager
def frequent_thread_switches() -> None:
    """Switch Python threads every microsecond (races show up) and run torch single-threaded (stays fast)."""
    interval, torch_threads = sys.getswitchinterval(), torch.get_num_threads()
    sys.setswitchinterval(1e-6)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        torch.set_num_threads(torch_threads)


def test_eval_mode_holds_for_every_caller_of_a_model_in_training_mode() -> None:
    # Before the fix a caller could find the model in eval mode (set by another caller), skip the lock, and run
    # on while that caller restored training mode: this failed a few dozen times per run.
    model = nn.Sequential(*[nn.Dropout() for _ in range(500)]).train()
    seen_training = []
    start = threading.Barrier(4)

    def work() -> None:
        start.wait()
        for _ in range(300):
            with eval_mode(model):
                seen_training.append(model[0].training or model[-1].training)
                time.sleep(0)
                seen_training.append(model[0].training or model[-1].training)

    with frequent_thread_switches():
        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(seen_training) == 2400 and not any(seen_training)
    assert all(module.training for module in model.modules())  # restored once everybody left


@pytest.mark.timeout(20)
def test_eval_mode_nests_on_a_model_in_training_mode() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
    with eval_mode(model):
        with eval_mode(model):  # deadlocked before the fix
            assert not model.training
        assert not model.training
    assert model.training and model[1].training


def test_randomized_copy_while_other_threads_explain_the_same_model() -> None:
    # Before the fix the copy iterated the live hook tables: "OrderedDict mutated during iteration" most runs.
    torch.manual_seed(0)
    blocks = [nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU()) for _ in range(200)]
    model = nn.Sequential(
        nn.Conv2d(3, 2, 1), *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3)
    ).eval()
    x = torch.randn(1, 3, 4, 4)
    stop = threading.Event()
    errors: list[BaseException] = []

    def explain_loop(kind: int) -> None:
        try:
            while not stop.is_set():
                if kind == 0:
                    compute_cam(model, x, "100", 0)
                else:  # hooks on every module, as Score-CAM's batch sizing and the layer listing do
                    probe_forward(model, x)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=explain_loop, args=(index,)) for index in range(6)]
    copies = []
    with frequent_thread_switches():
        for thread in threads:
            thread.start()
        try:
            for _ in range(10):
                copies.append(randomized_copy(model, "0", randomize=1))
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    assert not errors, errors
    for copy in copies:
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in copy.model.modules())
        assert copy.modules == ("203",)  # the Linear head
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_randomized_copy_keeps_the_owners_own_hooks() -> None:
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
    calls = []
    model[1].register_forward_hook(lambda module, args, output: calls.append(module))
    clone = randomized_copy(model, "0", randomize=1).model
    clone(torch.zeros(1, 3, 4, 4))
    assert calls and calls[-1] is clone[1]
