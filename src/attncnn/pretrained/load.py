"""Loading pretrained weights into a model `create_model` built: shipped weights by tag,
local files (attncnn safetensors, training checkpoints, torchvision / timm ResNets).

    create_model("attn_resnet20_cifar", pretrained="digits")          # shipped, its own recipe
    create_model("attn_resnet50", pretrained="resnet50.pth", num_classes=10)   # a local file
    create_model("attn_resnet20_cifar", pretrained="resnet20_cifar:digits", depth=8)

A tag alone builds the model the weights were trained as (their `model_args`); a file, or
`model:tag` (another model's shipped weights), is loaded into the model you ask for. In
both cases:
- tensors of attention modules the file lacks stay at their initial values (the paper's
  softmax module starts as the identity; SE and CBAM do not: see docs/pretrained.md);
- a classifier of another class count is dropped and the model keeps its new head;
- anything else that does not fit (a tensor the model has no place for, a shape that
  differs, a backbone tensor missing from the file) is one AttncnnError line.
Nothing is fetched from the network and nothing is unpickled beyond tensors and plain
containers (`torch.load(weights_only=True)`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from attncnn.errors import AttncnnError, first_line
from attncnn.files import sha256_file
from attncnn.pretrained.torchvision_names import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    attncnn_to_torchvision,
    from_torchvision,
    is_torchvision_style,
)

STATE_DICT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_WRAPPERS = ("state_dict", "model", "model_state_dict")   # {"state_dict": {...}, ...} checkpoints
_PREFIXES = ("module.", "_orig_mod.")                      # DDP and torch.compile wrappers


# ------------------------------------------------------------------ reading files
def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """(tensors by name, attncnn metadata or None) of a local weights file.

    .safetensors: read as is (its attncnn metadata, if any, comes back too). Anything else
    (.pth, .pt, .bin, training checkpoints): `torch.load(weights_only=True)`, which refuses
    a pickle that would run code; a {"state_dict": ...} or {"model": ...} wrapper and
    "module." / "_orig_mod." prefixes are looked through.
    """
    from attncnn.engine.checkpoint import load_state_safely
    from attncnn.inference.weights import METADATA_KEY, read_weights_metadata

    path = Path(path)
    if not path.is_file():
        raise AttncnnError(f"pretrained file {path} not found")
    meta = None
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as f:
                has_meta = METADATA_KEY in (f.metadata() or {})
            state = load_file(str(path), device="cpu")
        except Exception as err:  # safetensors' own error types for bad headers
            raise AttncnnError(f"{path} is not a readable safetensors file "
                               f"({first_line(err)})") from None
        if has_meta:
            meta = read_weights_metadata(path)
    else:
        state = load_state_safely(path)
        for key in _WRAPPERS:
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state:
        raise AttncnnError(f"{path} holds no state dict (expected tensors by name, "
                           f"got {type(state).__name__})")
    bad = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise AttncnnError(f"{path} is not a state dict: {bad!r} holds a "
                           f"{type(state[bad]).__name__}, not a tensor")
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state, meta


# ------------------------------------------------------------------ loading
def _head_prefix(model: nn.Module) -> str | None:
    """"fc." for every backbone here; else the last Linear layer's name."""
    if isinstance(getattr(model, "fc", None), nn.Linear):
        return "fc."
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    return f"{last}." if last else None


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> dict:
    """Load `state` (our names or torchvision / timm ResNet names) into `model`.

    Returns {"format": "attncnn" | "torchvision", "head": "pretrained" | "new",
    "attention_at_init": number of attention tensors left at their initial values}.
    Raises one AttncnnError line naming `source` when anything else does not fit.
    """
    from attncnn.models import attention_modules, get_spec

    name = getattr(model, "model_name", type(model).__name__)
    fmt, origin = "attncnn", {}
    if is_torchvision_style(state):
        fmt = "torchvision"
        family = get_spec(name).family if hasattr(model, "model_name") else ""
        state, origin = from_torchvision(state, name, family, source)

    def shown(key: str) -> str:  # name tensors as the file does
        return origin.get(key, key)

    own = model.state_dict()
    head = _head_prefix(model)
    new_head = False
    if head and f"{head}weight" in state and f"{head}weight" in own:
        file_w, own_w = state[f"{head}weight"], own[f"{head}weight"]
        if file_w.shape[1:] == own_w.shape[1:] and file_w.shape[0] != own_w.shape[0]:
            new_head = True  # another class count: keep the model's freshly initialised head
            state = {k: v for k, v in state.items() if not k.startswith(head)}
    extra = [k for k in state if k not in own]
    if extra:
        raise AttncnnError(f"{source}: {len(extra)} tensors in the file have no place in "
                           f"{name} (e.g. {shown(extra[0])}): another depth or architecture?")
    shapes = [k for k in state if tuple(state[k].shape) != tuple(own[k].shape)]
    if shapes:
        k = shapes[0]
        raise AttncnnError(f"{source}: {shown(k)} is {list(state[k].shape)} in the file but "
                           f"{list(own[k].shape)} in {name}"
                           + (f" (+{len(shapes) - 1} more shapes differ)" if len(shapes) > 1 else ""))
    attention = tuple(f"{n}." for n, _ in attention_modules(model))
    at_init = [k for k in own if k not in state and attention and k.startswith(attention)]
    missing = [k for k in own if k not in state and k not in at_init
               and not k.endswith("num_batches_tracked")          # older files lack them
               and not (new_head and head and k.startswith(head))]
    if missing:
        example = attncnn_to_torchvision(missing[0]) if fmt == "torchvision" else None
        raise AttncnnError(f"{source}: {len(missing)} tensors of {name} are not in the file "
                           f"(e.g. {example or missing[0]}): another depth or architecture?")
    if not any(v.is_meta for v in own.values()):   # a shapes-only (meta) model: checked only
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)
    return {"format": fmt, "head": "new" if new_head else "pretrained",
            "attention_at_init": len(at_init)}


