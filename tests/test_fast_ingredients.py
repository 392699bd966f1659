"""The fast-training ingredients: patch whitening, lookahead, the norm-bias learning-rate
scale, translation test-time augmentation and FastNet's own construction."""
import pytest
import torch
import torch.nn.functional as F

from attncnn import AttncnnError
from attncnn.engine.config import OptimConfig, load_config
from attncnn.engine.lookahead import Lookahead
from attncnn.engine.optim import build_optimizer, parameter_groups, set_lr
from attncnn.engine.step import make_infer_step
from attncnn.models import create_model
from attncnn.models.whitening import patch_whitening_filters, whiten_conv_


def correlated_images(n=64, seed=0) -> torch.Tensor:
    """Images whose channels and neighbouring pixels are strongly correlated."""
    g = torch.Generator().manual_seed(seed)
    base = F.avg_pool2d(torch.randn(n, 1, 18, 18, generator=g), 3, 1)     # smooth, [n,1,16,16]
    mix = torch.tensor([[1.0], [0.8], [0.5]]).view(1, 3, 1, 1)
    return base * mix * 3 + 0.1 * torch.randn(n, 3, 16, 16, generator=g) + 0.5


# --- whitening ---------------------------------------------------------------------------

def test_whitening_filters_make_the_patch_second_moment_the_identity():
    images = correlated_images()
    filters = patch_whitening_filters(images, 2, eps=0.0).double()
    assert filters.shape == (24, 3, 2, 2)
    out = F.conv2d(images.double(), filters[:12])                           # the + half
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    moment = flat.T @ flat / len(flat)
    assert torch.allclose(moment, torch.eye(12, dtype=torch.float64), atol=1e-6)
    raw = F.unfold(images.double(), 2).transpose(1, 2).reshape(-1, 12)
    assert not torch.allclose(raw.T @ raw / len(raw), torch.eye(12, dtype=torch.float64), atol=0.1)
    assert torch.equal(filters[12:], -filters[:12])                         # the - half


def test_whitening_keeps_the_directions_of_largest_variance_first():
    images = correlated_images()
    filters = patch_whitening_filters(images, 2, directions=4, eps=0.0)
    assert filters.shape == (8, 3, 2, 2)
    out = F.conv2d(images, filters[:4])
    # whitened outputs have unit second moment; the filters' norms shrink as variance grows
    norms = filters[:4].flatten(1).norm(dim=1)
    assert (norms[1:] >= norms[:-1] - 1e-6).all()
    assert torch.allclose((out ** 2).mean((0, 2, 3)), torch.ones(4), atol=1e-3)


def test_whiten_conv_refuses_a_conv_it_cannot_fill():
    images = correlated_images()
    with pytest.raises(AttncnnError, match="cannot be whitened"):
        whiten_conv_(torch.nn.Conv2d(3, 7, 2), images)              # odd
    with pytest.raises(AttncnnError, match="directions"):
        whiten_conv_(torch.nn.Conv2d(3, 26, 2), images)             # 13 > 12 directions
    with pytest.raises(AttncnnError, match="cannot be whitened"):
        whiten_conv_(torch.nn.Conv2d(1, 8, 2), images)              # channel mismatch


def test_fastnet_whiten_freezes_the_stem_and_changes_its_output():
    torch.manual_seed(0)
    model = create_model("fastnet", widths=[8, 16, 16])
    assert model.stem[0].weight.requires_grad
    images = correlated_images(32)
    before = model.stem[0].weight.clone()
    model.whiten(images)
    assert not model.stem[0].weight.requires_grad and model.stem[0].bias.requires_grad
    assert not torch.equal(before, model.stem[0].weight)
    groups = parameter_groups(model, 1e-4, False)
    assert all(p is not model.stem[0].weight for g in groups for p in g["params"])


def test_fastnet_starts_as_identity_convs_with_frozen_bn_weights():
    model = create_model("attn_fastnet", widths=[24, 32, 32])
    group = model.stages[0][0]
    w = group.conv1.weight                                   # 24 -> 24: the whole identity
    centre = torch.zeros_like(w)
    torch.nn.init.dirac_(centre)
    assert torch.equal(w, centre)
    assert not group.norm1.weight.requires_grad and group.norm1.bias.requires_grad
    assert group.norm1.eps == 1e-12 and group.norm1.momentum == 0.4
    with pytest.raises(AttncnnError, match="widths must be three"):
        create_model("fastnet", widths=[8, 16])


