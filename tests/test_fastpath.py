"""fastpath: device-side batches are true crops/flips of the data; the step trains; the
time-to-accuracy script refuses to time on a CPU."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from attncnn.fastpath import DeviceBatches, make_optimizer, make_train_step, one_cycle
from attncnn.models import create_model

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _images(n=12, size=8):
    g = torch.Generator().manual_seed(0)
    return torch.randint(1, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def _unnormalise(x):
    mean = torch.tensor(MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD).view(1, 3, 1, 1) * 255
    return (x * std + mean).round().to(torch.int64)


def test_train_batches_are_shifted_or_mirrored_copies_of_their_images():
    images, labels = _images(), torch.arange(12)
    loader = DeviceBatches(images, labels, 4, mean=MEAN, std=STD, device="cpu", train=True,
                           crop_padding=2, channels_last=True, seed=1)
    seen = []
    for x, y in loader.epoch():
        assert x.is_contiguous(memory_format=torch.channels_last) and x.dtype == torch.float32
        for img, label in zip(_unnormalise(x), y):
            src = torch.nn.functional.pad(images[label].to(torch.int64), (2, 2, 2, 2))
            candidates = [src[:, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
            candidates += [c.flip(-1) for c in candidates]
            assert any(torch.equal(img, c) for c in candidates)
        seen.append(y)
    assert sorted(torch.cat(seen).tolist()) == list(range(12))  # a permutation, drop_last exact


def test_eval_batches_are_the_images_in_order():
    images, labels = _images(10), torch.arange(10)
    loader = DeviceBatches(images, labels, 4, mean=MEAN, std=STD, device="cpu", train=False)
    xs, ys = zip(*loader.epoch())
    assert len(loader) == 3 and torch.equal(torch.cat(ys), labels)
    assert torch.equal(_unnormalise(torch.cat(xs)), images.to(torch.int64))


def test_train_step_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = create_model("attn_resnet9", num_classes=4, width=2)
    opt = make_optimizer(model, torch.device("cpu"), lr=0.05)
    step = make_train_step(model, opt, torch.device("cpu"), amp=False)
    x, y = torch.randn(8, 3, 8, 8), torch.arange(8) % 4
    first = step(x, y)
    assert first.requires_grad is False and first.dim() == 0
    for _ in range(8):
        last = step(x, y)
    assert float(last) < float(first)


def test_one_cycle_rises_to_one_then_falls_to_zero():
    f = one_cycle(100, 0.2)
    values = [f(i) for i in range(101)]
    assert max(values) == 1.0 and values.index(1.0) == 19
    assert values[0] < values[10] < values[19] and values[100] == 0.0


def test_time_to_accuracy_refuses_cpu_in_one_line(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "time_to_accuracy.py"
    spec = importlib.util.spec_from_file_location("time_to_accuracy", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    assert module.main(["--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and err.count("\n") == 1