@dataclass
class PretrainedSource:
    """What `create_model(..., pretrained=X)` resolved X to: a shipped entry or a file."""
    spec: str                       # as the user wrote it
    path: Path
    entry: dict | None = None       # the shipped index entry (tag, or model:tag)
    use_recipe: bool = False        # build the model from the weights' own model_args

    def recipe_args(self, name: str, defaults: dict, builder, overrides: dict,
                    num_classes: int | None) -> dict:
        """create_model's overrides for the weights' recipe; refuses conflicting ones."""
        import inspect

        recipe = {k: v for k, v in self.entry["model_args"].items() if k != "num_classes"}
        try:
            params = inspect.signature(builder).parameters
        except (TypeError, ValueError):
            params = {}

        def norm(v):
            return None if v == {} else v

        for key, value in overrides.items():
            if key == "num_classes" or (params and key not in params):
                continue  # an unknown argument: create_model names it, with a suggestion
            if key in recipe:
                trained = recipe[key]
            elif key in defaults:
                trained = defaults[key]
            elif key in params and params[key].default is not inspect.Parameter.empty:
                trained = params[key].default
            else:
                trained = inspect.Parameter.empty
            if norm(value) != norm(trained):
                was = "not set" if trained is inspect.Parameter.empty else f"{trained!r}"
                raise AttncnnError(
                    f"{name} pretrained={self.spec!r} was trained with {key}={was}, not "
                    f"{value!r}: drop {key}= (a tag builds the model as its weights were "
                    f"trained; pretrained='{self.entry['model']}:{self.entry['tag']}' loads "
                    f"them into the model your arguments build instead)")
        args = {**recipe, **overrides}
        if num_classes is None and "num_classes" not in overrides:
            args["num_classes"] = self.entry["num_classes"]
        return args

    def load(self, model: nn.Module) -> dict:
        """Load into `model`; returns (and sets) `model.pretrained_cfg`."""
        from attncnn.models import get_spec

        label = f"pretrained {self.spec!r}" if self.entry else str(self.path)
        if self.entry is not None:
            if not self.path.is_file():
                raise AttncnnError(f"{label}: shipped file {self.path} is missing; "
                                   f"reinstall attncnn")
            if sha256_file(self.path) != self.entry["sha256"]:
                raise AttncnnError(f"{label}: shipped file {self.path} does not match its "
                                   f"checksum in the index (damaged); reinstall attncnn")
        state, meta = read_state_dict(self.path)
        try:
            info = load_state_into(model, state, label)
        except AttncnnError as err:
            if self.entry is None or self.use_recipe:
                raise
            built = ", ".join(f"{k}={v!r}" for k, v in sorted(self.entry["model_args"].items()))
            raise AttncnnError(f"{err} (those weights are of {self.entry['model']} "
                               f"built with {built})") from None
        name = getattr(model, "model_name", None)
        spec_input = list(get_spec(name).input_size) if name else None
        if meta is not None:
            mean, std, input_size = meta["mean"], meta["std"], meta["input_size"]
        elif info["format"] == "torchvision":
            mean, std, input_size = list(IMAGENET_MEAN), list(IMAGENET_STD), spec_input
        else:
            mean = std = None
            input_size = spec_input
        classes = None
        if meta is not None and info["head"] == "pretrained":
            classes = list(meta["classes"])
        cfg = {
            "source": self.spec if self.entry else str(self.path),
            "file": str(self.path),
            "format": info["format"],
            "head": info["head"],
            "attention_at_init": info["attention_at_init"],
            "num_classes": getattr(model, "model_args", {}).get("num_classes"),
            "classes": classes,
            "mean": mean,
            "std": std,
            "input_size": input_size,
            # how the weights' training data was prepared (summary.data_source, data_input):
            # predict fits image files by it, as it does for the same file given as --weights
            "summary": meta.get("summary") if meta is not None else None,
        }
        if self.entry is not None:
            for key in ("model", "tag", "top1", "data", "split", "results", "commit"):
                cfg[key] = self.entry.get(key)
        model.pretrained_cfg = cfg
        return cfg


