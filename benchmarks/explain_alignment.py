"""Where do map peaks sit relative to the digit? Offsets of the explain maps from the box centre.

    PYTHONPATH=src python benchmarks/explain_alignment.py WEIGHTS [WEIGHTS ...]

For each weights file (a model of the resnet_cifar family, digits input), over the whole
digits test split: the signed offset (dy, dx) in pixels, mean and standard deviation, of the
map's argmax and centre of mass from the box centre, measured three ways:
- native: the map at its own resolution, cell i placed on the pixel its receptive field
  centres on (index 4i for a stride-4 map, see below);
- native, evenly tiled: cell i placed at the centre of the i-th block of 4 pixels (index
  4i + 1.5), the geometry of F.interpolate(align_corners=False);
- upsampled: `attncnn.analysis.explain.attention_maps` as the command computes it.
Coordinates are continuous: pixel p spans [p, p + 1); the box centre is ((x0 + x1) / 2, ...).

Also: the share of images whose native peak lies below-right / above-left of the box centre;
for a model with end-placed softmax attention, the centroid of |d logit(i, j) / d input| of
its attention logits at the four central cells, relative to the cell's receptive-field centre
(does the trained attention itself look off-centre?).

First it prints the receptive field of a few last-stage cells of a freshly built model of the
same architecture (the input pixels with a non-zero gradient, rows and columns, indices) and
the offset of the digits' ink centroid from the box centre.
Used for the alignment numbers in docs/explain.md.
"""
import sys

import torch

from attncnn.analysis.explain import attention_maps
from attncnn.data.config import DataConfig
from attncnn.data.digits import _render
from attncnn.data.sources import load_split
from attncnn.inference.weights import create_model_from_weights
from attncnn.models import create_model

BATCH = 250


def receptive_fields(name: str, model_args: dict, size: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, **model_args).eval()
    x = torch.randn(4, 3, size, size, requires_grad=True)
    h = model.forward_features(x).shape[-1]
    stride = size // h
    print(f"{name}: last stage {h}x{h} on {size}x{size} input (stride {stride})")
    for i, j in [(0, 0), (h // 2 - 1, h // 2 - 1), (h // 2, h // 2 + 1), (h - 1, h - 1)]:
        x.grad = None
        model.forward_features(x)[:, :, i, j].sum().backward()
        g = x.grad.abs().sum((0, 1))
        rows, cols = g.sum(1).nonzero().flatten(), g.sum(0).nonzero().flatten()
        print(f"  cell ({i}, {j}): rows {rows.min()}..{rows.max()}, cols {cols.min()}..{cols.max()}"
              f" (stride * index: {stride * i}, {stride * j})")


def ink_offset(centre_y: torch.Tensor, centre_x: torch.Tensor) -> None:
    masks = torch.tensor(_render("test", len(centre_y))[3]).float()     # where the digit's ink is
    p = masks / masks.sum((1, 2), keepdim=True)
    coord = torch.arange(masks.shape[-1]).float() + 0.5
    dy, dx = (p.sum(2) * coord).sum(1) - centre_y, (p.sum(1) * coord).sum(1) - centre_x
    print(f"ink centroid - box centre: dy {dy.mean():+.2f} ± {dy.std():.2f}"
          f"   dx {dx.mean():+.2f} ± {dx.std():.2f}")


def attention_logit_centroids(model, images: torch.Tensor, stride: int) -> None:
    """|gradient| centroid of the end attention's logit at the central cells, minus stride * i."""
    def logits(x):
        return model.attention.conv(model.stages(model.stem(x)))

    h = logits(images[:1]).shape[-1]
    coord = torch.arange(images.shape[-1]).float()
    for i, j in [(h // 2 + di, h // 2 + dj) for di in (-1, 0) for dj in (-1, 0)]:
        x = images.clone().requires_grad_()
        logits(x)[:, :, i, j].sum().backward()
        p = x.grad.abs().sum(1)
        p = p / p.sum((1, 2), keepdim=True)
        dy, dx = (p.sum(2) * coord).sum(1) - stride * i, (p.sum(1) * coord).sum(1) - stride * j
        print(f"  attention logit ({i}, {j}): |gradient| centroid - receptive-field centre "
              f"dy {dy.mean():+.2f}   dx {dx.mean():+.2f}")


def peak_and_mass_centre(maps: torch.Tensor, coord: torch.Tensor):
    """maps [B, h, w] >= 0 on a square grid whose row/column k lies at coord[k] (pixels):
    (argmax y, argmax x, centre-of-mass y, centre-of-mass x), each [B]."""
    w = maps.shape[-1]
    flat = maps.flatten(1).argmax(1)
    p = maps / maps.sum((1, 2), keepdim=True)
    return coord[flat // w], coord[flat % w], (p.sum(2) * coord).sum(1), (p.sum(1) * coord).sum(1)


def main(paths: list[str]) -> None:
    torch.set_num_threads(1)
    data = load_split(DataConfig(name="digits"), "test")
    boxes = data.boxes.float()
    centre_y, centre_x = (boxes[:, 1] + boxes[:, 3]) / 2, (boxes[:, 0] + boxes[:, 2]) / 2
    size = data.images.shape[-1]
    for k, path in enumerate(paths):
        model, meta = create_model_from_weights(path)
        model.float().eval()
        if k == 0:
            args = {a: v for a, v in meta["model_args"].items() if not a.startswith("attention")}
            receptive_fields("resnet20_cifar", args, size)
            ink_offset(centre_y, centre_x)
        mean = torch.tensor(meta["mean"]).view(1, 3, 1, 1)
        std = torch.tensor(meta["std"]).view(1, 3, 1, 1)
        raw, up = [], []
        for s in range(0, len(data), BATCH):
            x = (data.images[s:s + BATCH].float() / 255 - mean) / std
            (a,) = attention_maps(model, x)
            raw.append(a.raw.float().mean(1))
            up.append(a.map)
        raw, up = torch.cat(raw), torch.cat(up)
        h = raw.shape[-1]
        stride = size // h
        cells = torch.arange(h).float()
        print(f"\n{path}: map '{a.name}' ({a.kind}), {h}x{h}, {len(raw)} images; "
              "offset from the box centre, px, mean ± std")
        for label, maps, coord in [
            ("native, cell at its receptive-field centre", raw, stride * cells + 0.5),
            ("native, evenly tiled (align_corners=False)", raw, stride * cells + stride / 2),
            ("upsampled by attncnn.analysis.explain", up, torch.arange(size).float() + 0.5),
        ]:
            py, px, my, mx = peak_and_mass_centre(maps, coord)
            for what, y, x in [("argmax", py, px), ("centre of mass", my, mx)]:
                dy, dx = y - centre_y, x - centre_x
                print(f"  {label:44s} {what:15s} dy {dy.mean():+.2f} ± {dy.std():.2f}"
                      f"   dx {dx.mean():+.2f} ± {dx.std():.2f}")
            if maps is raw and label.startswith("native, cell at"):
                dy, dx = py - centre_y, px - centre_x
                below_right = ((dy > 0) & (dx > 0)).float().mean()
                above_left = ((dy < 0) & (dx < 0)).float().mean()
                print(f"  peak cell below-right of the box centre in {below_right:.1%} of the images,"
                      f" above-left in {above_left:.1%}")
        if a.kind == "softmax" and a.name == "attention":
            attention_logit_centroids(model, (data.images[:200].float() / 255 - mean) / std, stride)


if __name__ == "__main__":
    main(sys.argv[1:])
