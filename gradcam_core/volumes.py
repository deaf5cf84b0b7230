"""3-D scans read safely into one :class:`Volume`: NIfTI, a DICOM series (files or one zip), enhanced DICOM, ``.npy``.

Axis order and space, for every format:

* ``Volume.voxels`` is float32 ``(D, H, W)`` = (slice ``k``, row ``j``, column ``i``), or ``(C, D, H, W)`` with
  channels first (a 4-D NIfTI's volumes, e.g. time points).
* ``Volume.affine`` maps the index ``(i, j, k, 1)`` (column, row, slice: the reverse of the array's order) to
  RAS+ millimetres (x to the Right, y Anterior, z Superior), exactly as a NIfTI affine does. DICOM's LPS
  positions are converted (x and y negated), so a heatmap on the volume's grid can be written back in the
  scan's space (:mod:`gradcam_core.volume_export`).

Every limit is checked before the work: the file size, the voxel count from the header (NIfTI, ``.npy``) or the
slice headers (DICOM) before any voxel is decoded, a ``.nii.gz`` inflated no further than its header says it
needs, a zip's member count, unpacked size and paths before anything is unpacked. Every refusal is a
:class:`~gradcam_core.errors.VolumeError` with one sentence; nothing identifying is ever shown::

    volume = read_volume("brain.nii.gz")
    volume.voxels.shape, volume.spacing      # (D, H, W), (slice, row, column) spacing in mm
"""

from __future__ import annotations

import io
import math
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np

from .dicom import Window, is_dicom
from .errors import VolumeError
from .files import FileSource, read_bounded
from .units import format_megapixels, format_size, plural
from .volume_dicom import LPS_TO_RAS, DicomSource, read_dicom_stack

__all__ = ["MAX_SERIES_FILES", "MAX_VOLUME_BYTES", "MAX_VOXELS", "DicomSource", "Volume", "read_volume"]

MAX_VOXELS: int = 80_000_000
"""Default limit on channels x slices x rows x columns (a 512 x 512 x 305 CT; 320 MB as float32)."""
MAX_VOLUME_BYTES: int = 512 * 2**20
"""Default limit on the bytes given, and on what a ``.nii.gz`` or a zip unpacks to."""
MAX_SERIES_FILES: int = 4_000
"""Most files (or zip members) a DICOM series may hold."""

_NIFTI_MAGICS = {b"n+1\x00": 348, b"n+2\x00": 540}
_GZIP = b"\x1f\x8b"
_ZIP = b"PK\x03\x04"
_NPY = b"\x93NUMPY"
_VALUE_KINDS = "biuf"  # booleans, integers and floats; never complex, structured or object arrays


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3-D scan on its voxel grid, with its geometry; nothing identifying is shown.

    Attributes:
        voxels: Read-only float32 ``(D, H, W)`` or ``(C, D, H, W)`` (see the module docstring).
        affine: Read-only 4x4 map from ``(column, row, slice, 1)`` to RAS+ mm.
        source_format: ``"NIfTI"``, ``"DICOM series"``, ``"Enhanced DICOM"`` or ``"NumPy"``.
        modality: A defined DICOM modality term (``"CT"``, ``"MR"``...), ``""`` when unknown.
        default_window: A display window in the voxels' units (DICOM: the first slice's), if any.
        geometry_assumed: Whether spacing and orientation were not in the file (``.npy``: 1 mm, identity).
        dicom: For DICOM sources, the identifiers an export needs; never shown (absent from ``repr``).
    """

    voxels: np.ndarray
    affine: np.ndarray
    source_format: str
    modality: str = ""
    default_window: Window | None = None
    geometry_assumed: bool = False
    dicom: DicomSource | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        voxels = np.asarray(self.voxels)
        if voxels.ndim not in (3, 4) or 0 in voxels.shape:
            raise VolumeError("A volume must have 3 dimensions (or 4 with channels first), none of them empty.")
        affine = np.array(self.affine, dtype=np.float64)
        if affine.shape != (4, 4) or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise VolumeError("The volume's affine must be a finite, invertible 4 x 4 matrix.")
        voxels = voxels.astype(np.float32, copy=False)
        voxels.setflags(write=False)
        affine.setflags(write=False)
        object.__setattr__(self, "voxels", voxels)
        object.__setattr__(self, "affine", affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The grid ``(D, H, W)``, without channels."""
        depth, height, width = self.voxels.shape[-3:]
        return depth, height, width

    @property
    def channels(self) -> int:
        """``C`` of a ``(C, D, H, W)`` volume, 1 otherwise."""
        return self.voxels.shape[0] if self.voxels.ndim == 4 else 1

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm in the array's order: ``(slice, row, column)``."""
        sizes = np.linalg.norm(self.affine[:3, :3], axis=0)
        return float(sizes[2]), float(sizes[1]), float(sizes[0])

    @property
    def orientation(self) -> str:
        """Where the column, row and slice indices grow, as nibabel's axis codes, e.g. ``"LPS"`` or ``"RAS"``."""
        codes = []
        for axis in self.affine[:3, :3].T:
            main = int(np.argmax(np.abs(axis)))
            codes.append(("RAS" if axis[main] > 0 else "LPI")[main])
        return "".join(codes)

    def summary(self) -> dict[str, str]:
        """Technical, non-identifying facts to show next to the scan: ``{"Voxels": "8 x 32 x 32", ...}``."""
        depth, height, width = self.shape
        row, column, slice_ = self.spacing[1], self.spacing[2], self.spacing[0]
        info = {
            "Format": self.source_format,
            "Modality": self.modality or "unknown",
            "Voxels": f"{width} x {height} x {plural(depth, 'slice')}",
            "Voxel size": f"{column:.4g} x {row:.4g} x {slice_:.4g} mm",
            "Orientation": f"{self.orientation} (column, row, slice)",
        }
        if self.channels > 1:
            info["Channels"] = str(self.channels)
        if self.geometry_assumed:
            info["Geometry"] = "not in the file: 1 mm voxels and an identity orientation are assumed"
        return info