# --- lookahead ---------------------------------------------------------------------------

def test_lookahead_pulls_the_model_back_to_the_slow_weights():
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    look = Lookahead(model, every=2, max_decay=0.5, power=0.0)   # decay 0.5 at every update
    with torch.no_grad():
        model.weight.fill_(1.0)
    look.after_step(1, 10)                                       # not an update step
    assert torch.equal(model.weight, torch.ones(1, 2))
    look.after_step(2, 10)                                       # slow = 0.5*0 + 0.5*1
    assert torch.allclose(model.weight, torch.full((1, 2), 0.5))
    with torch.no_grad():
        model.weight.fill_(2.5)
    look.finish()                                                # decay 1: back to slow
    assert torch.allclose(model.weight, torch.full((1, 2), 0.5))


def test_lookahead_decay_ramps_up_and_bn_counters_are_left_alone():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    look = Lookahead(model)
    assert look.decay_at(0, 100) == 0.0
    assert look.decay_at(50, 100) == pytest.approx(0.95 ** 5 / 8)
    assert look.decay_at(100, 100) == pytest.approx(0.95 ** 5)
    assert "1.num_batches_tracked" not in look.state_dict()
    model(torch.randn(4, 1, 3, 3))                               # running stats move
    look.update(0.0)                                             # decay 0: slow = fast
    assert torch.equal(look.state_dict()["1.running_mean"], model[1].running_mean)
    other = Lookahead(model)
    other.load_state_dict(look.state_dict())
    with pytest.raises(KeyError):
        other.load_state_dict({})


# --- optimiser: the norm-bias learning-rate scale ---------------------------------------

