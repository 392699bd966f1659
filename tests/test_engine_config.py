"""Run configs: YAML with `base:`, `--set` overrides, unknown keys and bad types refused."""
from pathlib import Path

import pytest
import torch
import yaml

from attncnn.engine.config import (Config, config_from_dict, config_to_dict, dump_config,
                                   load_config)
from attncnn.errors import AttncnnError
from attncnn.models import create_model

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
# class counts of the sources whose data is not needed to build the model
NUM_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100, "imagenet": 1000}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_and_typed_sections():
    cfg = load_config(None)
    assert isinstance(cfg, Config)
    assert cfg.optim.lr == 0.1 and cfg.schedule.milestones == [100, 150]
    assert cfg.data.batch_size == 128 and cfg.run.amp == "auto"


def test_base_is_merged_and_the_child_wins(tmp_path):
    write(tmp_path / "base" / "b.yaml", "optim: {lr: 0.1, momentum: 0.8}\n"
          "run: {tags: {table: t1}}\nschedule: {epochs: 10}\n")
    child = write(tmp_path / "exp" / "c.yaml", "base: ../base/b.yaml\noptim: {lr: 0.02}\n"
                  "run: {tags: {row: r2}}\n")
    cfg = load_config(child)
    assert cfg.optim.lr == 0.02 and cfg.optim.momentum == 0.8 and cfg.schedule.epochs == 10
    assert cfg.run.tags == {"table": "t1", "row": "r2"}


def test_base_loop_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(AttncnnError, match="loop"):
        load_config(tmp_path / "a.yaml")


def test_overrides_are_parsed_as_yaml():
    cfg = load_config(None, ["optim.lr=0.05", "schedule.milestones=[3, 6]",
                             "model.args={attention_placement: block}", "run.name=null",
                             "run.amp=false", "optim.weight_decay=1"])
    assert cfg.optim.lr == 0.05 and cfg.schedule.milestones == [3, 6]
    assert cfg.model.args == {"attention_placement": "block"}
    assert cfg.run.name is None and cfg.run.amp is False
    assert cfg.optim.weight_decay == 1.0 and isinstance(cfg.optim.weight_decay, float)


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=0.1", "unknown key 'optim.lrr'; did you mean 'optim.lr'"),
    ("optimm.lr=0.1", "unknown key 'optimm'; did you mean 'optim'"),
    ("lr=0.1", "did you mean 'optim.lr'"),
])
def test_unknown_keys_get_a_suggestion(override, message):
    with pytest.raises(AttncnnError, match=message.replace("(", r"\(")) as err:
        load_config(None, [override])
    assert "\n" not in str(err.value)


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    path = write(tmp_path / "x.yaml", "schedule:\n  milestone: [1]\n")
    with pytest.raises(AttncnnError, match=r"x\.yaml: unknown key 'schedule.milestone'; "
                                           r"did you mean 'schedule.milestones'"):
        load_config(path)


