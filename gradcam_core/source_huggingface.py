"""The Hugging Face source: an image classifier saved by ``transformers`` (a folder, or a zip of it), read as data.

The folder holds ``config.json`` (the architecture, and ``id2label`` for the class names), ``model.safetensors``
(or ``pytorch_model.bin``, read with ``weights_only``) and ``preprocessor_config.json`` (input size, mean, std,
resampling). Only those names are read, each within a limit; a zip is checked first (member count, unpacked size,
paths). The config is JSON data: the network is one of ``transformers``' own image classifiers, chosen by its
``model_type`` from :data:`MODEL_TYPES`; a config that asks for the model's own code (``auto_map``) is refused,
as nothing from the folder is ever run::

    loaded = load(ModelRequest(weights="vit-chest.zip"))    # labels from config.json's id2label
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.transforms import InterpolationMode

from .archives import json_object, read_model_files
from .assembly import assemble_model
from .checkpoints import read_state_dict
from .errors import ModelError
from .files import FileSource, path_of
from .labels import read_labels
from .layers import LayerInfo, candidate_layers, last_feature_map
from .models import LoadedModel
from .preprocess import Preprocessing, per_channel
from .sources import ModelRequest

__all__ = ["MODEL_TYPES", "HuggingFaceClassifier", "HuggingFaceFolder", "load", "read_folder"]

MODEL_TYPES = ("beit", "convnext", "convnextv2", "deit", "efficientnet", "regnet", "resnet", "swin", "vit")
"""``model_type`` values of ``config.json`` accepted: transformers' own image classifiers, built from the config."""

_TOKEN_TYPES = frozenset({"beit", "deit", "vit"})  # vision transformers: a fixed square input, tokens on a grid
_SQUARE_TYPES = _TOKEN_TYPES | {"swin"}  # resized to a square by ViTImageProcessor, not cropped
CONFIG, PREPROCESSOR = "config.json", "preprocessor_config.json"
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # in order of preference
_SHARDED = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_REMOTE_CODE_KEYS = ("auto_map", "custom_pipelines")
_RESAMPLE = {  # PIL's resampling codes, as saved by transformers' image processors
    0: InterpolationMode.NEAREST,
    1: InterpolationMode.LANCZOS,
    2: InterpolationMode.BILINEAR,
    3: InterpolationMode.BICUBIC,
    4: InterpolationMode.BOX,
    5: InterpolationMode.HAMMING,
}


@dataclass(frozen=True)
class HuggingFaceFolder:
    """The files of a saved model that are read, as bytes.

    Attributes:
        config: ``config.json``.
        weights: ``model.safetensors`` (or ``pytorch_model.bin``).
        preprocessor: ``preprocessor_config.json``.
    """

    config: bytes
    weights: bytes
    preprocessor: bytes


