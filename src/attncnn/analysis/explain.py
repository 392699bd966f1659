"""Where does a trained model look? Attention maps out of any model, and how well they localise.

`attention_maps(model, images)` returns one `AttentionMap` per spatial attention module
(the paper's softmax maps, CBAM's spatial maps), read by forward hooks on the modules
(`record_attention`), so no forward pass is re-implemented. Models with no spatial
attention (the baseline, SE, whose gates are per channel, not per position) get Grad-CAM
of their last stage instead, so every model can be compared on the same pictures.

Normalisation: every returned `map` is at input resolution [B, H_in, W_in], non-negative,
and sums to 1 over the pixels of each image: a distribution of "where the attention is".
Values are comparable across modules and models (a uniform map is 1/(H_in*W_in) everywhere).
`raw` keeps what the module computed, at its own resolution, before any of this.

Alignment: a map cell is put on the input pixel its receptive field centres on, and the map
is interpolated bilinearly between those pixels (`Grid`, `record_grids`). The geometry is
the model's: a stride-2 3x3 conv with padding 1 (our ResNets) puts output cell i on input
cell 2i, a 2x2 pooling (DenseNet, ResNet-9) on 2i + 0.5. Plain resizing
(F.interpolate, align_corners=False) assumes the latter everywhere; on a CIFAR ResNet's
stride-4 last stage it moved every map 1.5 px down and right (measured:
benchmarks/explain_alignment.py).

`localisation_scores(maps, boxes)` scores maps against object boxes (x0, y0, x1, y1 pixels,
x1/y1 exclusive, as in `ArrayDataset.boxes`):
- mass: the share of the map inside the box ("energy-based pointing"); a uniform map gets
  exactly the box's share of the image, reported as `chance`.
- hit: the pointing game; 1 when the map's peak pixel lies in the box grown by `tolerance`
  pixels on every side (default 1, so a peak on the box's border pixel row counts, as
  bilinear upsampling blurs peaks by about a pixel). Ties at the peak (e.g. a uniform
  map) count the share of tied pixels inside, i.e. the expected hit of a random tie-break.
  `chance_hit` is the grown box's share of the image: the hit rate of a random peak.
A pixel (row i, column j) covers [j, j+1) x [i, i+1); it is inside a box when its centre
(j + 0.5, i + 0.5) is.
"""
from __future__ import annotations

from dataclasses import dataclass

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from attncnn.errors import AttncnnError
from attncnn.models.attention import record_attention
from attncnn.models.attention_kinds import ATTENTION_KINDS

# Modules whose recorded maps are spatial ([B, M, H, W] with H, W > 1), and their kind names.
SPATIAL_KINDS = {kind.module: name for name, kind in ATTENTION_KINDS.items()
                 if kind.module.spatial_maps}


@dataclass
class AttentionMap:
    """One map per image of a batch.

    name: the module's qualified name (e.g. "stages.2.9"), "name#m" for map m of a
        multi-map module when split, "overall" for the mean of a model's modules, or
        "gradcam" for Grad-CAM of the last stage.
    placement: "block" | "stage" | "end" (where the module sits), "all" for "overall",
        "last-stage" for Grad-CAM.
    kind: "softmax" | "cbam" | "gradcam" | "mean".
    map: float32 [B, H_in, W_in], >= 0, sums to 1 over pixels of each image.
    raw: what the module computed, at its resolution: softmax, the mean-1 weights
        [B, M, h, w] (all M maps; `map` is built from their mean unless split); CBAM, the
        sigmoid map [B, 1, h, w]; Grad-CAM, ReLU(sum_c alpha_c A_c) [B, 1, h, w];
        "overall", the same tensor as `map`.
    """

    name: str
    placement: str
    kind: str
    map: torch.Tensor
    raw: torch.Tensor


@dataclass(frozen=True)
class Grid:
    """Where the cells of a feature map lie on the input, per axis (y, x): cell i centres on
    input pixel index stride * i + offset (a fraction when it falls between pixels)."""

    stride: tuple[float, float]
    offset: tuple[float, float]

    @staticmethod
    def even(cells: tuple[int, int], size: tuple[int, int]) -> "Grid":
        """Cells tiling the input evenly, each at the centre of its block of pixels: the
        geometry F.interpolate(align_corners=False) assumes, for maps of unknown origin."""
        stride = tuple(n / c for n, c in zip(size, cells))
        return Grid(stride, tuple((s - 1) / 2 for s in stride))


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


