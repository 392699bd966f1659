"""`attncnn publish`: a finished run's results and float16 weights land in the repository,
named by model, data and seed, and the report then points at them."""
import json
from pathlib import Path

import pytest
import torch

from attncnn import AttncnnError
from attncnn.analysis.publish import publish_run
from attncnn.cli import main
from attncnn.engine.train import train
from attncnn.inference.weights import read_weights_metadata
from engine_toy import one_thread, toy_config  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tmp = tmp_path_factory.mktemp("runs")
        cfg = toy_config(tmp, schedule={"epochs": 1, "milestones": []},
                         run={"tags": {"dataset": "toy_set"}})
        train(cfg, quiet=True)
    finally:
        torch.set_num_threads(before)
    return tmp / "toy"


def test_publish_writes_named_results_and_float16_weights(run_dir, tmp_path):
    record = publish_run(run_dir, tmp_path / "results", tmp_path / "weights")
    stem = "attn_resnet20_cifar-toyset-s0"
    published = json.loads((tmp_path / "results" / f"{stem}.json").read_text())
    assert published == record
    assert published["published_weights"] == (tmp_path / "weights" / f"{stem}.safetensors").as_posix()
    assert published["final"] == json.loads((run_dir / "results.json").read_text())["final"]
    meta = read_weights_metadata(published["published_weights"])
    assert meta["dtype"] == "float16" and meta["model"] == "attn_resnet20_cifar"


def test_publish_check_re_evaluates_the_published_copy(run_dir, tmp_path, one_thread):  # noqa: F811
    record = publish_run(run_dir, tmp_path, tmp_path, check=True, dtype="float32")
    check = record["published_check"]
    assert check["split"] == "test" and check["run_top1"] == record["final"]["top1"]
    # float32 weights are the run's own: the same figure exactly
    assert check["top1"] == pytest.approx(record["final"]["top1"], abs=1e-9)


def test_published_names_tell_rows_of_one_model_apart():
    from attncnn.analysis.publish import published_stem

    base = {"model": "attn_resnet20_cifar", "seed": 2, "data": {"source": "folder"}}
    assert published_stem(base) == "attn_resnet20_cifar-folder-s2"
    end = base | {"tags": {"row": "attn_resnet8_end", "dataset": "cifar10_jpeg"}}
    block = base | {"tags": {"row": "attn_resnet8_block", "dataset": "cifar10_jpeg"}}
    assert published_stem(end) == "attn_resnet8_end-cifar10jpeg-s2" != published_stem(block)
    assert "/" not in published_stem(base | {"tags": {"row": "../x"}})


def test_publish_refuses_another_runs_file_and_unfinished_runs(run_dir, tmp_path):
    publish_run(run_dir, tmp_path, tmp_path)
    publish_run(run_dir, tmp_path, tmp_path)  # the same run again: replaced, no error
    target = next(tmp_path.glob("*.json"))
    other = json.loads(target.read_text()) | {"started_at": "2020-01-01T00:00:00Z"}
    target.write_text(json.dumps(other))
    with pytest.raises(AttncnnError, match="another run"):
        publish_run(run_dir, tmp_path, tmp_path)
    publish_run(run_dir, tmp_path, tmp_path, overwrite=True)

    stopped = tmp_path / "stopped"
    stopped.mkdir()
    doc = json.loads((run_dir / "results.json").read_text()) | {"status": "stopped"}
    (stopped / "results.json").write_text(json.dumps(doc))
    (stopped / "model.safetensors").write_bytes((run_dir / "model.safetensors").read_bytes())
    with pytest.raises(AttncnnError, match="has not finished"):
        publish_run(stopped, tmp_path / "r", tmp_path / "w")
    assert publish_run(stopped, tmp_path / "r", tmp_path / "w", allow_unfinished=True)


