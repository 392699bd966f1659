"""Results files -> runs: what `attncnn report` reads from each results file.

`load_runs` reads results files (docs/results-format.md) into `Run`s; a run's `Setting` is
everything that must be equal for runs to be pooled over seeds (data, split, subset size,
epochs, schedule, batch, lr, model and its arguments, the rest of the recipe). The autocast
precision (`recipe.amp`) is not part of it: like the device, it is how a machine computed
the recipe (a CPU without bf16 units trains in float32 what one with them trains under bf16
autocast), so it is kept per run (`Run.precision`) and named per seed where a setting
mixes precisions, never hidden.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from attncnn.engine.results import SCHEMA  # noqa: F401  (report re-exports it)
from attncnn.errors import AttncnnError


_SETTING_KEYS = ("epochs", "batch_size", "schedule", "lr")  # Setting's own fields
_PER_RUN_KEYS = ("amp",)  # recorded per run (Run.precision), not pooled on


@dataclass(frozen=True)
class Setting:
    """What must be equal for runs to be pooled (everything but the seed, the device and the
    autocast precision, which the report names per run)."""

    data_name: str
    eval_split: str
    num_train: int | None
    num_eval: int | None
    epochs: int | None
    schedule: str
    batch_size: int | None
    lr: float | None
    model: str
    model_args: str  # canonical JSON, so two settings compare as equal strings
    recipe_rest: str = "{}"  # the rest of the recipe (decay, smoothing, TTA...), JSON

    def describe(self) -> str:
        def count(n):
            return f"{n:,}" if isinstance(n, int) else "?"

        args = json.loads(self.model_args)
        shown = {k: v for k, v in args.items() if k in ("attention", "attention_placement",
                                                        "attention_options", "num_classes")}
        rest = json.loads(self.recipe_rest)
        extras = "".join(text for key, text in (
            ("weight_decay", f", weight decay {rest.get('weight_decay')}"),
            ("label_smoothing", f", label smoothing {rest.get('label_smoothing')}"),
            ("eval_flip", ", flip test-time augmentation"),
            ("eval_translate", f", shifted copies ({rest.get('eval_translate')} px) at test time"))
            if rest.get(key))
        return (f"{self.data_name}, eval split `{self.eval_split}` ({count(self.num_eval)} images), "
                f"trained on {count(self.num_train)} images, {self.epochs} epoch{'s' * (self.epochs != 1)}, "
                f"{self.schedule} schedule, batch {self.batch_size}, lr {self.lr}{extras}; "
                f"model `{self.model}` {json.dumps(shown, sort_keys=True)}")

    def recipe_key(self) -> tuple:
        """Everything but the model: two rows are compared seed by seed only when their
        data, split, subset sizes, epochs and recipe agree."""
        return (self.data_name, self.eval_split, self.num_train, self.num_eval, self.epochs,
                self.schedule, self.batch_size, self.lr, self.recipe_rest)


@dataclass
class Run:
    """One results file, reduced to what the report needs."""

    path: str
    run_name: str
    tables: tuple[str, ...]
    row: str
    dataset: str
    setting: Setting
    seed: int | None
    top1: float | None          # final epoch's top-1 on the eval split (not the best epoch)
    finished: bool
    device: str
    precision: str | None       # "bf16 autocast" or "float32" (recipe.amp); None: not recorded
    weights: str | None         # the published (repository) weights file, if any
    commit: str                 # git commit the run trained at ("+dirty": uncommitted changes)
    wall_time_s: float | None = None  # the run's wall time, start to finish (results-format)
    wall_time_floor: bool = False     # wall_time_s is a lower bound (see `wall_time`)
    check_top1: float | None = None   # top-1 of the published (float16) weights, re-checked
    history: list[dict] = field(default_factory=list)
    identity: tuple = ()        # the same run found twice (runs/ and results/) counts once


def _tag_list(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(str(v) for v in value)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "unknown"


def machine(env: dict) -> str:
    """The machine a run's minutes belong to, from its `env` record. Two CPUs of one marketing
    name can differ 10x for bf16 autocast (an AVX2 EPYC against an AVX512-BF16 one), so where
    the record says whether the CPU computes bf16 in hardware (`cpu_bf16`), the label does too;
    the report compares wall times only between runs of one label."""
    device = str(env.get("device", "?"))
    details = [str(env["device_name"])] if env.get("device_name") else []
    if device.startswith("cpu") and isinstance(env.get("cpu_bf16"), bool):
        details.append("bf16 in hardware" if env["cpu_bf16"] else "no bf16 in hardware")
    return f"{device} ({'; '.join(details)})" if details else device


def precision(recipe: dict) -> str | None:
    """The precision a run trained in, from its recipe's `amp` (None where not recorded)."""
    amp = recipe.get("amp")
    if not isinstance(amp, bool):
        return None
    return "bf16 autocast" if amp else "float32"


