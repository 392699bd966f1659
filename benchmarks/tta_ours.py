"""Our side of benchmarks/time_to_accuracy.py: the recipe (one for a GPU, one for the CPU),
the one-cycle schedule, and `Ours`, which trains the recipe from the same initial weights
on every try with the engine's step and optimiser (what `attncnn train` runs).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, fields, replace

import torch
import yaml

from attncnn.data import DeviceLoader
from attncnn.data.dataset import ArrayDataset
from attncnn.data.loader import normalisation
from attncnn.engine.config import OptimConfig
from attncnn.engine.device import cpu_has_native_bf16, synchronize
from attncnn.engine.lookahead import Lookahead
from attncnn.engine.optim import build_loss, build_optimizer
from attncnn.engine.step import autocast_dtype, make_infer_step, make_train_step
from attncnn.models import create_model

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclass
class Recipe:
    model: str = "attn_resnet9"
    batch_size: int = 512
    lr: float = 0.4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.2
    warmup_fraction: float = 0.2  # the learning rate peaks here, as a fraction of the steps
    lr_start: float = 0.0         # ... rising from lr * lr_start, and falls to lr * lr_end
    lr_end: float = 0.0
    crop_padding: int = 4
    pad_mode: str = "zeros"       # the crops' padding: zeros (torchvision's) or reflect
    norm_bias_lr_scale: float = 1.0  # BN biases: lr x this, weight decay / this
    lookahead: bool = False       # attncnn.engine.lookahead.Lookahead (every 5 steps)
    whiten_images: int = 0        # > 0: whiten the stem from this many training images
    whiten_bias_epochs: int | None = None  # the stem's bias trains this many epochs (None: all)
    tta_translate: int = 0        # evaluation: also shifted copies (make_infer_step)
    amp: bool = True              # bf16 autocast in training
    eval_amp: bool = True         # bf16 autocast in the final evaluation (False: float32)
    channels_last: bool = True
    compile: bool = True
    compile_mode: str | None = None
    flip_tta: bool = True
    model_args: dict = field(default_factory=dict)  # create_model overrides (width, ...)

    def optim(self) -> OptimConfig:
        """The engine's optimiser and loss settings for this recipe (SGD, Nesterov)."""
        return OptimConfig(lr=self.lr, momentum=self.momentum, nesterov=True,
                           weight_decay=self.weight_decay, label_smoothing=self.label_smoothing,
                           norm_bias_lr_scale=self.norm_bias_lr_scale)


RECIPE = Recipe()  # the GPU recipe: Page's ResNet-9 (width 64) + attention, docs/bench.md


def cpu_recipe() -> Recipe:
    """The CPU recipe (docs/bench.md, "Plan: CIFAR-10 to 90% on the CPU"): ResNet-9 at half
    width (0.095 GMACs, about airbench94's images/s on this CPU) with the paper's softmax
    attention after each stage, batch 256 at lr 0.2 (Page's 0.4 at 512, scaled linearly:
    on the CPU a smaller batch costs no speed and gives twice the steps per epoch), the
    engine's fastest CPU settings (channels_last, bf16 autocast where the CPU computes bf16
    natively, eager: torch.compile was slower here) and the engine's float32 final
    evaluation, with flip test-time augmentation."""
    bf16 = cpu_has_native_bf16()
    return Recipe(model="attn_resnet9", model_args={"width": 32}, batch_size=256, lr=0.2,
                  amp=bf16, eval_amp=False, compile=False)


