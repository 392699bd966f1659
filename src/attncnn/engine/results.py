"""The results file of a run (`<run_dir>/results.json`, format in docs/results-format.md)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from attncnn.engine.config import Config, config_to_dict
from attncnn.files import atomic_target

SCHEMA = "attncnn.result/1"


def recipe(cfg: Config, amp: bool) -> dict:
    """The training recipe as results.json states it. Settings added after the first
    results were published appear only where they differ from their default, so a run with
    the default stays comparable with (and pooled in the report beside) the earlier ones."""
    o, s = cfg.optim, cfg.schedule
    later = {"norm_bias_lr_scale": (o.norm_bias_lr_scale, 1.0), "lookahead": (o.lookahead, False),
             "warmup_start": (s.warmup_start, 0.0), "end_factor": (s.end_factor, 0.0),
             "pad_mode": (cfg.data.pad_mode, "zeros"),
             "eval_translate": (cfg.data.eval_translate, 0),
             "whiten_images": (cfg.model.whiten_images, 0),
             "whiten_bias_epochs": (cfg.model.whiten_bias_epochs, 0.0)}
    extra = {k: value for k, (value, default) in later.items() if value != default}
    return {"epochs": s.epochs, "batch_size": cfg.data.batch_size, "optimizer": o.name,
            "lr": o.lr, "momentum": o.momentum, "nesterov": o.nesterov,
            "weight_decay": o.weight_decay, "no_decay_norm_bias": o.no_decay_norm_bias,
            "schedule": s.name, "milestones": list(s.milestones), "gamma": s.gamma,
            "warmup_epochs": s.warmup_epochs, "label_smoothing": o.label_smoothing, "amp": amp,
            "eval_flip": cfg.data.eval_flip, **extra}


def results_record(*, cfg: Config, run_name: str, model, params: int, macs: int, data: dict,
                   amp: bool, status: str, history: list[dict], final: dict | None,
                   best: dict | None, env: dict, started_at: str, finished_at: str,
                   wall_time_s: float | None, weights: str | None, error: str | None = None,
                   sessions: int = 1) -> dict:
    record = {
        "schema": SCHEMA,
        "run_name": run_name,
        "model": model.model_name,
        "model_args": _plain(model.model_args),
        "params": params,
        "macs": macs,
        "data": data,
        "recipe": recipe(cfg, amp),
        "seed": cfg.run.seed,
        "tags": dict(cfg.run.tags),
        "status": status,
        "epochs_completed": len(history),
        "final": final,
        "best": best,
        "history": history,
        "env": env,
        "started_at": started_at,
        "finished_at": finished_at,
        "wall_time_s": None if wall_time_s is None else round(wall_time_s, 3),
        "sessions": sessions,
        "weights": weights,
        "config": config_to_dict(cfg),
    }
    if error:
        record["error"] = error
    return record


def write_json_atomic(obj, path: str | Path) -> None:
    with atomic_target(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
