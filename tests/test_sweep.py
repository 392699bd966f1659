"""`attncnn sweep`: configs x seeds, seed-major, across sessions: finished runs are skipped,
stopped ones resumed, and publishing happens once."""
import json
import os
import signal

import pytest
import torch

import attncnn.engine.sweep as sweep_module
import attncnn.engine.loop as loop_module
from attncnn.cli import main
from attncnn.engine import checkpoint as ckpt
from attncnn.engine.config import dump_config
from attncnn.engine.sweep import plan_sweep
from attncnn.engine.run_dir import run_name
from attncnn.errors import AttncnnError
from engine_toy import one_thread  # noqa: F401  (fixture)

# The embedded digits data, 1% of its train split (61 images, 3 steps of 16), a ResNet-8
# with 4/8/8 channels, 2 epochs: about half a second per run on one CPU thread.
TINY = """\
model: {{name: {model}, args: {{depth: 8, widths: [4, 8, 8]}}}}
data: {{name: digits, batch_size: 16, eval_batch_size: 500, val_fraction: 0.99,
        crop_padding: 2, flip: false}}
optim: {{lr: 0.05}}
schedule: {{epochs: 2, milestones: []}}
run: {{device: cpu, tensorboard: false, amp: false, channels_last: false{extra}}}
"""


def write_configs(tmp_path, extra=""):
    folder = tmp_path / "configs"
    folder.mkdir(exist_ok=True)
    paths = []
    for stem, model in (("plain", "resnet20_cifar"), ("attn", "attn_resnet20_cifar")):
        path = folder / f"{stem}.yaml"
        path.write_text(TINY.format(model=model, extra=extra))
        paths.append(path)
    return paths


def sweep(*argv):
    return main(["sweep", *map(str, argv), "--quiet"])


def mtimes(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_plan_is_seed_major_with_the_engines_run_dirs(tmp_path):
    plain, attn = write_configs(tmp_path)
    plan = plan_sweep([plain, attn], [0, 1, 2], tmp_path / "runs", ["optim.lr=0.01"])
    assert [(r.config.stem, r.seed) for r in plan] == [
        ("plain", 0), ("attn", 0), ("plain", 1), ("attn", 1), ("plain", 2), ("attn", 2)]
    assert plan[3].run_dir == tmp_path / "runs" / "attn" / "attn_resnet20_cifar-digits-s1"
    for r in plan:
        assert r.state == "new" and r.cfg.run.seed == r.seed and r.cfg.optim.lr == 0.01
        assert r.run_dir == tmp_path / "runs" / r.config.stem / run_name(r.cfg)
    assert not (tmp_path / "runs").exists()  # planning writes nothing


def test_a_fixed_run_name_gets_the_seed_and_shared_dirs_are_refused(tmp_path):
    plain, _ = write_configs(tmp_path, extra=", name: row")
    plan = plan_sweep([plain], [0, 1], tmp_path / "runs")
    assert [r.run_dir.name for r in plan] == ["row-s0", "row-s1"]
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "plain.yaml").write_text(plain.read_text())  # same stem, same run name
    with pytest.raises(AttncnnError, match="would share the run directory"):
        plan_sweep([plain, other / "plain.yaml"], [0], tmp_path / "runs")
    with pytest.raises(AttncnnError, match="use --seeds"):
        plan_sweep([plain], [0], tmp_path / "runs", ["run.seed=3"])


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path, capsys, monkeypatch):
    configs = write_configs(tmp_path)
    monkeypatch.setattr(sweep_module, "train", lambda *a, **k: pytest.fail("trained"))
    assert sweep(*configs, "--seeds", 0, 1, "--out-dir", tmp_path / "runs", "--dry-run") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("sweep: 4 runs (2 configs x 2 seeds, seed-major): 0 done, "
                               "0 to resume, 4 new")
    assert [line.split()[0] for line in lines[1:]] == ["new"] * 4
    assert ["-s0" in lines[1], "-s0" in lines[2], "-s1" in lines[3]] == [True] * 3
    assert not (tmp_path / "runs").exists()