@contextlib.contextmanager
def record_grids(model: nn.Module, size: tuple[int, int]) -> Iterator[dict[tuple[int, int], Grid]]:
    """Work out the grid of every feature-map resolution during the forward passes inside.

    Yields {(h, w): Grid}, filled as convolutions and poolings run: a layer (kernel k,
    stride s, padding p, dilation d) on a map of grid (S, o) gives output cell j the input
    position s*j - p + d*(k-1)/2, i.e. the grid (S*s, o + S*(d*(k-1)/2 - p)). The input
    `size` is the grid (1, 0). The first layer in forward order to produce a resolution
    defines it; layers on a resolution not seen yet (after a functional resize) are skipped.
    """
    grids = {tuple(size): Grid((1.0, 1.0), (0.0, 0.0))}

    def hook(module, inputs, output):
        grid = grids.get(tuple(inputs[0].shape[-2:]))
        if grid is None or isinstance(module.padding, str):
            return
        k, s = _pair(module.kernel_size), _pair(module.stride)
        p, d = _pair(module.padding), _pair(getattr(module, "dilation", 1))
        grids.setdefault(tuple(output.shape[-2:]), Grid(
            tuple(g * si for g, si in zip(grid.stride, s)),
            tuple(o + g * (di * (ki - 1) / 2 - pi)
                  for o, g, ki, pi, di in zip(grid.offset, grid.stride, k, p, d))))

    layers = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, layers)]
    try:
        yield grids
    finally:
        for h in handles:
            h.remove()


def interpolation_matrix(pixels: int, cells: int, stride: float, offset: float) -> torch.Tensor:
    """[pixels, cells]: bilinear weights of the cells for every pixel of one axis, cell i sitting
    on pixel stride * i + offset. Pixels beyond the first or last cell take its value."""
    position = ((torch.arange(pixels) - offset) / stride).clamp(0, cells - 1)   # in cells
    return (1 - (position[:, None] - torch.arange(cells)).abs()).clamp_min(0)


def to_distribution(maps: torch.Tensor, size: tuple[int, int], grid: Grid | None = None
                    ) -> torch.Tensor:
    """maps [B, h, w] (>= 0) -> [B, *size], bilinear between the cells' positions `grid`
    (default: evenly tiled, `Grid.even`), each image summing to 1.

    An image whose map is all zero (Grad-CAM whose ReLU removed everything) becomes uniform:
    "no preference" is the honest reading of an empty map.
    """
    cells = tuple(maps.shape[-2:])
    grid = grid or Grid.even(cells, size)
    wy, wx = (interpolation_matrix(n, c, s, o).to(maps.device)
              for n, c, s, o in zip(size, cells, grid.stride, grid.offset))
    up = torch.einsum("ph,bhw,qw->bpq", wy, maps.float(), wx).clamp_min(0)
    total = up.sum((1, 2), keepdim=True)
    uniform = torch.full_like(up, 1.0 / (size[0] * size[1]))
    return torch.where(total > 0, up / total.clamp_min(1e-30), uniform)


def placement_of(model: nn.Module, name: str) -> str:
    """Where the module `name` sits: the model's own `attention_placement` if it has one,
    else read from the name: "attention" (top level) is "end", "...attention" inside a block
    is "block", anything else (the last entry of a stage) is "stage"."""
    placement = getattr(model, "model_args", {}).get("attention_placement")
    if placement:
        return placement
    if name == "attention":
        return "end"
    return "block" if name.endswith(".attention") else "stage"


def spatial_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) for every spatial attention module of `model`, in forward order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, tuple(SPATIAL_KINDS))]


