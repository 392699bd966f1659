"""Run configs: YAML files <-> typed dataclasses (see CONFIG_SCHEMA in docs/training.md).

    cfg = load_config("configs/quickstart.yaml", ["optim.lr=0.05", "run.seed=1"])

A file may start with `base: <path relative to this file>`; the base is loaded first
(recursively) and the child's keys win, section by section and key by key. `--set a.b=c`
overrides are applied last, the value parsed as YAML (`0.1` a float, `[1, 2]` a list,
`null` None). A relative `data.root` is found from the current directory, else beside the
file that set it, and kept as an absolute path (see `load_config`). Unknown keys and values
of the wrong type are `AttncnnError`s that name the file (or override), the key and, for a
typo, the closest known key.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from attncnn.data.config import LABEL_MODES, DataConfig
from attncnn.errors import AttncnnError

AUTO = "auto"


@dataclass
class ModelConfig:
    name: str = "attn_resnet20_cifar"   # any registry name (`attncnn models`)
    args: dict = field(default_factory=dict)  # create_model overrides, e.g. {attention_placement: block}


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    no_decay_norm_bias: bool = False    # exempt norm weights and all biases from weight decay
    label_smoothing: float = 0.0


@dataclass
class ScheduleConfig:
    name: str = "step"                  # step | cosine
    epochs: int = 200
    milestones: list[int] = field(default_factory=lambda: [100, 150])  # step: lr *= gamma here
    gamma: float = 0.1
    warmup_epochs: float = 0.0          # linear warm-up from lr/warmup_steps to lr


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


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)


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
    raw = _load_yaml_with_base(Path(path), [], unresolved) if path is not None else {}
    before = _data_root(raw)
    for item in overrides:
        _apply_override(raw, item)
    if _data_root(raw) is not before:  # set by an override: relative to the current directory
        _anchor_data_root(raw, None, unresolved)
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
    _check_keys(raw, _SECTION_CLASSES, source, "")
    sections = {}
    for name, cls in _SECTION_CLASSES.items():
        values = raw.get(name) or {}
        if not isinstance(values, dict):
            raise AttncnnError(f"{source}: section '{name}' must be a mapping, got {values!r}")
        hints = typing.get_type_hints(cls)
        _check_keys(values, hints, source, f"{name}.")
        kwargs = {key: _check_type(value, hints[key], source, f"{name}.{key}")
                  for key, value in values.items()}
        sections[name] = cls(**kwargs)
    cfg = Config(**sections)
    _check_values(cfg, source)
    return cfg


def config_to_dict(cfg: Config) -> dict:
    """Plain dict (YAML/JSON-ready) of every field, defaults included."""
    return _plain(dataclasses.asdict(cfg))


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


# -- loading ------------------------------------------------------------------------------

def _load_yaml_with_base(path: Path, seen: list[Path], unresolved: dict) -> dict:
    path = path.resolve() if path.exists() else path
    if path in seen:
        chain = " -> ".join(str(p) for p in [*seen, path])
        raise AttncnnError(f"config base loop: {chain}")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise AttncnnError(f"config file not found: {path}") from None
    except OSError as err:
        raise AttncnnError(f"cannot read config {path}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise AttncnnError(f"{path}: not a text (UTF-8) file ({err.reason} at byte "
                           f"{err.start})") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())  # one line
        raise AttncnnError(f"{path}{where}: invalid YAML ({problem})") from None
    if not isinstance(raw, dict):
        raise AttncnnError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is not None and not isinstance(base, str):
        raise AttncnnError(f"{path}: 'base' must be a relative path, got {base!r}")
    parent = _load_yaml_with_base(path.parent / base, [*seen, path], unresolved) \
        if base is not None else None
    _anchor_data_root(raw, path, unresolved)  # after the base's: this file's root wins
    return raw if parent is None else _merge(parent, raw)


def _data_root(raw: dict):
    data = raw.get("data")
    return data.get("root") if isinstance(data, dict) else None


def _anchor_data_root(raw: dict, config_file: Path | None, unresolved: dict) -> None:
    """Make the relative data.root of one file (or of the overrides: config_file None)
    absolute: from the current directory if it exists there, else from the file's
    folder. Found nowhere: left as it is, and the places looked at are kept in
    `unresolved["root"]` for the error."""
    data = raw.get("data")
    if not isinstance(data, dict) or "root" not in data:
        return
    unresolved.pop("root", None)  # this root replaces any set before
    root = data["root"]
    if not isinstance(root, str) or not root or Path(root).expanduser().is_absolute():
        return
    places = [(Path.cwd() / root, "from the current directory")]
    if config_file is not None:
        beside = config_file.absolute().parent / root
        if beside != places[0][0]:
            places.append((beside, f"beside {config_file}"))
    for place, _ in places:
        if place.exists():
            data["root"] = os.path.normpath(place)  # normpath, not resolve: keep link names
            return
    unresolved["root"] = (root, [(os.path.normpath(p), why) for p, why in places])


def _merge(base: dict, child: dict) -> dict:
    """Child wins; sections (dicts of dicts) merge key by key, leaf dicts such as
    model.args and run.tags merge too, so a child can add one tag."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _apply_override(raw: dict, item: str) -> None:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise AttncnnError(f"override {item!r} must look like section.key=value, e.g. optim.lr=0.05")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise AttncnnError(f"override {item!r}: value is not valid YAML") from None
    parts = key.split(".")
    if len(parts) < 2:
        close = _suggest_dotted(key)
        raise AttncnnError(f"override {item!r} needs section.key{close}")
    node = raw
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise AttncnnError(f"override {item!r}: {part!r} is not a section")
        node = nxt
    node[parts[-1]] = value