def test_finished_runs_are_skipped_not_retrained(tmp_path, capsys, one_thread):  # noqa: F811
    configs, out = write_configs(tmp_path), tmp_path / "runs"
    assert sweep(*configs, "--seeds", 0, "--out-dir", out) == 0
    first = capsys.readouterr().out
    assert first.count("finished: ") == 2 and "top-1" in first and " min" in first
    results = sorted(out.rglob("results.json"))
    assert len(results) == 2
    assert all(json.loads(p.read_text())["status"] == "finished" for p in results)
    before = mtimes(out)

    assert sweep(*configs, "--seeds", 0, "--out-dir", out) == 0
    again = capsys.readouterr().out
    assert "2 done, 0 to resume, 0 new" in again
    assert again.count("done: ") == 2 and "finished: " not in again
    assert mtimes(out) == before


def test_a_stopped_run_is_resumed_with_its_saved_config(tmp_path, capsys, monkeypatch,
                                                        one_thread):  # noqa: F811
    plain, attn = write_configs(tmp_path)
    out = tmp_path / "runs"
    real_lr_at, calls, stop = loop_module.lr_at, [], [True]

    def lr_at(step, steps_per_epoch, *args):  # counts the steps run; SIGTERM in epoch 2
        calls.append((step, steps_per_epoch))
        if stop[0] and step == steps_per_epoch + 1:
            stop[0] = False
            os.kill(os.getpid(), signal.SIGTERM)
        return real_lr_at(step, steps_per_epoch, *args)

    monkeypatch.setattr(loop_module, "lr_at", lr_at)
    assert sweep(plain, attn, "--seeds", 0, "--out-dir", out) == 143
    err = capsys.readouterr().err
    assert "continue with the same command" in err and f"attncnn sweep {plain} {attn}" in err
    run_dir = out / "plain" / "resnet20_cifar-digits-s0"
    saved = torch.load(run_dir / ckpt.LAST, weights_only=True)
    steps = calls[0][1]
    assert (saved["epoch"], saved["step"]) == (1, 2) and len(calls) == steps + 2
    assert not (out / "attn").exists()  # the sweep stopped at once

    # the YAML changes between sessions: the half-done run keeps its saved config
    plain.write_text(plain.read_text().replace("lr: 0.05", "lr: 0.2"))
    assert sweep(plain, attn, "--seeds", 0, "--out-dir", out, "--dry-run") == 0
    dry = capsys.readouterr().out
    assert "resume at epoch 2/2 step 2" in dry and "differs in optim.lr" in dry
    calls.clear()
    assert sweep(plain, attn, "--seeds", 0, "--out-dir", out) == 0
    captured = capsys.readouterr()
    assert len(calls) == (steps - 2) + 2 * steps  # the rest of plain, then all of attn
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "optim.lr" in warnings[0]
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "finished" and record["epochs_completed"] == 2
    assert record["recipe"]["lr"] == 0.05


def test_publish_once_even_for_runs_finished_earlier(tmp_path, capsys, one_thread):  # noqa: F811
    configs, out = write_configs(tmp_path), tmp_path / "runs"
    results, weights = tmp_path / "results", tmp_path / "weights"
    assert sweep(configs[0], "--seeds", 0, "--out-dir", out) == 0  # not published yet
    trained = mtimes(out)
    argv = [*configs, "--seeds", 0, "--out-dir", out, "--publish", results, "--weights", weights]
    assert sweep(*argv) == 0
    text = capsys.readouterr().out
    assert text.count("published: ") == 2 and "done: " in text
    assert all(mtimes(out)[p] == t for p, t in trained.items())  # the done run not retrained
    published = sorted(p.name for p in results.iterdir())
    assert published == ["attn_resnet20_cifar-digits-s0.json", "resnet20_cifar-digits-s0.json"]
    assert sorted(p.name for p in weights.iterdir()) == [
        "attn_resnet20_cifar-digits-s0.safetensors", "resnet20_cifar-digits-s0.safetensors"]
    record = json.loads((results / published[0]).read_text())
    assert record["published_check"]["split"] == "test"

    before = mtimes(tmp_path)
    assert sweep(*argv) == 0  # the next session: nothing to do, nothing rewritten
    assert capsys.readouterr().out.count("already published: ") == 2
    assert mtimes(tmp_path) == before


