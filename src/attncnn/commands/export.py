"""`attncnn export --weights W --format onnx|torchscript`: a deployable file, checked."""
from __future__ import annotations

import argparse

HELP = "export a weights file to ONNX or TorchScript (dynamic batch size), checked against PyTorch"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", "-w", required=True, help="a .safetensors file from attncnn")
    p.add_argument("--format", "-f", choices=("onnx", "torchscript"), required=True)
    p.add_argument("--out", "-o", default=None,
                   help="output file (default: in the current directory, named after the "
                        "weights file, or after the run directory for RUN/model.safetensors: "
                        "NAME.onnx or NAME.torchscript.pt)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--exporter", choices=("legacy", "dynamo"), default="legacy",
                   help="torch ONNX exporter: legacy (TorchScript-based, fast; default) or "
                        "dynamo (torch.export-based)")
    p.add_argument("--no-check", action="store_true",
                   help="skip running the export against PyTorch on batches of 1 and 3")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="largest logit difference the check accepts (default 1e-3)")


def run(args: argparse.Namespace) -> int:
    from attncnn.errors import AttncnnError
    from attncnn.inference.export import check_export, export_weights

    out, model, meta = export_weights(args.weights, args.format, args.out, opset=args.opset,
                                      exporter=args.exporter)
    size = "x".join(str(s) for s in meta["input_size"][1:])
    print(f"wrote {out} ({args.format}, {meta['model']}, input [batch, 3, {size}], "
          f"{len(meta['classes'])} classes)")
    if args.no_check:
        return 0
    diff = check_export(out, args.format, model, tuple(meta["input_size"]))
    if not diff <= args.tolerance:
        raise AttncnnError(f"{out}: exported logits differ from PyTorch's by {diff:.2e} "
                           f"(> {args.tolerance:g})")
    print(f"checked: batches of 1 and 3 match PyTorch within {diff:.1e}")
    return 0
