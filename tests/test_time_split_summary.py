"""benchmarks/cpu_time_split_summary.py: the gap between ours and airbench94 split into parts
that add up to it, from the three files of benchmarks/cpu_time_split.sh; missing or
unfinished files, or
a ladder without tries, are named in one line."""
import json

import pytest

from benchmark_module import load_benchmark


def a_try(train, evaluation, accuracy, **extra):
    return {"epochs": 10, "train_s": train, "eval_s": evaluation, "time_s": train + evaluation,
            "accuracy": accuracy, "loadavg_before": 0.1, "loadavg_after": 2.0, **extra}


def write_split(directory, complete=True):
    files = {
        "ref": {"airbench": {"tries": [a_try(300.0, 5.0, 89.0), a_try(400.0, 8.0, 90.6)]},
                "ours": {"tries": [a_try(460.0, 30.0, 90.1)]}},
        "bf16eval": {"ours": {"tries": [a_try(450.0, 9.0, 90.0, accuracy_float32=90.1)]}},
        "noattn": {"ours": {"tries": [a_try(420.0, 8.5, 90.3, accuracy_float32=90.3)]}},
    }
    for name, doc in files.items():
        (directory / f"cpu-split-{name}.json").write_text(json.dumps({"complete": complete, **doc}))


def test_the_parts_add_up_to_the_gap_and_come_from_the_right_runs(tmp_path, capsys):
    summary = load_benchmark("cpu_time_split_summary")
    write_split(tmp_path)
    lines = summary.rows(summary.load(tmp_path))
    assert [r["time_s"] for r in lines] == [408.0, 490.0, 459.0, 428.5]  # the last try of each
    parts = summary.split(lines)
    gap, *rest = parts.values()
    assert gap == pytest.approx(82.0) and sum(rest) == pytest.approx(gap)
    named = {k.split(" (")[0]: v for k, v in parts.items()}
    assert named["evaluation precision"] == pytest.approx(21.0)
    assert named["attention modules"] == pytest.approx(30.5)
    assert named["training loop and rebuild"] == pytest.approx(20.0)
    assert named["noise: the same training twice"] == pytest.approx(10.0)
    assert summary.main([str(tmp_path), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| ours, bf16 eval (bf16eval) | 10 | 450.0 | 9.0 | 459.0 | 90.00 (float32: 90.10) |" in out
    assert "| evaluation precision (ref eval - bf16eval eval) | +21.0 | +5.1% |" in out


@pytest.mark.parametrize("problem", ["missing", "unfinished", "no airbench tries"])
def test_a_missing_or_unfinished_run_is_named(tmp_path, capsys, problem):
    summary = load_benchmark("cpu_time_split_summary")
    write_split(tmp_path, complete=problem != "unfinished")
    if problem == "missing":
        (tmp_path / "cpu-split-noattn.json").unlink()
    if problem == "no airbench tries":
        ref = tmp_path / "cpu-split-ref.json"
        ref.write_text(json.dumps({**json.loads(ref.read_text()), "airbench": {"tries": []}}))
    assert summary.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cpu-split-" in err
    assert {"missing": "not found", "unfinished": "did not finish",
            "no airbench tries": "cpu-split-ref.json: no airbench tries"}[problem] in err