def test_published_runs_are_done_on_a_machine_without_their_run_dirs(tmp_path, capsys,
                                                                    one_thread):  # noqa: F811
    import shutil

    configs, out = write_configs(tmp_path), tmp_path / "runs"
    results, weights = tmp_path / "results", tmp_path / "weights"
    argv = [*configs, "--seeds", 0, "--out-dir", out, "--publish", results, "--weights", weights]
    assert sweep(*argv) == 0
    capsys.readouterr()
    shutil.rmtree(out)  # a new machine: the repository's results/, no run directories
    (weights / "attn_resnet20_cifar-digits-s0.safetensors").unlink()  # this one is not whole
    assert sweep(*argv, "--dry-run") == 0
    lines = capsys.readouterr().out.splitlines()
    assert "1 done, 0 to resume, 1 new" in lines[0]
    assert lines[1].split()[:2] == ["done", "(published:"] and "resnet20_cifar-digits" in lines[1]
    assert lines[2].split()[0] == "new" and "attn" in lines[2]

    (results / "attn_resnet20_cifar-digits-s0.json").unlink()
    assert sweep(*argv) == 0  # retrains the attention run alone, publishes it again
    text = capsys.readouterr().out
    assert "done: published as" in text and text.count("finished: ") == 1
    assert (weights / "attn_resnet20_cifar-digits-s0.safetensors").is_file()
    # a published file of another seed under the same name is not taken for this run
    record = json.loads((results / "resnet20_cifar-digits-s0.json").read_text())
    (results / "resnet20_cifar-digits-s0.json").write_text(json.dumps({**record, "seed": 5}))
    plan = plan_sweep(configs, [0], out, publish_dir=results, weights_dir=weights)
    assert [r.state for r in plan] == ["new", "done"]


def test_published_weights_are_found_where_their_results_file_names_them(tmp_path, capsys,
                                                                         one_thread):  # noqa: F811
    """A run published into another weights folder (results/weights/<tier>/ say) is done for a
    sweep given the default one: the results file names its weights."""
    import shutil

    repo = tmp_path / "clone"
    (repo / ".git").mkdir(parents=True)
    configs, out = write_configs(tmp_path), tmp_path / "runs"
    results, weights = repo / "results" / "t", repo / "results" / "weights" / "t"
    assert sweep(configs[0], "--seeds", 0, "--out-dir", out, "--publish", results,
                 "--weights", weights) == 0
    shutil.rmtree(out)
    plan = plan_sweep(configs[:1], [0], out, publish_dir=results, weights_dir=repo / "elsewhere")
    assert [r.state for r in plan] == ["done"]
    (weights / "resnet20_cifar-digits-s0.safetensors").unlink()
    plan = plan_sweep(configs[:1], [0], out, publish_dir=results, weights_dir=repo / "elsewhere")
    assert [r.state for r in plan] == ["new"]


def test_a_run_killed_before_its_first_checkpoint_restarts_in_place(tmp_path, capsys,
                                                                    one_thread):  # noqa: F811
    plain, _ = write_configs(tmp_path)
    run_dir = plan_sweep([plain], [0], tmp_path / "runs")[0].run_dir
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(dump_config(plan_sweep([plain], [0], tmp_path)[0].cfg))
    assert sweep(plain, "--seeds", 0, "--out-dir", tmp_path / "runs") == 0
    assert "0 to resume, 1 new" in capsys.readouterr().out
    assert json.loads((run_dir / "results.json").read_text())["status"] == "finished"
    assert [p.name for p in run_dir.parent.iterdir()] == [run_dir.name]  # not moved to -v2