def test_norm_biases_get_a_scaled_lr_and_the_same_decay_per_step():
    model = create_model("fastnet", widths=[8, 16, 16])
    opt = build_optimizer(model, OptimConfig(lr=0.5, weight_decay=1e-3, norm_bias_lr_scale=64))
    plain, fast = opt.param_groups
    norm_biases = [m.bias for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {id(p) for p in fast["params"]} == {id(p) for p in norm_biases}
    assert any(p is model.stem[0].bias for p in plain["params"])   # a conv bias is not one
    assert fast["lr"] == pytest.approx(32.0) and plain["lr"] == 0.5
    assert fast["lr"] * fast["weight_decay"] == pytest.approx(plain["lr"] * plain["weight_decay"])
    set_lr(opt, 0.1)
    assert fast["lr"] == pytest.approx(6.4) and plain["lr"] == pytest.approx(0.1)
    one = build_optimizer(model, OptimConfig(lr=0.5))
    assert len(one.param_groups) == 1


def test_norm_bias_lr_scale_is_checked_in_the_config():
    with pytest.raises(AttncnnError, match="optim.norm_bias_lr_scale"):
        load_config(None, ["optim.norm_bias_lr_scale=0"])


# --- translation test-time augmentation --------------------------------------------------

def test_translate_tta_averages_shifted_copies():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return x.mean((2, 3))

    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    out = make_infer_step(Probe(), "cpu", translate=1)(x)
    assert len(seen) == 3
    padded = F.pad(x, (1,) * 4, mode="reflect")
    assert torch.equal(seen[1], padded[:, :, :4, :4]) and torch.equal(seen[2], padded[:, :, 2:, 2:])
    expected = x.mean((2, 3)) / 2 + (seen[1].mean((2, 3)) + seen[2].mean((2, 3))) / 4
    assert torch.allclose(out, expected)
    seen.clear()
    make_infer_step(Probe(), "cpu", flip=True, translate=1)(x)
    assert len(seen) == 6                                          # each view flipped too


# --- the same ingredients in `attncnn train` ---------------------------------------------

def test_linear_schedule_with_a_warm_start_and_an_end_factor():
    from attncnn.engine.config import ScheduleConfig
    from attncnn.engine.optim import lr_at

    cfg = ScheduleConfig(name="linear", epochs=10, warmup_epochs=2, warmup_start=0.2,
                         end_factor=0.07)
    lrs = [lr_at(s, 10, 1.5, cfg) for s in range(101)]
    assert lrs[0] == pytest.approx(1.5 * (0.2 + 0.8 / 20)) and lrs[19] == pytest.approx(1.5)
    assert lrs[20] == pytest.approx(1.5) and lrs[100] == pytest.approx(1.5 * 0.07)
    assert lrs[60] == pytest.approx(1.5 * (1 - 0.93 * 0.5))
    cosine = ScheduleConfig(name="cosine", epochs=10, end_factor=0.1)
    assert lr_at(100, 10, 1.0, cosine) == pytest.approx(0.1)
    with pytest.raises(AttncnnError, match="schedule.end_factor"):
        load_config(None, ["schedule.end_factor=2"])


def test_engine_runs_the_fast_recipe_and_resumes_it_bit_identically(tmp_path, monkeypatch):
    """fastnet through `attncnn train`: whitened stem (frozen, in the checkpoint), lookahead
    (its slow weights in the checkpoint), reflection-padded crops, norm-bias lr scale, the
    linear schedule; a run stopped mid-way and resumed ends where an unbroken one does."""
    import attncnn.engine.loop as loop_module
    from attncnn.engine import checkpoint as ckpt
    from attncnn.engine.train import train
    from attncnn.models.whitening import patch_whitening_filters
    from engine_toy import make_toy, one_torch_thread, toy_config

    def config(root):
        return toy_config(root, model={"name": "attn_fastnet", "args": {"widths": [4, 8, 8]},
                                       "whiten_images": 32, "whiten_bias_epochs": 1},
                          data={"pad_mode": "reflect"},
                          optim={"lookahead": True, "norm_bias_lr_scale": 8.0, "lr": 0.2},
                          schedule={"name": "linear", "epochs": 3, "warmup_epochs": 1,
                                    "warmup_start": 0.2, "end_factor": 0.1, "milestones": []},
                          run={"checkpoint_every_steps": 3})

    with one_torch_thread():
        record = train(config(tmp_path / "ref"), quiet=True)
        assert record["status"] == "finished"
        assert record["recipe"]["lookahead"] and record["recipe"]["pad_mode"] == "reflect"
        ref = torch.load(tmp_path / "ref" / "toy" / ckpt.LAST, weights_only=True)
        assert ref["lookahead"] is not None
        # the stem is the whitening of the first 32 training images, untouched by training
        data = make_toy(64, seed=0)
        mean = torch.tensor(data.mean).view(1, 3, 1, 1) * 255
        std = torch.tensor(data.std).view(1, 3, 1, 1) * 255
        expected = patch_whitening_filters((data.images[:32].float() - mean) / std, 2)
        assert torch.allclose(ref["model"]["stem.0.weight"], expected, atol=1e-5)
        # at the end the model holds the slow weights
        for key, slow in ref["lookahead"].items():
            assert torch.equal(ref["model"][key], slow), key

        real = loop_module.lr_at

        def crash_at_7(step, *args):
            if step == 7:
                raise KeyboardInterrupt
            return real(step, *args)

        monkeypatch.setattr(loop_module, "lr_at", crash_at_7)
        cfg = config(tmp_path / "b")
        with pytest.raises(KeyboardInterrupt):
            train(cfg, quiet=True)
        monkeypatch.undo()
        run_dir = tmp_path / "b" / "toy"
        assert train(cfg, resume=run_dir, quiet=True)["status"] == "finished"
        resumed = torch.load(run_dir / ckpt.LAST, weights_only=True)
    for key in ref["model"]:
        assert torch.equal(resumed["model"][key], ref["model"][key]), key


def test_whiten_images_needs_a_whitening_model():
    with pytest.raises(AttncnnError, match="model.whiten_images needs a model with a whitening"):
        load_config(None, ["model.name=resnet20_cifar", "model.whiten_images=100"])
    with pytest.raises(AttncnnError, match="data.pad_mode"):
        load_config(None, ["data.pad_mode=edge"])


def test_engine_evaluates_with_shifted_copies_and_its_weights_say_so(tmp_path):
    """data.eval_translate: the run's figure is computed with shifted copies (as the
    benchmark's recipe evaluates), the recipe and weights record it, and `attncnn eval` of the
    weights evaluates that way unless told otherwise."""
    import dataclasses

    from attncnn.engine.train import train
    from attncnn.inference.evaluation import evaluate_weights
    from engine_toy import one_torch_thread, toy_config

    cfg = toy_config(tmp_path, data={"eval_translate": 1, "eval_flip": True},
                     schedule={"epochs": 1, "milestones": []})
    with one_torch_thread():
        record = train(cfg, quiet=True)
        assert record["recipe"]["eval_translate"] == 1 and record["recipe"]["eval_flip"]
        plain = dataclasses.replace(cfg.data, eval_translate=0, eval_flip=False)
        weights = tmp_path / "toy" / "model.safetensors"
        again = evaluate_weights(weights, plain)           # the weights' own TTA
        assert again["data"]["eval_translate"] == 1 and again["data"]["eval_flip"]
        assert again["final"]["loss"] == pytest.approx(record["final"]["loss"], rel=1e-6)
        without = evaluate_weights(weights, plain, flip=True, translate=0)
        assert "eval_translate" not in without["data"]
        assert without["final"]["loss"] != pytest.approx(record["final"]["loss"], rel=1e-6)
    with pytest.raises(AttncnnError, match="data.eval_translate must be >= 0"):
        load_config(None, ["data.eval_translate=-1"])
    # a run without shifted copies keeps the recipe it had before the setting existed
    assert "eval_translate" not in train(toy_config(tmp_path / "b", schedule={
        "epochs": 1, "milestones": []}), quiet=True)["recipe"]


def test_a_parameter_can_stop_training_at_a_step():
    """stop_at: its own group (the settings it would have had) whose lr set_lr makes 0 from
    that global step; the rest follow the schedule as before."""
    from attncnn.engine.config import OptimConfig
    from attncnn.engine.optim import build_optimizer, set_lr

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    bias = model[0].bias
    opt = build_optimizer(model, OptimConfig(lr=0.5, weight_decay=1e-3, momentum=0.9),
                          stop_at={bias: 10})
    own = [g for g in opt.param_groups if "until_step" in g]
    assert len(own) == 1 and own[0]["params"] == [bias] and own[0]["weight_decay"] == 1e-3
    assert all(bias is not p for g in opt.param_groups if g is not own[0] for p in g["params"])
    set_lr(opt, 0.25, step=9)
    assert [g["lr"] for g in opt.param_groups] == [0.25, 0.25]
    set_lr(opt, 0.25, step=10)
    assert [g["lr"] for g in opt.param_groups] == [0.25, 0.0]
    before = bias.detach().clone()
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    assert torch.equal(bias.detach(), before)          # momentum and decay move nothing at lr 0
    assert not torch.equal(model[0].weight.grad, torch.zeros_like(model[0].weight))
    # a norm bias under the lr scale keeps its scale and divided decay in its own group
    scaled = build_optimizer(model, OptimConfig(lr=0.5, weight_decay=1e-3, norm_bias_lr_scale=4.0),
                             stop_at={model[1].bias: 3})
    own = [g for g in scaled.param_groups if "until_step" in g]
    assert own[0]["params"] == [model[1].bias] and own[0]["lr_scale"] == 4.0
    assert own[0]["weight_decay"] == pytest.approx(2.5e-4)
    assert not any("lr_scale" in g for g in scaled.param_groups if g is not own[0])


def test_the_whitened_stems_bias_trains_for_its_epochs_then_stops(tmp_path, monkeypatch):
    """model.whiten_bias_epochs: 1 epoch of 4 steps, then the bias the training forward
    passes see no longer changes (lookahead off: it would pull the bias back)."""
    from attncnn.engine.train import train
    from attncnn.models.fastnet import FastNet
    from engine_toy import one_torch_thread, toy_config

    seen = []
    forward = FastNet.forward

    def recording(self, x):
        if self.training:
            seen.append(self.whitening_bias().detach().clone())
        return forward(self, x)

    monkeypatch.setattr(FastNet, "forward", recording)
    cfg = toy_config(tmp_path, model={"name": "fastnet", "args": {"widths": [4, 8, 8]},
                                      "whiten_images": 32, "whiten_bias_epochs": 1},
                     schedule={"name": "linear", "epochs": 2, "milestones": []})
    with one_torch_thread():
        record = train(cfg, quiet=True)
    assert record["recipe"]["whiten_bias_epochs"] == 1
    assert len(seen) == 8                    # 2 epochs of 4 steps
    assert all(not torch.equal(a, b) for a, b in zip(seen[:4], seen[1:5]))  # steps 0-3 train it
    assert all(torch.equal(seen[4], later) for later in seen[5:])            # then it stays
    with pytest.raises(AttncnnError, match="model.whiten_bias_epochs must be >= 0"):
        load_config(None, ["model.name=fastnet", "model.whiten_images=10",
                           "model.whiten_bias_epochs=-0.5"])
    with pytest.raises(AttncnnError, match="needs model.whiten_images"):
        load_config(None, ["model.name=fastnet", "model.whiten_bias_epochs=3"])
