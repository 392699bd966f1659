"""configs/: every table row's YAML loads with the engine's own loader and names a registered
model that builds with the args it gives, carries the tags the report places it by, and the
paper recipes are exact (as loaded: `base:` chains merged, defaults filled in).
"""
import json
from functools import lru_cache
from pathlib import Path

import pytest
import torch

from attncnn.analysis.report import load_paper
from attncnn.engine.config import config_to_dict, load_config
from attncnn.models import create_model, list_models

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ALL = sorted(CONFIGS.rglob("*.yaml"))
# table rows: not the bases, the quickstart, or the worked examples (configs/finetune/)
ROWS = [p for p in ALL if p.parent.name not in ("base", "finetune") and p.name != "quickstart.yaml"]


@lru_cache(maxsize=None)
def resolve(path: Path) -> dict:
    """The config as `attncnn train` loads it (unknown keys and bad values are errors), as a
    plain dict."""
    return config_to_dict(load_config(path))


@lru_cache(maxsize=None)
def built(name: str, args_json: str) -> dict:
    """The model args of `name` built with `args` on the meta device (shapes only: a
    ResNet-50 in milliseconds); cached because many configs share a model."""
    with torch.device("meta"):
        return create_model(name, **json.loads(args_json)).model_args


def tables_of(cfg: dict) -> list[str]:
    t = cfg["run"]["tags"]["table"]
    return [t] if isinstance(t, str) else list(t)


@pytest.mark.parametrize("path", ALL, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_loads_and_the_model_builds_with_its_args(path):
    cfg = resolve(path)
    name = cfg["model"]["name"]
    assert name in list_models()
    args = cfg["model"]["args"]
    # `pretrained` says where the initial weights come from; it is not an architecture arg
    arch = {k: v for k, v in args.items() if k != "pretrained"}
    assert built(name, json.dumps(arch, sort_keys=True)).items() >= arch.items()


def test_official_cifar_configs_read_the_official_source():
    """Explicit `root: null`: a base that defaults to the JPEG copy must not leak in."""
    for folder, source in [("cifar10", "cifar10"), ("cifar100", "cifar100")]:
        for path in sorted((CONFIGS / folder).glob("*.yaml")):
            data = resolve(path)["data"]
            assert (data["name"], data["root"], data.get("display_name")) == (source, None, None)


def test_every_row_config_is_placed_in_a_report_table():
    paper = load_paper()
    layout = {t["id"]: t for t in paper["tables"]}
    for path in ROWS:
        cfg = resolve(path)
        tags = cfg["run"]["tags"]
        for tid in tables_of(cfg):
            spec = layout[tid]
            row = next(r for r in spec["rows"] if r["id"] == tags["row"])
            assert tags["dataset"] in row.get("datasets", spec["datasets"]), path


def test_every_cell_of_the_paper_tables_has_a_config():
    placed = set()
    for path in ROWS:
        cfg = resolve(path)
        placed |= {(t, cfg["run"]["tags"]["row"], cfg["run"]["tags"]["dataset"]) for t in tables_of(cfg)}
    for spec in load_paper()["tables"]:
        for row in spec["rows"]:
            for ds in row.get("datasets", spec["datasets"]):
                assert (spec["id"], row["id"], ds) in placed


def test_runs_of_different_configs_land_in_different_directories():
    dirs = [resolve(p)["run"]["out_dir"] for p in ROWS]
    assert len(dirs) == len(set(dirs))


@pytest.mark.parametrize("folder", ["cifar10", "cifar10_jpeg", "cifar100", "ablation"])
def test_cifar_paper_recipe_is_exact(folder):
    for path in sorted((CONFIGS / folder).glob("*.yaml")):
        if path.stem.endswith("_cosine"):
            continue
        cfg = resolve(path)
        assert cfg["data"]["batch_size"] == 128
        assert cfg["optim"] == {**cfg["optim"], "name": "sgd", "lr": 0.1, "momentum": 0.9,
                                "weight_decay": 1e-4, "nesterov": False}
        assert cfg["schedule"] == {**cfg["schedule"], "name": "step", "epochs": 200,
                                   "milestones": [100, 150], "gamma": 0.1, "warmup_epochs": 0}


def test_imagenet_paper_recipe_and_cosine_variants():
    for path in sorted((CONFIGS / "imagenet").glob("*.yaml")):
        cfg = resolve(path)
        assert (cfg["data"]["batch_size"], cfg["schedule"]["epochs"], cfg["optim"]["lr"]) == (256, 90, 0.1)
        if path.stem.endswith("_cosine"):
            assert cfg["schedule"]["name"] == "cosine" and tables_of(cfg) == ["cosine"]
        else:
            assert cfg["schedule"]["milestones"] == [30, 60] and cfg["schedule"]["name"] == "step"
    for path in sorted(CONFIGS.glob("cifar*/*_cosine.yaml")):
        cfg = resolve(path)
        assert (cfg["schedule"]["name"], cfg["schedule"]["epochs"]) == ("cosine", 200)


def test_jpeg_configs_name_the_shared_copy():
    for path in sorted((CONFIGS / "cifar10_jpeg").glob("*.yaml")) + sorted((CONFIGS / "cpu_short").glob("*.yaml")):
        data = resolve(path)["data"]  # the root is made absolute where the copy is present
        assert (data["name"], data["display_name"]) == ("folder", "CIFAR-10 (JPEG q75 copy)")
        assert Path(data["root"]).parts[-3:] == ("shared", "data", "cifar10-jpeg.tar.gz")


def test_cpu_short_set_covers_every_attention_kind_at_one_budget():
    cfgs = [resolve(p) for p in sorted((CONFIGS / "cpu_short").glob("*.yaml"))]
    kinds = {built(c["model"]["name"], "{}")["attention"] for c in cfgs}
    assert kinds == {None, "se", "cbam", "softmax"}
    budgets = {(c["schedule"]["epochs"], c["data"]["val_fraction"], c["data"]["batch_size"]) for c in cfgs}
    assert len(budgets) == 1 and next(iter(budgets))[0] <= 10
