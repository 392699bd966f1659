"""The recipe: learning-rate schedules, parameter groups for weight decay, the loss."""
import math

import pytest
import torch

from attncnn.engine.config import OptimConfig, ScheduleConfig
from attncnn.engine.optim import build_loss, build_optimizer, lr_at, parameter_groups
from attncnn.models import create_model


def test_step_schedule_divides_at_the_milestone_epochs():
    cfg = ScheduleConfig(name="step", epochs=200, milestones=[100, 150], gamma=0.1)
    spe = 391
    lrs = {e: lr_at(e * spe, spe, 0.1, cfg) for e in (0, 99, 100, 149, 150, 199)}
    assert lrs[0] == lrs[99] == 0.1
    assert lrs[100] == pytest.approx(0.01) and lrs[149] == pytest.approx(0.01)
    assert lrs[150] == pytest.approx(0.001) and lrs[199] == pytest.approx(0.001)
    assert lr_at(100 * spe - 1, spe, 0.1, cfg) == 0.1  # the last step of epoch 99


def test_cosine_goes_from_lr_to_zero_through_half():
    cfg = ScheduleConfig(name="cosine", epochs=10)
    total = 10 * 50
    assert lr_at(0, 50, 0.2, cfg) == pytest.approx(0.2)
    assert lr_at(total // 2, 50, 0.2, cfg) == pytest.approx(0.1)
    assert lr_at(total, 50, 0.2, cfg) == pytest.approx(0.0, abs=1e-12)
    values = [lr_at(s, 50, 0.2, cfg) for s in range(total)]
    assert all(a >= b for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("name", ["step", "cosine"])
def test_warmup_ramps_linearly_to_the_scheduled_rate(name):
    cfg = ScheduleConfig(name=name, epochs=10, milestones=[5], warmup_epochs=2)
    spe, warm = 10, 20
    ramp = [lr_at(s, spe, 0.4, cfg) for s in range(warm)]
    assert ramp[0] == pytest.approx(0.4 / warm)
    assert ramp[-1] == pytest.approx(0.4)
    steps = [b - a for a, b in zip(ramp, ramp[1:])]
    assert max(steps) - min(steps) < 1e-12  # linear
    assert lr_at(warm, spe, 0.4, cfg) == pytest.approx(0.4)
    # cosine anneals over the 80 steps after the warm-up
    expected = 0.4 if name == "step" else 0.4 * 0.5 * (1 + math.cos(math.pi / 80))
    assert lr_at(warm + 1, spe, 0.4, cfg) == pytest.approx(expected)


def test_norm_and_bias_exemption_from_weight_decay():
    model = create_model("resnet20_cifar", depth=8, widths=(4, 8, 8))
    plain = parameter_groups(model, 1e-4, no_decay_norm_bias=False)
    assert len(plain) == 1 and plain[0]["weight_decay"] == 1e-4
    decay, no_decay = parameter_groups(model, 1e-4, no_decay_norm_bias=True)
    assert no_decay["weight_decay"] == 0.0
    bn = [m.weight for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(any(p is w for p in no_decay["params"]) for w in bn)
    assert any(p is model.fc.bias for p in no_decay["params"])
    assert all(p.ndim > 1 for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_sgd_settings_follow_the_config():
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(model, OptimConfig(lr=0.3, momentum=0.8, nesterov=True,
                                             weight_decay=5e-4))
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == \
        (0.3, 0.8, True, 5e-4)


def test_label_smoothing_raises_the_loss_of_a_confident_prediction():
    logits = torch.tensor([[10.0, -10.0, -10.0]])
    y = torch.tensor([0])
    plain = build_loss(OptimConfig(label_smoothing=0.0))(logits, y)
    smooth = build_loss(OptimConfig(label_smoothing=0.1))(logits, y)
    assert plain < 1e-6 < smooth
