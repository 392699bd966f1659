"""Damaged checkpoints and full disks: one-line errors, the previous checkpoint intact,
and `--resume` falls back to the newest good checkpoint (or says that none exists)."""
import errno
import io
import json
import shutil
import struct
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import attncnn.engine.train as train_module
from attncnn.cli import main
from attncnn.engine import checkpoint as ckpt
from attncnn.engine.train import train
from attncnn.errors import AttncnnError
from engine_toy import SOURCE, one_thread, one_torch_thread, toy_config  # noqa: F401  (fixture)

RAW = {
    "model": {"name": "attn_resnet20_cifar", "args": {"depth": 8, "widths": [4, 8, 8]}},
    "data": {"name": SOURCE, "batch_size": 16, "crop_padding": 2},
    "schedule": {"epochs": 2, "milestones": [1]},
    "run": {"name": "toy", "tensorboard": False, "checkpoint_every_steps": 2},
}


class _TorchWithSave:
    def __init__(self, save):
        self.save = save

    def __getattr__(self, name):
        return getattr(torch, name)


def full_disk_on_save(monkeypatch, nth: int):
    """From the `nth` torch.save in checkpoint.py on, write part of the bytes, then ENOSPC."""
    calls = {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] < nth:
            return torch.save(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        torch.save(obj, buf)
        f.write(buf.getvalue()[:1000])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "torch", _TorchWithSave(save))


def position(state) -> int:
    return state["epoch"] * 4 + state["step"]


def tensor_byte(path: Path) -> int:
    """The file offset of the middle byte of the checkpoint's largest tensor record (the
    middle of the file can fall in zip padding, which no CRC covers, as the config grows)."""
    with zipfile.ZipFile(path) as z:
        record = max((r for r in z.infolist() if "/data/" in r.filename),
                     key=lambda r: r.compress_size)
    with open(path, "rb") as f:
        f.seek(record.header_offset + 26)  # local header: name and extra-field lengths
        name_len, extra_len = struct.unpack("<HH", f.read(4))
    return record.header_offset + 30 + name_len + extra_len + record.compress_size // 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 2-epoch toy run (checkpoints every 2 steps): last.pt at 8, prev at 6."""
    tmp = tmp_path_factory.mktemp("trained")
    with one_torch_thread():
        train(toy_config(tmp, **{k: v for k, v in RAW.items() if k in ("schedule", "run")}),
              quiet=True)
    return tmp / "toy"


@pytest.fixture
def run_dir(trained, tmp_path):
    return shutil.copytree(trained, tmp_path / "toy")


def config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(RAW))
    return path


def last_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1]


def test_disk_full_stops_in_one_line_and_leaves_the_last_checkpoint(tmp_path, monkeypatch,
                                                                    capsys, one_thread):
    full_disk_on_save(monkeypatch, 4)  # saves: step 2, step 4 (last + best), step 6 <- full
    assert main(["train", "-q", "-c", str(config_file(tmp_path)),
                 "--out-dir", str(tmp_path)]) == 2
    line = last_line(capsys)
    run_dir = tmp_path / "toy"
    assert line == (f"attncnn: error: cannot write checkpoint {run_dir / ckpt.LAST}: No space "
                    f"left on device ({run_dir / ckpt.LAST} is unchanged); free space or fix "
                    f"the directory, then continue with --resume {run_dir}")
    assert position(ckpt.load_checkpoint(run_dir / ckpt.LAST)) == 4
    assert not list(run_dir.glob(".*.tmp*"))  # the partial temp file is gone
    monkeypatch.undo()  # space freed: the run continues
    assert main(["train", "-q", "--resume", str(run_dir)]) == 0
    assert position(ckpt.load_checkpoint(run_dir / ckpt.LAST)) == 8


def test_disk_full_for_results_too_is_still_one_line(tmp_path, monkeypatch, capsys, one_thread):
    full_disk_on_save(monkeypatch, 1)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(train_module, "write_json_atomic", no_space)
    assert main(["train", "-q", "-c", str(config_file(tmp_path)),
                 "--out-dir", str(tmp_path)]) == 2
    line = last_line(capsys)
    assert line.startswith("attncnn: error: cannot write ") and "results.json: No space" in line
    assert "the run had stopped: cannot write checkpoint" in line
    assert not (tmp_path / "toy" / ckpt.LAST).exists()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_truncation_or_flipped_byte_is_caught_in_one_line(trained, tmp_path, data):
    raw = (trained / ckpt.LAST).read_bytes()
    if data.draw(st.booleans(), label="truncate"):
        damaged = raw[:data.draw(st.integers(0, len(raw) - 1), label="keep")]
    else:
        i = data.draw(st.integers(0, len(raw) - 1), label="offset")
        flip = data.draw(st.integers(1, 255), label="xor")
        damaged = raw[:i] + bytes([raw[i] ^ flip]) + raw[i + 1:]
    path = tmp_path / "damaged.pt"
    path.write_bytes(damaged)
    try:
        state = ckpt.load_checkpoint(path)
    except AttncnnError as err:
        assert "\n" not in str(err) and str(path) in str(err)
        return
    # a flip in bytes no reader uses (zip padding, the archive comment) is harmless
    good = ckpt.load_checkpoint(trained / ckpt.LAST)
    assert position(state) == position(good)
    for key, value in good["model"].items():
        assert torch.equal(state["model"][key], value), key


