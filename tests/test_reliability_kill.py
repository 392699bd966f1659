"""kill -9 at random moments, and during a checkpoint write: `--resume` always finishes the
run, loses at most the steps since the last checkpoint, and on the CPU ends bit-identical
to a run that was never interrupted.

The runs are `attncnn train` subprocesses (tests/reliability_child.py: the CLI plus the toy
data source and test-only faults) on a ~1k-parameter model: 4 steps per epoch, a
checkpoint every 2 steps. The kill moments come from a seeded RNG: a target step, then a
random extra delay, so a kill lands anywhere (mid-step, mid-eval, mid-checkpoint-write).
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from attncnn.cli import main
from attncnn.engine import checkpoint as ckpt
from engine_toy import SOURCE, one_torch_thread

ROOT = Path(__file__).resolve().parents[1]
CHILD = ROOT / "tests" / "reliability_child.py"
EPOCHS, STEPS_PER_EPOCH, EVERY = 12, 4, 2
TOTAL = EPOCHS * STEPS_PER_EPOCH
KILLS = 3
TIMEOUT = 240  # seconds for one subprocess run on a loaded machine

CONFIG = {
    "model": {"name": "attn_resnet20_cifar", "args": {"depth": 8, "widths": [4, 8, 8]}},
    "data": {"name": SOURCE, "batch_size": 16, "eval_batch_size": 24, "crop_padding": 2},
    "optim": {"lr": 0.05},
    "schedule": {"name": "step", "epochs": EPOCHS, "milestones": [EPOCHS // 2]},
    "run": {"name": "k", "tensorboard": False, "checkpoint_every_steps": EVERY},
}


def write_config(path: Path) -> Path:
    path.write_text(yaml.safe_dump(CONFIG))
    return path


def launch(args, faults=None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1",
           "RELIABILITY_FAULTS": json.dumps(faults or {})}
    return subprocess.Popen([sys.executable, str(CHILD), "train", "-q", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def started(log: Path) -> int:
    """The highest global step this run started (-1: none yet)."""
    try:
        lines = log.read_text().split()
    except FileNotFoundError:
        return -1
    return max((int(s) for s in lines), default=-1)


def position(run_dir: Path) -> int:
    """Global steps completed by the checkpoint a resume would use."""
    state = ckpt.find_resume_checkpoint(run_dir)
    return state["epoch"] * STEPS_PER_EPOCH + state["step"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the same command, in this process on one thread."""
    tmp = tmp_path_factory.mktemp("ref")
    with one_torch_thread():
        assert main(["train", "-q", "-c", str(write_config(tmp / "c.yaml")),
                     "--out-dir", str(tmp)]) == 0
    return tmp / "k"


def assert_bit_identical(run_dir: Path, ref_dir: Path):
    got, want = load_file(run_dir / "model.safetensors"), load_file(ref_dir / "model.safetensors")
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key
    a = torch.load(run_dir / ckpt.LAST, weights_only=True)
    b = torch.load(ref_dir / ckpt.LAST, weights_only=True)
    for key in b["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for i, buf in b["optimizer"]["state"].items():
        assert torch.equal(a["optimizer"]["state"][i]["momentum_buffer"], buf["momentum_buffer"])
    strip = ("epoch_time_s", "train_images_per_s")

    def same(records):
        return [{k: v for k, v in r.items() if k not in strip} for r in records]

    history = [json.loads((d / "results.json").read_text())["history"] for d in (run_dir, ref_dir)]
    assert same(history[0]) == same(history[1])
    # metrics.jsonl too: no epoch logged twice, no line cut short by a kill
    metrics = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
               for d in (run_dir, ref_dir)]
    assert same(metrics[0]) == same(metrics[1])


@pytest.mark.slow
def test_three_random_kill_9s_then_resume_end_bit_identical(tmp_path, reference):
    rng = random.Random(9)
    targets = sorted(rng.sample(range(EVERY + 1, TOTAL - 12), KILLS))  # 3+ epochs left
    run_dir = tmp_path / "k"
    args = ["-c", str(write_config(tmp_path / "c.yaml")), "--out-dir", str(tmp_path)]
    done_before = 0
    for i, target in enumerate(targets):
        log = tmp_path / f"steps{i}.log"
        proc = launch(args, {"step_log": str(log)})
        deadline = time.time() + TIMEOUT
        while started(log) < target:
            assert proc.poll() is None, f"run {i} ended before its kill: {proc.communicate()}"
            assert time.time() < deadline, "no progress"
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.05))  # anywhere in the next step, eval or checkpoint
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, f"kill {i} came too late"
        at_kill, resumed_at = started(log) + 1, position(run_dir)
        # lost work: the steps begun since the checkpoint a resume uses, at most EVERY
        assert 0 <= at_kill - resumed_at <= EVERY, (at_kill, resumed_at)
        assert resumed_at >= done_before  # a kill never takes away a finished checkpoint
        done_before = resumed_at
        args = ["--resume", str(run_dir)]
    proc = launch(args)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    assert "finished" in out and not list(run_dir.glob(".*.tmp*"))
    assert_bit_identical(run_dir, reference)


@pytest.mark.slow
def test_kill_9_inside_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, reference):
    run_dir = tmp_path / "k"
    config = write_config(tmp_path / "c.yaml")
    # the 4th torch.save: last.pt at global step 6 (after step 2, and step 4's last + best)
    proc = launch(["-c", str(config), "--out-dir", str(tmp_path)], {"die_in_save": 4})
    proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL
    assert list(run_dir.glob(".last.pt.tmp*"))  # half a checkpoint was on disk at the kill
    state = torch.load(run_dir / ckpt.LAST, weights_only=True)  # last.pt is intact...
    assert state["epoch"] * STEPS_PER_EPOCH + state["step"] == 4  # ...and the previous one
    proc = launch(["--resume", str(run_dir)])
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    assert "resuming" in err and "epoch 2 step 0" in err
    assert not list(run_dir.glob(".*.tmp*"))  # the stale half-file was cleaned up
    assert_bit_identical(run_dir, reference)
