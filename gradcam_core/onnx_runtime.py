"""The gradient-free path: an ONNX graph run by onnxruntime, explained by the methods that need only outputs.

When onnx2torch cannot convert a graph, or its conversion disagrees with onnxruntime, there is no module to
differentiate. Score-CAM and Eigen-CAM need none (``CamMethod.needs_gradients`` is false): the graph gets its
feature maps as extra outputs, so one onnxruntime run returns the layer's activations ``(N, K, h, w)`` with the
class scores, and Score-CAM's masked inputs are scored by onnxruntime too::

    graph = RuntimeGraph.of(OnnxReference(data, "image", "logits"), {"relu": ("d", "Relu")})
    trace = graph.trace(inputs, "relu", targets=2, method="scorecam")   # a CamTrace without gradients

The layers are the graph's nodes whose first output is a 4-D float map larger than 1×1, in graph order, named
as onnx2torch names its modules, so a converted model and its gradient-free fallback share layer names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from .cam import MASKED_BATCH_BYTES, MAX_MASKED_BATCH, CamTrace, Progress, masked_scores
from .errors import LayerError, MethodError, ModelError
from .layers import NEGATIVE_SHARE, LayerInfo, last_feature_map
from .methods import CamInputs, get_method
from .models import LoadedModel
from .objectives import Objective, as_objective, model_output
from .preprocess import Preprocessing
from .targets import Targets, check_activation

__all__ = ["OnnxReference", "RuntimeGraph", "RuntimeModule", "deferred_trace", "gradient_free_model"]

PLACEHOLDERS = frozenset({"Identity", "Dropout", "Pad", "Transpose"})
"""Operators whose output is their input, or a padded or permuted copy of it: not layers (as in ``layers.py``)."""


@dataclass(frozen=True, eq=False)
class OnnxReference:
    """The graph as onnxruntime runs it (on the CPU, one session kept per graph).

    Attributes:
        data: The ONNX file's bytes.
        input_name: Name of the graph's image input.
        output_name: Name of its class-score output (the first output).
        single_image: Whether the graph's batch is fixed at 1: a larger batch then runs image by image.
    """

    data: bytes
    input_name: str
    output_name: str
    single_image: bool = False

    @cached_property
    def _session(self) -> object:
        return _session(self.data)

    def run(self, inputs: Tensor, outputs: Sequence[str] | None = None, data: bytes | None = None) -> list[np.ndarray]:
        """``outputs`` (default: the class scores) of onnxruntime on ``inputs``.

        Example: ``reference.run(torch.zeros(1, 3, 224, 224))[0].shape  # (1, classes)``.

        ``data`` runs another version of the graph (e.g. with intermediate outputs). Raises ``ModelError`` when
        onnxruntime cannot load or run it.
        """
        session = self._session if data is None else _session(data)
        names = list(outputs or [self.output_name])
        batch = inputs.detach().to(torch.float32).contiguous().numpy()
        try:
            if not self.single_image or len(batch) <= 1:
                return session.run(names, {self.input_name: batch})
            parts = [session.run(names, {self.input_name: batch[n : n + 1]}) for n in range(len(batch))]
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"onnxruntime cannot run the ONNX model ({type(exc).__name__}).") from exc
        return [np.concatenate(arrays) for arrays in zip(*parts, strict=True)]

    def scores(self, inputs: Tensor) -> Tensor:
        """The class scores of ``inputs`` as a tensor: ``reference.scores(batch).shape  # (N, classes)``."""
        return torch.from_numpy(self.run(inputs)[0])


class RuntimeModule(nn.Module):
    """The class scores of an ONNX graph run by onnxruntime, as a module (no parameters, no gradients).

    It stands in ``LoadedModel.model`` for a gradient-free model: whatever only runs the model (predictions,
    faithfulness curves, timing) works, hooks and gradients do not.
    """

    def __init__(self, reference: OnnxReference) -> None:
        super().__init__()
        self.reference = reference

    def forward(self, inputs: Tensor) -> Tensor:
        return self.reference.scores(inputs)