def fast_cpu_recipe() -> Recipe:
    """The CPU candidate in airbench94's shape (docs/bench.md, "FastNet"): `attn_fastnet`
    (the paper's softmax attention after each of its three conv groups) with airbench94's
    hyperparameters restated for a mean loss: batch 1024, Nesterov SGD at lr 1.5 (its 11.5
    per 1024 examples at momentum 0.85), weight decay 1.33e-3 (its 0.0153 per 1024
    examples, decoupled), BN biases at 64x the learning rate, label smoothing 0.2, a
    triangular schedule 0.2 -> 1 (at 23% of the steps) -> 0.07, random crops from a 2-pixel
    reflection pad and flips, lookahead every 5 steps, the stem whitened from 5,000 training images
    with its bias trained for 3 epochs, and test-time flips and 1-pixel shifts; bf16
    autocast where the CPU computes it natively, eager, float32 final evaluation."""
    bf16 = cpu_has_native_bf16()
    return Recipe(model="attn_fastnet", batch_size=1024, lr=1.5, momentum=0.85,
                  weight_decay=1.33e-3, label_smoothing=0.2, warmup_fraction=0.23,
                  lr_start=0.2, lr_end=0.07, crop_padding=2, pad_mode="reflect",
                  norm_bias_lr_scale=64.0,
                  lookahead=True, whiten_images=5000, whiten_bias_epochs=3, tta_translate=1,
                  amp=bf16, eval_amp=False, compile=False)


def with_overrides(recipe: Recipe, items: list[str]) -> Recipe:
    """`recipe` with KEY=VALUE overrides (values read as YAML): a Recipe field, or else a
    model argument (width=24, attention_placement=block), which create_model checks."""
    names = {f.name for f in fields(Recipe)}
    changes, model_args = {}, dict(recipe.model_args)
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"time_to_accuracy: --recipe wants KEY=VALUE, got {item!r}")
        value = yaml.safe_load(text)
        if key.strip() in names:
            changes[key.strip()] = value
        else:
            model_args[key.strip()] = value
    return replace(recipe, **changes, model_args=model_args)


def one_cycle(total_steps: int, warmup_fraction: float = 0.2, start: float = 0.0,
              end: float = 0.0):
    """LR multiplier of step 0, 1, ...: linear from `start` to 1 over the first
    `warmup_fraction` of the steps (reaching 1 at the last of them), then linear to `end`
    at `total_steps` (0 -> 1 -> 0 by default)."""
    peak = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < peak:
            return start + (1.0 - start) * (step + 1) / peak
        t = min(1.0, (step - peak) / max(1, total_steps - peak))
        return max(0.0, 1.0 + (end - 1.0) * t)
    return factor


def build_ours(recipe: Recipe, device: torch.device, num_classes: int):
    model = create_model(recipe.model, num_classes=num_classes, **recipe.model_args).to(device)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    run = torch.compile(model, mode=recipe.compile_mode) if recipe.compile else model
    return model, run


