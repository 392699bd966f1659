"""benchmarks/time_to_accuracy.py: the one-cycle schedule, the ladder, the refusal to time on a
CPU. (Its step and optimiser are the engine's: tests/test_engine_step.py; its batches come
from DeviceLoader: tests/test_loader.py.)"""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch


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


def test_one_cycle_rises_to_one_then_falls_to_zero():
    f = load_time_to_accuracy().one_cycle(100, 0.2)
    values = [f(i) for i in range(101)]
    assert max(values) == 1.0 and values.index(1.0) == 19
    assert values[0] < values[10] < values[19] and values[100] == 0.0


def test_the_recipe_trains_with_the_engine_optimiser():
    from attncnn.engine.optim import build_optimizer

    recipe = load_time_to_accuracy().RECIPE
    group = build_optimizer(torch.nn.Linear(2, 2), recipe.optim()).param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == \
        (0.4, 0.9, True, 5e-4)
    assert recipe.optim().label_smoothing == 0.2


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


def test_ours_trains_and_evaluates_on_the_cpu():
    """Our side of the script end to end on a few 8x8 images: engine step, one-cycle, flip TTA."""
    from attncnn.data.dataset import ArrayDataset

    module = load_time_to_accuracy()
    gen = torch.Generator().manual_seed(0)

    def data(n):
        return ArrayDataset(torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=gen),
                            torch.arange(n) % 4, ["a", "b", "c", "d"])

    recipe = module.Recipe(batch_size=8, amp=False, compile=False, channels_last=False,
                           crop_padding=1, model_args={"width": 2})
    ours = module.Ours(recipe, data(24), data(8), torch.device("cpu"))
    result = ours.train(epochs=2)
    assert result["steps"] == 6 and len(result["epoch_loss"]) == 2
    assert all(0 < loss < 10 for loss in result["epoch_loss"])
    assert 0 <= result["accuracy"] <= 100 and result["time_s"] >= result["train_s"] > 0
    again = ours.train(epochs=2)  # every run starts from the same initial weights
    assert again["epoch_loss"] == result["epoch_loss"]