def test_resume_falls_back_past_a_damaged_last_and_never_keeps_it(run_dir, capsys, one_thread):
    raw = bytearray((run_dir / ckpt.LAST).read_bytes())
    raw[tensor_byte(run_dir / ckpt.LAST)] ^= 0x55  # one bit-rotten byte inside the tensor data
    (run_dir / ckpt.LAST).write_bytes(raw)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"kind": "epoch", "ep')  # a line cut short by a kill
    assert position(ckpt.find_resume_checkpoint(run_dir)) == 6  # last.prev.pt
    assert (run_dir / ckpt.DAMAGED).exists() and not (run_dir / ckpt.LAST).exists()
    assert main(["train", "-q", "--resume", str(run_dir)]) == 0
    assert "resuming" in capsys.readouterr().err
    # the damaged file was never rotated into the fallback slot
    assert position(ckpt.load_checkpoint(run_dir / ckpt.PREVIOUS)) == 6
    assert position(ckpt.load_checkpoint(run_dir / ckpt.LAST)) == 8
    # epoch 2 was logged before, lost with last.pt, and run again: it is logged once
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_resume_past_a_damaged_last_says_what_was_skipped_and_why(run_dir, capsys, one_thread):
    """Falling back loses the steps since last.prev.pt: the user is told, not left to wonder
    why an epoch runs twice."""
    raw = bytearray((run_dir / ckpt.LAST).read_bytes())
    raw[tensor_byte(run_dir / ckpt.LAST)] ^= 0x55
    (run_dir / ckpt.LAST).write_bytes(raw)
    assert main(["train", "-q", "--resume", str(run_dir)]) == 0
    err = capsys.readouterr().err
    warning = next(line for line in err.splitlines() if "skipped last.pt" in line)
    assert warning.startswith(f"warning: skipped last.pt: {run_dir / ckpt.LAST} is damaged: "
                              f"record ")
    assert warning.endswith("fails its CRC check (moved to last.bad.pt); resuming from "
                            "last.prev.pt at epoch 2 step 2: the steps since then are run again")

    notes = []
    (run_dir / ckpt.LAST).write_bytes(b"not a checkpoint")
    state = ckpt.find_resume_checkpoint(run_dir, notice=notes.append)
    assert position(state) == 6 and len(notes) == 1 and "last.pt is truncated, damaged" in notes[0]


def test_resume_with_no_good_checkpoint_says_so_in_one_line(run_dir, tmp_path, capsys):
    (run_dir / ckpt.LAST).write_bytes((run_dir / ckpt.LAST).read_bytes()[:-100])
    (run_dir / ckpt.PREVIOUS).write_bytes(b"")
    assert main(["train", "--resume", str(run_dir)]) == 2
    line = last_line(capsys)
    assert line.startswith(f"attncnn: error: cannot resume: no usable checkpoint in {run_dir} (")
    assert "last.pt is truncated, damaged" in line and "last.prev.pt is truncated, damaged" in line

    (run_dir / ckpt.LAST).unlink()
    (run_dir / ckpt.PREVIOUS).unlink()
    assert main(["train", "--resume", str(run_dir)]) == 2
    assert "holds no checkpoint (the run stopped before writing its first one)" in \
        last_line(capsys)
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert last_line(capsys) == (f"attncnn: error: cannot resume: {tmp_path / 'nope'} is not a "
                                 f"run directory (no config.yaml)")


def test_a_full_disk_while_resuming_keeps_config_yaml_whole(run_dir, monkeypatch, capsys,
                                                            one_thread):
    """--resume reads config.yaml back: half of one would silently resume with defaults."""
    original = (run_dir / "config.yaml").read_text()
    real = Path.write_text

    def half_then_full(self, text, *args, **kwargs):
        real(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_full)
    assert main(["train", "-q", "--resume", str(run_dir), "--set", "schedule.epochs=3"]) == 2
    assert last_line(capsys) == (f"attncnn: error: cannot write {run_dir / 'config.yaml'}: "
                                 f"No space left on device")
    monkeypatch.undo()
    assert (run_dir / "config.yaml").read_text() == original
    assert not list(run_dir.glob(".*.tmp*"))


def test_a_full_disk_for_metrics_is_one_line_and_keeps_the_checkpoint(tmp_path, monkeypatch,
                                                                      capsys, one_thread):
    import attncnn.engine.logger as logger

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(logger, "open", no_space, raising=False)
    assert main(["train", "-q", "-c", str(config_file(tmp_path)),
                 "--out-dir", str(tmp_path)]) == 2
    run_dir = tmp_path / "toy"
    assert last_line(capsys) == (f"attncnn: error: cannot write {run_dir / 'metrics.jsonl'}: "
                                 f"No space left on device")
    assert position(ckpt.load_checkpoint(run_dir / ckpt.LAST)) == 2  # the step-2 checkpoint
