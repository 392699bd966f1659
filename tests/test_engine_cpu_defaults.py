"""The engine's CPU defaults: bf16 autocast only where the CPU has bf16 in hardware,
channels_last on, run.threads."""
import pytest
import torch

from attncnn import AttncnnError
from attncnn.engine import device as engine
from attncnn.engine.config import load_config
from attncnn.engine.device import cpu_has_native_bf16

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("flags, expected", [
    ("fpu sse avx2 avx512f avx512bw avx512_bf16 avx512vl", True),   # AMD Zen 4, Intel Cooper Lake
    ("fpu sse avx2 avx512f amx_tile amx_bf16", True),               # Intel Sapphire Rapids
    ("fpu sse avx2 avx512f avx512bw avx512vl", False),              # AVX512 without BF16: emulated
    ("fpu sse avx2", False),
])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, flags, expected):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: X\nflags\t\t: {flags}\n")
    assert cpu_has_native_bf16(str(info)) is expected


def test_arm_bf16_feature_and_a_missing_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n")
    assert cpu_has_native_bf16(str(info)) is True
    assert cpu_has_native_bf16(str(tmp_path / "absent")) is False


@pytest.mark.parametrize("native", [True, False])
def test_amp_auto_follows_the_cpu_and_explicit_values_win(monkeypatch, native):
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: native)
    assert engine.resolve_amp("auto", CPU) is native
    assert engine.resolve_amp("auto", CUDA) is True
    assert engine.resolve_amp(False, CPU) is False and engine.resolve_amp(True, CPU) is True


def test_channels_last_auto_is_on_for_cpu_and_cuda():
    assert engine.resolve_channels_last("auto", CPU) and engine.resolve_channels_last("auto", CUDA)
    assert not engine.resolve_channels_last(False, CPU)
    assert not engine.resolve_channels_last("auto", torch.device("mps"))


def test_threads_must_not_be_negative():
    assert load_config(None, ["run.threads=1"]).run.threads == 1
    with pytest.raises(AttncnnError, match="run.threads must be >= 0"):
        load_config(None, ["run.threads=-1"])


def test_one_resolve_device_for_every_command(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert engine.resolve_device("auto") == CPU and engine.resolve_device("cpu") == CPU
    with pytest.raises(AttncnnError, match=r"^run.device=cuda:1 but this torch .* sees no CUDA "
                                           r"GPU; use run.device=cpu$"):
        engine.resolve_device("cuda:1", what="run.device")
    with pytest.raises(AttncnnError, match=r"^--device=gpu: unknown device; use auto, cpu"):
        engine.resolve_device("gpu", what="--device")
    # names torch parses but nothing here runs on: one line, not a traceback later
    for name in ("meta", "xpu"):
        with pytest.raises(AttncnnError, match=rf"^--device={name}: unknown device"):
            engine.resolve_device(name, what="--device")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(AttncnnError, match=r"^--device=mps but this torch .* sees no MPS"):
        engine.resolve_device("mps", what="--device")