# -- validation -----------------------------------------------------------------------------

def _check_keys(values: dict, known, source: str, prefix: str) -> None:
    for key in values:
        if key not in known:
            close = _closest(key, known)
            hint = f"; did you mean '{prefix}{close}'?" if close else \
                f" (known: {', '.join(known)})"
            raise AttncnnError(f"{source}: unknown key '{prefix}{key}'{hint}")


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _check_choice(value, allowed, source: str, key: str) -> None:
    if value not in allowed:
        close = _closest(value, allowed)
        hint = f"; did you mean {close!r}?" if close else ""
        raise AttncnnError(f"{source}: {key} must be one of {', '.join(allowed)}, "
                           f"got {value!r}{hint}")


def _closest(word, known) -> str | None:
    """The known name a typo most likely meant, if any is close enough."""
    close = difflib.get_close_matches(str(word), list(known), n=1, cutoff=0.5)
    return close[0] if close else None


def _suggest_dotted(key: str) -> str:
    for section, cls in _SECTION_CLASSES.items():
        if key in {f.name for f in dataclasses.fields(cls)}:
            return f"; did you mean '{section}.{key}'?"
    return ""


def _type_name(tp) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{origin.__name__}[{args}]" if args else origin.__name__
    return {"str": "a string", "int": "an integer", "float": "a number",
            "bool": "true/false", "dict": "a mapping"}.get(tp.__name__, tp.__name__)


def _check_type(value: Any, tp, source: str, key: str) -> Any:
    """`value` converted to `tp` where lossless (int -> float, list -> tuple), else an error."""
    ok, converted = _convert(value, tp)
    if not ok:
        raise AttncnnError(f"{source}: {key} must be {_type_name(tp)}, got {value!r}")
    return converted


def _convert(value, tp) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, converted = _convert(value, arg)
            if ok:
                return True, converted
        return False, None
    if tp is Any:
        return True, value
    if tp is type(None):
        return value is None, None
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, None
        args = typing.get_args(tp)
        item_type = args[0] if args else Any
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                return False, None
            pairs = list(zip(value, args))
        else:
            pairs = [(v, item_type) for v in value]
        items = [_convert(v, t) for v, t in pairs]
        if not all(ok for ok, _ in items):
            return False, None
        return True, origin(c for _, c in items)
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if tp is str:
        return isinstance(value, str), value
    return isinstance(value, tp), value