def read_volume(
    source: FileSource | Sequence[FileSource],
    *,
    max_voxels: int = MAX_VOXELS,
    max_bytes: int | None = MAX_VOLUME_BYTES,
) -> Volume:
    """Read a 3-D scan: a NIfTI (``.nii``, ``.nii.gz``), a DICOM series, an enhanced DICOM or a ``.npy`` file.

    Example: ``read_volume([a_bytes, b_bytes, c_bytes]).shape  # (3, 512, 512)`` for three CT slices.

    Args:
        source: A path or the bytes of one file (NIfTI, ``.npy``, a multi-frame DICOM, or a zip of one DICOM
            series), or a list of the series' files (paths or bytes) in any order.
        max_voxels: Largest accepted channels x slices x rows x columns, checked before decoding.
        max_bytes: Largest accepted total of the files, and of what a ``.nii.gz`` or zip unpacks to.

    Raises:
        VolumeError: The input is missing, too large, of an unknown format, damaged, or not one consistent volume.
    """
    if isinstance(source, (list, tuple)):
        if len(source) > MAX_SERIES_FILES:
            raise VolumeError(f"The series has {len(source):,} files, more than the {MAX_SERIES_FILES:,} allowed.")
        return _dicom_volume(_read_files(source, max_bytes), max_voxels, max_bytes)
    data = read_bounded(source, max_bytes, what="scan file", error=VolumeError, named=False)
    if data.startswith(_ZIP):
        return _dicom_volume(_zip_members(data, max_bytes), max_voxels, max_bytes)
    if is_dicom(data):
        return _dicom_volume([data], max_voxels, max_bytes)
    if data.startswith(_NPY):
        return _read_npy(data, max_voxels)
    if data.startswith(_GZIP) or data[344:348] in _NIFTI_MAGICS or data[4:8] in _NIFTI_MAGICS:
        return _read_nifti(data, max_voxels, max_bytes)
    raise VolumeError("The file is not a volume this app reads (use NIfTI, DICOM, a zip of a DICOM series or .npy).")


# --------------------------------------------------------------------------- DICOM


def _read_files(sources: Sequence[FileSource], max_bytes: int | None) -> list[bytes]:
    files, total = [], 0
    for source in sources:
        remaining = None if max_bytes is None else max_bytes - total
        if remaining is not None and remaining <= 0:
            raise VolumeError(f"The series' files add up to more than the {format_size(max_bytes or 0)} limit.")
        data = read_bounded(source, remaining, what="series file", error=VolumeError, named=False)
        total += len(data)
        files.append(data)
    return files


