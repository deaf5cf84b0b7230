"""Vision transformers: ViT tokens and Swin's channels-last maps, explained as feature maps with no user reshape.

Random weights only (no download): torchvision's ``vit_b_16`` and ``swin_t`` for agreement with
pytorch-grad-cam, layer lists and defaults; tiny instances of the same classes for every method.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import Tensor, nn
from torchvision.models import SwinTransformer, VisionTransformer

from gradcam_core import (
    METHODS,
    MODELS,
    LayerError,
    ModelUnavailableError,
    available_models,
    candidate_layers,
    compute_cam,
    explain,
    load_custom_model,
    load_model,
    to_input,
    trace_cam,
)

ASSETS = Path(__file__).resolve().parents[1] / "assets"
VIT_DEFAULT = "encoder.layers.encoder_layer_11.ln_1"


def _hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
    )


def _vit_tokens_to_map(tensor: Tensor, height: int = 14, width: int = 14) -> Tensor:
    """pytorch-grad-cam's documented ViT reshape_transform: drop the class token, tokens -> (N, D, h, w)."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def _channels_last_to_map(tensor: Tensor) -> Tensor:
    return tensor.permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None, num_classes=10)
    nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision zero-initialises the head: no gradient
    return model.eval()


@pytest.fixture(scope="module")
def swin() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.swin_t(weights=None, num_classes=10).eval()


@pytest.fixture(scope="module")
def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                              num_classes=5)
    nn.init.normal_(model.heads.head.weight, std=1.0)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_swin() -> nn.Module:
    torch.manual_seed(0)
    model = SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=[2, 2],
                            num_classes=5)
    with torch.no_grad():
        model.head.weight.normal_(std=1.0)
    return model.eval()


