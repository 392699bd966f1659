"""`attncnn bench`: the report's documented fields and their types. Speed is never asserted."""
import json

import pytest

from attncnn.analysis.bench import SCHEMA, BenchSettings, PeakMemory, bench_models, format_table
from attncnn.cli import main
from attncnn.errors import AttncnnError



@pytest.fixture(autouse=True)
def _keep_threads():
    """`--threads` sets torch's process-wide count: give the rest of the suite its own back."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


TINY = ["--batch-size", "2", "--steps", "1", "--windows", "2", "--warmup", "1", "--threads", "1"]


def _check_phase(phase: dict, windows: int):
    for key in ("step_time_ms", "images_per_s"):
        stats = phase[key]
        assert set(stats) == {"median", "min", "max"}
        assert 0 < stats["min"] <= stats["median"] <= stats["max"]
    assert len(phase["windows_ms"]) == windows
    assert isinstance(phase["peak_mem_bytes"], int) and phase["peak_mem_bytes"] >= 0
    assert phase["mem_method"] in ("rss_hwm_delta", "ru_maxrss_delta", "cuda.max_memory_allocated")


def test_bench_command_writes_documented_json(tmp_path, capsys):
    out = tmp_path / "sub" / "bench.json"
    assert main(["bench", "resnet20_cifar", "attn_resnet20_cifar", *TINY, "--image-size", "16",
                 "--markdown", "--baseline", "attn_resnet20_cifar", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| `resnet20_cifar` | 16 |" in table and "| `attn_resnet20_cifar` | 16 |" in table
    report = json.loads(out.read_text())
    assert report["schema"] == SCHEMA
    assert report["baseline"] == "attn_resnet20_cifar"
    assert report["settings"]["batch_size"] == 2 and report["settings"]["image_size"] == 16
    env = report["env"]
    assert env["device"] == "cpu" and env["num_threads"] == 1
    assert isinstance(env["torch"], str) and isinstance(env["device_name"], str)
    rows = {r["name"]: r for r in report["models"]}
    assert list(rows) == ["resnet20_cifar", "attn_resnet20_cifar"]
    for row in rows.values():
        assert row["input_size"] == [3, 16, 16]
        assert isinstance(row["params"], int) and isinstance(row["macs"], int)
        _check_phase(row["train"], 2)
        _check_phase(row["infer"], 2)
        assert row["train_step_ratio"] > 0 and row["infer_step_ratio"] > 0
    base = rows["attn_resnet20_cifar"]
    assert base["train_step_ratio"] == 1.0 and base["macs_ratio"] == 1.0
    # the attention adds parameters, so the plain net is smaller than the baseline
    assert rows["resnet20_cifar"]["params_ratio"] < 1.0
    # MACs follow the image size: 16 px is a quarter of the default 32 px
    full = bench_models(["resnet20_cifar"], BenchSettings(train=False, infer=False))
    assert full["models"][0]["macs"] == pytest.approx(4 * rows["resnet20_cifar"]["macs"], rel=0.01)


def test_baseline_not_listed_is_benched_first():
    report = bench_models(["resnet20_cifar"], BenchSettings(batch_size=2, steps=1, windows=1,
                                                            warmup=0, image_size=8, infer=False),
                          baseline="se_resnet20_cifar")
    assert [r["name"] for r in report["models"]] == ["se_resnet20_cifar", "resnet20_cifar"]
    assert "infer" not in report["models"][0] and "train" in report["models"][0]
    lines = format_table(report).splitlines()
    assert "ratios vs se_resnet20_cifar" in lines[0]
    assert [line.split()[0] for line in lines[2:]] == ["se_resnet20_cifar", "resnet20_cifar"]


def test_unknown_model_fails_before_timing(capsys):
    assert main(["bench", "resnet20_cifar", "resnet21_cifar", *TINY]) == 2
    err = capsys.readouterr().err
    assert "resnet21_cifar" in err and err.count("\n") == 1


def test_cuda_without_gpu_is_a_one_line_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(AttncnnError, match="no CUDA"):
        bench_models(["resnet20_cifar"], BenchSettings(device="cuda"))


def test_peak_memory_sees_a_large_allocation():
    import torch

    with PeakMemory(torch.device("cpu")) as mem:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        del block
    assert mem.bytes >= 32 * 2**20  # coarse: RSS, but 64 MiB cannot hide


def test_peak_memory_grown_counts_what_stays():
    import torch

    with PeakMemory(torch.device("cpu")) as mem:
        kept = torch.ones(64 * 2**20 // 4)
    assert mem.grown >= 32 * 2**20 and mem.bytes >= mem.grown - 2**20
    del kept
