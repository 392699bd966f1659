"""The recipe's optimiser, learning-rate schedule and loss (the only SGD builder).

The schedule is a pure function of the global step (`lr_at`), set on the optimiser before
every step: there is no scheduler object whose state a checkpoint must carry, and a
resumed run gets exactly the learning rates an uninterrupted one would.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from attncnn.engine.config import OptimConfig, ScheduleConfig


def _norm_biases(model: nn.Module) -> set[int]:
    """ids of the trainable biases of normalisation layers (BatchNorm, GroupNorm, ...)."""
    norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    return {id(m.bias) for m in model.modules()
            if isinstance(m, norms) and getattr(m, "bias", None) is not None and m.bias.requires_grad}


def parameter_groups(model: nn.Module, weight_decay: float, no_decay_norm_bias: bool,
                     norm_bias_lr_scale: float = 1.0,
                     stop_at: dict[nn.Parameter, int] | None = None) -> list[dict]:
    """The trainable parameters in groups: one with decay; with `no_decay_norm_bias`, one
    (decay 0) holding every bias and every normalisation weight (1-d parameters), as in
    Goyal et al. 2017; with `norm_bias_lr_scale` s != 1, the normalisation layers' biases
    in a group of their own whose learning rate is s times the rest (`lr_scale`, which
    `set_lr` applies) and whose weight decay is divided by s, so that the decay per step
    (lr * wd) stays as it was (airbench's "bias scaler", there 64). `stop_at` {parameter:
    step}: each in a group of its own, with the settings of the group it would have joined,
    whose learning rate `set_lr` makes 0 from that global step on (`until_step`): it stops
    training there, in a way DDP does not notice (its gradient is still computed and
    reduced)."""
    scaled = _norm_biases(model) if norm_bias_lr_scale != 1.0 else set()
    settings = {"decay": {"weight_decay": weight_decay},
                "no_decay": {"weight_decay": 0.0},
                "fast": {"lr_scale": norm_bias_lr_scale,
                         "weight_decay": 0.0 if no_decay_norm_bias
                         else weight_decay / norm_bias_lr_scale}}
    members: dict[str, list] = {kind: [] for kind in settings}
    stop_steps = {id(p): step for p, step in (stop_at or {}).items()}
    stopped = []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in scaled:
            kind = "fast"
        elif no_decay_norm_bias and p.ndim <= 1:
            kind = "no_decay"
        else:
            kind = "decay"
        if id(p) in stop_steps:
            stopped.append({"params": [p], **settings[kind], "until_step": stop_steps[id(p)]})
        else:
            members[kind].append(p)
    kinds = ["decay"] + ["no_decay"] * no_decay_norm_bias + ["fast"] * bool(members["fast"])
    return [{"params": members[kind], **settings[kind]} for kind in kinds] + stopped


def build_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device | str = "cpu",
                    stop_at: dict[nn.Parameter, int] | None = None) -> torch.optim.SGD:
    """The one SGD of the project (training, `attncnn bench`, the time-to-accuracy
    benchmark): momentum, optionally Nesterov, weight decay and learning-rate scales as
    `parameter_groups` says (`stop_at`: parameters that stop training at a given step);
    on CUDA the fused kernel (the whole update in one launch)."""
    groups = parameter_groups(model, cfg.weight_decay, cfg.no_decay_norm_bias,
                              cfg.norm_bias_lr_scale, stop_at)
    for group in groups:
        group["lr"] = cfg.lr * group.get("lr_scale", 1.0)
    extra = {"fused": True} if torch.device(device).type == "cuda" else {}
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay, **extra)


def lr_at(step: int, steps_per_epoch: int, base_lr: float, cfg: ScheduleConfig) -> float:
    """Learning rate for global step `step` (0-based) of a run of `cfg.epochs` epochs.

    step:   base_lr * gamma ** (milestones passed), changing at epoch boundaries as in the paper.
    cosine: base_lr * (e + (1 - e) * (1 + cos(pi * t)) / 2), t going 0 -> 1 per step over the
            steps after the warm-up, e = `end_factor` (0: down to zero).
    linear: base_lr * (1 - (1 - e) * t), the same t and e (airbench's and Page's one-cycle,
            with a warm-up).
    warm-up (all): the first W = `warmup_epochs * steps_per_epoch` steps ramp linearly from
            base_lr * (s + (1 - s) / W) to base_lr, s = `warmup_start` (step k gets
            s + (1 - s) * (k + 1) / W of the scheduled rate).
    """
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.name == "step":
        epoch = step // steps_per_epoch
        lr = base_lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    elif cfg.name in ("cosine", "linear"):
        t = min(max((step - warmup) / max(1, total - warmup), 0.0), 1.0)
        e = cfg.end_factor
        if cfg.name == "cosine" and e == 0:  # as before end_factor: the same floats
            lr = base_lr * 0.5 * (1 + math.cos(math.pi * t))
        else:
            shape = 0.5 * (1 + math.cos(math.pi * t)) if cfg.name == "cosine" else 1.0 - t
            lr = base_lr * (e + (1 - e) * shape)
    else:
        raise ValueError(f"unknown schedule {cfg.name!r}")
    if step < warmup:
        s = cfg.warmup_start
        lr *= (step + 1) / warmup if s == 0 else s + (1 - s) * (step + 1) / warmup
    return lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float, step: int | None = None) -> None:
    """Every group's learning rate to `lr` times its `lr_scale` (1 where it has none); 0
    for a group whose `until_step` global `step` has reached."""
    for group in optimizer.param_groups:
        stopped = step is not None and step >= group.get("until_step", math.inf)
        group["lr"] = 0.0 if stopped else lr * group.get("lr_scale", 1.0)


def build_loss(cfg: OptimConfig) -> nn.Module:
    """Cross-entropy, mean over the batch, with optional label smoothing."""
    return nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