def gradcam(model: nn.Module, images: torch.Tensor, target: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM (Selvaraju et al. 2017) of the last stage: the output A [B, C, h, w] of
    `model.forward_features`, differentiated through `model.forward_head`.

    alpha_c = mean over positions of d score_k / d A_c, with k the predicted class (or
    `target` [B]); cam = ReLU(sum_c alpha_c A_c) [B, h, w]. For a model that ends in global
    average pooling and one linear layer (all of ours) this equals CAM: fc weight_k . A / (h*w).
    Returns (cam [B, h, w], logits [B, K]). Parameter gradients are left untouched; the model
    runs in its current mode (`attention_maps` puts it in eval mode first).
    """
    missing = [f for f in ("forward_features", "forward_head") if not hasattr(model, f)]
    if missing:
        raise AttncnnError(f"{type(model).__name__} has no {' or '.join(missing)}: "
                           f"cannot compute Grad-CAM")
    with torch.no_grad():  # the trunk needs no gradients: the backward pass stops at A
        features = model.forward_features(images)
    with torch.enable_grad():
        features = features.detach().requires_grad_()   # a fresh leaf: frozen models work too
        logits = model.forward_head(features)
        k = logits.argmax(1) if target is None else target.to(logits.device).long()
        score = logits.gather(1, k[:, None]).sum()
        (grad,) = torch.autograd.grad(score, features)
    alpha = grad.mean((2, 3), keepdim=True)
    cam = F.relu((alpha * features).sum(1)).detach()
    return cam, logits.detach()


def attention_maps(model: nn.Module, images: torch.Tensor, target: torch.Tensor | None = None,
                   split_maps: bool = False, gradcam_mode: str = "auto",
                   overall: bool = False, return_logits: bool = False):
    """Every spatial attention map of `model` for `images` [B, 3, H_in, W_in] (normalised).

    Multi-map softmax modules (num_maps M > 1) give the mean of their M mean-1 maps (one
    map, named after the module), or with `split_maps` one AttentionMap per map ("name#m").
    `gradcam_mode`: "auto" adds Grad-CAM only for models without spatial attention, "always"
    adds it for every model, "never" never (a model without spatial attention then gives []).
    `overall` appends the mean of the module maps (before Grad-CAM) as "overall".
    `target` [B]: the class Grad-CAM explains (default: the predicted class).
    `return_logits`: return (maps, logits [B, classes]) from the same forward pass.
    The model is put in eval mode and restored afterwards.
    """
    if gradcam_mode not in ("auto", "always", "never"):
        raise AttncnnError(f"gradcam_mode must be auto, always or never, not {gradcam_mode!r}")
    size = tuple(images.shape[-2:])
    modules = spatial_modules(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), record_attention(model) as recorded, \
                record_grids(model, size) as grids:
            logits = model(images)

        def distribution(maps):
            return to_distribution(maps, size, grids.get(tuple(maps.shape[-2:])))

        out = []
        for name, module in modules:
            raw = recorded[name]
            kind = next(k for cls, k in SPATIAL_KINDS.items() if isinstance(module, cls))
            placement = placement_of(model, name)
            if split_maps and raw.shape[1] > 1:
                for m in range(raw.shape[1]):
                    out.append(AttentionMap(f"{name}#{m}", placement, kind,
                                            distribution(raw[:, m]), raw))
            else:
                out.append(AttentionMap(name, placement, kind,
                                        distribution(raw.float().mean(1)), raw))
        if overall and len(out) > 1:
            mean = torch.stack([a.map for a in out]).mean(0)
            out.append(AttentionMap("overall", "all", "mean", mean, mean))
        if gradcam_mode == "always" or (gradcam_mode == "auto" and not modules):
            cam, _ = gradcam(model, images, target)
            out.append(AttentionMap("gradcam", "last-stage", "gradcam", distribution(cam),
                                    cam[:, None]))
    finally:
        model.train(was_training)
    return (out, logits) if return_logits else out


def box_masks(boxes: torch.Tensor, size: tuple[int, int], tolerance: float = 0.0) -> torch.Tensor:
    """bool [B, H, W]: pixels whose centre lies in the box (x0, y0, x1, y1) grown by
    `tolerance` pixels on every side. boxes [B, 4] in pixels, x1/y1 exclusive."""
    h, w = size
    ys = torch.arange(h, dtype=torch.float32) + 0.5
    xs = torch.arange(w, dtype=torch.float32) + 0.5
    b = boxes.float().cpu()
    x0, y0, x1, y1 = (b[:, i, None] for i in range(4))
    inside_x = (xs >= x0 - tolerance) & (xs <= x1 + tolerance)     # [B, W]
    inside_y = (ys >= y0 - tolerance) & (ys <= y1 + tolerance)     # [B, H]
    return inside_y[:, :, None] & inside_x[:, None, :]


def localisation(maps: torch.Tensor, boxes: torch.Tensor, tolerance: float = 1.0) -> dict:
    """Per-image localisation of distributions `maps` [B, H, W] against `boxes` [B, 4].

    Returns {"mass", "chance", "hit", "chance_hit"}, each float [B] (see module docstring).
    """
    maps = maps.float().cpu()
    size = tuple(maps.shape[-2:])
    inside = box_masks(boxes, size)
    grown = box_masks(boxes, size, tolerance)
    pixels = size[0] * size[1]
    flat = maps.flatten(1)
    peak = flat >= flat.amax(1, keepdim=True) * (1 - 1e-5)        # ties after upsampling
    hit = (peak & grown.flatten(1)).sum(1) / peak.sum(1)
    return {
        "mass": (maps * inside).sum((1, 2)) / maps.sum((1, 2)),
        "chance": inside.flatten(1).sum(1) / pixels,
        "hit": hit.float(),
        "chance_hit": grown.flatten(1).sum(1) / pixels,
    }


class LocalisationMeter:
    """Accumulate `update(maps, boxes)` over batches; `rows()` gives one row per map name:
    the means of mass, chance, hit and chance_hit over the images that have a box, and count."""

    FIELDS = ("mass", "chance", "hit", "chance_hit")

    def __init__(self, tolerance: float = 1.0):
        self.tolerance = tolerance
        self.sums: dict[str, dict] = {}

    def update(self, maps: list[AttentionMap], boxes: torch.Tensor) -> None:
        boxes = boxes.cpu()
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])   # images with a box
        for a in maps:
            scores = localisation(a.map.cpu()[valid], boxes[valid], self.tolerance)
            row = self.sums.setdefault(a.name, {"name": a.name, "kind": a.kind,
                                                "placement": a.placement, "count": 0,
                                                **{f: 0.0 for f in self.FIELDS}})
            row["count"] += int(valid.sum())
            for f in self.FIELDS:
                row[f] += float(scores[f].sum())

    def rows(self) -> list[dict]:
        out = []
        for row in self.sums.values():
            n = max(row["count"], 1)
            out.append({**row, **{f: row[f] / n for f in self.FIELDS}})
        return out