class HuggingFaceClassifier(nn.Module):
    """A transformers image classifier that returns its logits, ``(N, classes)``, as the engine expects.

    Example: ``HuggingFaceClassifier(vit, patch_grid=(14, 14))(images).shape  # (N, classes)``.

    A vision transformer declares its ``patch_grid`` so that its tokens are seen as a map (:mod:`.layouts`);
    Swin's token sequences are laid on the grid each stage passes along, with no declaration.
    """

    def __init__(self, model: nn.Module, patch_grid: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.model = model
        if patch_grid is not None:
            self.patch_grid = patch_grid

    def forward(self, pixel_values: Tensor) -> Tensor:
        """The class scores (logits) of a batch of images."""
        return self.model(pixel_values=pixel_values).logits


def load(request: ModelRequest) -> LoadedModel:
    """The Hugging Face source (``sources.SOURCES["huggingface"]``): the classifier saved in ``request.weights``.

    Example: ``load(ModelRequest(weights="vit-chest.zip"))``.

    Raises:
        ModelError: with one sentence, for an unsafe or damaged zip, a missing file, a config that is not a
            supported image classifier or asks for remote code, weights that do not fit it, or bad labels.
    """
    folder = read_folder(request.weights, request.max_bytes)
    config = json_object(folder.config, f"Hugging Face {CONFIG}")
    model_type = _model_type(config)
    preprocessor = json_object(folder.preprocessor, f"Hugging Face {PREPROCESSOR}")
    _refuse_remote_code(preprocessor, PREPROCESSOR)
    hf_config = _build_config(config, model_type)
    class_name = _class_name(config, model_type)
    network = _build_network(hf_config, model_type, class_name, folder.weights, request.max_bytes)
    channels = int(getattr(hf_config, "num_channels", 3))
    grid = _patch_grid(hf_config) if model_type in _TOKEN_TYPES else None
    model = HuggingFaceClassifier(network, grid)
    outputs = int(hf_config.num_labels)
    names = [hf_config.id2label[i] for i in range(outputs)] if request.labels is None else request.labels
    categories = read_labels(names, outputs)
    preprocessing = _preprocessing(preprocessor, request, channels, model_type in _SQUARE_TYPES)
    source = request.weights
    path = path_of(source)
    file_name = path.name if path is not None else request.file_name
    assemble = assemble_model if grid is not None else _assemble_channels_first
    return assemble(
        model,
        categories,
        preprocessing,
        name=request.name or _name(path, model_type),
        title=f"{model_type} ({file_name or 'Hugging Face model'})",
        weights=folder.weights,
        weights_file=path,
        activation=request.activation,
        subject=f"The Hugging Face {model_type} model",
    )


def read_folder(source: FileSource, max_bytes: int) -> HuggingFaceFolder:
    """The files of a saved model from a folder path, or a zip (path or bytes) holding them, within ``max_bytes``.

    Example: ``read_folder("vit-chest.zip", 500 * 2**20).config  # b'{"model_type": "vit", ...}'``.

    Raises:
        ModelError: a missing file, a sharded model, or an unsafe zip (see :func:`.archives.read_model_files`).
    """
    files = read_model_files(
        source, (CONFIG, PREPROCESSOR, *_WEIGHTS, *_SHARDED), anchor=CONFIG, max_bytes=max_bytes,
        what="Hugging Face model", large=_WEIGHTS,
    )
    if any(name in files for name in _SHARDED):
        raise ModelError(
            "The Hugging Face model's weights are split in shards; save it again as one model.safetensors."
        )
    weights = next((files[name] for name in _WEIGHTS if name in files), None)
    missing = [name for name in (CONFIG, "model.safetensors", PREPROCESSOR)
               if (weights if name == "model.safetensors" else files.get(name)) is None]
    if missing:
        raise ModelError(f"The Hugging Face model lacks {' and '.join(missing)}.")
    return HuggingFaceFolder(config=files[CONFIG], weights=weights, preprocessor=files[PREPROCESSOR])


def _refuse_remote_code(config: Mapping, name: str) -> None:
    found = [key for key in _REMOTE_CODE_KEYS if key in config]
    if found:
        raise ModelError(
            f"The Hugging Face {name} asks for the model's own Python code ({found[0]}), which is never run here."
        )


def _model_type(config: Mapping) -> str:
    _refuse_remote_code(config, CONFIG)
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ModelError(
            f"The Hugging Face config.json's model_type {model_type!r} is not a supported image classifier "
            f"({', '.join(MODEL_TYPES)})."
        )
    if "quantization_config" in config:
        raise ModelError("The Hugging Face config.json describes a quantised model, which is not supported.")
    return model_type


def _class_name(config: Mapping, model_type: str) -> str:
    """The transformers class to build: the one ``architectures`` names among the type's image classifiers."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    known = MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES[model_type]
    known = (known,) if isinstance(known, str) else tuple(known)
    named = config.get("architectures") or [known[0]]
    if not isinstance(named, list) or not named or not all(isinstance(name, str) for name in named):
        raise ModelError("The Hugging Face config.json's architectures must be a list of class names.")
    chosen = next((name for name in named if name in known), None)
    if chosen is None:
        raise ModelError(
            f"The Hugging Face config.json describes a {named[0]}, not an image classifier ({' or '.join(known)})."
        )
    return chosen


def _build_config(config: Mapping, model_type: str):
    """transformers' config object from the JSON values (a plain dataclass-like object: no code is run)."""
    from transformers import CONFIG_MAPPING

    try:
        built = CONFIG_MAPPING[model_type].from_dict(dict(config))
        built._attn_implementation = "eager"  # plain modules: every step visible to hooks and exact gradients
    except Exception as exc:
        raise ModelError(
            f"The Hugging Face config.json does not describe a valid {model_type} model ({type(exc).__name__})."
        ) from exc
    labels = getattr(built, "id2label", None)
    if not isinstance(labels, dict) or sorted(labels) != list(range(len(labels))):
        raise ModelError("The Hugging Face config.json's id2label must name every class index from 0 once.")
    return built


def _build_network(config, model_type: str, class_name: str, weights: bytes, max_bytes: int) -> nn.Module:
    """The network with the weights loaded by transformers' own loader (which knows its older key names).

    The weights are read as data first (:func:`.checkpoints.read_state_dict`) and their size compared with the
    config's network built empty, so a config never makes a network larger than its weights; transformers then
    reads them from a private folder holding nothing but a ``model.safetensors``.
    """
    import transformers
    from safetensors.torch import save_file

    state = read_state_dict(weights, max_bytes)
    network_class = getattr(transformers, class_name)
    try:
        with torch.device("meta"):
            expected = sum(value.numel() for value in network_class(config).state_dict().values())
    except Exception as exc:
        raise ModelError(
            f"The Hugging Face config.json does not describe a valid {model_type} model ({type(exc).__name__})."
        ) from exc
    held = sum(value.numel() for value in state.values())
    if held != expected:
        raise ModelError(
            f"The weights hold {held:,} values but the {model_type} model of config.json has {expected:,}; "
            "they do not fit."
        )
    with tempfile.TemporaryDirectory(prefix="gradcam-hf-") as folder:
        if _is_safetensors(weights):
            (Path(folder) / "model.safetensors").write_bytes(weights)
        else:  # a pytorch_model.bin read with weights_only: handed on as safetensors, never unpickled again
            save_file({key: value.contiguous().clone() for key, value in state.items()}, f"{folder}/model.safetensors")
        try:
            network, info = network_class.from_pretrained(
                folder, config=config, local_files_only=True, use_safetensors=True, output_loading_info=True,
                dtype=torch.float32,
            )
        except Exception as exc:
            raise ModelError(
                f"The weights do not fit the {model_type} model of config.json: a tensor's shape differs "
                f"({type(exc).__name__})."
            ) from exc
    missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
    if missing or unexpected:
        what = f"lack {missing[0]!r}" if missing else f"hold {unexpected[0]!r}, unknown to it"
        raise ModelError(
            f"The weights do not fit the {model_type} model of config.json: they {what} "
            f"({len(missing) + len(unexpected)} keys differ)."
        )
    return network.float().eval()


def _is_safetensors(data: bytes) -> bool:
    return len(data) >= 10 and data[8:9] == b"{"


def _patch_grid(config) -> tuple[int, int]:
    image, patch = _pair(config.image_size), _pair(config.patch_size)
    return image[0] // patch[0], image[1] // patch[1]


def _pair(value: object) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(type(side) is int for side in value):
        return value[0], value[1]
    raise ModelError(f"The Hugging Face config.json's image or patch size {value!r} is not a size in pixels.")


def _preprocessing(config: Mapping, request: ModelRequest, channels: int, square: bool) -> Preprocessing:
    """transformers' image processor settings as our :class:`Preprocessing` (the request's values first).

    HF rescales pixels by ``rescale_factor`` then normalises: ``(x * r - mean) / std``, which is our
    ``(x / 255 - mean') / std'`` with ``mean' = mean / (255 r)`` and ``std' = std / (255 r)``.
    """
    size = request.input_size or _size(config.get("crop_size") if config.get("do_center_crop") else None)
    size = size or _size(config.get("size"))
    if size is None:
        raise ModelError("The Hugging Face preprocessor_config.json gives no input size; give one.")
    if not (isinstance(size, int) and 16 <= size <= 2048):
        raise ModelError(f"The input size must be a whole number of pixels from 16 to 2048, not {size!r}.")
    rescale = config.get("rescale_factor", 1 / 255) if config.get("do_rescale", True) else 1.0
    normalise = config.get("do_normalize", True)
    mean = request.mean if request.mean is not None else config.get("image_mean", 0.0) if normalise else 0.0
    std = request.std if request.std is not None else config.get("image_std", 1.0) if normalise else 1.0
    if not isinstance(rescale, (int, float)) or isinstance(rescale, bool) or not rescale > 0:
        raise ModelError("The Hugging Face preprocessor_config.json's rescale_factor must be a positive number.")
    scale = 1.0 if request.mean is not None else 255 * rescale
    std_scale = 1.0 if request.std is not None else 255 * rescale
    mean = [value / scale for value in _numbers(mean, "mean")]
    std = [value / std_scale for value in _numbers(std, "standard deviation")]
    resample = config.get("resample", 2)
    if resample not in _RESAMPLE or isinstance(resample, bool):
        raise ModelError(f"The Hugging Face preprocessor_config.json's resample {resample!r} is not a PIL filter.")
    return Preprocessing(
        size=size,
        mean=per_channel(mean, channels, "mean"),
        std=per_channel(std, channels, "standard deviation"),
        interpolation=_RESAMPLE[resample],
        keep_aspect=not square,
        grayscale=bool(request.grayscale) or channels == 1,
        channels=channels,
    )


def _size(value: object) -> int | None:
    """The shorter side from an image processor's size: ``224``, ``{"height": h, "width": w}`` or
    ``{"shortest_edge": 224}``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, Mapping):
        sides = [value.get(key) for key in ("height", "width", "shortest_edge") if key in value]
        if sides and all(type(side) is int for side in sides):
            return min(sides)
    return None


def _numbers(value: object, what: str) -> list[float]:
    values = value if isinstance(value, (list, tuple)) else [value]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ModelError(f"The normalisation {what} must be numbers, one per channel.")
    return [float(v) for v in values]


def _name(path: Path | None, model_type: str) -> str:
    if path is None:
        return model_type
    return path.stem if path.suffix.lower() == ".zip" else path.name


def _assemble_channels_first(
    model: nn.Module, categories: Sequence[str], preprocessing: Preprocessing, **options: object
) -> LoadedModel:
    """:func:`assemble_model`, offering only the 4-D maps that are truly channels-first.

    transformers' ConvNeXt permutes to channels-last inside its blocks with ``Tensor.permute``, which no hook
    sees; those outputs would be read as wrong maps, and Swin's relative position biases ``(1, heads, window²,
    window²)`` as maps that ignore the image. A channels-first map (and a Swin stage's tokens on its grid) keeps
    its channels and widens when the input widens, so the candidates are probed at two widths and the others
    left out.
    """
    kept = _channels_first(model, preprocessing)

    def default(layers: Sequence[LayerInfo]) -> str:
        return last_feature_map([info for info in layers if info.name in kept] or list(layers))

    loaded = assemble_model(model, categories, preprocessing, default_layer=default, **options)
    layers = tuple(info for info in loaded.layers if info.name in kept) or loaded.layers
    names = {info.name for info in layers}
    activated = loaded.activated_layer if loaded.activated_layer in names else loaded.default_layer
    return replace(loaded, layers=layers, activated_layer=activated)


def _channels_first(model: nn.Module, preprocessing: Preprocessing) -> set[str]:
    size, channels = preprocessing.size, preprocessing.channels
    try:
        square = {info.name: info.shape for info in candidate_layers(model, torch.zeros(1, channels, size, size))}
        wide = {info.name: info.shape for info in candidate_layers(model, torch.zeros(1, channels, size, 2 * size))}
    except Exception:
        return set()  # assemble_model reports why the model cannot run
    return {
        name
        for name, shape in square.items()
        if name in wide and wide[name][0] == shape[0] and wide[name][2] > shape[2]
    }
