"""Checkpoints: an interrupted-and-resumed run ends bit-identical to an uninterrupted one."""
import dataclasses
import os
import signal

import pytest
import torch

import attncnn.engine.loop as loop_module
from attncnn.engine import checkpoint as ckpt
from attncnn.engine.run_dir import choose_run_dir
from attncnn.engine.train import train
from attncnn.errors import AttncnnError
from engine_toy import one_thread, toy_config  # noqa: F401  (fixture)

EPOCHS = 3  # 4 steps per epoch


def final_state(run_dir):
    return torch.load(run_dir / ckpt.LAST, weights_only=True)


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def interrupt_at(monkeypatch, global_step, action):
    """Run `action()` when the loop asks for the learning rate of `global_step`."""
    real = loop_module.lr_at

    def lr_at(step, *args):
        if step == global_step:
            action()
        return real(step, *args)

    monkeypatch.setattr(loop_module, "lr_at", lr_at)


class Crash(Exception):
    pass


def crash():
    raise Crash()


@pytest.fixture
def reference(tmp_path, one_thread):
    cfg = toy_config(tmp_path / "ref", schedule={"epochs": EPOCHS})
    record = train(cfg, quiet=True)
    assert record["status"] == "finished"
    return record, final_state(tmp_path / "ref" / "toy")


def test_resume_after_a_crash_mid_epoch_is_bit_identical(tmp_path, reference, monkeypatch):
    ref_record, ref_state = reference
    cfg = toy_config(tmp_path / "b", schedule={"epochs": EPOCHS},
                     run={"checkpoint_every_steps": 3})
    interrupt_at(monkeypatch, 7, crash)  # epoch 2, step 3: after the checkpoint at step 6
    with pytest.raises(Crash):
        train(cfg, quiet=True)
    run_dir = tmp_path / "b" / "toy"
    saved = final_state(run_dir)
    assert (saved["epoch"], saved["step"]) == (1, 2)  # global step 6 = epoch 1, 2 steps done
    monkeypatch.undo()
    record = train(cfg, resume=run_dir, quiet=True)
    assert record["status"] == "finished" and record["epochs_completed"] == EPOCHS
    assert_same_weights(final_state(run_dir)["model"], ref_state["model"])
    assert_same_weights(final_state(run_dir)["optimizer"]["state"][0],
                        ref_state["optimizer"]["state"][0])
    strip = ("epoch_time_s", "train_images_per_s")
    assert [{k: v for k, v in h.items() if k not in strip} for h in record["history"]] == \
        [{k: v for k, v in h.items() if k not in strip} for h in ref_record["history"]]


def test_sigterm_saves_at_the_step_and_resume_is_bit_identical(tmp_path, reference, monkeypatch):
    _, ref_state = reference
    cfg = toy_config(tmp_path / "c", schedule={"epochs": EPOCHS})
    interrupt_at(monkeypatch, 5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    record = train(cfg, quiet=True)
    assert record["status"] == "interrupted" and record["signal"] == "SIGTERM"
    run_dir = tmp_path / "c" / "toy"
    saved = final_state(run_dir)
    assert (saved["epoch"], saved["step"]) == (1, 2)  # the signalled step was finished
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    monkeypatch.undo()
    resumed = train(cfg, resume=run_dir, quiet=True)
    assert_same_weights(final_state(run_dir)["model"], ref_state["model"])
    # the resumed run's wall time adds the first session's (up to its checkpoint)
    assert (record["sessions"], resumed["sessions"]) == (1, 2)
    assert resumed["started_at"] == record["started_at"] == saved["started_at"]
    assert 0 < saved["wall_time_s"] <= record["wall_time_s"]
    assert resumed["wall_time_s"] > saved["wall_time_s"]


def test_checkpoints_hold_plain_values_and_keep_last_prev_best(tmp_path, one_thread):
    train(toy_config(tmp_path, schedule={"epochs": 2}), quiet=True)
    run_dir = tmp_path / "toy"
    for name in (ckpt.LAST, ckpt.PREVIOUS, ckpt.BEST):
        state = torch.load(run_dir / name, weights_only=True)  # no pickled code needed
        assert state["format"] == ckpt.FORMAT and state["model_name"] == "attn_resnet20_cifar"
    assert torch.load(run_dir / ckpt.LAST, weights_only=True)["epoch"] == 2
    assert torch.load(run_dir / ckpt.PREVIOUS, weights_only=True)["epoch"] == 1
    assert not [p for p in run_dir.iterdir() if ".tmp" in p.name]


def test_a_damaged_last_falls_back_to_the_previous(tmp_path, one_thread):
    train(toy_config(tmp_path, schedule={"epochs": 2}), quiet=True)
    run_dir = tmp_path / "toy"
    (run_dir / ckpt.LAST).write_bytes(b"not a checkpoint")
    assert ckpt.find_resume_checkpoint(run_dir)["epoch"] == 1


def test_a_checkpoint_of_another_model_is_a_one_line_error(tmp_path, one_thread):
    train(toy_config(tmp_path, schedule={"epochs": 1}), quiet=True)
    other = toy_config(tmp_path, model={"name": "se_resnet20_cifar"})
    with pytest.raises(AttncnnError, match="holds attn_resnet20_cifar with 4 classes; this run "
                                           "builds se_resnet20_cifar") as err:
        train(other, resume=tmp_path / "toy", quiet=True)
    assert "\n" not in str(err.value)
    wider = toy_config(tmp_path, model={"args": {"depth": 8, "widths": [8, 8, 8]}})
    with pytest.raises(AttncnnError, match="does not fit the model"):
        train(wider, resume=tmp_path / "toy", quiet=True)


def test_an_existing_run_is_not_overwritten(tmp_path, one_thread):
    cfg = toy_config(tmp_path, schedule={"epochs": 1})
    train(cfg, quiet=True)
    with pytest.raises(AttncnnError, match="already holds a run; continue it with --resume"):
        train(cfg, quiet=True)


def test_running_a_default_named_config_again_writes_to_the_next_version(tmp_path, capsys,
                                                                          one_thread):
    """As Lightning's version_N: a second run of the same config is a new run beside the
    first, with a line saying where it went; the first stays for --resume."""
    cfg = toy_config(tmp_path, schedule={"epochs": 1}, run={"name": None})
    records = [train(cfg, quiet=True) for _ in range(3)]
    first = tmp_path / "attn_resnet20_cifar-engine_toy-s0"
    assert [r["run_dir"] for r in records] == [str(first), f"{first}-v2", f"{first}-v3"]
    assert [r["run_name"] for r in records][1] == f"{first.name}-v2"
    err = capsys.readouterr().err
    assert (f"run directory {first} exists; writing to {first}-v2 (continue {first} with "
            f"--resume {first})") in err
    assert f"writing to {first}-v3" in err
    for run_dir in (first, tmp_path / f"{first.name}-v2", tmp_path / f"{first.name}-v3"):
        assert (run_dir / "model.safetensors").is_file()


def test_a_run_dir_with_only_a_config_counts_as_taken(tmp_path):
    """A run killed before its first checkpoint (or one still starting) keeps its folder."""
    cfg = toy_config(tmp_path, run={"name": None})
    first = tmp_path / "attn_resnet20_cifar-engine_toy-s0"
    assert choose_run_dir(cfg) == (first, None)
    first.mkdir()
    (first / "config.yaml").write_text("{}")
    assert choose_run_dir(cfg) == (tmp_path / f"{first.name}-v2", first)
    named = toy_config(tmp_path, run={"name": "fixed"})  # a fixed name is never moved
    (tmp_path / "fixed").mkdir()
    (tmp_path / "fixed" / "config.yaml").write_text("{}")
    assert choose_run_dir(named) == (tmp_path / "fixed", None)


def test_a_model_args_typo_is_named_before_the_existing_run(tmp_path, capsys, one_thread):
    import yaml

    from attncnn.cli import main
    from attncnn.engine.config import config_to_dict

    cfg = toy_config(tmp_path, schedule={"epochs": 1})
    train(cfg, quiet=True)  # tmp_path/toy now holds a run
    raw = config_to_dict(cfg)
    raw["model"]["args"] = {"depthh": 8, "widths": [4, 8, 8]}
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", "-q", "-c", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"attncnn: error: {path}: model.args: attn_resnet20_cifar: bad "
                              f"model argument 'depthh'; did you mean 'depth'?")


