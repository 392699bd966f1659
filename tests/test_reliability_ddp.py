"""Distributed faults: when one of 2 gloo ranks fails mid-epoch, every rank exits non-zero
within a bounded time (no rank hangs in a collective waiting for a dead peer), and a rank
that hangs ends the other after run.dist_timeout_s. A surviving rank says so in one line.

Faults come from tests/reliability_child.py ($RELIABILITY_FAULTS: a rank raises, or
sleeps, when a given global step starts) or from the test (SIGKILL of one rank). Ranks are started by
torchrun (--max-restarts=0, as a user would), or as two plain processes with the
variables torchrun sets, so the engine itself, not torchrun's clean-up, must end them.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from attncnn.engine.distributed import setup as join_ranks
from attncnn.errors import AttncnnError
from engine_toy import SOURCE

ROOT = Path(__file__).resolve().parents[1]
CHILD = ROOT / "tests" / "reliability_child.py"
BOUND = 60  # seconds from the fault to the last rank's exit
PEER_FAILED = "a peer rank failed, was killed or hung past run.dist_timeout_s"
CONFIG = {
    "model": {"name": "attn_resnet20_cifar", "args": {"depth": 8, "widths": [4, 8, 8]}},
    "data": {"name": SOURCE, "batch_size": 16, "eval_batch_size": 24, "crop_padding": 2},
    "schedule": {"epochs": 100, "milestones": [50]},
    "run": {"name": "d", "tensorboard": False, "checkpoint_every_steps": 2},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(tmp_path: Path, faults: dict, run: dict | None = None):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "run": {**CONFIG["run"], **(run or {})}}))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1",
           "RELIABILITY_FAULTS": json.dumps(faults)}
    args = [str(CHILD), "train", "-q", "-c", str(config), "--out-dir", str(tmp_path)]
    return env, args


def plain_ranks(tmp_path, faults, run=None):
    """Two ranks started by hand (no torchrun): the engine alone must end them."""
    env, args = setup(tmp_path, faults, run)
    port = free_port()
    procs = []
    for rank in range(2):
        rank_env = {**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                    "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"}
        procs.append(subprocess.Popen([sys.executable, *args], env=rank_env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def wait_all(procs, since: float) -> list[str]:
    errs = []
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=max(1, since + BOUND - time.time()))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail(f"a rank was still running {BOUND} s after the fault (hang)")
        errs.append(err)
    elapsed = time.time() - since
    print(f"all ranks ended {elapsed:.1f} s after the fault")
    assert elapsed < BOUND
    return errs


def wait_for_training(tmp_path, procs, timeout=180):
    """Until rank 0 has written its first checkpoint (both ranks are in the step loop) or a
    process has ended (the fault came first)."""
    deadline = time.time() + timeout
    while not (tmp_path / "d" / "last.pt").exists():
        if any(p.poll() is not None for p in procs):
            return
        assert time.time() < deadline
        time.sleep(0.05)


def results(tmp_path) -> dict:
    return json.loads((tmp_path / "d" / "results.json").read_text())


def assert_one_line_peer_failure(err: str):
    lines = [line for line in err.strip().splitlines() if not line.startswith("epoch ")]
    assert len(lines) == 1 and lines[0].startswith("attncnn: error: rank 0 of 2: "), err
    assert PEER_FAILED in lines[0]


@pytest.mark.slow
def test_rank1_raising_ends_both_plain_ranks(tmp_path):
    procs = plain_ranks(tmp_path, {"raise_at": {"rank": 1, "step": 9}})
    wait_for_training(tmp_path, procs)
    errs = wait_all(procs, time.time())
    assert [p.returncode != 0 for p in procs] == [True, True]
    assert "injected fault on rank 1 at global step 9" in errs[1]
    # rank 0 learnt of it from the broken collective, said so in one line and recorded it
    assert_one_line_peer_failure(errs[0])
    assert results(tmp_path)["status"] == "failed" and PEER_FAILED in results(tmp_path)["error"]


@pytest.mark.slow
def test_a_sigkilled_rank_ends_the_other(tmp_path):
    procs = plain_ranks(tmp_path, {})
    wait_for_training(tmp_path, procs)
    procs[1].send_signal(signal.SIGKILL)
    since = time.time()
    errs = wait_all(procs, since)
    assert procs[1].returncode == -signal.SIGKILL and procs[0].returncode == 2
    assert_one_line_peer_failure(errs[0])
    assert results(tmp_path)["status"] == "failed"


@pytest.mark.slow
def test_a_hung_rank_ends_the_other_after_dist_timeout_s(tmp_path):
    procs = plain_ranks(tmp_path, {"hang_at": {"rank": 1, "step": 9}}, {"dist_timeout_s": 5})
    try:
        wait_for_training(tmp_path, procs)
        errs = wait_all(procs[:1], time.time())  # torch's default would wait 30 minutes
    finally:
        procs[1].kill()  # it sleeps on: without torchrun nothing else ends it
        procs[1].wait()
    assert procs[0].returncode == 2
    assert_one_line_peer_failure(errs[0])
    assert results(tmp_path)["status"] == "failed"


def test_a_rank_whose_peers_never_join_fails_in_one_line(monkeypatch):
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(AttncnnError, match="rank 0 of 2: could not join the other ranks "
                                           "within run.dist_timeout_s") as err:
        join_ranks("cpu", timeout_s=1)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_rank0_raising_under_torchrun_ends_the_job(tmp_path):
    env, args = setup(tmp_path, {"raise_at": {"rank": 0, "step": 5}})
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node=2", "--max-restarts=0", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_training(tmp_path, [proc])
    err = wait_all([proc], time.time())[0]
    assert proc.returncode != 0
    assert "injected fault on rank 0 at global step 5" in err
