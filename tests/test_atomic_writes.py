"""Every atomic writer (results.json, config.yaml, checkpoints, weights, the data cache)
leaves the old file, and no temp file, behind when a write fails, whatever is raised."""
import errno
import os

import pytest
import torch

from attncnn.data.cache import cached
from attncnn.engine import checkpoint as ckpt
from attncnn.engine.results import write_json_atomic
from attncnn.engine.run_dir import write_text_atomic
from attncnn.errors import AttncnnError
from attncnn.inference.weights import save_weights
from attncnn.models import create_model


def save_tiny_weights(path):
    model = create_model("resnet20_cifar", num_classes=2, depth=8, widths=[2, 2, 2])
    save_weights(path, model, classes=["a", "b"], mean=(0.5,) * 3, std=(0.25,) * 3,
                 input_size=(3, 8, 8))


WRITERS = {
    "results.json": lambda path: write_json_atomic({"top1": 1.0}, path),
    "config.yaml": lambda path: write_text_atomic(path, "run: {seed: 1}\n"),
    "checkpoint": lambda path: ckpt.atomic_save({"w": torch.zeros(2)}, path,
                                                keep_previous=path.with_name("prev.pt")),
    "weights": save_tiny_weights,
}
FAULTS = {  # raised by the rename: what is raised, and what the writer lets out
    "ctrl-c": (KeyboardInterrupt(), KeyboardInterrupt),
    "disk full": (OSError(errno.ENOSPC, "No space left on device"), (OSError, AttncnnError)),
}


def fail_renames(monkeypatch, fault: BaseException) -> None:
    def replace(src, dst):
        raise fault

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("writer", WRITERS)
def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch, writer,
                                                             fault):
    path = tmp_path / "target"
    path.write_text("old")
    raised, expected = FAULTS[fault]
    fail_renames(monkeypatch, raised)
    with pytest.raises(expected):
        WRITERS[writer](path)
    assert [p.name for p in tmp_path.iterdir()] == ["target"]
    assert path.read_text() == "old"


def test_a_value_json_cannot_write_leaves_no_half_written_temp_file(tmp_path):
    with pytest.raises(TypeError):
        write_json_atomic({"ok": 1, "bad": object()}, tmp_path / "results.json")
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_cache_write_leaves_no_temp_file(tmp_path, monkeypatch):
    fail_renames(monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        cached(tmp_path, "entry", {"source": "x"}, lambda: {"images": torch.zeros(2)})
    assert list(tmp_path.iterdir()) == []
