"""DistributedDataParallel: 2 gloo processes on the CPU train like 1 process.

Each rank takes half of the same global batch and DDP averages the gradients, so without
BatchNorm the two runs differ only by float summation order: we allow 1e-5 on the weights
and metrics. (With BatchNorm, statistics are per rank, over half the batch, so runs differ
more; docs/training.md says so.)
"""
import contextlib
import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from attncnn.engine.config import config_from_dict
from attncnn.engine.train import train
from engine_toy import SOURCE, one_thread  # noqa: F401  (fixture)

RAW = {
    "model": {"name": "engine_test_plainnet"},
    "data": {"name": SOURCE, "batch_size": 16, "eval_batch_size": 5, "crop_padding": 2},
    "optim": {"lr": 0.1},
    "schedule": {"name": "cosine", "epochs": 3, "milestones": []},
    # float32: under bf16 autocast (the default on CPUs with bf16 units) the split batch
    # rounds differently and the runs drift apart by more than summation order
    "run": {"name": "ddp", "tensorboard": False, "amp": False},
}


class PlainNet(torch.nn.Module):
    """conv-ReLU-pool-conv-ReLU-GAP-FC without BatchNorm: its training does not depend on
    how a batch is split over ranks, so a 2-rank run can be compared to 1 process tightly."""

    def __init__(self, num_classes: int = 4, width: int = 8):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(width, 2 * width, 3, padding=1), torch.nn.ReLU())
        self.fc = torch.nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


@contextlib.contextmanager
def plainnet_registered():
    """Register PlainNet for the duration only: other tests run over every registered model."""
    from attncnn.models import registry

    registry.register("engine_test_plainnet", PlainNet, input_size=(3, 16, 16), family="test",
                      num_classes=4)
    try:
        yield
    finally:
        registry._REGISTRY.pop("engine_test_plainnet", None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out_dir: str):
    # what torchrun sets; train() joins the gloo group from these and leaves it at the end
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    raw = {**RAW, "run": {**RAW["run"], "out_dir": out_dir}}
    with plainnet_registered():
        train(config_from_dict(raw), quiet=True)
    assert not dist.is_initialized()


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tmp_path, one_thread):
    with plainnet_registered():
        train(config_from_dict({**RAW, "run": {**RAW["run"], "out_dir": str(tmp_path / "one")}}),
              quiet=True)
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path / "two")), nprocs=2, join=True)

    one = json.loads((tmp_path / "one" / "ddp" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "ddp" / "results.json").read_text())
    assert two["env"]["world_size"] == 2 and one["env"]["world_size"] == 1
    assert two["data"]["num_eval"] == one["data"]["num_eval"] == 24
    for h1, h2 in zip(one["history"], two["history"], strict=True):
        assert h2["train_loss"] == pytest.approx(h1["train_loss"], abs=1e-5)
        assert h2["train_top1"] == pytest.approx(h1["train_top1"], abs=1e-9)
        assert h2["eval_loss"] == pytest.approx(h1["eval_loss"], abs=1e-5)
        assert h2["eval_top1"] == pytest.approx(h1["eval_top1"], abs=1e-9)
    w1 = torch.load(tmp_path / "one" / "ddp" / "last.pt", weights_only=True)["model"]
    w2 = torch.load(tmp_path / "two" / "ddp" / "last.pt", weights_only=True)["model"]
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], atol=1e-5, rtol=0)
    # only rank 0 wrote files
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["ddp"]