def _pytorch_grad_cam(model: nn.Module, layer: str, x: Tensor, targets: list[int], reshape, peer: str = "GradCAM"):
    """pytorch-grad-cam's activations, gradients and raw map (before its scaling) for ``layer``."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    module = model.get_submodule(layer)
    cam = getattr(pytorch_grad_cam, peer)(model=model, target_layers=[module], reshape_transform=reshape)
    try:
        cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
        activations = cam.activations_and_grads.activations[0].numpy()
        gradients = cam.activations_and_grads.gradients[0].numpy()
        raw = cam.get_cam_image(x, module, None, activations, gradients, eigen_smooth=False)
    finally:
        cam.activations_and_grads.release()
    model.zero_grad(set_to_none=True)  # its loss.backward() filled every parameter's .grad
    return activations, gradients, np.maximum(raw, 0)


def _assert_agrees(model: nn.Module, layer: str, x: Tensor, targets: list[int], reshape, method: str = "gradcam",
                   peer: str = "GradCAM") -> Tensor:
    trace = trace_cam(model, x, layer, targets, method)
    activations, gradients, theirs = _pytorch_grad_cam(model, layer, x, targets, reshape, peer)
    # Same numbers up to float32 rounding: our forward runs without gradients up to the layer, where PyTorch
    # takes MultiheadAttention's fused fast path, so ViT activations differ in the 6th digit.
    for ours, reference in ((trace.activations, activations), (trace.gradients, gradients), (trace.cam, theirs)):
        np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-4, atol=1e-5 * np.abs(reference).max())
    return trace.cam


# ------------------------------------------------------------------------------------------ full-size models


def test_vit_gradcam_agrees_with_pytorch_grad_cam_at_the_default_layer(vit: nn.Module) -> None:
    assert MODELS["vit_b_16"].default_layer == VIT_DEFAULT
    cam = _assert_agrees(vit, VIT_DEFAULT, torch.randn(2, 3, 224, 224), [3, 7], _vit_tokens_to_map)
    assert cam.shape == (2, 14, 14)
    assert (cam.flatten(1).amax(1) > 0).all()  # a map for both images, not zeros
    assert _hook_count(vit) == 0


@pytest.mark.parametrize("layer", ["norm", "features.5"])
def test_swin_gradcam_agrees_with_pytorch_grad_cam(swin: nn.Module, layer: str) -> None:
    cam = _assert_agrees(swin, layer, torch.randn(2, 3, 224, 224), [1, 8], _channels_last_to_map)
    assert cam.shape == ((2, 7, 7) if layer == "norm" else (2, 14, 14))
    assert (cam.flatten(1).amax(1) > 0).all()
    assert MODELS["swin_t"].default_layer == "norm"
    assert _hook_count(swin) == 0


def test_vit_candidate_layers(vit: nn.Module) -> None:
    layers = candidate_layers(vit, (224, 224))
    by_name = {info.name: info for info in layers}
    names = [info.name for info in layers]
    assert names[0] == "conv_proj" and by_name["conv_proj"].layout == "nchw"
    assert by_name["conv_proj"].shape == (768, 14, 14)
    block = "encoder.layers.encoder_layer_{}"
    ln_1 = [names.index(f"{block.format(i)}.ln_1") for i in range(12)]
    assert ln_1 == sorted(ln_1)  # forward order
    assert by_name[f"{block.format(0)}.ln_1"].shape == (768, 14, 14)
    assert by_name[f"{block.format(3)}.mlp.0"].shape == (3072, 14, 14)
    assert by_name[block.format(10)].kind == "EncoderBlock"
    assert {info.layout for info in layers[1:]} == {"tokens"}
    # After the last attention the patch tokens never reach the class token: nothing from there on is listed.
    assert names[-1] == VIT_DEFAULT
    for late in (f"{block.format(11)}.ln_2", f"{block.format(11)}.mlp", block.format(11), "encoder.layers",
                 "encoder.ln", "encoder"):
        assert late not in by_name
    assert _hook_count(vit) == 0


def test_swin_candidate_layers(swin: nn.Module) -> None:
    layers = candidate_layers(swin, (224, 224))
    by_name = {info.name: info for info in layers}
    names = [info.name for info in layers]
    assert names[0] == "features.0.0" and by_name["features.0.0"].layout == "nchw"  # the patch convolution
    expected = {
        "features.0": (96, 56, 56),
        "features.1": (96, 56, 56),
        "features.2": (192, 28, 28),  # patch merging
        "features.3": (192, 28, 28),
        "features.5": (384, 14, 14),
        "features.7.1.mlp.0": (3072, 7, 7),
        "features.7": (768, 7, 7),
        "norm": (768, 7, 7),
    }
    for name, shape in expected.items():
        assert by_name[name].shape == shape and by_name[name].layout == "nhwc", name
    assert names.index("features.1") < names.index("features.3") < names.index("features.7") < names.index("norm")
    assert names[-1] == "norm"
    for left_out in ("features.0.1", "permute", "avgpool", "features.1.0.stochastic_depth"):  # permute, 1×1, twice
        assert left_out not in by_name


@pytest.mark.parametrize("layer", ["encoder.layers.encoder_layer_11.ln_2", "encoder"])
def test_vit_layer_after_the_last_attention_is_a_clear_error(vit: nn.Module, layer: str) -> None:
    with pytest.raises(LayerError, match=r"patch tokens never reach the class token; pick an earlier layer"):
        compute_cam(vit, torch.randn(1, 3, 224, 224), layer, 2)
    assert _hook_count(vit) == 0


def test_layer_whose_output_is_not_a_map_is_a_clear_error(tiny_vit: nn.Module) -> None:
    with pytest.raises(LayerError, match="does not output a 4-D feature map or vision transformer tokens"):
        compute_cam(tiny_vit, torch.randn(1, 3, 32, 32), "heads", 0)
    with pytest.raises(LayerError, match="does not output"):  # a tuple (output, attention weights)
        compute_cam(tiny_vit, torch.randn(1, 3, 32, 32), "encoder.layers.encoder_layer_0.self_attention", 0)
    assert _hook_count(tiny_vit) == 0


def test_maxvit_partitioned_windows_are_not_listed_as_maps() -> None:
    """Between WindowPartition and WindowDepartition MaxViT's 4-D tensors hold windows, not the image grid."""
    torch.manual_seed(0)
    maxvit = torchvision.models.maxvit_t(weights=None, num_classes=5).eval()
    layers = candidate_layers(maxvit, (224, 224))
    inside = {"WindowPartition", "SwapAxes", "LayerNorm", "Linear", "RelativePositionalMultiHeadAttention"}
    assert not inside & {info.kind for info in layers}
    attention = "blocks.0.layers.0.layers.window_attention"
    assert {info.name: info.shape for info in layers}[f"{attention}.departition_op"] == (64, 56, 56)
    with pytest.raises(LayerError, match="does not output a 4-D feature map"):
        compute_cam(maxvit, torch.randn(1, 3, 224, 224), f"{attention}.partition_op", 0)
    assert compute_cam(maxvit, torch.randn(1, 3, 224, 224), "blocks.3", 0).shape == (1, 7, 7)
    assert _hook_count(maxvit) == 0