@pytest.mark.parametrize("make, message", [
    (lambda d: None, "does not exist"),
    (lambda d: d.mkdir(), "no results.json"),
    (lambda d: (d.mkdir(), (d / "results.json").write_text("{")), "not readable JSON"),
    (lambda d: (d.mkdir(), (d / "results.json").write_text('{"schema": "attncnn.result/1"}')),
     "no model.safetensors"),
])
def test_publish_bad_run_directory_is_one_line_exit_2(tmp_path, capsys, make, message):
    make(tmp_path / "run")
    assert main(["publish", str(tmp_path / "run"), "--results", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_cli_publish_prints_the_published_path(run_dir, tmp_path, capsys):
    assert main(["publish", str(run_dir), "--results", str(tmp_path), "--weights",
                 str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "attn_resnet20_cifar-toyset-s0.safetensors" in out and Path(out.split("-> ")[1].strip()).is_file()


def test_publish_tags_place_the_run_elsewhere_and_keep_what_they_replaced(run_dir, tmp_path, capsys):
    assert main(["publish", str(run_dir), "--results", str(tmp_path), "--weights", str(tmp_path),
                 "--tag", "table=val_frontier", "--tag", "row=toy_e1"]) == 0
    published = json.loads((tmp_path / "toy_e1-toyset-s0.json").read_text())
    assert published["tags"]["table"] == "val_frontier" and published["tags"]["row"] == "toy_e1"
    assert published["tags"]["dataset"] == "toy_set"        # untouched tags stay
    assert published["published_tags_override"] == {"table": None, "row": None}
    assert (tmp_path / "toy_e1-toyset-s0.safetensors").is_file()
    assert json.loads((run_dir / "results.json").read_text())["tags"] == {"dataset": "toy_set"}
    assert main(["publish", str(run_dir), "--results", str(tmp_path), "--tag", "row"]) == 2
    err = capsys.readouterr().err.strip()
    assert "expected KEY=VALUE" in err and "\n" not in err


def test_published_weights_are_named_from_the_checkout_root(run_dir, tmp_path):
    """Absolute --results/--weights (as a sweep running elsewhere passes them) still give a
    name that means the same on every clone: relative to the checkout holding the file."""
    repo = tmp_path / "clone"
    (repo / ".git").mkdir(parents=True)
    record = publish_run(run_dir, (repo / "results" / "t").resolve(),
                         (repo / "results" / "weights").resolve())
    assert record["published_weights"] == "results/weights/attn_resnet20_cifar-toyset-s0.safetensors"
    outside = publish_run(run_dir, tmp_path / "r", tmp_path / "w")   # no checkout: as given
    assert outside["published_weights"] == (tmp_path / "w" / "attn_resnet20_cifar-toyset-s0.safetensors").as_posix()


@pytest.fixture
def published(run_dir, tmp_path, one_thread):  # noqa: F811
    """A run published with --check into a checkout: (results file, its record)."""
    repo = tmp_path / "clone"
    (repo / ".git").mkdir(parents=True)
    record = publish_run(run_dir, repo / "results" / "t", repo / "results" / "weights", check=True)
    return repo / "results" / "t" / "attn_resnet20_cifar-toyset-s0.json", record


def test_eval_results_reproduces_a_published_figure(published, tmp_path, capsys):
    path, record = published
    assert main(["eval", "--results", str(path), "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    assert "reproduces the published figure (0 images apart)" in out
    again = json.loads((tmp_path / "e" / "results.json").read_text())
    assert again["recheck"]["top1"] == record["published_check"]["top1"]
    assert again["recheck"]["same_weights"] and again["data"]["split"] == "test"


def test_eval_results_says_when_a_figure_does_not_reproduce(published, tmp_path, capsys):
    path, record = published
    record["published_check"]["top1"] += 25.0   # 25% of the toy test split's images
    path.write_text(json.dumps(record))
    assert main(["eval", "--results", str(path), "--out", str(tmp_path / "e")]) == 1
    out = capsys.readouterr().out
    assert "does NOT reproduce the published figure" in out
    assert main(["eval", "--results", str(path), "--out", str(tmp_path / "e"),
                 "--tolerance", "100000"]) == 0


@pytest.mark.parametrize("change, message", [
    (lambda path, record: path.unlink(), "does not exist"),
    (lambda path, record: path.write_text(json.dumps({k: v for k, v in record.items()
                                                      if k != "published_weights"})),
     "has no published_weights"),
    (lambda path, record: (path.parents[1] / "weights" / Path(record["published_weights"]).name).unlink(),
     "its published weights"),
    (lambda path, record: path.write_text(json.dumps(
        record | {"config": record["config"] | {"data": record["config"]["data"] | {
            "root": "/nowhere/data.tar.gz"}}})), "is not on this machine; pass --root"),
])
def test_eval_results_errors_are_one_line(published, change, message, capsys):
    path, record = published
    change(path, record)
    assert main(["eval", "--results", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_eval_results_evaluates_as_the_run_did(published, capsys):
    path, _ = published
    assert main(["eval", "--results", str(path), "--split", "train"]) == 2
    assert "cannot be set with it" in capsys.readouterr().err
