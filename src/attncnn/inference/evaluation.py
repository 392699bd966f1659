"""Evaluate a weights file on a data split: accuracy, per-class accuracy, confusion matrix.

    result = evaluate_weights("model.safetensors", DataConfig(name="cifar10"), split="test")
    write_outputs(result, "runs/eval/x")   # results.json + confusion.png

The images are normalised with the mean/std stored in the weights (those the model was
trained with), and the weights' class names must equal the data's, in order.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from attncnn.data.config import DataConfig
from attncnn.engine.results import SCHEMA
from attncnn.errors import AttncnnError
from attncnn.files import sha256_file


def eval_batches(cfg: DataConfig, split: str, mean, std, device):
    """(batches, classes, name, num_images, image size or None) of `split` of `cfg`.

    In-memory sources are loaded with `load_split` and batched by a DeviceLoader using the
    weights' normalisation; streaming sources (ImageNet) use their own eval loader.
    """
    from attncnn.data import DeviceLoader
    from attncnn.data.sources import build_loaders, eval_input, is_streaming, load_split

    if is_streaming(cfg.name):
        loaders = build_loaders(dataclasses.replace(cfg, eval_split=split), device)
        if [round(v, 4) for v in loaders.mean] != [round(v, 4) for v in mean] or \
                [round(v, 4) for v in loaders.std] != [round(v, 4) for v in std]:
            raise AttncnnError(f"data set {cfg.name!r} normalises with mean {list(loaders.mean)} "
                               f"std {list(loaders.std)}, the weights with mean {list(mean)} "
                               f"std {list(std)}")
        ev = loaders.eval
        return ev, list(loaders.classes), loaders.name, ev.num_samples, loaders.input_size[1:]
    data = eval_input(load_split(cfg, split), cfg)
    data = dataclasses.replace(data, mean=tuple(mean), std=tuple(std))
    loader = DeviceLoader(data, cfg.eval_batch_size, train=False, device=device)
    return loader, list(data.classes), data.name or cfg.name, len(data), tuple(data.images.shape[2:])


def check_classes(weights, model_classes: list[str], data_name: str, data_classes: list[str]):
    if model_classes == data_classes:
        return
    if len(model_classes) != len(data_classes):
        raise AttncnnError(f"{weights} has {len(model_classes)} classes but data {data_name!r} "
                           f"has {len(data_classes)}")
    i = next(i for i, (a, b) in enumerate(zip(model_classes, data_classes)) if a != b)
    raise AttncnnError(f"{weights} and data {data_name!r} name their classes differently: "
                       f"class {i} is {model_classes[i]!r} in the weights, {data_classes[i]!r} "
                       "in the data")


def data_name_from_weights(cfg: DataConfig, name: str, meta: dict) -> str | None:
    """The name the weights' training run gave its data (e.g. "CIFAR-10 (JPEG q75 copy)"),
    when `cfg` is that data named only by default (no display_name; a folder's default is
    its file name, e.g. "cifar10-jpeg"); else None.

    The class names already agree (`check_classes`). Weights that record their data source
    and root's name match on both (the root's folder or archive name, so an extracted copy
    of an archive matches too); older weights, which record neither, match a `folder`
    source, the one whose default name is only a file name.
    """
    from attncnn.data.folder import display_name

    summary = meta.get("summary") or {}
    trained = summary.get("data")
    if cfg.display_name or not isinstance(trained, str) or not trained or trained == name:
        return None
    if "data_source" in summary:
        def stem(root):
            return display_name(Path(root)) if root else None

        same = summary["data_source"] == cfg.name and \
            stem(summary.get("data_root")) == stem(cfg.root)
    else:
        same = cfg.name == "folder"
    return trained if same else None


def evaluate_weights(weights: str | Path, cfg: DataConfig, split: str | None = None,
                     device: torch.device | str = "cpu", flip: bool | None = None,
                     translate: int | None = None) -> dict:
    """Evaluate `weights` on `split` (default cfg.eval_split) of `cfg`: a results record.

    flip: average each image's logits with its mirror's (test-time augmentation); None
    takes `cfg.eval_flip`, or what the run that wrote the weights evaluated with.
    translate: also average in copies shifted this many pixels (`make_infer_step`); None
    takes `cfg.eval_translate`, or the run's.

    The record follows docs/results-format.md with "kind": "eval": model, data, "final"
    (loss, top1, top5 in percent, per_class, count), "confusion" (rows = true class),
    the training summary stored in the weights, env and timing.
    """
    from attncnn.engine.environment import environment, utc_now
    from attncnn.engine.metrics import evaluate
    from attncnn.inference.weights import create_model_from_weights
    from attncnn.models import count_params

    split = split or cfg.eval_split
    started, t0 = utc_now(), time.perf_counter()
    device = torch.device(device)
    model, meta = create_model_from_weights(weights, device)
    notes = []
    cfg, taken = cfg.with_input_settings(meta)
    if taken:
        notes.append(f"data.{', data.'.join(taken)} as in the weights' training run")
    batches, classes, name, count, image_size = eval_batches(cfg, split, meta["mean"],
                                                             meta["std"], device)
    check_classes(weights, meta["classes"], cfg.name, classes)
    trained_name = data_name_from_weights(cfg, name, meta)
    if trained_name is not None:
        notes.append(f"data named {trained_name!r} as in the weights' training run (it would "
                     f"be {name!r}; set data.display_name to name it otherwise)")
        name = trained_name
    if image_size and tuple(image_size) != tuple(meta["input_size"][1:]):
        notes.append(f"data images are {'x'.join(map(str, image_size))}, the model was trained "
                     f"on {'x'.join(map(str, meta['input_size'][1:]))}")
    if flip is None:
        flip = bool(cfg.eval_flip or meta.get("summary", {}).get("eval_flip"))
    if translate is None:
        translate = int(cfg.eval_translate or meta.get("summary", {}).get("eval_translate") or 0)
    summary = evaluate(model, batches, len(classes), device, flip=flip, translate=translate)
    confusion = summary.pop("confusion")
    return {
        "schema": SCHEMA,
        "kind": "eval",
        "model": meta["model"],
        "model_args": meta["model_args"],
        "params": count_params(model),
        "weights": str(weights),
        "weights_sha256": sha256_file(weights),
        "data": {"source": cfg.name, "name": name, "root": cfg.root, "split": split,
                 "num_eval": count, "classes": classes, "eval_flip": flip,
                 **({"eval_translate": translate} if translate else {})},
        "final": summary,
        "confusion": confusion,
        "training": meta.get("summary", {}),
        "notes": notes,
        "env": environment(device, 1),
        "started_at": started,
        "finished_at": utc_now(),
        "wall_time_s": round(time.perf_counter() - t0, 3),
    }


def plot_confusion(confusion: list[list[int]], classes: list[str], path: str | Path,
                   title: str = "") -> Path:
    """Write the confusion matrix (rows = true class, colour = share of the row) as a PNG.

    Counts are written in the cells up to 20 classes, class names on the axes up to 50.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must precede pyplot's import
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(confusion, dtype=np.int64)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    n = len(classes)
    side = float(np.clip(0.3 * n + 2.5, 5, 18)) if n <= 50 else 10.0
    fig, ax = plt.subplots(figsize=(side + 1, side), dpi=100)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if n <= 50:
        ax.set_xticks(range(n), classes, rotation=90, fontsize=8)
        ax.set_yticks(range(n), classes, fontsize=8)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_outputs(result: dict, out_dir: str | Path) -> dict[str, Path]:
    """results.json and confusion.png of an `evaluate_weights` record in `out_dir`."""
    from attncnn.engine.results import write_json_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data, final = result["data"], result["final"]
    title = (f"{result['model']} on {data['name']} [{data['split']}]: "
             f"top-1 {final['top1']:.2f}%")
    png = plot_confusion(result["confusion"], data["classes"], out_dir / "confusion.png", title)
    path = out_dir / "results.json"
    write_json_atomic(result, path)
    return {"results": path, "confusion": png}


def per_class_table(result: dict) -> str:
    """Per-class accuracy with the class each one is most often mistaken for."""
    classes, confusion = result["data"]["classes"], result["confusion"]
    width = max(5, *(len(c) for c in classes))
    lines = [f"{'class':{width}s} {'images':>7s} {'top-1':>7s}  most confused with"]
    for i, c in enumerate(classes):
        row = confusion[i]
        wrong = [(n, j) for j, n in enumerate(row) if j != i and n]
        worst = max(wrong)[1] if wrong else None
        mistaken = f"{classes[worst]} ({row[worst]})" if worst is not None else "-"
        lines.append(f"{c:{width}s} {sum(row):7d} {result['final']['per_class'][i]:6.2f}%  {mistaken}")
    return "\n".join(lines)