class Ours:
    """Our recipe on one device. The model is built (and compiled) once; every run restores
    the same initial weights into it, so compilation happens once, in the warm-up, and never
    inside a timed run. Every run also sees the same batches: epoch e's order, crops and
    flips are a function of (seed, e)."""

    def __init__(self, recipe: Recipe, train: ArrayDataset, test: ArrayDataset,
                 device: torch.device, seed: int = 0):
        torch.manual_seed(seed)
        self.recipe, self.device = recipe, device
        self.model, self.run = build_ours(recipe, device, train.num_classes)
        self.initial = copy.deepcopy(self.model.state_dict())
        self.trainable = {n: p.requires_grad for n, p in self.model.named_parameters()}
        if recipe.whiten_images and not hasattr(self.model, "whiten"):
            raise SystemExit(f"time_to_accuracy: whiten_images needs a model with a whitening "
                             f"stem (fastnet), not {recipe.model}")
        train, test = (replace(d, mean=CIFAR_MEAN, std=CIFAR_STD) for d in (train, test))
        self.whiten_source = train.images[:recipe.whiten_images]  # uint8, the first N
        self.batches = DeviceLoader(train, recipe.batch_size, train=True, device=device,
                                    seed=seed, crop_padding=recipe.crop_padding,
                                    pad_mode=recipe.pad_mode,
                                    channels_last=recipe.channels_last)
        self.test_batches = DeviceLoader(test, 1000, train=False, device=device,
                                         channels_last=recipe.channels_last)

    def warm_up(self, steps: int = 3) -> float:
        """Compile and autotune (training and evaluation graphs); seconds taken."""
        start = time.perf_counter()
        self.train(epochs=1, max_steps=steps)
        return time.perf_counter() - start

    def train(self, epochs: int, max_steps: int | None = None) -> dict:
        """Train from the initial weights for `epochs`; accuracy, timings, loss per epoch."""
        recipe, device, model = self.recipe, self.device, self.model
        model.load_state_dict(self.initial)  # in place: the compiled code stays valid
        for name, p in model.named_parameters():  # a whitened stem was frozen by the last run
            p.requires_grad_(self.trainable[name])
        synchronize(device)
        start = time.perf_counter()
        if recipe.whiten_images:  # timed: part of training, as in airbench
            model.whiten(self.normalised(self.whiten_source))
        optimizer = build_optimizer(model, recipe.optim(), device)  # what `attncnn train` builds
        total = epochs * len(self.batches)
        total = total if max_steps is None else min(max_steps, total)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, one_cycle(
            total, recipe.warmup_fraction, recipe.lr_start, recipe.lr_end))
        step = make_train_step(self.run, optimizer, build_loss(recipe.optim()), device,
                               autocast_dtype(recipe.amp))  # the step `attncnn train` runs
        lookahead = Lookahead(model) if recipe.lookahead else None
        epoch_losses, steps = [], 0
        model.train()
        while steps < total:
            loss_sum = torch.zeros((), device=device)
            epoch = len(epoch_losses)  # counted from 0 in every run
            if recipe.whiten_bias_epochs is not None:
                model.stem[0].bias.requires_grad_(epoch < recipe.whiten_bias_epochs)
            for x, y in self.batches.epoch(epoch):
                loss_sum += step(x, y)[0]  # stays on the device: no sync in the loop
                schedule.step()
                steps += 1
                if lookahead is not None:
                    lookahead.after_step(steps, total)
                if steps >= total:
                    break
            epoch_losses.append(loss_sum)
        if lookahead is not None:
            lookahead.finish()
        synchronize(device)
        train_s = time.perf_counter() - start
        accuracy = self.evaluate()
        synchronize(device)
        total_s = time.perf_counter() - start
        result = {"epochs": epochs, "steps": steps, "accuracy": accuracy, "train_s": train_s,
                  "eval_s": total_s - train_s, "time_s": total_s,
                  "images_per_s": steps * recipe.batch_size / train_s,
                  "epoch_loss": [float(l) / len(self.batches) for l in epoch_losses]}
        if self.eval_dtype() is not None:  # after the clock: what float32 gives the same weights
            result["accuracy_float32"] = self.evaluate(float32=True)
        return result

    def normalised(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, C, H, W] -> float32 on the device, normalised as the loaders do."""
        mean, std = normalisation(CIFAR_MEAN, CIFAR_STD, self.device)
        return (images.to(self.device).float() - mean) / std

    def eval_dtype(self) -> torch.dtype | None:
        """The final evaluation's autocast dtype: bf16 if `amp` and `eval_amp`, else None
        (float32)."""
        return autocast_dtype(self.recipe.amp and self.recipe.eval_amp)

    def evaluate(self, float32: bool = False) -> float:
        """Top-1 percent on the evaluation images (flip TTA if the recipe says so), under
        autocast if `eval_amp` (and not `float32`), else in float32."""
        self.model.eval()
        recipe = self.recipe
        infer = make_infer_step(self.run, self.device, None if float32 else self.eval_dtype(),
                                flip=recipe.flip_tta, translate=recipe.tta_translate)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for x, y in self.test_batches.epoch():
            correct += (infer(x).argmax(1) == y).sum()
        self.model.train()
        return 100.0 * int(correct) / self.test_batches.num_samples