def parse_run(path: Path, doc: dict, dataset_ids: dict[str, str]) -> Run:
    """A results document -> Run; `dataset_ids` maps data display names to column ids."""
    data, recipe, env = doc.get("data", {}), dict(doc.get("recipe", {})), doc.get("env", {})
    if "eval_flip" not in recipe:   # recorded in the recipe since after 5ec7441; the config
        # has always said (absent there too: no flip TTA, it came later still)
        recipe["eval_flip"] = bool(((doc.get("config") or {}).get("data") or {}).get("eval_flip"))
    tags = doc.get("tags") or {}
    model = str(doc.get("model", "?"))
    model_args = doc.get("model_args") or {}
    data_name = str(data.get("name") or data.get("source") or "?")
    epochs = recipe.get("epochs")
    completed = doc.get("epochs_completed")
    status = doc.get("status", "finished")
    finished = status == "finished" and (epochs is None or completed is None or completed >= epochs)
    final = doc.get("final") or {}
    device = machine(env)
    row = str(tags.get("row") or model)
    if not tags.get("row") and model_args.get("attention") and model_args.get("attention_placement"):
        row += f" ({model_args['attention_placement']})"
    setting = Setting(
        data_name=data_name, eval_split=split_label(data),
        num_train=data.get("num_train"), num_eval=data.get("num_eval"), epochs=epochs,
        schedule=str(recipe.get("schedule", "?")), batch_size=recipe.get("batch_size"),
        lr=recipe.get("lr"), model=model, model_args=json.dumps(model_args, sort_keys=True),
        recipe_rest=json.dumps({k: v for k, v in recipe.items()
                                if k not in _SETTING_KEYS + _PER_RUN_KEYS}, sort_keys=True),
    )
    wall, floor = wall_time(doc)
    return Run(
        path=str(path), run_name=str(doc.get("run_name", path.stem)),
        tables=_tag_list(tags.get("table")) or ("untagged",), row=row,
        dataset=str(tags.get("dataset") or dataset_ids.get(data_name) or slug(data_name)),
        setting=setting, seed=doc.get("seed"),
        top1=final.get("top1") if isinstance(final.get("top1"), (int, float)) else None,
        finished=finished, device=device, precision=precision(recipe),
        weights=_published_weights(doc),
        check_top1=_number((doc.get("published_check") or {}).get("top1")),
        commit=_commit(env),
        wall_time_s=wall, wall_time_floor=floor,
        history=list(doc.get("history") or []),
        identity=(doc.get("run_name"), doc.get("seed"), doc.get("started_at"), doc.get("finished_at")),
    )


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _published_weights(doc: dict) -> str | None:
    """The weights file published with the run (`attncnn publish`), not the run directory's
    copy, which lives outside the repository."""
    value = doc.get("published_weights")
    if not isinstance(value, str) or not value.strip():
        return None
    return value


def _commit(env: dict) -> str:
    commit = str(env.get("git_commit") or "unknown")[:7]
    return commit + ("+dirty" if env.get("git_dirty") else "")


def find_result_files(paths: list[str | Path]) -> list[Path]:
    """Files named, plus every *.json below each directory named (sorted, no repeats)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(p.rglob("*.json")))
        elif p.is_file():
            found.append(p)
        else:
            raise AttncnnError(f"results path {p} does not exist")
    return list(dict.fromkeys(found))


def load_runs(paths: list[str | Path], dataset_ids: dict[str, str] | None = None
              ) -> tuple[list[Run], list[str]]:
    """(runs, skipped): JSON files of another schema are skipped and named, not fatal."""
    runs, skipped, seen = [], [], set()
    for path in find_result_files(paths):
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise AttncnnError(f"{path}: not a readable JSON results file ({err})") from None
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            skipped.append(f"{path} (not {SCHEMA})")
            continue
        if doc.get("kind", "train") != "train":  # `attncnn eval` records (RUN/eval-<split>/)
            skipped.append(f"{path} (an {doc['kind']} record, not a training run)")
            continue
        run = parse_run(path, doc, dataset_ids or {})
        if run.identity in seen and run.identity[2] is not None:
            skipped.append(f"{path} (duplicate of a run already read)")
            continue
        seen.add(run.identity)
        runs.append(run)
    return runs, skipped


def split_label(data: dict) -> str:
    """The eval split as a reader needs it: "test", or "val (10% held out of train)" where
    the run held a share of train out (a folder may also have a split of its own named val)."""
    split = str(data.get("eval_split", "?"))
    held = data.get("val_fraction") or 0
    if split == "val" and held > 0:
        return f"val ({held:.0%} held out of train)"
    return split


def wall_time(doc: dict) -> tuple[float | None, bool]:
    """(seconds, is a lower bound) of a results record's run. Records from before attncnn
    kept the time of earlier sessions (no "sessions" key) hold only the last session's
    time when the run was resumed: where its epochs' own times add up to more, their sum
    is the better figure, and a lower bound (it leaves out start-up and evaluation)."""
    recorded = _number(doc.get("wall_time_s"))
    if "sessions" in doc:
        return recorded, False
    epochs = [_number(h.get("epoch_time_s")) for h in doc.get("history") or []
              if isinstance(h, dict)]
    summed = sum(e for e in epochs if e is not None)
    if recorded is not None and summed > recorded:
        return summed, True
    return recorded, False
