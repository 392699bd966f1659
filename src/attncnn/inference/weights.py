"""Published weights (safetensors + metadata) and safe loading of training checkpoints.

A weights file is a safetensors file whose tensors are the model's `state_dict()` and whose
metadata holds one JSON string under the key "attncnn" (safetensors metadata values must be
strings), enough to rebuild and use the model without the training config:

    {"format": "attncnn.weights/1", "model": "attn_resnet20_cifar",
     "model_args": {...create_model arguments...}, "num_classes": 10,
     "classes": ["airplane", ...], "mean": [..3..], "std": [..3..], "input_size": [3, 32, 32],
     "dtype": "float32" | "float16", "summary": {...training summary and metrics...},
     "attncnn_version": "0.1.0"}

safetensors holds no code, so opening a file from a stranger runs nothing. Training
checkpoints (`.pt`, with optimizer state) are pickles instead;
`attncnn.engine.checkpoint.load_state_safely` opens them with `torch.load(weights_only=True)`,
which refuses any pickle that would call code.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from attncnn.errors import AttncnnError, first_line
from attncnn.files import atomic_target

FORMAT = "attncnn.weights/1"
METADATA_KEY = "attncnn"


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain model under DistributedDataParallel (.module) and torch.compile (._orig_mod)."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if inner is None and isinstance(model, nn.parallel.DistributedDataParallel):
            inner = model.module
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def save_weights(path: str | Path, model: nn.Module, *, classes: list[str], mean, std,
                 input_size, summary: dict | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write `model`'s state and what is needed to use it to the safetensors file `path`.

    model: built by `create_model` (it carries model_name / model_args); DDP or
        torch.compile wrappers are looked through.
    classes: class names, index = label; must number the model's outputs.
    mean, std: the per-channel normalisation (in [0, 1] units) the model was trained with.
    input_size: (3, H, W) the model expects.
    summary: training summary and metrics (plain JSON values), kept as is.
    dtype: e.g. torch.float16 to halve the file: parameters are cast; buffers (BatchNorm
        running statistics, num_batches_tracked) are kept as they are. Loading casts back.
    The file is written to a temporary name and renamed, so a crash never leaves half a file.
    """
    from safetensors.torch import save_file

    from attncnn import __version__

    model = _unwrap(model)
    name, args = getattr(model, "model_name", None), getattr(model, "model_args", None)
    if name is None or args is None:
        raise AttncnnError("save_weights: the model was not built by attncnn.create_model "
                           "(it has no model_name/model_args to rebuild it from)")
    num_classes = args.get("num_classes")
    if num_classes is not None and len(classes) != num_classes:
        raise AttncnnError(f"save_weights: {len(classes)} class names for a model with "
                           f"{num_classes} outputs ({name})")
    if dtype is not None and not dtype.is_floating_point:
        raise AttncnnError(f"save_weights: dtype must be a floating type, got {dtype}")
    if len(mean) != 3 or len(std) != 3:
        raise AttncnnError("save_weights: mean and std need one value per RGB channel")
    meta = {
        "format": FORMAT,
        "model": name,
        "model_args": args,
        "num_classes": len(classes),
        "classes": [str(c) for c in classes],
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "input_size": [int(v) for v in input_size],
        "dtype": str(dtype or torch.float32).removeprefix("torch."),
        "summary": summary or {},
        "attncnn_version": __version__,
    }
    try:
        blob = json.dumps(meta, allow_nan=True)
    except TypeError as err:
        raise AttncnnError(f"save_weights: metadata is not plain JSON ({err})") from None

    # Buffers (BatchNorm running statistics) stay float32: they are a few hundred numbers
    # per layer, and a running variance can exceed float16's 65504 where weights never do.
    buffers = {name for name, _ in model.named_buffers()}
    tensors = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu")
        if dtype is not None and value.is_floating_point() and key not in buffers:
            cast = value.to(dtype)
            if not torch.isfinite(cast).all() and torch.isfinite(value).all():
                raise AttncnnError(f"save_weights: {key} does not fit in {dtype} (largest |value| "
                                   f"{value.abs().max().item():.3g}); save in float32")
            value = cast
        tensors[key] = value.contiguous().clone()  # own storage: safetensors rejects shared views
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: blob, "format": "pt"})
        os.chmod(tmp, 0o644)  # safetensors writes it private; published weights are for reading
    return path


