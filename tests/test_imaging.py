"""Tests of gradcam_core.imaging on a corpus of awkward and broken images built in code."""

from __future__ import annotations

import io
import os
import re
import struct
import time
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gradcam_core.errors import ImageError
from gradcam_core.imaging import ALLOWED_FORMATS, MAX_PIXELS, load_image

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)


# --------------------------------------------------------------------------- helpers


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def quadrants(size: tuple[int, int] = (40, 30)) -> Image.Image:
    """RGB image: red top-left, green top-right, blue bottom-left, white bottom-right."""
    w, h = size
    arr = np.zeros((h, w, 3), np.uint8)
    arr[: h // 2, : w // 2] = RED
    arr[: h // 2, w // 2 :] = GREEN
    arr[h // 2 :, : w // 2] = BLUE
    arr[h // 2 :, w // 2 :] = WHITE
    return Image.fromarray(arr)


def close_to(pixel, expected, tol: int = 12) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, expected))


def png_header_only(width: int, height: int, bit_depth: int = 1, color_type: int = 0) -> bytes:
    """A syntactically valid PNG whose header declares a huge size but holds almost no data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def assert_one_sentence(message: str) -> None:
    assert message, "empty message"
    assert "\n" not in message
    assert message.endswith("."), message
    assert message[0].isupper(), message
    assert not re.search(r"[.!?]\s+[A-Z]", message), f"more than one sentence: {message!r}"
    for leak in ("Traceback", "cannot identify image file", "PIL", "errno", "<_io"):
        assert leak not in message, message


def load_error(source, **kwargs) -> ImageError:
    with pytest.raises(ImageError) as excinfo:
        load_image(source, **kwargs)
    assert_one_sentence(str(excinfo.value))
    return excinfo.value


def check_rgb(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    assert isinstance(img, Image.Image)
    assert img.mode == "RGB"
    assert img.size == size
    arr = np.asarray(img)
    assert arr.dtype == np.uint8 and arr.shape == (size[1], size[0], 3)
    return arr


# --------------------------------------------------------------------------- corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """Awkward and broken image files, written once per module."""
    root = tmp_path_factory.mktemp("corpus")
    files: dict[str, bytes] = {}
    base = quadrants()

    # Plain RGB in each allowed format.
    files["rgb.png"] = encode(base, "PNG")
    files["rgb.jpg"] = encode(base, "JPEG", quality=95)
    files["rgb.webp"] = encode(base, "WEBP", lossless=True)
    files["rgb.bmp"] = encode(base, "BMP")
    files["rgb.tiff"] = encode(base, "TIFF")
    files["rgb.gif"] = encode(base, "GIF")

    # EXIF orientation 6 ("rotate 90 degrees clockwise to display").
    exif = Image.Exif()
    exif[0x0112] = 6
    files["exif6.jpg"] = encode(base, "JPEG", quality=95, exif=exif.tobytes())
    files["exif6.png"] = encode(base, "PNG", exif=exif.tobytes())

    # CMYK JPEG, pure red ink mix.
    files["cmyk.jpg"] = encode(Image.new("CMYK", (16, 12), (0, 255, 255, 0)), "JPEG", quality=95)

    # Palette PNG with a transparent index 0 (red) and opaque index 1 (blue).
    pal = Image.new("P", (10, 10), 0)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * (254 * 3))
    pal.paste(1, (5, 0, 10, 10))
    files["palette_trns.png"] = encode(pal, "PNG", transparency=0)

    # RGBA: transparent red | opaque blue | half-transparent black.
    rgba = np.zeros((4, 3, 4), np.uint8)
    rgba[:, 0] = (255, 0, 0, 0)
    rgba[:, 1] = (0, 0, 255, 255)
    rgba[:, 2] = (0, 0, 0, 128)
    files["rgba.png"] = encode(Image.fromarray(rgba, "RGBA"), "PNG")

    # LA: transparent black | opaque dark grey.
    la = np.zeros((4, 2, 2), np.uint8)
    la[:, 0] = (0, 0)
    la[:, 1] = (50, 255)
    files["la.png"] = encode(Image.fromarray(la, "LA"), "PNG")

    # Bilevel and grey.
    files["bilevel.png"] = encode(Image.new("1", (8, 8), 1), "PNG")
    files["gray.jpg"] = encode(Image.new("L", (8, 8), 77), "JPEG", quality=95)

    # 16-bit greyscale ramp 1000..3000 with the exact midpoint 2000 at (x=5, y=5).
    g16 = np.linspace(1000, 3000, 20 * 10).reshape(10, 20).round().astype(np.uint16)
    g16[5, 5] = 2000
    files["gray16.png"] = encode(Image.fromarray(g16), "PNG")
    files["gray16.tiff"] = encode(Image.fromarray(g16), "TIFF")
    files["const16.png"] = encode(Image.fromarray(np.full((6, 7), 4321, np.uint16)), "PNG")
    files["zero16.png"] = encode(Image.fromarray(np.zeros((6, 7), np.uint16)), "PNG")

    # 32-bit float and 32-bit integer TIFF.
    f32 = np.linspace(-1.5, 2.5, 12 * 8, dtype=np.float32).reshape(8, 12)
    f32[3, 3] = 0.5  # midpoint of -1.5..2.5
    files["float.tiff"] = encode(Image.fromarray(f32, "F"), "TIFF")
    i32 = np.linspace(-70000, 130000, 12 * 8).reshape(8, 12).astype(np.int32)
    i32[3, 3] = 30000
    files["int32.tiff"] = encode(Image.fromarray(i32, "I"), "TIFF")

    # Animated / multi-frame files: first frame red, then green, then blue.
    frames = [Image.new("RGB", (12, 10), c) for c in (RED, GREEN, BLUE)]
    files["anim.gif"] = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    files["anim.webp"] = encode(
        frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=50, lossless=True
    )
    files["multipage.tiff"] = encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])

    # Broken files.
    big = Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8))
    jpg = encode(big, "JPEG", quality=90)
    png = encode(big, "PNG")
    files["truncated.jpg"] = jpg[: len(jpg) // 2]
    files["truncated.png"] = png[: len(png) // 2]
    files["empty.png"] = b""
    files["random.bin"] = np.random.default_rng(1).bytes(4096)
    files["notes.txt"] = b"This is just some text, definitely not an image.\n" * 20
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("inner.png", png)
    files["archive.zip"] = zbuf.getvalue()
    files["fake.png"] = b"\x89PNG\r\n\x1a\n" + b"garbage" * 50

    # Formats Pillow knows but we refuse.
    files["image.eps"] = encode(Image.new("RGB", (8, 8), RED), "EPS")
    files["image.ico"] = encode(Image.new("RGB", (16, 16), RED), "ICO")
    files["image.pdf"] = encode(Image.new("RGB", (8, 8), RED), "PDF")
    files["image.tga"] = encode(Image.new("RGB", (8, 8), RED), "TGA")
    files["image.ppm"] = encode(Image.new("RGB", (8, 8), RED), "PPM")
    files["image.psd"] = b"8BPS\x00\x01" + b"\x00" * 6 + struct.pack(">HIIHH", 3, 8, 8, 8, 3) + b"\x00" * 64

    # Decompression bombs: tiny files declaring enormous sizes.
    files["bomb_header.png"] = png_header_only(20_000, 20_000)
    files["bomb_9000.png"] = png_header_only(9_000, 9_000)
    files["bomb_real.png"] = encode(Image.new("1", (9_000, 9_000), 0), "PNG")

    paths = {}
    for name, data in files.items():
        path = root / name
        path.write_bytes(data)
        paths[name] = path
    return paths


# --------------------------------------------------------------------------- successful decodes


def test_public_constants():
    assert MAX_PIXELS == 50_000_000
    assert ALLOWED_FORMATS == frozenset({"PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"})


@pytest.mark.parametrize("name", ["rgb.png", "rgb.webp", "rgb.bmp", "rgb.tiff", "rgb.gif", "rgb.jpg"])
@pytest.mark.parametrize("as_bytes", [False, True])
def test_rgb_round_trip(corpus, name, as_bytes):
    source = corpus[name].read_bytes() if as_bytes else corpus[name]
    arr = check_rgb(load_image(source), (40, 30))
    tol = 12 if name.endswith(".jpg") else 0
    assert close_to(arr[2, 2], RED, tol)
    assert close_to(arr[2, 37], GREEN, tol)
    assert close_to(arr[27, 2], BLUE, tol)
    assert close_to(arr[27, 37], WHITE, tol)


def test_str_path_and_pathlike_both_accepted(corpus):
    a = np.asarray(load_image(str(corpus["rgb.png"])))
    b = np.asarray(load_image(corpus["rgb.png"]))
    np.testing.assert_array_equal(a, b)


def test_result_is_detached_from_the_file(corpus, tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(corpus["rgb.png"].read_bytes())
    img = load_image(path)
    path.unlink()  # would break a lazily loaded image
    assert np.asarray(img.transpose(Image.Transpose.ROTATE_90)).shape == (40, 30, 3)
    assert getattr(img, "fp", None) is None


@pytest.mark.parametrize("name,tol", [("exif6.jpg", 12), ("exif6.png", 0)])
def test_exif_orientation_applied(corpus, name, tol):
    arr = check_rgb(load_image(corpus[name]), (30, 40))  # width and height swapped
    # Rotating 90 degrees clockwise moves the stored top-left (red) to the top-right,
    # stored top-right (green) to bottom-right, stored bottom-left (blue) to top-left.
    assert close_to(arr[2, 27], RED, tol)
    assert close_to(arr[37, 27], GREEN, tol)
    assert close_to(arr[2, 2], BLUE, tol)
    assert close_to(arr[37, 2], WHITE, tol)


def test_exif_orientation_applied_to_pil_input(corpus):
    with Image.open(corpus["exif6.png"]) as src:
        arr = check_rgb(load_image(src), (30, 40))
    assert arr[2, 27].tolist() == list(RED)


def test_cmyk_jpeg(corpus):
    arr = check_rgb(load_image(corpus["cmyk.jpg"]), (16, 12))
    assert close_to(arr[6, 8], RED, 10)


def test_palette_with_transparency_composited_on_white(corpus):
    arr = check_rgb(load_image(corpus["palette_trns.png"]), (10, 10))
    assert arr[5, 2].tolist() == list(WHITE)  # transparent red index
    assert arr[5, 7].tolist() == list(BLUE)


def test_rgba_composited_on_white(corpus):
    arr = check_rgb(load_image(corpus["rgba.png"]), (3, 4))
    assert arr[0, 0].tolist() == [255, 255, 255]  # fully transparent red -> white
    assert arr[0, 1].tolist() == [0, 0, 255]
    assert all(abs(int(v) - 127) <= 1 for v in arr[0, 2])  # half black over white


def test_la_composited_on_white(corpus):
    arr = check_rgb(load_image(corpus["la.png"]), (2, 4))
    assert arr[1, 0].tolist() == [255, 255, 255]
    assert arr[1, 1].tolist() == [50, 50, 50]


def test_bilevel_and_grey_become_rgb(corpus):
    assert np.all(check_rgb(load_image(corpus["bilevel.png"]), (8, 8)) == 255)
    arr = check_rgb(load_image(corpus["gray.jpg"]), (8, 8))
    assert np.all(np.abs(arr.astype(int) - 77) <= 2)
    assert np.all(arr[..., 0] == arr[..., 1])


@pytest.mark.parametrize("name", ["gray16.png", "gray16.tiff"])
def test_16bit_grey_rescaled_not_clipped(corpus, name):
    arr = check_rgb(load_image(corpus[name]), (20, 10))
    grey = arr[..., 0]
    assert np.array_equal(grey, arr[..., 1]) and np.array_equal(grey, arr[..., 2])
    assert grey.min() == 0 and grey[0, 0] == 0
    assert grey.max() == 255 and grey[-1, -1] == 255
    assert abs(int(grey[5, 5]) - 128) <= 1  # 2000 is the middle of 1000..3000
    assert len(np.unique(grey)) > 100  # a real ramp, not a clipped white image
    assert np.all(np.diff(grey[6:].astype(int).ravel()) >= 0)  # monotonic ramp preserved


def test_constant_16bit_image_does_not_divide_by_zero(corpus):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from 0/0
        const = np.asarray(load_image(corpus["const16.png"]))
        zero = np.asarray(load_image(corpus["zero16.png"]))
    assert const.shape == (6, 7, 3) and len(np.unique(const)) == 1
    assert int(const[0, 0, 0]) in (0, 128)
    assert np.all(zero == 0)


def test_float_tiff_rescaled(corpus):
    grey = check_rgb(load_image(corpus["float.tiff"]), (12, 8))[..., 0]
    assert grey[0, 0] == 0 and grey[-1, -1] == 255
    assert abs(int(grey[3, 3]) - 128) <= 1


def test_int32_tiff_rescaled(corpus):
    grey = check_rgb(load_image(corpus["int32.tiff"]), (12, 8))[..., 0]
    assert grey[0, 0] == 0 and grey[-1, -1] == 255
    assert abs(int(grey[3, 3]) - 128) <= 1


def test_float_image_with_nan_and_inf():
    values = np.array([[np.nan, 0.0, 1.0], [2.0, np.inf, -np.inf]], np.float32)
    arr = check_rgb(load_image(Image.fromarray(values, "F")), (3, 2))
    grey = arr[..., 0]
    assert grey[0, 1] == 0 and grey[1, 0] == 255  # finite min..max = 0..2
    assert abs(int(grey[0, 2]) - 128) <= 1
    assert grey[0, 0] == 0  # NaN -> black


def test_16bit_rgb_tiff_if_pillow_opens_it(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    data = np.zeros((4, 5, 3), np.uint16)
    data[..., 0] = 65535
    data[..., 1] = 32768
    path = tmp_path / "rgb16.tiff"
    tifffile.imwrite(path, data, photometric="rgb")
    try:
        img = load_image(path)
    except ImageError as err:  # acceptable: refused cleanly
        assert_one_sentence(str(err))
        return
    arr = check_rgb(img, (5, 4))
    assert close_to(arr[0, 0], (255, 128, 0), 1)


@pytest.mark.parametrize("name", ["anim.gif", "anim.webp", "multipage.tiff"])
def test_first_frame_of_multi_frame_files(corpus, name):
    with Image.open(corpus[name]) as probe:
        assert getattr(probe, "n_frames", 1) == 3  # the corpus really is multi-frame
    arr = check_rgb(load_image(corpus[name]), (12, 10))
    assert close_to(arr[5, 6], RED, 2)
    assert close_to(arr[0, 0], RED, 2)


def test_max_bytes(corpus):
    data = corpus["rgb.png"].read_bytes()
    err = load_error(data, max_bytes=len(data) - 1)
    assert "limit" in str(err)
    load_error(corpus["rgb.png"], max_bytes=len(data) - 1)
    assert load_image(data, max_bytes=None).size == (40, 30)
    assert load_image(data, max_bytes=len(data)).size == (40, 30)


def test_bytearray_and_memoryview(corpus):
    data = corpus["rgb.png"].read_bytes()
    assert load_image(bytearray(data)).size == (40, 30)
    assert load_image(memoryview(data)).size == (40, 30)


def test_wrong_type_is_type_error():
    with pytest.raises(TypeError):
        load_image(12345)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- PIL image input


def test_pil_input_not_mutated():
    rgba = Image.fromarray(
        np.random.default_rng(2).integers(0, 256, (9, 11, 4), dtype=np.uint8), "RGBA"
    )
    before = (rgba.mode, rgba.size, rgba.tobytes(), dict(rgba.info))
    out = load_image(rgba)
    assert out is not rgba
    assert (rgba.mode, rgba.size, rgba.tobytes(), dict(rgba.info)) == before
    check_rgb(out, (11, 9))


def test_pil_rgb_input_returns_a_copy():
    src = quadrants()
    out = load_image(src)
    assert out is not src
    assert out.tobytes() == src.tobytes()
    out.putpixel((0, 0), (1, 2, 3))
    assert src.getpixel((0, 0)) == RED


def test_pil_input_high_depth_and_palette():
    g16 = Image.fromarray(np.array([[1000, 2000, 3000]], np.uint16))
    assert np.asarray(load_image(g16))[0, :, 0].tolist() == [0, 128, 255]
    assert g16.mode == "I;16"
    assert check_rgb(load_image(Image.new("P", (3, 3))), (3, 3)) is not None


def test_pil_input_pixel_limit():
    err = load_error(Image.new("L", (100, 100)), max_pixels=9_999)
    assert "megapixel" in str(err)
    assert load_image(Image.new("L", (100, 100)), max_pixels=10_000).size == (100, 100)


# --------------------------------------------------------------------------- failures


BROKEN = {
    "truncated.jpg": r"truncated or corrupt",
    "truncated.png": r"truncated or corrupt",
    "empty.png": r"empty",
    "random.bin": r"not a readable image",
    "notes.txt": r"not a readable image",
    "archive.zip": r"ZIP archive",
    "fake.png": r"not a readable image",
    "image.eps": r"EPS.*not supported",
    "image.ico": r"ICO.*not supported",
    "image.pdf": r"PDF.*not supported",
    "image.psd": r"PSD.*not supported",
    "image.tga": r"not a readable image",
    "image.ppm": r"not a readable image",
}


@pytest.mark.parametrize("name", sorted(BROKEN))
@pytest.mark.parametrize("as_bytes", [False, True])
def test_broken_and_refused_files(corpus, name, as_bytes):
    source = corpus[name].read_bytes() if as_bytes else corpus[name]
    err = load_error(source)
    assert re.search(BROKEN[name], str(err)), str(err)
    assert isinstance(err, ValueError)  # ImageError is also a ValueError


def test_refused_formats_really_are_pillow_formats(corpus):
    # Guard against the test passing only because Pillow could not read the files at all.
    for name, fmt in (("image.eps", "EPS"), ("image.ico", "ICO"), ("image.tga", "TGA"), ("image.ppm", "PPM")):
        with Image.open(corpus[name]) as probe:
            assert probe.format == fmt


def test_truncated_jpeg_is_really_truncated_not_unknown(corpus):
    with Image.open(corpus["truncated.jpg"]) as probe:  # header still parses
        assert probe.format == "JPEG"


def test_empty_bytes():
    assert "empty" in str(load_error(b""))


def test_missing_path_names_the_file(tmp_path):
    err = load_error(tmp_path / "no_such_picture.png")
    assert "no_such_picture.png" in str(err)
    assert "does not exist" in str(err)


def test_directory(tmp_path):
    err = load_error(tmp_path)
    assert "folder" in str(err)
    load_error(str(tmp_path))


@pytest.mark.skipif(not os.path.exists(os.devnull) or os.name != "posix", reason="POSIX only")
def test_non_regular_file():
    assert "regular file" in str(load_error(os.devnull))


def test_errors_never_leak_raw_exceptions(corpus):
    for name in BROKEN:
        try:
            load_image(corpus[name])
        except ImageError:
            pass
        except Exception as exc:  # pragma: no cover - the failure we are guarding against
            pytest.fail(f"{name}: raw {type(exc).__name__} escaped: {exc}")


# --------------------------------------------------------------------------- decompression bombs


@pytest.mark.parametrize("name", ["bomb_header.png", "bomb_9000.png", "bomb_real.png"])
def test_bomb_refused_fast(corpus, name):
    start = time.perf_counter()
    err = load_error(corpus[name])
    elapsed = time.perf_counter() - start
    assert "megapixel" in str(err)
    assert elapsed < 1.0, f"took {elapsed:.2f}s: pixels were decoded"
    assert corpus[name].stat().st_size < 200_000  # small on disk


def test_own_limit_message_gives_the_size(corpus):
    err = load_error(corpus["bomb_9000.png"])
    assert str(err) == "The image is 9000 x 9000 pixels, more than the 50-megapixel limit."


def test_own_limit_does_not_rely_on_pillow_global(corpus, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert "megapixel" in str(load_error(corpus["bomb_header.png"]))
    assert "megapixel" in str(load_error(corpus["rgb.png"], max_pixels=40 * 30 - 1))
    assert load_image(corpus["rgb.png"], max_pixels=40 * 30).size == (40, 30)


@pytest.mark.parametrize("side", [12, 40])  # 144 px: Pillow warns; 1600 px: Pillow raises
def test_pillow_bomb_warning_and_error_become_image_error(corpus, monkeypatch, tmp_path, side):
    path = tmp_path / "small.png"
    path.write_bytes(encode(Image.new("RGB", (side, side), RED), "PNG"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any leaked DecompressionBombWarning fails the test
        err = load_error(path)
    assert "megapixel" in str(err)


def test_module_does_not_touch_pillow_globals(corpus):
    from PIL import ImageFile

    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    for name in ("rgb.png", "truncated.jpg", "bomb_header.png", "bomb_9000.png"):
        try:
            load_image(corpus[name], max_pixels=10**12)
        except ImageError:
            pass
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
@pytest.mark.timeout(20)
def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    assert "regular file" in str(load_error(fifo))
