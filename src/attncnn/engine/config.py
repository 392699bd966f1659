"""Run configs: YAML files <-> typed dataclasses (see CONFIG_SCHEMA in docs/training.md).

    cfg = load_config("configs/quickstart.yaml", ["optim.lr=0.05", "run.seed=1"])

A file may start with `base: <path relative to this file>`; the base is loaded first
(recursively) and the child's keys win, section by section and key by key. `--set a.b=c`
overrides are applied last, the value parsed as YAML (`0.1` a float, `[1, 2]` a list,
`null` None). A relative `data.root` is found from the current directory, else beside the
file that set it, and kept as an absolute path (see `load_config`). Unknown keys and values
of the wrong type are `AttncnnError`s that name the file (or override), the key and, for a
typo, the closest known key (engine/config_yaml.py); each section then checks its own
values (`validate`), the data section in attncnn.data.config.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import yaml

from attncnn.data.config import DataConfig
from attncnn.engine.config_yaml import (anchor_data_root, apply_override, check_keys, check_type,
                                        data_root, load_yaml_with_base, plain)
from attncnn.errors import AttncnnError, check_choice, first_line

AUTO = "auto"
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _refuse(source: str, key: str, why: str):
    raise AttncnnError(f"{source}: {key} {why}")


@dataclass
class ModelConfig:
    name: str = "attn_resnet20_cifar"   # any registry name (`attncnn models`)
    args: dict = field(default_factory=dict)  # create_model overrides, e.g. {attention_placement: block}
    whiten_images: int = 0              # > 0: whiten the stem from this many train images (fastnet)
    whiten_bias_epochs: float = 0.0     # > 0: the whitened stem's bias trains this many epochs,
                                        # then its learning rate is 0 (airbench: 3); 0: throughout

    def validate(self, source: str = "config") -> None:
        """The name is registered and the args build it (on the meta device: shapes only,
        nothing allocated), so that a typo in model.args (`depthh`, `attention: softmx`) is
        a one-line error at load, with a suggestion, before any data is read."""
        import torch

        from attncnn.models import create_model, get_spec

        try:
            get_spec(self.name)
        except AttncnnError as err:
            _refuse(source, "model.name", f"names an {err}")
        if "num_classes" in self.args:  # training passes the data's class count itself
            _refuse(source, "model.args.num_classes", "is set from the data's classes; remove it")
        if self.whiten_images < 0:
            _refuse(source, "model.whiten_images", f"must be >= 0, got {self.whiten_images}")
        if not (math.isfinite(self.whiten_bias_epochs) and self.whiten_bias_epochs >= 0):
            _refuse(source, "model.whiten_bias_epochs",
                    f"must be >= 0 and finite, got {self.whiten_bias_epochs}")
        if self.whiten_bias_epochs and not self.whiten_images:
            _refuse(source, "model.whiten_bias_epochs", "needs model.whiten_images > 0 (it "
                                                        "stops the whitened stem's bias)")
        try:
            with torch.device("meta"):
                model = create_model(self.name, **self.args)
        except AttncnnError as err:
            raise AttncnnError(f"{source}: model.args: {err}") from None
        except Exception as err:  # a builder's own failure on a strange value: still one line
            raise AttncnnError(f"{source}: model.args do not build {self.name} "
                               f"({type(err).__name__}: {first_line(err)})") from None
        if self.whiten_images and not callable(getattr(model, "whiten", None)):
            _refuse(source, "model.whiten_images", f"needs a model with a whitening stem "
                                                   f"(fastnet and its attention versions), "
                                                   f"not {self.name}")


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    no_decay_norm_bias: bool = False    # exempt norm weights and all biases from weight decay
    norm_bias_lr_scale: float = 1.0     # lr multiplier of norm-layer biases (their wd / it)
    lookahead: bool = False             # pull the weights to their EMA every 5 steps (airbench)
    label_smoothing: float = 0.0

    def validate(self, source: str = "config") -> None:
        if self.name != "sgd":
            _refuse(source, "optim.name", f"must be 'sgd' (the paper's optimiser), got {self.name!r}")
        # written as `not (ok)` so that NaN, for which every comparison is false, is refused
        if not (math.isfinite(self.lr) and self.lr > 0):
            _refuse(source, "optim.lr", f"must be > 0 and finite, got {self.lr}")
        if not 0 <= self.momentum < 1:
            _refuse(source, "optim.momentum", f"must be in [0, 1), got {self.momentum}")
        if self.nesterov and self.momentum == 0:
            _refuse(source, "optim.nesterov", "needs optim.momentum > 0")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            _refuse(source, "optim.weight_decay", f"must be >= 0 and finite, got {self.weight_decay}")
        if not (math.isfinite(self.norm_bias_lr_scale) and self.norm_bias_lr_scale > 0):
            _refuse(source, "optim.norm_bias_lr_scale",
                    f"must be > 0 and finite, got {self.norm_bias_lr_scale}")
        if not 0 <= self.label_smoothing < 1:
            _refuse(source, "optim.label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")


@dataclass
class ScheduleConfig:
    name: str = "step"                  # step | cosine | linear
    epochs: int = 200
    milestones: list[int] = field(default_factory=lambda: [100, 150])  # step: lr *= gamma here
    gamma: float = 0.1
    warmup_epochs: float = 0.0          # linear warm-up from lr/warmup_steps to lr
    warmup_start: float = 0.0           # ... or from lr * warmup_start
    end_factor: float = 0.0             # cosine, linear: the last step's lr is lr * this

    def validate(self, source: str = "config") -> None:
        if self.name not in ("step", "cosine", "linear"):
            _refuse(source, "schedule.name", f"must be 'step', 'cosine' or 'linear', got "
                                             f"{self.name!r}")
        for key in ("warmup_start", "end_factor"):
            if not 0 <= getattr(self, key) <= 1:
                _refuse(source, f"schedule.{key}", f"must be in [0, 1], got {getattr(self, key)}")
        if not (math.isfinite(self.gamma) and self.gamma > 0):
            _refuse(source, "schedule.gamma", f"must be > 0 and finite, got {self.gamma}")
        if any(m < 0 for m in self.milestones):
            _refuse(source, "schedule.milestones", f"must be epochs >= 0, got {self.milestones}")
        if list(self.milestones) != sorted(self.milestones):
            _refuse(source, "schedule.milestones", f"must be increasing, got {self.milestones}")
        if self.epochs < 1:
            _refuse(source, "schedule.epochs", f"must be >= 1, got {self.epochs}")
        if not (math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0):
            _refuse(source, "schedule.warmup_epochs", f"must be >= 0 and finite, got "
                                                      f"{self.warmup_epochs}")


@dataclass
class RunConfig:
    seed: int = 0
    out_dir: str = "runs"               # run directory = out_dir/name
    name: Union[str, None] = None       # default: <model>-<data>-s<seed>; a plain directory name
    device: str = AUTO                  # auto | cpu | cuda | cuda:N
    amp: Union[str, bool] = AUTO        # auto: bf16 autocast on CUDA and on CPUs with native bf16
    channels_last: Union[str, bool] = AUTO  # auto: on (CUDA and CPU)
    threads: int = 0                    # CPU: torch threads (0: torch's default, one per core)
    compile: Union[str, bool] = AUTO    # auto: on for CUDA
    compile_mode: str = "default"       # torch.compile mode; reduce-overhead adds CUDA graphs
    sync_bn: bool = False               # DDP: BatchNorm statistics over the global batch
    dist_timeout_s: float = 600.0       # DDP: how long a rank waits for a silent peer
    checkpoint_every_steps: int = 0     # 0: at the end of each epoch only
    eval_every_epochs: int = 1          # the last epoch is always evaluated
    tensorboard: bool = True            # event files in the run dir (if tensorboard is installed)
    tags: dict = field(default_factory=dict)  # free-form, copied into results.json

    def validate(self, source: str = "config") -> None:
        for key in ("amp", "channels_last", "compile"):
            value = getattr(self, key)
            if isinstance(value, str) and value != AUTO:
                _refuse(source, f"run.{key}", f"must be auto, true or false, got {value!r}")
        check_choice(self.compile_mode, COMPILE_MODES, f"{source}: run.compile_mode")
        if not 0 <= self.seed < 2**32:
            _refuse(source, "run.seed", f"must be in [0, 2**32), got {self.seed}")
        if self.checkpoint_every_steps < 0:
            _refuse(source, "run.checkpoint_every_steps",
                    f"must be >= 0, got {self.checkpoint_every_steps}")
        if not (math.isfinite(self.dist_timeout_s) and self.dist_timeout_s > 0):
            _refuse(source, "run.dist_timeout_s", f"must be > 0 and finite, got {self.dist_timeout_s}")
        if self.threads < 0:
            _refuse(source, "run.threads", f"must be >= 0 (0: torch's default), got {self.threads}")
        if self.eval_every_epochs < 1:
            _refuse(source, "run.eval_every_epochs", f"must be >= 1, got {self.eval_every_epochs}")
        name = self.name
        # the run directory is out_dir/name: a separator or a dot-name would put it elsewhere
        if name is not None and (name in ("", ".", "..") or any(c in name for c in "/\\\0")):
            _refuse(source, "run.name", f"must be a plain directory name (no '/' or '\\', not "
                                        f"'.' or '..'), got {name!r}")
        device = self.device
        if not (device in (AUTO, "cpu", "cuda", "mps")
                or (device.startswith("cuda:") and device[5:].isdigit())):
            _refuse(source, "run.device", f"must be auto, cpu, cuda or cuda:N, got {device!r}")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self, source: str = "config") -> None:
        """Every section's own checks (cheap ones first; the model is built last)."""
        for section in (self.run, self.optim, self.schedule, self.data, self.model):
            section.validate(source)


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
_SECTION_CLASSES = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig,
                    "schedule": ScheduleConfig, "run": RunConfig}


