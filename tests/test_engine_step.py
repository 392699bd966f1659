"""The one training step (engine/step.py): what `attncnn train` runs, `attncnn bench` times and
benchmarks/time_to_accuracy.py trains with."""
import copy

import torch

from attncnn.engine.config import OptimConfig
from attncnn.engine.optim import build_loss, build_optimizer
from attncnn.engine.step import autocast_dtype, make_infer_step, make_train_step
from attncnn.models import create_model


def test_train_step_lowers_the_loss_on_a_fixed_batch_and_returns_loss_and_logits():
    torch.manual_seed(0)
    model = create_model("attn_resnet9", num_classes=4, width=2)
    cfg = OptimConfig(lr=0.05, nesterov=True)
    step = make_train_step(model, build_optimizer(model, cfg), build_loss(cfg), "cpu")
    x, y = torch.randn(8, 3, 8, 8), torch.arange(8) % 4
    first, logits = step(x, y)
    assert not first.requires_grad and first.dim() == 0
    assert logits.shape == (8, 4) and not logits.requires_grad
    torch.testing.assert_close(first, torch.nn.functional.cross_entropy(logits, y))
    for _ in range(8):
        last, _ = step(x, y)
    assert float(last) < float(first)


def test_bf16_autocast_is_the_amp_precision():
    assert autocast_dtype(True) is torch.bfloat16 and autocast_dtype(False) is None
    model = torch.nn.Linear(4, 3)
    cfg = OptimConfig()
    step = make_train_step(model, build_optimizer(model, cfg), build_loss(cfg), "cpu",
                           autocast_dtype(True))
    _, logits = step(torch.randn(2, 4), torch.tensor([0, 1]))
    assert logits.dtype == torch.bfloat16
    assert make_infer_step(model, "cpu", torch.bfloat16)(torch.randn(2, 4)).dtype == torch.float32


def test_bench_times_the_training_step_that_train_runs():
    """One bench training step moves the weights exactly as the engine's step with the
    documented bench optimiser (SGD, Nesterov 0.9, weight decay 5e-4, lr 0.1)."""
    from attncnn.analysis.bench import BenchSettings, _Subject

    subject = _Subject("resnet20_cifar", BenchSettings(batch_size=4, image_size=8), torch.device("cpu"))
    model = copy.deepcopy(subject.model)
    cfg = OptimConfig(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    engine_step = make_train_step(model.train(), build_optimizer(model, cfg), build_loss(cfg), "cpu")
    bench_step = subject.step_fn("train", amp=False)
    for _ in range(2):
        bench_step(subject.x, subject.y)
        engine_step(subject.x, subject.y)
    for (name, a), b in zip(subject.model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