@pytest.mark.parametrize("fixture", ["vit", "swin"])
def test_training_flags_restored_and_parameters_untouched(fixture: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(fixture)
    layer = VIT_DEFAULT if fixture == "vit" else "norm"
    frozen = model.get_submodule("encoder.layers.encoder_layer_3" if fixture == "vit" else "features.3")
    model.train()
    frozen.eval()
    before = {name: m.training for name, m in model.named_modules()}
    try:
        compute_cam(model, torch.randn(1, 3, 224, 224), layer, 0)
        assert {name: m.training for name, m in model.named_modules()} == before
    finally:
        model.eval()
    assert _hook_count(model) == 0
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------------------------ every method, tiny


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize(("fixture", "layer"), [("tiny_vit", "encoder.layers.encoder_layer_1.ln_1"),
                                                 ("tiny_vit", "encoder.layers.encoder_layer_0"),
                                                 ("tiny_swin", "features.1"), ("tiny_swin", "norm")])
def test_every_method_works_on_transformer_layers(fixture: str, layer: str, method: str,
                                                  request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(fixture)
    x = torch.randn(2, 3, 32, 32)
    trace = trace_cam(model, x, layer, [1, 4], method)
    grid = (4, 4) if fixture == "tiny_vit" else ((8, 8) if layer == "features.1" else (4, 4))
    assert trace.cam.shape == (2, *grid) and torch.isfinite(trace.cam).all()
    assert trace.weighted_sum.abs().amax() > 0
    assert _hook_count(model) == 0


@pytest.mark.parametrize(
    ("method", "peer"),
    [("gradcam", "GradCAM"), ("gradcam++", "GradCAMPlusPlus"), ("xgradcam", "XGradCAM"),
     ("hirescam", "HiResCAM"), ("layercam", "LayerCAM")],
)
@pytest.mark.parametrize("fixture", ["tiny_vit", "tiny_swin"])
def test_gradient_methods_agree_with_pytorch_grad_cam(fixture: str, method: str, peer: str,
                                                       request: pytest.FixtureRequest) -> None:
    model = copy.deepcopy(request.getfixturevalue(fixture))
    head = model.heads.head if fixture == "tiny_vit" else model.head
    with torch.no_grad():  # large scores make pytorch-grad-cam's eps = 1e-6 in Grad-CAM++ negligible
        head.weight.mul_(100.0)
    if fixture == "tiny_vit":
        layer, reshape = "encoder.layers.encoder_layer_1.ln_1", lambda t: _vit_tokens_to_map(t, 4, 4)
    else:
        layer, reshape = "features.1", _channels_last_to_map
    _assert_agrees(model, layer, torch.randn(2, 3, 32, 32), [0, 3], reshape, method, peer)


def test_convnext_channels_last_block_internals_agree_with_pytorch_grad_cam() -> None:
    # ConvNeXt's blocks switch to channels-last with the same Permute modules as Swin: their LayerNorm is a
    # (N, H, W, C) map, no longer misread as channels-first.
    torch.manual_seed(0)
    model = torchvision.models.convnext_tiny(weights=None, num_classes=10).eval()
    info = {i.name: i for i in candidate_layers(model, (64, 64))}
    assert info["features.1.0.block.2"].layout == "nhwc" and info["features.1.0.block.2"].shape == (96, 16, 16)
    assert info["features.1.0"].layout == "nchw" and "features.1.0.block.1" not in info  # a Permute
    _assert_agrees(model, "features.5.8.block.2", torch.randn(1, 3, 64, 64), [4], _channels_last_to_map)


# ------------------------------------------------------------------------------------------ registry and custom


def test_registered_with_a_square_input_and_unavailable_without_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    statuses = {status.name: status for status in available_models()}
    for name, file_name in (("vit_b_16", "vit_b_16-c867db91.pth"), ("swin_t", "swin_t-704ceda3.pth")):
        assert not statuses[name].available and file_name in statuses[name].reason
        assert "\n" not in statuses[name].reason
        with pytest.raises(ModelUnavailableError, match=file_name):
            load_model(name)
        prep = MODELS[name].preprocessing()
        assert prep.size == 224 and not prep.keep_aspect
        assert to_input(Image.new("RGB", (300, 120)), prep).shape == (1, 3, 224, 224)  # squeezed, not cropped
    assert MODELS["swin_t"].preprocessing().interpolation == torchvision.transforms.InterpolationMode.BICUBIC


@pytest.fixture(scope="module")
def swin_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random ImageNet swin_t weights (110 MB) in a hub cache, under the official file name."""
    torch.manual_seed(3)
    folder = tmp_path_factory.mktemp("hub")
    checkpoints = folder / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    path = checkpoints / Path(torchvision.models.Swin_T_Weights.IMAGENET1K_V1.url).name
    torch.save(torchvision.models.swin_t(weights=None).state_dict(), path)
    return path


def test_swin_from_the_hub_cache_explains_an_image(swin_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(swin_weights.parents[2]))
    loaded = load_model("swin_t")
    assert loaded.default_layer == "norm" == loaded.layers[-1].name
    result = explain(ASSETS / "chelsea.png", model=loaded)
    assert result.input_size == (224, 224) and result.raw_map.shape == (7, 7) and result.strength > 0
    assert result.heatmap.shape == (result.image.height, result.image.width)


def test_custom_swin_explains_an_image(swin_weights: Path) -> None:
    # Only Swin-T here: a ViT-B/16 state dict is 330 MB; the tiny ViT tests cover the tokens path.
    loaded = load_custom_model("swin_t", swin_weights, [f"class {i}" for i in range(1000)])
    assert not loaded.preprocessing.keep_aspect and loaded.default_layer == "norm"
    assert {info.layout for info in loaded.layers} == {"nchw", "nhwc"}
    result = explain(ASSETS / "chelsea.png", model=loaded, target=5)
    assert result.raw_map.shape == (7, 7) and result.strength > 0