def test_a_failing_run_is_one_line_and_the_sweep_goes_on(tmp_path, capsys,
                                                        one_thread):  # noqa: F811
    plain, attn = write_configs(tmp_path)
    plain.write_text(plain.read_text().replace("batch_size: 16", "batch_size: 1000"))
    assert sweep(plain, attn, "--seeds", 0, "--out-dir", tmp_path / "runs") == 1
    captured = capsys.readouterr()
    failed = [line for line in captured.err.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 1 and "larger than the training set" in failed[0]
    assert "1 of 2 runs finished, 1 failed" in captured.out
    attn_dir = tmp_path / "runs" / "attn" / "attn_resnet20_cifar-digits-s0"
    assert json.loads((attn_dir / "results.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("argv, message", [
    (["missing.yaml"], "config file not found"),
    (["{config}", "--set", "optim.lrr=1"], "did you mean 'optim.lr'"),
    (["{config}", "--threads", "0"], "--threads must be >= 1"),
])
def test_bad_input_is_a_one_line_error_before_anything_runs(tmp_path, capsys, argv, message):
    config = write_configs(tmp_path)[0]
    argv = [a.format(config=config) for a in argv]
    assert sweep(*argv, "--seeds", 0, "--out-dir", tmp_path / "runs") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "runs").exists()


def test_torchrun_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert sweep(write_configs(tmp_path)[0], "--seeds", 0, "--out-dir", tmp_path / "runs") == 2
    assert "without torchrun" in capsys.readouterr().err


def test_threads_reach_the_engine(tmp_path, monkeypatch, one_thread):  # noqa: F811
    seen = []

    def fake_train(cfg, resume=None, quiet=False):
        seen.append((cfg.run.threads, resume))
        return {"status": "finished", "final": {"top1": 50.0}, "run_dir": "x"}

    monkeypatch.setattr(sweep_module, "train", fake_train)
    assert sweep(*write_configs(tmp_path), "--seeds", 3, "--out-dir", tmp_path, "--threads",
                 2) == 0
    assert seen == [(2, None), (2, None)]


def test_two_sweeps_share_the_runs_through_a_lock(tmp_path, capsys, one_thread):  # noqa: F811
    import subprocess
    import sys

    configs, out = write_configs(tmp_path), tmp_path / "runs"
    plan = plan_sweep(configs, [0], out)
    # another sweep, alive, is training the first run
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        plan[0].run_dir.mkdir(parents=True)
        (plan[0].run_dir / sweep_module.LOCK).write_text(str(other.pid))
        assert sweep(*configs, "--seeds", 0, "--out-dir", out) == 0
        text = capsys.readouterr().out
        assert f"busy: {plan[0].run_dir} (another sweep, process {other.pid}" in text
        assert "1 of 2 runs finished, 1 left to another sweep" in text
        assert not (plan[0].run_dir / "results.json").exists()
        assert not (plan[1].run_dir / sweep_module.LOCK).exists()  # released after its run
    finally:
        other.kill()
        other.wait()
    # its process is gone: the lock is stale and taken over
    assert sweep(*configs, "--seeds", 0, "--out-dir", out) == 0
    text = capsys.readouterr().out
    assert "busy" not in text and text.count("finished: ") == 1
    assert json.loads((plan[0].run_dir / "results.json").read_text())["status"] == "finished"
    assert not (plan[0].run_dir / sweep_module.LOCK).exists()


def test_a_run_finished_by_another_sweep_after_the_plan_is_not_retrained(
        tmp_path, capsys, monkeypatch, one_thread):  # noqa: F811
    configs, out = write_configs(tmp_path), tmp_path / "runs"
    plan = plan_sweep(configs[:1], [0], out)
    assert plan[0].state == "new"
    assert sweep(configs[0], "--seeds", 0, "--out-dir", out) == 0  # "the other sweep"
    capsys.readouterr()
    monkeypatch.setattr(sweep_module, "_train", lambda *a: pytest.fail("trained again"))
    outcome = sweep_module.run_sweep(plan, quiet=True)
    assert outcome["finished"] == [plan[0].run_dir]
    assert capsys.readouterr().out.startswith(f"done: {plan[0].run_dir}")