@pytest.mark.parametrize("override, message", [
    ("optim.lr=fast", "optim.lr must be a number, got 'fast'"),
    ("schedule.epochs=2.5", "schedule.epochs must be an integer"),
    ("schedule.epochs=true", "schedule.epochs must be an integer"),
    ("optim.nesterov=1", "optim.nesterov must be true/false"),
    ("schedule.milestones=[1, x]", "schedule.milestones must be list"),
    ("run.amp=maybe", "run.amp must be auto, true or false"),
    ("run.compile_mode=reduce_overhead", "run.compile_mode must be one of default, "
                                         "reduce-overhead"),
    ("schedule.name=linaer", "schedule.name must be 'step', 'cosine' or 'linear'"),
    ("data.batch_size=0", "data.batch_size must be >= 1"),
    ("optim.lr=-1", "optim.lr must be > 0"),
    ("model.args={num_classes: 5}", "model.args.num_classes is set from the data's classes"),
    ("data.train_subset=1.5", "data.train_subset must be a count (an integer >= 1) or a "
                              "fraction in (0, 1], got 1.5"),
    ("data.train_subset=0", "data.train_subset must be a count"),
    ("data.train_subset=-3", "data.train_subset must be a count"),
])
def test_bad_values_are_one_line_errors(override, message):
    with pytest.raises(AttncnnError) as err:
        load_config(None, [override])
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("override, message", [
    ("model.args={attention: softmx}",
     "model.args: unknown attention kind 'softmx'; did you mean 'softmax'?"),
    ("model.args={depthh: 8}",
     "model.args: attn_resnet20_cifar: bad model argument 'depthh'; did you mean 'depth'?"),
    ("model.args={attention_placement: blok}",
     "unknown attention_placement 'blok'; did you mean 'block'?"),
    ("model.args={attention_options: {num_map: 2}}",
     "attention 'softmax': unknown option 'num_map'; did you mean 'num_maps'?"),
    ("model.args={depth: 7}", "depth must be 6n+2"),
    ("model.args={widths: 3}", "widths"),
])
def test_model_args_are_checked_at_load_with_a_suggestion(override, message):
    """The model is built on the meta device at load, so a typo in model.args is one line
    naming the config, with the closest argument, before anything runs."""
    with pytest.raises(AttncnnError) as err:
        load_config(None, [override])
    assert str(err.value).startswith("defaults: model.args")
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["..", "../elsewhere", "a/../../b", "/tmp/abs", "a\\b", ".", ""])
def test_a_run_name_that_would_leave_out_dir_is_refused_at_load(name):
    with pytest.raises(AttncnnError, match="run.name must be a plain directory name") as err:
        config_from_dict({"run": {"name": name}})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("overrides, message", [
    (["data.label_mode=corse"], "data.label_mode must be one of fine, coarse, got 'corse'; "
                                "did you mean 'coarse'?"),
    (["data.eval_split=tset"], "data.eval_split must be one of train, test, val, got 'tset'; "
                               "did you mean 'test'?"),
    (["data.name=cifar10", "data.eval_split=validation"], "data.eval_split must be one of "
                                                          "train, test, val, got 'validation'"),
    (["data.train_split=tran"], "data.train_split must be one of train, test, got 'tran'"),
])
def test_unknown_label_mode_or_split_is_refused_at_load_with_the_choices(overrides, message):
    with pytest.raises(AttncnnError) as err:
        load_config(None, overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_each_section_validates_itself():
    """The checks live on the sections: a DataConfig built in code (eval, benchmarks) is
    checked by the same rule as one read from a file."""
    from attncnn.data.config import DataConfig
    from attncnn.engine.config import OptimConfig, RunConfig, ScheduleConfig

    DataConfig().validate("x")
    for section, message in [
        (DataConfig(batch_size=0), "x: data.batch_size must be >= 1, got 0"),
        (DataConfig(name="cifar10", eval_split="tset"), "x: data.eval_split must be one of "
                                                        "train, test, val, got 'tset'; did you mean 'test'?"),
        (DataConfig(seed=2**32), "x: data.seed must be in [0, 2**32)"),
        (OptimConfig(lr=float("nan")), "x: optim.lr must be > 0 and finite"),
        (ScheduleConfig(milestones=[150, 100]), "x: schedule.milestones must be increasing"),
        (RunConfig(seed=-1), "x: run.seed must be in [0, 2**32)"),
    ]:
        with pytest.raises(AttncnnError) as err:
            section.validate("x")
        assert str(err.value).startswith(message)


def test_train_subset_is_a_count_or_a_fraction():
    assert load_config(None, ["data.train_subset=5000"]).data.train_subset == 5000
    assert load_config(None, ["data.train_subset=0.1"]).data.train_subset == 0.1
    assert load_config(None, []).data.train_subset is None
    with pytest.raises(AttncnnError, match="not supported for 'imagenet'"):
        load_config(None, ["data.name=imagenet", "data.train_subset=100"])


def test_a_folder_source_takes_any_split_name():
    cfg = load_config(None, ["data.name=folder", "data.eval_split=validation"])
    assert cfg.data.eval_split == "validation"


def test_a_relative_data_root_is_looked_up_from_the_cwd_then_beside_its_config(tmp_path,
                                                                               monkeypatch):
    project = tmp_path / "project"
    (project / "data" / "imgs").mkdir(parents=True)
    (project / "configs" / "data" / "imgs").mkdir(parents=True)  # beside the config too
    config = write(project / "configs" / "x.yaml", "data: {name: folder, root: data/imgs}\n")
    monkeypatch.chdir(project)  # from the current directory first (the repo's configs' way)
    assert load_config(config).data.root == str(project / "data" / "imgs")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not there: beside the config file
    cfg = load_config(config, check_data_root=True)
    assert cfg.data.root == str(project / "configs" / "data" / "imgs")
    # stored absolute, so the run's saved config.yaml reads the same data from anywhere
    saved = write(tmp_path / "run" / "config.yaml", dump_config(cfg))
    monkeypatch.chdir(tmp_path)
    assert load_config(saved, check_data_root=True).data.root == cfg.data.root


def test_a_data_root_set_in_a_base_is_looked_up_beside_the_base(tmp_path, monkeypatch):
    (tmp_path / "base" / "imgs").mkdir(parents=True)
    write(tmp_path / "base" / "b.yaml", "data: {name: folder, root: imgs}\n")
    child = write(tmp_path / "exp" / "c.yaml", "base: ../base/b.yaml\ndata: {batch_size: 8}\n")
    monkeypatch.chdir(tmp_path / "exp")
    assert load_config(child).data.root == str(tmp_path / "base" / "imgs")
    # an override is relative to the current directory only
    (tmp_path / "exp" / "other").mkdir()
    assert load_config(child, ["data.root=other"]).data.root == str(tmp_path / "exp" / "other")


def test_a_data_root_found_nowhere_names_both_places_in_one_line(tmp_path, monkeypatch, capsys):
    from attncnn.cli import main

    config = write(tmp_path / "repo" / "configs" / "cpu" / "x.yaml",
                   "data: {name: folder, root: ../shared/data/x.tar.gz}\n")
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    message = (f"{config}: data.root '../shared/data/x.tar.gz' not found; looked in "
               f"{tmp_path / 'shared/data/x.tar.gz'} (from the current directory) and "
               f"{tmp_path / 'repo/configs/shared/data/x.tar.gz'} (beside {config})")
    with pytest.raises(AttncnnError) as err:
        load_config(config, check_data_root=True)
    assert str(err.value) == message
    assert load_config(config).data.root == "../shared/data/x.tar.gz"  # unchecked: as given
    assert main(["train", "-c", str(config), "--out-dir", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"attncnn: error: {message}"]
    assert main(["train", str(config), "--out-dir", str(tmp_path / "runs")]) == 2  # positional
    assert capsys.readouterr().err.strip().splitlines() == [f"attncnn: error: {message}"]
    assert main(["train", str(config), "-c", "other.yaml"]) == 2
    assert "two configs given" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    # CIFAR with download: true may name the archive it is about to fetch
    load_config(None, ["data.name=cifar10", "data.root=nope/c.tar.gz", "data.download=true"],
                check_data_root=True)


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(AttncnnError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(AttncnnError, match="invalid YAML"):
        load_config(write(tmp_path / "bad.yaml", "optim: [lr: 1\n"))
    with pytest.raises(AttncnnError, match="must look like section.key=value"):
        load_config(None, ["optim.lr"])


def test_dump_round_trips(tmp_path):
    cfg = load_config(None, ["model.args={widths: [4, 8, 8]}", "run.tags={a: 1}"])
    again = load_config(write(tmp_path / "c.yaml", dump_config(cfg)))
    assert again == cfg
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(config_to_dict(cfg)))) == cfg


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT)) for p in CONFIGS])
def test_every_shipped_config_loads_and_builds_its_model(path):
    cfg = load_config(path)
    classes = NUM_CLASSES.get(cfg.data.name)
    if cfg.data.name == "cifar100" and cfg.data.label_mode == "coarse":
        classes = 20
    with torch.device("meta"):  # shapes only
        model = create_model(cfg.model.name, num_classes=classes, **cfg.model.args)
    assert model.model_name == cfg.model.name


def test_shipped_base_recipes_match_the_paper():
    paper = load_config(ROOT / "configs/base/cifar_paper.yaml")
    assert (paper.data.batch_size, paper.schedule.epochs, paper.optim.lr) == (128, 200, 0.1)
    assert paper.schedule.milestones == [100, 150] and paper.optim.weight_decay == 1e-4
    cosine = load_config(ROOT / "configs/base/cifar_cosine.yaml")
    assert cosine.schedule.name == "cosine" and cosine.schedule.epochs == 200
    imagenet = load_config(ROOT / "configs/base/imagenet_paper.yaml")
    assert (imagenet.data.batch_size, imagenet.schedule.epochs) == (256, 90)
    assert imagenet.schedule.milestones == [30, 60]