def read_weights_metadata(path: str | Path) -> dict:
    """The "attncnn" metadata of a weights file (see the module docstring), without tensors."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise AttncnnError(f"weights file {path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except Exception as err:  # safetensors raises its own error types for bad headers
        raise AttncnnError(f"{path} is not a readable safetensors file ({first_line(err)})") from None
    if raw is None:
        raise AttncnnError(f"{path} has no attncnn metadata (not written by attncnn's save_weights)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise AttncnnError(f"{path}: attncnn metadata is not valid JSON ({err})") from None
    fmt = meta.get("format", "") if isinstance(meta, dict) else ""
    if not fmt.startswith("attncnn.weights/"):
        raise AttncnnError(f"{path}: unknown weights format {fmt!r}")
    if fmt != FORMAT:
        raise AttncnnError(f"{path}: weights format {fmt!r} is newer than this attncnn reads "
                           f"({FORMAT}); upgrade attncnn")
    return meta


def _describe_mismatch(model_state: dict, file_state: dict) -> str | None:
    """One phrase naming how two state dicts differ, or None when keys and shapes agree."""
    missing = [k for k in model_state if k not in file_state]
    extra = [k for k in file_state if k not in model_state]
    shapes = [k for k in model_state if k in file_state
              and tuple(model_state[k].shape) != tuple(file_state[k].shape)]
    parts = []
    if shapes:
        k = shapes[0]
        parts.append(f"{k} is {list(file_state[k].shape)} in the file but "
                     f"{list(model_state[k].shape)} in the model"
                     + (f" (+{len(shapes) - 1} more shapes differ)" if len(shapes) > 1 else ""))
    if missing:
        parts.append(f"{len(missing)} tensors missing from the file (e.g. {missing[0]})")
    if extra:
        parts.append(f"{len(extra)} unexpected tensors in the file (e.g. {extra[0]})")
    return "; ".join(parts) or None


def load_weights(model: nn.Module, path: str | Path) -> dict:
    """Load the weights file `path` into `model` (strict) and return its metadata.

    The file must be for the same model name and class count as `model` (when the model
    carries them) and every tensor must fit; otherwise one AttncnnError names the file
    and the first difference. Tensors are cast to the model's own dtypes (float16 files
    come back as float32 for a float32 model).
    """
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_weights_metadata(path)
    target = _unwrap(model)
    name = getattr(target, "model_name", None)
    if name is not None and name != meta.get("model"):
        raise AttncnnError(f"{path} holds weights for {meta.get('model')!r}, not {name!r}")
    want = getattr(target, "model_args", {}).get("num_classes")
    if want is not None and want != meta.get("num_classes"):
        raise AttncnnError(f"{path} has {meta.get('num_classes')} classes but the {name} "
                           f"model has {want} outputs")
    try:
        state = load_file(str(path), device="cpu")
    except Exception as err:
        raise AttncnnError(f"{path}: cannot read its tensors ({first_line(err)})") from None
    own = target.state_dict()
    problem = _describe_mismatch(own, state)
    if problem:
        raise AttncnnError(f"{path} does not fit {name or type(target).__name__}: {problem}")
    state = {k: v.to(own[k].dtype) for k, v in state.items()}
    target.load_state_dict(state, strict=True)
    return meta


def create_model_from_weights(path: str | Path, device: torch.device | str = "cpu"
                              ) -> tuple[nn.Module, dict]:
    """Rebuild the model a weights file was saved from, load it, and return (model, metadata).

    The model is built with `create_model(metadata["model"], **metadata["model_args"])`,
    loaded strictly, put in eval mode and moved to `device`.
    """
    from attncnn.models import create_model

    meta = read_weights_metadata(path)
    try:
        model = create_model(meta["model"], **meta["model_args"])
    except KeyError as err:  # UnknownModelError is a KeyError too and says what it is
        msg = str(err) if isinstance(err, AttncnnError) else f"metadata lacks {err}"
        raise AttncnnError(f"{path}: {msg}") from None
    except AttncnnError as err:
        raise AttncnnError(f"{path}: {err}") from None
    load_weights(model, path)
    return model.eval().to(device), meta
