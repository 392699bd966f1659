"""benchmarks/attention_stall.py: it runs the engine to its end with its hooks attached, and
its stage gradient norms leave the attention convs out."""
import json
import sys
from pathlib import Path

from attncnn.models import attention_modules, create_model

from benchmark_module import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


def test_stage_gradients_leave_the_attention_convs_out(tmp_path):
    bench = load_benchmark("attention_stall")
    model = create_model("attn_resnet20_cifar", depth=8, attention_placement="stage")
    mon = bench.Monitor(str(tmp_path / "out.jsonl"), every=1)
    mon.attach(model)
    attention = {id(p) for _, m in attention_modules(model) for p in m.parameters()}
    grouped = [p for ps in mon.convs.values() for p in ps]
    assert attention and grouped and not attention & {id(p) for p in grouped}
    assert len(grouped) == sum(p.ndim == 4 for p in model.parameters()) - len(mon.attn)


def test_runs_to_the_results_with_its_hooks(tmp_path, monkeypatch, capsys):
    bench = load_benchmark("attention_stall")
    out = tmp_path / "stall.jsonl"
    monkeypatch.setattr(sys, "argv", [
        "attention_stall.py", str(ROOT / "configs" / "digits_ablation" / "attn_stage.yaml"),
        str(out), "--every", "4", "--set", "schedule.epochs=1", "--set", "data.train_subset=256",
        "--set", "data.batch_size=64", "--set", f"run.out_dir={tmp_path / 'runs'}"])
    bench.main()   # count_macs copies the model; the monitor's hooks hold an open file
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["step"] for r in rows] == [0]
    assert set(rows[0]["grad_attn"]) == {"stages.0.1", "stages.1.1", "stages.2.1"}
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["top1"] is not None