@dataclass(frozen=True, eq=False)
class RuntimeGraph:
    """The graph with its candidate feature maps as extra outputs, run by onnxruntime.

    Attributes:
        reference: The graph itself, which scores Score-CAM's masked inputs.
        outputs: The tensor each candidate layer outputs, by layer name, in graph order.
        kinds: Each candidate layer's operator, e.g. ``"Conv"``.
        data: The graph with those tensors as outputs.
    """

    reference: OnnxReference
    outputs: Mapping[str, str]
    kinds: Mapping[str, str]
    data: bytes

    @classmethod
    def of(cls, reference: OnnxReference, nodes: Mapping[str, tuple[str, str]]) -> RuntimeGraph:
        """``reference`` with the output of each of ``nodes`` (layer name → its first output and operator) that
        shape inference types as a 4-D float tensor added as a graph output."""
        model = onnx.shape_inference.infer_shapes(onnx.load_model_from_string(reference.data))
        typed = {value.name: value for value in model.graph.value_info}
        already = {value.name for value in model.graph.output}
        outputs, kinds = {}, {}
        for name, (tensor, kind) in nodes.items():
            value = typed.get(tensor)
            if value is not None and kind not in PLACEHOLDERS and _is_float_map(value):
                outputs[name], kinds[name] = tensor, kind
                if tensor not in already:
                    model.graph.output.append(value)
        return cls(reference, outputs, kinds, model.SerializeToString())

    def feature_maps(self, inputs: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The class scores of ``inputs`` and every candidate layer's output, by layer name (one run)."""
        names = list(self.outputs)
        arrays = self._features.run(inputs, [self.reference.output_name, *self.outputs.values()])
        return torch.from_numpy(arrays[0]), dict(zip(names, map(torch.from_numpy, arrays[1:]), strict=True))

    def layers(self, probe: Tensor) -> tuple[list[LayerInfo], dict[str, Tensor]]:
        """The candidate layers of the graph on ``probe`` (4-D maps larger than 1×1, in graph order) and their
        outputs, by name."""
        _, maps = self.feature_maps(probe)
        infos = [
            LayerInfo(name, self.kinds[name], tuple(value.shape[1:]))
            for name, value in maps.items()
            if value.ndim == 4 and value.shape[2] * value.shape[3] > 1
        ]
        return infos, maps

    def trace(
        self,
        inputs: Tensor,
        layer: str,
        targets: Targets | Objective = None,
        method: str = "scorecam",
        *,
        progress: Progress | None = None,
        activation: str = "softmax",
    ) -> CamTrace:
        """Like ``cam.trace_cam`` on the graph, for a method without gradients; ``gradients`` is ``None``.

        Raises:
            MethodError: the method needs gradients.
            LayerError: ``layer`` is not a candidate feature map of the graph.
        """
        cam_method = get_method(method)
        if cam_method.needs_gradients:
            raise MethodError(f"{cam_method.title} needs gradients, which onnxruntime does not compute.")
        check_activation(activation)
        if layer not in self.outputs:
            raise LayerError(f"The ONNX model has no feature map named {layer!r} that onnxruntime can return.")
        output, maps = self.feature_maps(inputs)
        activations = maps[layer]
        if activations.ndim != 4:
            raise LayerError(f"Layer {layer!r} does not output a 4-D feature map on this input; pick another layer.")
        objective = as_objective(targets, output, activation)
        scores = objective(output)
        largest = max(value[:1].numel() * value.element_size() for value in maps.values())
        batch_size = max(1, min(MAX_MASKED_BATCH, MASKED_BATCH_BYTES // max(largest, 1)))  # as cam.masked_batch_size

        def scores_of_masked(masks: Tensor) -> Tensor:
            return masked_scores(self.reference.scores, inputs, objective, masks, batch_size, progress, activation)

        weights = cam_method.weights(CamInputs(activations, None, scores_of_masked))
        weighted_sum = (weights * activations).sum(dim=1)
        return CamTrace(
            logits=model_output(output),
            targets=objective.classes(inputs.shape[0]),
            scores=scores,
            activations=activations,
            gradients=None,
            weights=weights,
            weighted_sum=weighted_sum,
            cam=torch.relu(weighted_sum),
            method=cam_method.name,
            objective=objective,
        )

    @cached_property
    def _features(self) -> OnnxReference:
        """``data`` run by onnxruntime, with its own session."""
        reference = self.reference
        return OnnxReference(self.data, reference.input_name, reference.output_name, reference.single_image)


def deferred_trace(reference: OnnxReference, nodes: Mapping[str, tuple[str, str]]) -> Callable[..., CamTrace]:
    """``RuntimeGraph.trace`` of the graph built from ``reference`` and ``nodes`` on first use (a converted model
    needs it only for an image its conversion gets wrong, so its load does not pay for it)."""
    graph = cache(lambda: RuntimeGraph.of(reference, nodes))

    def trace(*args: object, **kwargs: object) -> CamTrace:
        return graph().trace(*args, **kwargs)

    return trace


def gradient_free_model(
    graph: RuntimeGraph,
    probe: Tensor,
    categories: Sequence[str],
    preprocessing: Preprocessing,
    *,
    reason: str,
    name: str,
    title: str,
    weights: bytes,
    weights_file: Path | None = None,
    activation: str = "softmax",
    subject: str = "The ONNX model",
) -> LoadedModel:
    """A ``LoadedModel`` explained through onnxruntime only: layers and defaults found on ``probe`` by the rules
    of ``assembly.assemble_model``, ``reason`` (one sentence) in ``gradient_free``.

    Raises:
        ModelError: the graph has no spatial feature map that onnxruntime can return.
    """
    check_activation(activation)
    layers, maps = graph.layers(probe)
    if not layers:
        raise ModelError(f"{subject} has no spatial feature map to explain at input size {preprocessing.size}.")
    default = last_feature_map(layers)
    return LoadedModel(
        name=name,
        title=title,
        model=RuntimeModule(graph.reference),
        categories=tuple(categories),
        preprocessing=preprocessing,
        default_layer=default,
        layers=tuple(layers),
        weights_file=weights_file,
        activation=activation,
        weights_sha256=hashlib.sha256(weights).hexdigest(),
        activated_layer=_activated_layer(layers, default, maps),
        gradient_free=reason,
        runtime_cam=graph.trace,
    )


def _activated_layer(layers: Sequence[LayerInfo], default: str, maps: Mapping[str, Tensor]) -> str:
    """``layers.activated_layer`` on outputs already computed: ``default``, or the first later layer of its spatial
    size whose output is hardly ever negative (at most ``NEGATIVE_SHARE`` of its mass)."""
    start = [info.name for info in layers].index(default)
    size = layers[start].shape[1:]
    for info in layers[start:]:
        values = maps[info.name]
        total = float(values.abs().sum())
        if info.shape[1:] == size and total and float(values.clamp(max=0).abs().sum()) / total <= NEGATIVE_SHARE:
            return info.name
    return default


def _is_float_map(value: onnx.ValueInfoProto) -> bool:
    """Whether shape inference says ``value`` is a 4-D float tensor."""
    tensor = value.type.tensor_type
    return (
        value.type.HasField("tensor_type")
        and tensor.elem_type == onnx.TensorProto.FLOAT
        and tensor.HasField("shape")
        and len(tensor.shape.dim) == 4
    )


def _session(data: bytes) -> object:
    """An onnxruntime session of ``data`` on the CPU; ``ModelError`` when onnxruntime cannot load it."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: the refusal below says what went wrong
    for pool in ("intra_op", "inter_op"):
        # onnxruntime's threads otherwise busy-wait after each run, and PyTorch's next forward on the same cores
        # (the explanation after the per-image check, another session's) took 3.5x as long (benchmarks/sources.py).
        options.add_session_config_entry(f"session.{pool}.allow_spinning", "0")
    try:
        return onnxruntime.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"onnxruntime cannot run the ONNX model ({type(exc).__name__}).") from exc
