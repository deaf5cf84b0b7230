"""One shared model, many threads: every call gives exactly what it gives alone, and plain forwards are unaffected."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import torch
import torchvision

from gradcam_core import compute_cam

LAYERS = ("layer2", "layer3", "layer4")


def _jobs() -> list[tuple[torch.Tensor, str, int]]:
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(2, 3, 64, 64, generator=generator), LAYERS[i % 3], i % 10)
        for i in range(24)
    ]


def test_concurrent_calls_match_sequential_ones() -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    jobs = _jobs()
    alone = [compute_cam(model, x, layer, target) for x, layer, target in jobs]
    start = threading.Barrier(8)

    def run(job: tuple[torch.Tensor, str, int]) -> torch.Tensor:
        x, layer, target = job
        try:
            start.wait(timeout=0.5)
        except threading.BrokenBarrierError:
            pass
        return compute_cam(model, x, layer, target)

    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(run, jobs))
    for expected, got in zip(alone, together, strict=True):
        assert torch.equal(got, expected)
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_plain_forwards_in_other_threads_are_not_affected() -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    stop = threading.Event()
    outputs: list[torch.Tensor] = []

    def explain_loop() -> None:
        while not stop.is_set():
            compute_cam(model, x, "layer3", 4)

    worker = threading.Thread(target=explain_loop)
    worker.start()
    try:
        for _ in range(20):
            with torch.no_grad():
                outputs.append(model(x))
    finally:
        stop.set()
        worker.join()
    for output in outputs:
        assert not output.requires_grad  # another thread's hook never turned grad on here
        torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-6)