def load_config(path: str | Path | None, overrides: typing.Sequence[str] = (), *,
                check_data_root: bool = False) -> Config:
    """The config in `path` (None: all defaults) with `overrides` ("a.b=value") applied.

    A relative data.root is looked up from the current directory first, then beside the
    config file that set it (a `base` file's own folder for a root set there); the one
    found is stored as an absolute path, so the run's saved config.yaml reads the same
    data from anywhere. A root given with --set is relative to the current directory only.
    check_data_root: a relative root found in neither place is an error naming both (the
    train command checks; loading a config for other uses does not need the data).
    """
    unresolved: dict = {}
    raw = load_yaml_with_base(Path(path), [], unresolved) if path is not None else {}
    before = data_root(raw)
    for item in overrides:
        apply_override(raw, item, _SECTION_CLASSES)
    if data_root(raw) is not before:  # set by an override: relative to the current directory
        anchor_data_root(raw, None, unresolved)
    source = str(path) if path is not None else "defaults"
    cfg = config_from_dict(raw, source=source)
    if check_data_root and unresolved and not cfg.data.download:
        value, places = unresolved["root"]
        looked = " and ".join(f"{p} ({why})" for p, why in places)
        raise AttncnnError(f"{source}: data.root {value!r} not found; looked in {looked}")
    return cfg


def config_from_dict(raw: dict, source: str = "config") -> Config:
    """Validate a nested plain dict (sections -> keys -> values) into a `Config`."""
    if not isinstance(raw, dict):
        raise AttncnnError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    check_keys(raw, _SECTION_CLASSES, source, "")
    sections = {}
    for name, cls in _SECTION_CLASSES.items():
        values = raw.get(name) or {}
        if not isinstance(values, dict):
            raise AttncnnError(f"{source}: section '{name}' must be a mapping, got {values!r}")
        hints = typing.get_type_hints(cls)
        check_keys(values, hints, source, f"{name}.")
        kwargs = {key: check_type(value, hints[key], source, f"{name}.{key}")
                  for key, value in values.items()}
        sections[name] = cls(**kwargs)
    cfg = Config(**sections)
    cfg.validate(source)
    return cfg


def config_to_dict(cfg: Config) -> dict:
    """Plain dict (YAML/JSON-ready) of every field, defaults included."""
    return plain(dataclasses.asdict(cfg))


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