def _looks_like_path(text: str) -> bool:
    return (os.sep in text or "/" in text or text.endswith(STATE_DICT_SUFFIXES)
            or Path(text).is_file())


def resolve(name: str, pretrained) -> PretrainedSource:
    """What `pretrained` names for the model `name` (see the module docstring)."""
    from attncnn.models import list_models
    from attncnn.pretrained.shipped import describe_available, find_entry, shipped_path

    if isinstance(pretrained, bool):
        raise AttncnnError(f"{name}: pretrained=True is ambiguous; pass a tag "
                           f"({describe_available(name)}) or a weights file path")
    if isinstance(pretrained, os.PathLike):
        return PretrainedSource(str(pretrained), Path(pretrained))
    if not isinstance(pretrained, str) or not pretrained.strip():
        raise AttncnnError(f"{name}: pretrained must be a tag or a file path, got {pretrained!r}")
    entry = find_entry(name, pretrained)
    if entry is not None:
        return PretrainedSource(pretrained, shipped_path(entry), entry, use_recipe=True)
    model, sep, tag = pretrained.partition(":")
    if sep and model in list_models():
        entry = find_entry(model, tag)
        if entry is None:
            raise AttncnnError(f"no shipped weights {pretrained!r}; {describe_available(model)}")
        return PretrainedSource(pretrained, shipped_path(entry), entry, use_recipe=False)
    if _looks_like_path(pretrained):
        return PretrainedSource(pretrained, Path(pretrained))
    raise AttncnnError(f"{name}: no shipped weights tagged {pretrained!r} and no such file; "
                       f"{describe_available(name)}")


def model_for_prediction(name: str, pretrained, device="cpu") -> tuple[nn.Module, dict]:
    """(model in eval mode on `device`, the metadata `predict_files` needs) for
    `create_model(name, pretrained=...)`; refuses weights that name no classes."""
    from attncnn.models import create_model

    model = create_model(name, pretrained=pretrained)
    cfg = model.pretrained_cfg
    missing = [k for k in ("classes", "mean", "std", "input_size") if not cfg.get(k)]
    if missing:
        raise AttncnnError(f"{name} pretrained={pretrained!r} has no {', '.join(missing)} to "
                           f"classify images with (only attncnn weights files carry them)")
    return model.eval().to(device), {**cfg, "model": name, "model_args": model.model_args}
