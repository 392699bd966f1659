"""`attncnn explain`: where trained models look, as pictures and as a localisation score.

    attncnn explain --weights attn.safetensors --weights base.safetensors --data digits --num 8
    attncnn explain --run runs/attn --data digits --score          # table + JSON
    attncnn explain --weights w.safetensors photo.jpg some/folder/

Pictures: PNG grids, one row per image: the input (with the object's box where the data
knows it), then for every model its attention maps (or Grad-CAM) as heat-map overlays on
one shared colour scale, titled with the predicted and true class.

Exit status, as `predict`: 0 when every image was explained; 1 when some image files could
not be read (each is named on stderr, the others are still explained); 2 when nothing
could run.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from pathlib import Path

HELP = "show where models look (attention maps / Grad-CAM) and score it against object boxes"

ROWS_PER_PNG = 8


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="*",
                   help="image files, folders (searched recursively) or glob patterns to explain")
    p.add_argument("--weights", "-w", action="append", default=[], metavar="FILE",
                   help="a weights file (.safetensors); repeat to compare models side by side")
    p.add_argument("--run", action="append", default=[], metavar="RUN_DIR",
                   help="a run directory (uses RUN_DIR/model.safetensors); repeatable")
    p.add_argument("--data", metavar="NAME", help="explain samples of a data set, e.g. digits")
    p.add_argument("--data-root", metavar="PATH", help="where the data set lives, if not its default")
    p.add_argument("--split", default="test", help="data set split (default: test)")
    p.add_argument("--num", type=int, default=None,
                   help="samples of --data to use (default: 8, or the whole split with --score)")
    p.add_argument("--seed", type=int, default=0, help="which samples: a seeded random choice")
    p.add_argument("--show", type=int, default=8, help="images drawn into PNGs (default 8; 0: none)")
    p.add_argument("--out", default="explain", metavar="DIR", help="output folder (default ./explain)")
    p.add_argument("--score", action="store_true",
                   help="score maps against the data's object boxes; print a table, write JSON")
    p.add_argument("--tolerance", type=float, default=1.0,
                   help="pointing game: pixels a peak may lie outside the box (default 1)")
    p.add_argument("--gradcam", choices=["auto", "always", "never"], default="auto",
                   help="Grad-CAM of the last stage: only for models without spatial attention "
                        "(auto, default), for every model, or never")
    p.add_argument("--target", choices=["predicted", "true"], default="predicted",
                   help="the class Grad-CAM explains (default: the predicted one)")
    p.add_argument("--modules", default="*", metavar="PATTERN",
                   help="draw only maps whose module name matches (shell pattern)")
    p.add_argument("--max-maps", type=int, default=5,
                   help="maps drawn per model (default 5: 'overall' and the deepest modules)")
    p.add_argument("--split-maps", action="store_true",
                   help="multi-map softmax modules: one map each instead of their mean")
    p.add_argument("--crop-ratio", type=float, default=None,
                   help="image files: resize the shorter side and keep this centre share "
                        "(default: as `predict`, the weights' training data decides)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--device", default="cpu",
                   help="where the models run: cpu (default), auto (cuda if available), cuda:N")


def run(args: argparse.Namespace) -> int:
    import torch

    from attncnn.analysis.explain import LocalisationMeter, attention_maps
    from attncnn.data.image_input import ImageInput
    from attncnn.engine.device import resolve_device
    from attncnn.errors import AttncnnError

    device = resolve_device(args.device, what="--device")
    models = _load_models(args, device)
    for m in models:  # how image files become this model's input: as `predict` does it
        m["input"] = ImageInput.for_weights(m["meta"], args.crop_ratio)
    images, labels, boxes, classes, data_name, skipped = _load_inputs(args, models)
    if args.score and boxes is None:
        raise AttncnnError(f"--score needs object boxes; {data_name} has none (try --data digits)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    show = min(args.show, len(images))
    for m in models:
        meter = LocalisationMeter(args.tolerance)
        correct, drawn, preds = 0, [], []
        for start in range(0, len(images), args.batch_size):
            sl = slice(start, start + args.batch_size)
            x = m["input"].normalise(images[sl]).to(device)
            # Grad-CAM explains the predicted class unless told the true one
            target = labels[sl] if args.target == "true" and labels is not None else None
            maps, logits = attention_maps(m["model"], x, target=target,
                                          split_maps=args.split_maps, gradcam_mode=args.gradcam,
                                          overall=True, return_logits=True)
            pred = logits.argmax(1).cpu()
            if labels is not None:
                correct += int((pred == labels[sl]).sum())
            if boxes is not None:
                meter.update(maps, boxes[sl])
            if start < show:
                drawn.append([(a.name, a.map[: show - start].cpu()) for a in _pick(maps, args)])
                preds.append(pred[: show - start])
        m["rows"] = meter.rows()
        m["top1"] = 100.0 * correct / len(images) if labels is not None else None
        if show:
            m["column"] = {"label": m["label"], "classes": m["meta"]["classes"],
                           "names": [name for name, _ in drawn[0]],
                           "maps": [torch.cat([d[i][1] for d in drawn]) for i in range(len(drawn[0]))],
                           "pred": torch.cat(preds).tolist()}

    if show:
        from attncnn.analysis.explain_plot import save_grids

        paths = save_grids(out, images[:show], [m["column"] for m in models],
                           None if labels is None else labels[:show].tolist(),
                           None if boxes is None else boxes[:show], classes, ROWS_PER_PNG)
        for path in paths:
            print(f"wrote {path}")
    if args.score:
        from attncnn.engine.environment import environment, utc_now

        report = {
            "data": data_name, "split": args.split if args.data else None, "num": len(images),
            "seed": args.seed, "tolerance": args.tolerance, "gradcam": args.gradcam,
            "target": args.target,
            "env": environment(device, 1), "created_at": utc_now(),
            "models": [{"label": m["label"], "weights": m["path"], "model": m["meta"].get("model"),
                        "top1": m["top1"], "rows": m["rows"]} for m in models],
        }
        print(format_table(report))
        path = out / "scores.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {path}")
    return 1 if skipped else 0


def _pick(maps, args):
    """The maps to draw: those matching --modules, at most --max-maps: 'overall' and Grad-CAM
    always, the deepest modules in the room left (in forward order)."""
    chosen = [a for a in maps if fnmatch.fnmatchcase(a.name, args.modules)]
    special = [a for a in chosen if a.name in ("overall", "gradcam")]
    modules = [a for a in chosen if a.name not in ("overall", "gradcam")]
    room = max(args.max_maps - len(special), 0)
    return (modules[-room:] if room else []) + special


def _load_models(args, device) -> list[dict]:
    from attncnn.errors import AttncnnError
    from attncnn.inference.weights import create_model_from_weights

    paths = list(args.weights)
    for run_dir in args.run:
        path = Path(run_dir) / "model.safetensors"
        if not path.is_file():
            raise AttncnnError(f"{run_dir}: no model.safetensors in the run directory "
                               "(is the run finished? pass --weights FILE instead)")
        paths.append(str(path))
    if not paths:
        raise AttncnnError("say which model to explain: --weights FILE or --run RUN_DIR")
    for path in paths:
        if not Path(path).is_file():
            raise AttncnnError(f"weights file {path} not found")
    models = []
    for path in paths:
        model, meta = create_model_from_weights(path, device)
        models.append({"path": str(path), "model": model, "meta": meta, "label": meta["model"]})
    labels = [m["label"] for m in models]
    for m in models:  # the same model twice: the file (or run) name tells them apart
        if labels.count(m["label"]) > 1:
            path = Path(m["path"])
            m["label"] = path.parent.name if path.stem == "model" else path.stem
    first = models[0]["meta"]
    for m in models[1:]:
        if list(m["meta"]["input_size"]) != list(first["input_size"]):
            raise AttncnnError(f"{m['path']}: input size {m['meta']['input_size']} differs from "
                               f"{models[0]['path']}'s {first['input_size']}; explain them apart")
    return models


def _load_inputs(args, models: list[dict]):
    """uint8 images [N, 3, H, W] at the models' input size, labels [N] or None, boxes [N, 4] or
    None, class names of the labels, a name for the inputs, and how many inputs were skipped
    (unreadable files and arguments that matched nothing, each named on stderr, as `predict`
    does). Image files are read by `attncnn.data.image_input`, as `predict` reads them."""
    import torch

    from attncnn.data.image_input import collect_images_or_refuse
    from attncnn.errors import AttncnnError

    meta = models[0]["meta"]
    if bool(args.data) == bool(args.images):
        raise AttncnnError("give images (files or folders) or --data NAME, not both or neither")
    if args.data:
        from attncnn.data.config import DataConfig
        from attncnn.data.sources import eval_input, load_split

        # prepared as the weights' training was, where they were trained on this source
        cfg, _ = DataConfig(name=args.data, root=args.data_root).with_input_settings(meta)
        data = eval_input(load_split(cfg, args.split), cfg)
        num = args.num if args.num is not None else (len(data) if args.score else 8)
        if num < 1:
            raise AttncnnError(f"--num must be >= 1, got {num}")
        index = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed))
        data = data.subset(index[:num].sort().values)
        size = tuple(meta["input_size"][1:])
        if tuple(data.images.shape[2:]) != size:
            raise AttncnnError(f"{args.data} images are {tuple(data.images.shape[2:])} px; "
                               f"the model takes {size}")
        return data.images, data.labels, data.boxes, list(data.classes), data.name or args.data, 0
    spec = models[0]["input"]
    for m in models[1:]:  # one picture per image: every model must read files alike
        if m["input"].geometry() != spec.geometry():
            raise AttncnnError(f"{m['path']} takes image files {m['input'].describe()}, "
                               f"{models[0]['path']} {spec.describe()}; explain them apart "
                               "(or set --crop-ratio)")
    found = collect_images_or_refuse(args.images)
    files, decoded = [], []
    for f in found.files:
        try:
            decoded.append(spec.read(f))
        except AttncnnError as err:
            print(f"attncnn: skipped {err}", file=sys.stderr, flush=True)
            continue
        files.append(f)
    if not files:
        raise AttncnnError(f"no readable image among {len(found.files)} file(s) in "
                           f"{' '.join(args.images)}")
    images = torch.stack(decoded)
    classes = list(meta["classes"])
    # A folder per class (ImageNet layout): the parent folder's name is the true class, by
    # the display names the weights' training gave its class folders (data.class_names).
    renamed = ((meta.get("summary") or {}).get("data_input") or {}).get("class_names") or {}
    parents = [renamed.get(Path(f).parent.name, Path(f).parent.name) for f in files]
    labels = None
    if all(p in classes for p in parents):
        labels = torch.tensor([classes.index(p) for p in parents])
    skipped = len(found.files) - len(files) + len(found.missing)
    return images, labels, None, classes, f"{len(files)} image file(s)", skipped


def format_table(report: dict) -> str:
    """The score as a fixed-width table: one row per model and map."""
    wm = max([5] + [len(m["label"]) for m in report["models"]])
    wn = max([3] + [len(r["name"]) for m in report["models"] for r in m["rows"]])
    lines = [f"localisation on {report['data']} ({report['split']}, {report['num']} images; "
             f"pointing tolerance {report['tolerance']:g} px)",
             f"{'model':{wm}s} {'map':{wn}s} {'kind':8s} {'top1':>6s} {'mass':>6s} {'chance':>6s} "
             f"{'hit':>6s} {'chance':>6s}",
             f"{'':{wm}s} {'':{wn}s} {'':8s} {'':>6s} {'in box':>6s} {'mass':>6s} "
             f"{'rate':>6s} {'hit':>6s}"]
    for m in report["models"]:
        top1 = "-" if m["top1"] is None else f"{m['top1']:.1f}"
        for r in m["rows"]:
            lines.append(f"{m['label']:{wm}s} {r['name']:{wn}s} {r['kind']:8s} {top1:>6s} "
                         f"{r['mass']:6.3f} {r['chance']:6.3f} {r['hit']:6.3f} {r['chance_hit']:6.3f}")
    return "\n".join(lines)
