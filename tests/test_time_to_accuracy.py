"""fastpath: the step trains, the schedule is a one-cycle; the time-to-accuracy script refuses
to time on a CPU. (Its batches come from DeviceLoader: tests/test_loader.py.)"""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from attncnn.fastpath import make_optimizer, make_train_step, one_cycle
from attncnn.models import create_model


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


def load_time_to_accuracy():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "time_to_accuracy.py"
    spec = importlib.util.spec_from_file_location("time_to_accuracy", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_time_to_accuracy_ladder_stops_at_the_target_and_saves_every_try():
    ladder = load_time_to_accuracy().ladder
    accuracies = {10: 93.0, 12: 94.2, 16: 95.0}
    saved = []
    side = {}

    def run_one(epochs):
        return {"accuracy": accuracies[epochs], "time_s": float(epochs), "train_s": 0.0,
                "eval_s": 0.0}

    out = ladder("x", run_one, [10, 12, 16], 94.0, side, lambda: saved.append(len(side["tries"])))
    assert out["reached"] and out["epochs"] == 12 and out["time_to_target_s"] == 12.0
    assert saved == [1, 2] and len(out["tries"]) == 2  # 16 never ran

    def killed_on_second(epochs):  # a time limit ending the command during a try
        if epochs == 12:
            raise KeyboardInterrupt
        return run_one(epochs)

    side, saved = {}, []
    with pytest.raises(KeyboardInterrupt):
        ladder("x", killed_on_second, [10, 12], 94.0, side, lambda: saved.append(len(side["tries"])))
    assert saved == [1] and side["tries"][0]["accuracy"] == 93.0  # the finished try was kept


def test_time_to_accuracy_refuses_cpu_in_one_line(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    module = load_time_to_accuracy()
    assert module.main(["--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and err.count("\n") == 1