def test_loading_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"format": ckpt.FORMAT, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(AttncnnError, match="refused to load"):
        ckpt.load_checkpoint(tmp_path / "evil.pt")


def test_every_bit_reproducibility_claim_in_the_docs_names_the_cpu_model():
    """Bit-identical results need the same CPU model too: another x86 CPU gave the
    quickstart 86.93% against the README's 87.73% at the same seed and thread count."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    claims = []
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = " ".join(path.read_text().split())
        for sentence in re.split(r"(?<=[.;])\s", text):
            if re.search(r"bit-reproducible|reproducible for a given", sentence):
                claims.append((path.name, sentence))
    assert claims  # the README makes one
    for name, sentence in claims:
        assert "CPU model" in sentence, (name, sentence)


def _machine_has_bf16(monkeypatch, native: bool):
    """Pretend this CPU does (or does not) compute bf16 in hardware, so that `run.amp: auto`
    resolves to bf16 autocast (or float32)."""
    import attncnn.engine.device as device_module
    import attncnn.engine.train as train_module
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda *a: native)
    monkeypatch.setattr(train_module, "cpu_has_native_bf16", lambda *a: native)


def _stopped_on_a_bf16_machine(tmp_path, monkeypatch):
    cfg = toy_config(tmp_path, schedule={"epochs": 2}, run={"device": "cpu"})
    assert cfg.run.amp == "auto"
    _machine_has_bf16(monkeypatch, True)
    interrupt_at(monkeypatch, 5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    record = train(cfg, quiet=True)
    assert record["status"] == "interrupted" and record["recipe"]["amp"] is True
    monkeypatch.undo()
    _machine_has_bf16(monkeypatch, False)  # resumed on a CPU without bf16 units
    return cfg, tmp_path / "toy"


def test_a_run_resumed_on_another_machine_keeps_its_precision(tmp_path, monkeypatch, capsys,
                                                             one_thread):
    cfg, run_dir = _stopped_on_a_bf16_machine(tmp_path, monkeypatch)
    assert final_state(run_dir)["amp"] is True
    capsys.readouterr()
    record = train(cfg, resume=run_dir, quiet=True)
    assert record["status"] == "finished" and record["recipe"]["amp"] is True
    said = capsys.readouterr()
    assert "started in bf16 autocast and continues in bf16 autocast" in said.out + said.err
    assert "emulated" in said.out + said.err
    # a new run on this machine resolves auto for itself
    fresh = train(toy_config(tmp_path / "new", schedule={"epochs": 1}), quiet=True)
    assert fresh["recipe"]["amp"] is False


def test_an_explicit_amp_on_resume_is_obeyed_and_said(tmp_path, monkeypatch, capsys, one_thread):
    cfg, run_dir = _stopped_on_a_bf16_machine(tmp_path, monkeypatch)
    capsys.readouterr()
    explicit = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, amp=False))
    record = train(explicit, resume=run_dir, quiet=True)
    assert record["recipe"]["amp"] is False
    said = capsys.readouterr()
    assert "started in bf16 autocast and continues in float32, as set" in said.out + said.err
