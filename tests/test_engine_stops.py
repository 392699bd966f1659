"""Stopping a run: a NaN loss keeps the last good checkpoint; SIGTERM saves and exits 143."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import attncnn.engine.train as train_module
from attncnn.cli import main
from attncnn.engine import checkpoint as ckpt
from attncnn.engine.train import NonFiniteLossError, train
from engine_toy import SOURCE, one_thread, toy_config  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]


def nan_after(calls: int):
    """A loss that turns NaN from its `calls`-th call on."""
    count = {"n": 0}

    class Loss(torch.nn.CrossEntropyLoss):
        def forward(self, logits, y):
            count["n"] += 1
            loss = super().forward(logits, y)
            return loss * float("nan") if count["n"] >= calls else loss

    return lambda cfg: Loss()


def test_nan_loss_stops_with_the_last_good_checkpoint_intact(tmp_path, monkeypatch, one_thread):
    monkeypatch.setattr(train_module, "build_loss", nan_after(7))  # epoch 2, step 3
    cfg = toy_config(tmp_path, schedule={"epochs": 3})
    with pytest.raises(NonFiniteLossError, match="loss is NaN/inf by global step 7") as err:
        train(cfg, quiet=True)
    assert "\n" not in str(err.value)
    run_dir = tmp_path / "toy"
    state = torch.load(run_dir / ckpt.LAST, weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 0)  # the end of epoch 1: the last good one
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed" and "NaN" in results["error"]
    assert results["epochs_completed"] == 1


def test_a_failure_to_record_a_failed_run_neither_hides_its_error_nor_leaves_the_log_open(
        tmp_path, monkeypatch, capsys, one_thread):
    monkeypatch.setattr(train_module, "build_loss", nan_after(3))
    closed = []
    monkeypatch.setattr(train_module.MetricsLog, "close", lambda self: closed.append(True))

    def full_disk(self, *args):
        raise OSError("No space left on device")

    monkeypatch.setattr(train_module._Run, "_finish", full_disk)
    with pytest.raises(NonFiniteLossError, match="loss is NaN/inf"):
        train(toy_config(tmp_path, schedule={"epochs": 2}), quiet=True)
    assert closed == [True]
    assert "results could not be written (No space left on device)" in capsys.readouterr().err


def test_the_cli_prints_a_nan_stop_as_one_line(tmp_path, monkeypatch, capsys, one_thread):
    monkeypatch.setattr(train_module, "build_loss", nan_after(1))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": "resnet20_cifar",
                                              "args": {"depth": 8, "widths": [4, 4, 4]}},
                                    "data": {"name": SOURCE, "batch_size": 16},
                                    "run": {"tensorboard": False}}))
    assert main(["train", "-c", str(path), "--out-dir", str(tmp_path), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("attncnn: error: loss is NaN/inf by global step 1")
    assert "no checkpoint was written" in err[-1]


SCRIPT = """
import sys
sys.path[:0] = [{tests!r}]
import engine_toy  # registers the toy data source
from attncnn.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sigterm_in_a_subprocess_saves_and_exits_143_then_resumes(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(ROOT / "tests")))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"name": "resnet20_cifar", "args": {"depth": 8, "widths": [4, 4, 4]}},
        "data": {"name": SOURCE, "batch_size": 16},
        "schedule": {"epochs": 500},
        "run": {"name": "sig", "tensorboard": False}}))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(script), "train", "-c", str(config), "--out-dir", str(tmp_path),
           "-q"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    run_dir = tmp_path / "sig"
    deadline = time.time() + 90
    while not (run_dir / ckpt.LAST).exists() and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "interrupted" and results["signal"] == "SIGTERM"
    done = results["epochs_completed"]
    assert 1 <= done < 500
    state = torch.load(run_dir / ckpt.LAST, weights_only=True)
    assert state["epoch"] * 4 + state["step"] >= done * 4
    assert f"--resume {run_dir}" in err
    # continue it to one more epoch than it had: it finishes and prints the accuracy
    resumed = subprocess.run(cmd[:2] + ["train", "--resume", str(run_dir), "-q", "--set",
                                        f"schedule.epochs={state['epoch'] + 1}"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "finished" in resumed.stdout and "test top-1" in resumed.stdout
    assert json.loads((run_dir / "results.json").read_text())["status"] == "finished"
