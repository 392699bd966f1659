"""Does a model's spatial attention depend on the image? Prints, per attention module, how
much its maps vary between images of an evaluation split.

    PYTHONPATH=src python benchmarks/attention_content.py WEIGHTS --data folder \
        --root ../shared/data/imagenette2-160.tar.gz --split val [--num 256] [--json FILE]

Images are prepared as the weights' evaluation prepared them (their recorded input
settings). For each module with spatial maps (mean-1 weights over positions), over `--num`
images chosen at random (seed 0):
- the mean map's lowest and highest weight: how far the module moves from uniform (1.0);
- the mean over positions of the standard deviation across images: how much the weight of
  one position changes from image to image;
- the mean pairwise cosine similarity of the images' maps: 1.0 is one map for every image
  (a fixed spatial prior, blind to the content), lower is image-dependent.
A small map's mean is printed in full.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch


def consistency(maps: torch.Tensor) -> dict:
    """Statistics of maps [N, M, h, w] (mean-1 weights), over images."""
    flat = maps.float().mean(1).flatten(1)                 # [N, h*w], the M maps averaged
    mean = flat.mean(0)
    cos = torch.nn.functional.cosine_similarity(flat[:, None], flat[None], dim=-1)
    others = cos[~torch.eye(len(flat), dtype=torch.bool)]
    return {"size": list(maps.shape[-2:]), "mean_min": float(mean.min()),
            "mean_max": float(mean.max()), "std_across_images": float(flat.std(0).mean()),
            "pairwise_cosine": float(others.mean()) if len(others) else None,
            "mean_map": mean.view(*maps.shape[-2:]).tolist()}


def main(argv: list[str] | None = None) -> int:
    from attncnn.data.config import DataConfig
    from attncnn.data.image_input import normalise
    from attncnn.data.sources import eval_input, load_split
    from attncnn.inference.weights import create_model_from_weights
    from attncnn.models.attention import record_attention

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights")
    p.add_argument("--data", required=True)
    p.add_argument("--root")
    p.add_argument("--split", default="test")
    p.add_argument("--num", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, meta = create_model_from_weights(args.weights)
    model.eval()
    cfg, _ = DataConfig(name=args.data, root=args.root).with_input_settings(meta)
    data = eval_input(load_split(cfg, args.split), cfg)
    index = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:args.num]
    x = normalise(data.images[index], meta["mean"], meta["std"])
    gathered: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad(), record_attention(model) as recorded:
        for chunk in x.split(64):          # the dict holds the last forward's maps
            model(chunk)
            for name, maps in recorded.items():
                gathered.setdefault(name, []).append(maps)
    spatial = {name: torch.cat(parts) for name, parts in gathered.items()}
    report = {"weights": args.weights, "data": data.name, "split": args.split,
              "num_images": len(index), "modules": {}}
    for name, maps in spatial.items():
        if maps.dim() != 4 or maps.shape[-1] == 1:      # channel gates, not maps over positions
            continue
        stats = consistency(maps)
        report["modules"][name] = stats
        print(f"{name:24s} {stats['size'][0]}x{stats['size'][1]}  mean map {stats['mean_min']:.2f}"
              f"-{stats['mean_max']:.2f}  std across images {stats['std_across_images']:.3f}  "
              f"pairwise cosine {stats['pairwise_cosine']:.3f}")
        if stats["size"][0] * stats["size"][1] <= 16:
            for row in stats["mean_map"]:
                print("    " + " ".join(f"{v:5.2f}" for v in row))
    if not report["modules"]:
        print("no spatial attention maps in this model", file=sys.stderr)
        return 1
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
