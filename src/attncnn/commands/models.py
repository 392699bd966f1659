"""`attncnn models [PATTERN]`: list registered models with parameters and MACs."""
from __future__ import annotations

import argparse
import json

HELP = "list the registered models with their parameter counts and MACs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. '*resnet110*'")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")


def model_rows(pattern: str = "*") -> list[dict]:
    """One row per matching model: name, family, params, MACs at its default input size."""
    import torch

    from attncnn.models import count_macs, count_params, create_model, get_spec, list_models

    rows = []
    for name in list_models(pattern):
        spec = get_spec(name)
        with torch.device("meta"):  # shapes only: no memory, no init cost
            model = create_model(name)
        rows.append({
            "name": name,
            "family": spec.family,
            "attention": model.model_args.get("attention"),
            "placement": model.model_args.get("attention_placement"),
            "params": count_params(model),
            "macs": count_macs(model, spec.input_size),
            "input_size": list(spec.input_size),
        })
    return rows


def run(args: argparse.Namespace) -> int:
    from attncnn.errors import AttncnnError

    rows = model_rows(args.pattern)
    if not rows:
        raise AttncnnError(f"no model matches {args.pattern!r}; try `attncnn models` for all")
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"{'model':28s} {'attention':>9s} {'placement':>9s} {'params':>9s} {'MACs':>9s}  input")
    for r in rows:
        size = "x".join(str(s) for s in r["input_size"][1:])
        print(f"{r['name']:28s} {str(r['attention'] or '-'):>9s} {r['placement']:>9s} "
              f"{r['params'] / 1e6:8.3f}M {r['macs'] / 1e9:8.3f}G  {size}")
    return 0
