"""PNG grids of attention maps over their images (matplotlib, Agg backend: no display needed).

One row per image: the input (with the object's box, where known), then each model's maps
as heat-map overlays. Maps are the distributions of `attncnn.analysis.explain`, drawn as
multiples of the uniform value (1 = attention spread evenly, 4 = four times the even share)
on one colour scale shared by the whole picture (square-root spaced), so cells can be
compared by colour alone. The image is shown in colour once, then in grey under each map; "+" marks the peak.
"""
from __future__ import annotations

from pathlib import Path

import torch

from attncnn.analysis.explain import box_masks

CELL_INCHES = 1.55
DPI = 100
CMAP = "jet"


def save_grids(out: str | Path, images: torch.Tensor, columns: list[dict], labels: list[int] | None,
               boxes: torch.Tensor | None, classes: list[str], rows_per_png: int = 8) -> list[Path]:
    """Write explain_01.png, explain_02.png, ... (rows_per_png images each) under `out`.

    images: uint8 [N, 3, H, W]. columns: one dict per model: "label", "classes" (the model's
    class names), "names" (its maps' names), "maps" (one [N, H, W] distribution per name),
    "pred" (N predicted class indices). labels: true class indices (None: unknown);
    boxes: [N, 4] (x0, y0, x1, y1) or None; classes: the names of `labels`.
    """
    out = Path(out)
    paths = []
    for k, start in enumerate(range(0, len(images), rows_per_png)):
        sl = slice(start, start + rows_per_png)
        cols = [{**c, "maps": [m[sl] for m in c["maps"]], "pred": c["pred"][sl]} for c in columns]
        path = out / f"explain_{k + 1:02d}.png"
        draw_grid(path, images[sl], cols, None if labels is None else labels[sl],
                  None if boxes is None else boxes[sl], classes)
        paths.append(path)
    return paths


def draw_grid(path: Path, images: torch.Tensor, columns: list[dict], labels, boxes, classes) -> None:
    """One PNG: see `save_grids` (all arguments cover the same rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import PowerNorm
    from matplotlib.patches import Rectangle

    n, _, h, w = images.shape
    cells = [(c, j) for c in columns for j in range(len(c["names"]))]
    ncols = 1 + len(cells)
    scale = [m * (h * w) for c in columns for m in c["maps"]]      # multiples of uniform
    vmax = max(2.0, max(float(torch.quantile(s.flatten().float(), 0.995)) for s in scale))

    norm = PowerNorm(gamma=0.5, vmin=0, vmax=vmax)
    fig, axes = plt.subplots(n, ncols, figsize=(CELL_INCHES * ncols + 0.9, CELL_INCHES * n + 0.5),
                             squeeze=False, dpi=DPI)
    heat = None
    for i in range(n):
        picture = images[i].permute(1, 2, 0).numpy()
        grey = images[i].float().mul(torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0).numpy()
        true = None if labels is None else classes[labels[i]]
        cells_in_row = [(axes[i, 0], None, None)] + [(axes[i, 1 + k], c, j) for k, (c, j) in enumerate(cells)]
        for ax, column, j in cells_in_row:
            if column is None:
                ax.imshow(picture, interpolation="nearest")
            else:  # grey under the colour map, so the heat colours are not mixed with the image's
                ax.imshow(grey, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if boxes is not None:
                x0, y0, x1, y1 = boxes[i].tolist()
                ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                                       edgecolor="white", linewidth=1.2, linestyle="--"))
            if column is None:
                if i == 0:
                    ax.set_title("input", fontsize=8)
                ax.set_xlabel(f"true: {true if true is not None else '?'}", fontsize=8, labelpad=2)
                continue
            m = column["maps"][j][i].float()
            value = (m * (h * w)).numpy()
            # Opaque where attention is high, see-through where it is low: the image stays
            # readable under a broad map. Square-root colour scale: sharp and broad maps both
            # show on the one shared scale.
            alpha = (0.25 + 0.6 * norm(value)).clip(0, 0.85)
            heat = ax.imshow(value, cmap=CMAP, norm=norm, alpha=alpha, interpolation="nearest")
            peak = int(m.flatten().argmax())
            ax.plot(peak % w, peak // w, marker="+", color="white", markersize=8, mew=1.5)
            pred = column["classes"][column["pred"][i]]
            colour = "black" if true is None else ("green" if pred == true else "red")
            if i == 0:
                label = column["label"].replace(" (", "\n(")   # "model (file)" on two lines
                ax.set_title(f"{label}\n{column['names'][j]}", fontsize=8)
            text = f"pred: {pred}"
            if boxes is not None:
                inside = box_masks(boxes[i : i + 1], (h, w))[0]
                text += f", {float((m * inside).sum()):.0%} in box"
            ax.set_xlabel(text, fontsize=8, labelpad=2, color=colour)
    fig.tight_layout(rect=(0, 0, (ncols * CELL_INCHES) / (ncols * CELL_INCHES + 0.9), 1))
    if heat is not None:
        bar = fig.add_axes((1 - 0.55 / fig.get_figwidth(), 0.1, 0.12 / fig.get_figwidth(), 0.8))
        fig.colorbar(heat, cax=bar).set_label("attention / uniform share", fontsize=8)
        bar.tick_params(labelsize=7)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