def _check_values(cfg: Config, source: str) -> None:
    def bad(key, why):
        raise AttncnnError(f"{source}: {key} {why}")

    for key in ("amp", "channels_last", "compile"):
        value = getattr(cfg.run, key)
        if isinstance(value, str) and value != AUTO:
            bad(f"run.{key}", f"must be auto, true or false, got {value!r}")
    _check_choice(cfg.run.compile_mode, COMPILE_MODES, source, "run.compile_mode")
    # model and split names are checked now, not after a data set scan
    from attncnn.data.sources import source_splits
    from attncnn.models import get_spec

    try:
        get_spec(cfg.model.name)
    except AttncnnError as err:
        bad("model.name", f"names an {err}")
    if "num_classes" in cfg.model.args:  # training passes the data's class count itself
        bad("model.args.num_classes", "is set from the data's classes; remove it")
    _check_model_args(cfg, source)
    if cfg.optim.name != "sgd":
        bad("optim.name", f"must be 'sgd' (the paper's optimiser), got {cfg.optim.name!r}")
    if cfg.schedule.name not in ("step", "cosine"):
        bad("schedule.name", f"must be 'step' or 'cosine', got {cfg.schedule.name!r}")
    # written as `not (ok)` so that NaN, for which every comparison is false, is refused
    if not (math.isfinite(cfg.optim.lr) and cfg.optim.lr > 0):
        bad("optim.lr", f"must be > 0 and finite, got {cfg.optim.lr}")
    if not 0 <= cfg.optim.momentum < 1:
        bad("optim.momentum", f"must be in [0, 1), got {cfg.optim.momentum}")
    if cfg.optim.nesterov and cfg.optim.momentum == 0:
        bad("optim.nesterov", "needs optim.momentum > 0")
    if not (math.isfinite(cfg.optim.weight_decay) and cfg.optim.weight_decay >= 0):
        bad("optim.weight_decay", f"must be >= 0 and finite, got {cfg.optim.weight_decay}")
    if not (math.isfinite(cfg.schedule.gamma) and cfg.schedule.gamma > 0):
        bad("schedule.gamma", f"must be > 0 and finite, got {cfg.schedule.gamma}")
    if any(m < 0 for m in cfg.schedule.milestones):
        bad("schedule.milestones", f"must be epochs >= 0, got {cfg.schedule.milestones}")
    for key, seed in (("run.seed", cfg.run.seed), ("data.seed", cfg.data.seed)):
        if not 0 <= seed < 2**32:
            bad(key, f"must be in [0, 2**32), got {seed}")
    if not 0 <= cfg.optim.label_smoothing < 1:
        bad("optim.label_smoothing", f"must be in [0, 1), got {cfg.optim.label_smoothing}")
    if cfg.schedule.epochs < 1:
        bad("schedule.epochs", f"must be >= 1, got {cfg.schedule.epochs}")
    if not (math.isfinite(cfg.schedule.warmup_epochs) and cfg.schedule.warmup_epochs >= 0):
        bad("schedule.warmup_epochs", f"must be >= 0 and finite, got "
                                      f"{cfg.schedule.warmup_epochs}")
    if list(cfg.schedule.milestones) != sorted(cfg.schedule.milestones):
        bad("schedule.milestones", f"must be increasing, got {cfg.schedule.milestones}")
    for key in ("batch_size", "eval_batch_size"):
        if getattr(cfg.data, key) < 1:
            bad(f"data.{key}", f"must be >= 1, got {getattr(cfg.data, key)}")
    for key in ("crop_padding", "workers"):
        if getattr(cfg.data, key) < 0:
            bad(f"data.{key}", f"must be >= 0, got {getattr(cfg.data, key)}")
    _check_choice(cfg.data.label_mode, LABEL_MODES, source, "data.label_mode")
    splits = source_splits(cfg.data.name)   # None: splits are folder names, anything goes
    if splits is not None:
        _check_choice(cfg.data.train_split, splits, source, "data.train_split")
        # "val" is carved out of train (data.val_fraction), so every such source has it
        _check_choice(cfg.data.eval_split, (*splits, "val"), source, "data.eval_split")
    if not 0 <= cfg.data.val_fraction < 1:
        bad("data.val_fraction", f"must be in [0, 1), got {cfg.data.val_fraction}")
    subset = cfg.data.train_subset
    if subset is not None:
        if isinstance(subset, int) and subset < 1 or \
                isinstance(subset, float) and not 0 < subset <= 1:  # NaN too
            bad("data.train_subset", f"must be a count (an integer >= 1) or a fraction in "
                                     f"(0, 1], got {subset}")
        from attncnn.data.sources import is_streaming, source_names

        if cfg.data.name in source_names() and is_streaming(cfg.data.name):
            bad("data.train_subset", f"is not supported for {cfg.data.name!r}, which streams "
                                     f"from disk")
    if cfg.data.image_size is not None and cfg.data.image_size < 1:
        bad("data.image_size", f"must be >= 1 (or null), got {cfg.data.image_size}")
    if cfg.run.checkpoint_every_steps < 0:
        bad("run.checkpoint_every_steps", f"must be >= 0, got {cfg.run.checkpoint_every_steps}")
    if not (math.isfinite(cfg.run.dist_timeout_s) and cfg.run.dist_timeout_s > 0):
        bad("run.dist_timeout_s", f"must be > 0 and finite, got {cfg.run.dist_timeout_s}")
    if cfg.run.threads < 0:
        bad("run.threads", f"must be >= 0 (0: torch's default), got {cfg.run.threads}")
    if cfg.run.eval_every_epochs < 1:
        bad("run.eval_every_epochs", f"must be >= 1, got {cfg.run.eval_every_epochs}")
    name = cfg.run.name
    # the run directory is out_dir/name: a separator or a dot-name would put it elsewhere
    if name is not None and (name in ("", ".", "..") or any(c in name for c in "/\\\0")):
        bad("run.name", f"must be a plain directory name (no '/' or '\\', not '.' or '..'), "
                        f"got {name!r}")
    device = cfg.run.device
    if not (device in (AUTO, "cpu", "cuda", "mps")
            or (device.startswith("cuda:") and device[5:].isdigit())):
        bad("run.device", f"must be auto, cpu, cuda or cuda:N, got {device!r}")


def _check_model_args(cfg: Config, source: str) -> None:
    """Build the model on the meta device (shapes only, nothing allocated), so that a typo in
    model.args (`depthh`, `attention: softmx`) is a one-line error at load, with a
    suggestion, before a run directory is chosen or any data is read."""
    import torch

    from attncnn.models import create_model

    try:
        with torch.device("meta"):
            create_model(cfg.model.name, **cfg.model.args)
    except AttncnnError as err:
        raise AttncnnError(f"{source}: model.args: {err}") from None
    except Exception as err:  # a builder's own failure on a strange value: still one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise AttncnnError(f"{source}: model.args do not build {cfg.model.name} "
                           f"({type(err).__name__}: {first})") from None


def _plain(value):
    """Tuples -> lists, recursively, so the dict round-trips through YAML safe_dump."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
