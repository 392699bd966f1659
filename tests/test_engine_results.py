"""What a run leaves in its directory: results.json in the documented format, metrics.jsonl,
config.yaml, TensorBoard events, the weights file."""
import json
import re
from pathlib import Path

import pytest

from attncnn.engine.config import load_config
from attncnn.engine.train import train
from attncnn.inference.weights import create_model_from_weights
from engine_toy import one_thread, one_torch_thread, toy_config  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]


def documented_example() -> dict:
    text = (ROOT / "docs" / "results-format.md").read_text()
    return json.loads(re.search(r"```json\n(.*?)\n```", text, re.S).group(1))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    cfg = toy_config(out, schedule={"epochs": 2}, run={"tags": {"table": "t"},
                                                       "eval_every_epochs": 2})
    with one_torch_thread():
        record = train(cfg, quiet=True)
    return cfg, record, out / "toy"


def test_results_json_has_every_documented_field(run):
    _, record, run_dir = run
    written = json.loads((run_dir / "results.json").read_text())
    assert written == json.loads(json.dumps(record))
    example = documented_example()
    for section in ("", "data", "recipe", "env", "final", "best"):
        want = example[section] if section else example
        have = written[section] if section else written
        assert set(want) <= set(have), (section, set(want) - set(have))
    assert set(example["history"][0]) <= set(written["history"][0])
    assert written["schema"] == "attncnn.result/1" and written["status"] == "finished"


def test_results_values_describe_the_run(run):
    cfg, record, run_dir = run
    assert record["epochs_completed"] == 2 == record["recipe"]["epochs"]
    assert record["history"][0]["eval_top1"] is None  # eval_every_epochs: 2
    assert record["final"]["top1"] == record["history"][-1]["eval_top1"]
    assert len(record["final"]["per_class"]) == 4 == len(record["data"]["classes"])
    assert record["data"]["num_train"] == 64 and record["data"]["num_eval"] == 24
    assert record["tags"] == {"table": "t"} and record["model"] == "attn_resnet20_cifar"
    assert record["params"] > 0 and record["macs"] > 0
    assert record["env"]["world_size"] == 1 and record["env"]["torch"]
    assert load_config(run_dir / "config.yaml") == cfg


def test_metrics_jsonl_has_one_line_per_epoch(run):
    _, record, run_dir = run
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    assert lines[-1]["eval_top1"] == record["final"]["top1"]


def test_the_weights_file_rebuilds_the_trained_model(run):
    _, record, run_dir = run
    model, meta = create_model_from_weights(run_dir / "model.safetensors")
    assert record["weights"] == str(run_dir / "model.safetensors")
    assert model.model_name == "attn_resnet20_cifar" and meta["classes"] == ["tl", "tr", "bl", "br"]


def test_tensorboard_event_files_are_written(tmp_path, one_thread):
    pytest.importorskip("tensorboard")
    train(toy_config(tmp_path, schedule={"epochs": 1}, run={"tensorboard": True}), quiet=True)
    assert list((tmp_path / "toy" / "tensorboard").glob("events.out.tfevents.*"))


def test_quiet_prints_one_line_per_epoch(tmp_path, one_thread, capsys):
    train(toy_config(tmp_path, schedule={"epochs": 2}), quiet=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch")]
    assert len(lines) == 2 and "eval loss" in lines[0] and "img/s" in lines[0]


def test_a_terminal_gets_a_progress_bar_with_rate_and_eta():
    import io

    from attncnn.engine.logger import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    progress = Progress(enabled=True, quiet=False, stream=out)
    progress.start_epoch(1, 3, total=10, done=0)
    progress.update(5, 320, loss=1.25, top1=40.0)
    progress.bar.refresh()
    text = out.getvalue()
    assert "epoch 1/3" in text and "loss=1.250" in text and "img_s=" in text and "<" in text
    progress.epoch_line("epoch 1/3 done")
    assert out.getvalue().rstrip().endswith("epoch 1/3 done")
    quiet = Terminal()
    Progress(enabled=True, quiet=True, stream=quiet).start_epoch(1, 3, 10, 0)
    assert quiet.getvalue() == ""


def test_git_state_outside_a_checkout_takes_the_stamped_commit(tmp_path, monkeypatch):
    from attncnn.engine.environment import git_state

    monkeypatch.delenv("ATTNCNN_GIT_COMMIT", raising=False)
    assert git_state(tmp_path) == (None, None)  # tmp_path is no git checkout
    monkeypatch.setenv("ATTNCNN_GIT_COMMIT", "abc1234")
    monkeypatch.setenv("ATTNCNN_GIT_DIRTY", "1")
    assert git_state(tmp_path) == ("abc1234", True)
    import attncnn

    if (Path(attncnn.__file__).resolve().parents[2] / ".git").exists():
        assert git_state()[0] != "abc1234"  # a real checkout wins over the stamp


def test_the_cpu_name_is_read_without_leaking_the_file():
    import gc
    import warnings

    import torch

    from attncnn.engine.environment import device_name

    if not Path("/proc/cpuinfo").is_file():
        pytest.skip("no /proc/cpuinfo")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        assert "CPU" in device_name(torch.device("cpu"))
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_the_training_loader_is_built_with_the_run_seed(tmp_path, monkeypatch, one_thread):  # noqa: F811
    """data.seed + 1000 * run.seed orders and augments the batches, given when the loaders
    are built (nothing re-seeds them afterwards), and results count the whole splits."""
    import attncnn.engine.train as train_module
    from attncnn.data.loader import train_seed

    built = []
    real = train_module.build_loaders

    def spy(*args, **kwargs):
        built.append(real(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(train_module, "build_loaders", spy)
    record = train(toy_config(tmp_path, schedule={"epochs": 1}, data={"seed": 3, "batch_size": 24},
                              run={"seed": 2}), quiet=True)
    assert built[0].train.seed == train_seed(3, 2) == 2003 and built[0].eval.seed == 3
    assert (record["data"]["num_train"], record["data"]["num_eval"]) == (64, 24)  # not 2 x 24


def test_environment_says_whether_the_cpu_has_bf16_units(monkeypatch):
    import attncnn.engine.environment as environment_module
    for native in (True, False):
        monkeypatch.setattr(environment_module, "cpu_has_native_bf16", lambda *a, n=native: n)
        assert environment_module.environment("cpu")["cpu_bf16"] is native
