"""What every view of the 3-D scan tab is drawn from: the scan, the model, the explanation on screen and how it
was asked for (``ScanPage``), and what the planes are shown with (``Display``)."""

from __future__ import annotations

from dataclasses import dataclass

from gradcam_core.dicom import Window
from gradcam_core.volume_cam import VolumeExplanation
from gradcam_core.volume_models import LoadedVolumeModel
from gradcam_core.volume_view import Plane
from gradcam_core.volumes import Volume

from .kept_uploads import KeptFiles
from .volume_model import VolumeModelChoice


@dataclass(frozen=True, eq=False)
class ScanPage:
    """One explanation of one scan, with the settings that give it again from ``volume_cache.explained``.

    Attributes:
        files: The scan's uploaded files (their digest keys every cache).
        choice: The 3-D model's files and options.
        volume: The scan, read.
        model: The 3-D model, loaded.
        result: The explanation on screen.
        layer: The layer asked for (``None``: the method's default).
        target: The class asked for (``None``: the model's top class).
    """

    files: KeptFiles
    choice: VolumeModelChoice
    volume: Volume
    model: LoadedVolumeModel
    result: VolumeExplanation
    layer: str | None
    target: int | None


@dataclass(frozen=True)
class Display:
    """How the planes are shown: the window, the heatmap's opacity and colour map, the current voxel ``(k, j, i)``
    and the three planes in screen order (axial, coronal, sagittal)."""

    window: Window
    alpha: float
    colormap: str
    position: tuple[int, int, int]
    planes: tuple[Plane, ...]