def _zip_members(data: bytes, max_bytes: int | None) -> list[bytes]:
    """The files of a zip of one series, after checking its member count, unpacked size and paths."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > MAX_SERIES_FILES:
            raise VolumeError(f"The zip holds {len(members):,} files, more than the {MAX_SERIES_FILES:,} allowed.")
        declared = sum(m.file_size for m in members)
        if max_bytes is not None and declared > max_bytes:
            raise VolumeError(
                f"The zip unpacks to {format_size(declared)}, more than the {format_size(max_bytes)} limit."
            )
        for member in members:
            path = PurePosixPath(member.filename)
            if "\\" in member.filename or ":" in member.filename or path.is_absolute() or ".." in path.parts:
                raise VolumeError("The zip holds a file with an unsafe path; it is refused.")
        files, total = [], 0
        for member in members:
            name = PurePosixPath(member.filename)
            if name.name.upper() == "DICOMDIR" or name.parts[0] == "__MACOSX" or name.name.startswith("."):
                continue
            with archive.open(member) as handle:
                # The sizes in a zip's directory can lie: never read past the declared size or the total limit.
                limit = member.file_size if max_bytes is None else max(min(member.file_size, max_bytes - total), 0)
                content = handle.read(limit + 1)
            if len(content) > limit:
                raise VolumeError("The zip's files unpack to more than they declare; it is refused.")
            total += len(content)
            if content:
                files.append(content)
    except VolumeError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError, zlib.error) as exc:
        raise VolumeError("The zip is damaged or unreadable.") from exc
    if not files:
        raise VolumeError("The zip holds no file.")
    return files


def _dicom_volume(files: list[bytes], max_voxels: int, max_bytes: int | None) -> Volume:
    stack = read_dicom_stack(files, max_voxels=max_voxels, max_bytes=max_bytes)
    return Volume(
        voxels=stack.voxels,
        affine=LPS_TO_RAS @ stack.affine_lps,
        source_format="Enhanced DICOM" if stack.enhanced else "DICOM series",
        modality=stack.modality,
        default_window=stack.default_window,
        dicom=stack.source,
    )


# --------------------------------------------------------------------------- NIfTI


def _read_nifti(data: bytes, max_voxels: int, max_bytes: int | None) -> Volume:
    """A single-file NIfTI-1 or NIfTI-2, gzipped or not; the header is checked before the data is inflated."""
    import nibabel as nib

    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32) if data.startswith(_GZIP) else None
    try:
        head = inflater.decompress(data, 540) if inflater else data[:540]
    except zlib.error:
        raise VolumeError("The .nii.gz file is not a readable gzip file.") from None
    if head[344:348] in _NIFTI_MAGICS:
        header_class, image_class = nib.Nifti1Header, nib.Nifti1Image
    elif head[4:8] in _NIFTI_MAGICS:
        header_class, image_class = nib.Nifti2Header, nib.Nifti2Image
    else:
        raise VolumeError("The file is not a single-file NIfTI image (.nii or .nii.gz).")
    try:
        header = header_class.from_fileobj(io.BytesIO(head), check=True)
        shape = tuple(int(n) for n in header.get_data_shape())
        dtype = header.get_data_dtype()
        offset = int(header["vox_offset"])
    except Exception as exc:  # noqa: BLE001 - nibabel's header errors are many
        raise VolumeError("The NIfTI file's header is damaged.") from exc
    shape = _squeeze(shape)
    if dtype.kind not in _VALUE_KINDS or dtype.fields is not None:
        raise VolumeError("The NIfTI file holds complex or colour voxels; only scalar voxels are supported.")
    _check_voxels(shape, max_voxels, "NIfTI")
    needed = offset + math.prod(shape) * dtype.itemsize
    if max_bytes is not None and needed > max_bytes:
        raise VolumeError(f"The NIfTI image needs {format_size(needed)}, more than the {format_size(max_bytes)} limit.")
    try:
        full = head + inflater.decompress(inflater.unconsumed_tail, needed - len(head)) if inflater else data
    except zlib.error:
        raise VolumeError("The .nii.gz file is damaged.") from None
    if len(full) < needed:
        raise VolumeError("The NIfTI file is truncated.")
    try:
        image = image_class.from_bytes(full[:needed])
        values = np.asarray(image.dataobj, dtype=np.float32).reshape(shape)
        affine = np.array(image.affine, dtype=np.float64)
    except MemoryError:
        raise VolumeError("The NIfTI image is too large to read in the available memory.") from None
    except Exception as exc:  # noqa: BLE001
        raise VolumeError("The NIfTI file is damaged.") from exc
    # nibabel indexes (i, j, k[, t]); the volume's order is the reverse: ([t,] k, j, i).
    return Volume(voxels=np.ascontiguousarray(values.T), affine=affine, source_format="NIfTI")


def _squeeze(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A NIfTI shape without trailing 1s beyond the third axis; refused unless 3-D or 4-D."""
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) < 3:
        shape = shape + (1,) * (3 - len(shape))
    if len(shape) > 4:
        raise VolumeError(f"The image has {len(shape)} dimensions; only 3-D and 4-D images are supported.")
    return shape


# --------------------------------------------------------------------------- NumPy


def _read_npy(data: bytes, max_voxels: int) -> Volume:
    """A ``.npy`` array ``(D, H, W)`` or ``(C, D, H, W)``; its header is read before its data, pickles refused."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _fortran, dtype = read_header(stream)
    except Exception as exc:  # noqa: BLE001
        raise VolumeError("The .npy file's header is damaged.") from exc
    if dtype.hasobject:
        raise VolumeError("The .npy file holds Python objects, which could run code when loaded; it is refused.")
    if dtype.kind not in _VALUE_KINDS or dtype.fields is not None:
        raise VolumeError("The .npy file holds complex or structured values; only numbers are supported.")
    if len(shape) not in (3, 4):
        raise VolumeError(f"The .npy array has {len(shape)} dimensions; a volume has 3 (or 4, channels first).")
    _check_voxels(tuple(int(n) for n in shape), max_voxels, ".npy")
    try:
        values = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - a truncated file, mostly
        raise VolumeError("The .npy file is truncated or damaged.") from exc
    return Volume(voxels=values, affine=np.eye(4), source_format="NumPy", geometry_assumed=True)


def _check_voxels(shape: tuple[int, ...], max_voxels: int, what: str) -> None:
    voxels = math.prod(shape)
    if voxels == 0:
        raise VolumeError(f"The {what} image is empty.")
    if voxels > max_voxels:
        size = " x ".join(str(n) for n in shape)
        raise VolumeError(
            f"The {what} image is {size} voxels, more than the {format_megapixels(max_voxels)}-million-voxel limit."
        )
