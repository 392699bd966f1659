"""Export a weights file to ONNX or TorchScript, with a dynamic batch size, and check it.

The exported graph maps `images` float [B, 3, H, W] (already resized, cropped and
normalised with the mean/std stored beside it, as `ImageInput.for_weights(meta).prepare`
in attncnn.data.image_input prepares them) to `logits` float [B, num_classes]. B is
free; H, W are the input size in the weights. The weights metadata (model, classes, mean,
std, input size) travels inside the file: ONNX `metadata_props["attncnn"]`, TorchScript
extra file "attncnn.json".

ONNX uses torch's TorchScript-based exporter (`dynamo=False`) by default: on the models
here it exports in a couple of seconds to one self-contained file, where the torch.export
based exporter (`exporter="dynamo"`) takes ten times longer and gives the same graph
within float rounding. Both are checked against onnxruntime by `check_export`.
"""
from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from attncnn.errors import AttncnnError

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
OPSET = 17


def _require(*modules: str, why: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise AttncnnError(f"{why} needs {', '.join(missing)}: pip install 'attncnn[export]'")


def export_onnx(model: nn.Module, path: str | Path, input_size, *, metadata: dict | None = None,
                opset: int = OPSET, exporter: str = "legacy") -> Path:
    """Write `model` as ONNX to `path`: input "images" [batch, *input_size], output "logits"."""
    _require("onnx", *(["onnxscript"] if exporter == "dynamo" else []), why="ONNX export")
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = torch.zeros(2, *input_size)  # batch 2: a batch of 1 invites size-1 special cases
    names = dict(input_names=["images"], output_names=["logits"])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # deprecation and constant-folding chatter
        if exporter == "legacy":
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                              **names)
        elif exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1)
            torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=max(opset, 18),
                              dynamic_shapes=({0: batch},), external_data=False, verbose=False,
                              **names)
        else:
            raise AttncnnError(f"unknown ONNX exporter {exporter!r}; choose legacy or dynamo")
    if metadata is not None:
        proto = onnx.load(str(path))
        entry = proto.metadata_props.add()
        entry.key, entry.value = "attncnn", json.dumps(metadata)
        onnx.save(proto, str(path))
    return path


def export_torchscript(model: nn.Module, path: str | Path, input_size, *,
                       metadata: dict | None = None) -> Path:
    """Write `model` traced to TorchScript at `path` (load with torch.jit.load).

    Tracing, not scripting: the forward passes here have no data-dependent control flow.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = torch.zeros(2, *input_size)
    extra = {"attncnn.json": json.dumps(metadata)} if metadata is not None else {}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(path), _extra_files=extra)
    return path


def run_exported(path: str | Path, fmt: str, x: torch.Tensor) -> torch.Tensor:
    """Logits of the exported model at `path` for the batch `x` (CPU)."""
    if fmt == "onnx":
        _require("onnxruntime", why="checking an ONNX export")
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu")(x)
    raise AttncnnError(f"unknown export format {fmt!r}; choose {' or '.join(FORMATS)}")


@torch.no_grad()
def check_export(path: str | Path, fmt: str, model: nn.Module, input_size,
                 batch_sizes=(1, 3), seed: int = 0) -> float:
    """Largest |exported - PyTorch| logit difference over random batches of `batch_sizes`."""
    model = model.eval().cpu()
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for b in batch_sizes:
        x = torch.randn(b, *input_size, generator=gen)
        got = run_exported(path, fmt, x)
        want = model(x)
        if got.shape != want.shape:
            raise AttncnnError(f"{path}: batch of {b} gave shape {list(got.shape)}, "
                               f"expected {list(want.shape)}")
        worst = max(worst, (got - want).abs().max().item())
    return worst


def default_output(weights: str | Path, fmt: str) -> Path:
    """<weights name><suffix> in the current directory: attn.safetensors -> attn.onnx, and a
    run's model.safetensors elsewhere is named after its run directory
    (runs/x/model.safetensors -> x.onnx), so exports of several runs do not overwrite each
    other."""
    weights = Path(os.path.abspath(weights))
    stem = weights.name.removesuffix(".safetensors")
    if stem == "model" and weights.parent != Path.cwd():
        stem = weights.parent.name or stem
    return Path(stem + FORMATS[fmt])


def export_weights(weights: str | Path, fmt: str, out: str | Path | None = None, *,
                   opset: int = OPSET, exporter: str = "legacy") -> tuple[Path, nn.Module, dict]:
    """Export a weights file; returns (output path, the PyTorch model, metadata).

    `out` defaults to `default_output(weights, fmt)`: a file in the current directory,
    never beside the weights (which may sit in the repository, e.g. results/weights/).
    """
    from attncnn.inference.weights import create_model_from_weights

    if fmt not in FORMATS:
        raise AttncnnError(f"unknown export format {fmt!r}; choose {' or '.join(FORMATS)}")
    model, meta = create_model_from_weights(weights)
    out = Path(out) if out else default_output(weights, fmt)
    size = tuple(meta["input_size"])
    info = {k: meta[k] for k in ("model", "model_args", "classes", "mean", "std", "input_size")}
    if fmt == "onnx":
        export_onnx(model, out, size, metadata=info, opset=opset, exporter=exporter)
    else:
        export_torchscript(model, out, size, metadata=info)
    return out, model, meta
