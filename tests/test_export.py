"""ONNX and TorchScript exports give PyTorch's logits for any batch size, for every attention."""
import json
from pathlib import Path

import pytest
import torch

from attncnn import AttncnnError
from attncnn.cli import main
from attncnn.inference.export import check_export, export_weights, run_exported
from attncnn.inference.weights import save_weights
from attncnn.models import SpatialSoftmaxAttention, attention_modules, create_model

SIZE = (3, 16, 16)  # the CIFAR ResNets pool globally: a small input keeps export quick

# every attention kind, every placement at least once, softmax with several maps
VARIANTS = {
    "none-block": ("resnet20_cifar", {}),
    "se-block": ("se_resnet20_cifar", {}),
    "cbam-stage": ("cbam_resnet20_cifar", {"attention_placement": "stage"}),
    "softmax4-stage": ("attn_resnet20_cifar", {"attention_options": {"num_maps": 4}}),
    "softmax2-end-residual": ("attn_resnet20_cifar", {"attention_placement": "end",
                                                      "attention_options": {"num_maps": 2,
                                                                            "mode": "residual"}}),
    "softmax4-block": ("attn_resnet20_cifar", {"attention_placement": "block",
                                               "attention_options": {"num_maps": 4}}),
}


def realistic(name, **kw):
    """Weights shaped like a trained model's: calibrated BN, non-uniform attention, logits O(1)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, **kw)
    for m in model.modules():
        if isinstance(m, SpatialSoftmaxAttention):
            torch.nn.init.normal_(m.conv.weight, std=0.1)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average: a few batches give settled statistics
    torch.nn.init.normal_(model.fc.weight, std=0.5)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(16, *SIZE))
    return model.eval()


@pytest.fixture(scope="module", params=list(VARIANTS))
def weights(request, tmp_path_factory):
    name, kw = VARIANTS[request.param]
    path = tmp_path_factory.mktemp(request.param) / "w.safetensors"
    save_weights(path, realistic(name, **kw), classes=list("abcd"), mean=(0.5,) * 3,
                 std=(0.25,) * 3, input_size=SIZE)
    return path


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch_for_batches_of_1_and_3(weights, fmt, tmp_path):
    out, model, meta = export_weights(weights, fmt, tmp_path / f"w.{fmt}")
    assert out.is_file()
    gen = torch.Generator().manual_seed(1)
    for batch in (1, 3):
        x = torch.randn(batch, *SIZE, generator=gen)
        with torch.no_grad():
            want = model(x)
        got = run_exported(out, fmt, x)
        assert got.shape == (batch, 4)
        assert want.abs().max() > 0.5  # logits of a useful size, not all ~0
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert not any(sub._forward_hooks for _, m in attention_modules(model)
                   for sub in m.modules())   # export leaves no recording behind


def test_onnx_has_a_named_dynamic_batch_and_the_metadata(tmp_path):
    import onnx

    path = tmp_path / "w.safetensors"
    save_weights(path, realistic("attn_resnet20_cifar"), classes=list("abcd"),
                 mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6), input_size=SIZE)
    out, _, _ = export_weights(path, "onnx", tmp_path / "sub" / "m.onnx")
    proto = onnx.load(str(out))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert proto.graph.input[0].name == "images" and dims[0].dim_param == "batch"
    assert [d.dim_value for d in dims[1:]] == list(SIZE)
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["attncnn"])
    assert meta["classes"] == list("abcd") and meta["std"] == [0.4, 0.5, 0.6]


def test_torchscript_carries_the_metadata(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, create_model("resnet20_cifar", num_classes=4), classes=list("wxyz"),
                 mean=(0.5,) * 3, std=(0.25,) * 3, input_size=SIZE)
    out, _, _ = export_weights(path, "torchscript", tmp_path / "w.torchscript.pt")
    extra = {"attncnn.json": ""}
    with pytest.warns(DeprecationWarning):  # torch.jit is deprecated, still works in 2.13
        torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["attncnn.json"])["classes"] == list("wxyz")


def test_export_command_writes_and_checks(tmp_path, capsys):
    path = tmp_path / "w.safetensors"
    save_weights(path, realistic("cbam_resnet20_cifar"), classes=list("abcd"), mean=(0.5,) * 3,
                 std=(0.25,) * 3, input_size=SIZE)
    assert main(["export", "--weights", str(path), "--format", "onnx",
                 "--out", str(tmp_path / "x.onnx")]) == 0
    out = capsys.readouterr().out
    assert "x.onnx" in out and "checked" in out
    assert (tmp_path / "x.onnx").is_file()


def test_export_writes_to_the_current_directory_not_beside_the_weights(tmp_path, monkeypatch,
                                                                      capsys):
    """Published weights sit in the repository: an export beside them would be an untracked
    file there."""
    published = tmp_path / "repo" / "results" / "weights"
    run = tmp_path / "runs" / "attn-digits-s0"
    for folder, name in ((published, "attn-digits-s0.safetensors"), (run, "model.safetensors")):
        folder.mkdir(parents=True)
        save_weights(folder / name, create_model("resnet20_cifar", num_classes=4),
                     classes=list("abcd"), mean=(0.5,) * 3, std=(0.25,) * 3, input_size=SIZE)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["export", "-w", str(published / "attn-digits-s0.safetensors"), "-f",
                 "torchscript", "--no-check"]) == 0
    assert capsys.readouterr().out.startswith("wrote attn-digits-s0.torchscript.pt (")
    assert (work / "attn-digits-s0.torchscript.pt").is_file()
    assert sorted(p.name for p in published.iterdir()) == ["attn-digits-s0.safetensors"]
    # a run's model.safetensors is named after its run directory
    out, _, _ = export_weights(run / "model.safetensors", "torchscript")
    assert out == Path("attn-digits-s0.torchscript.pt") and (work / out).is_file()
    assert sorted(p.name for p in run.iterdir()) == ["model.safetensors"]
    monkeypatch.chdir(run)  # the weights in the current directory keep their own name
    assert export_weights("model.safetensors", "torchscript")[0] == Path("model.torchscript.pt")


def test_missing_export_extra_is_a_clear_error(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnx" else real(name, *a))
    path = tmp_path / "w.safetensors"
    save_weights(path, create_model("resnet20_cifar", num_classes=2), classes=["a", "b"],
                 mean=(0.5,) * 3, std=(0.25,) * 3, input_size=SIZE)
    with pytest.raises(AttncnnError, match=r"needs onnx: pip install 'attncnn\[export\]'"):
        export_weights(path, "onnx")


def test_unknown_format_is_named(tmp_path):
    with pytest.raises(AttncnnError, match="unknown export format 'tflite'"):
        export_weights(tmp_path / "w.safetensors", "tflite")


@pytest.mark.slow
def test_dynamo_exporter_matches_too(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, realistic("attn_resnet20_cifar", attention_options={"num_maps": 4}),
                 classes=list("abcd"), mean=(0.5,) * 3, std=(0.25,) * 3, input_size=SIZE)
    out, model, _ = export_weights(path, "onnx", tmp_path / "w.onnx", exporter="dynamo")
    for batch in (1, 3):
        x = torch.randn(batch, *SIZE)
        with torch.no_grad():
            torch.testing.assert_close(run_exported(out, "onnx", x), model(x), atol=1e-4, rtol=1e-4)


def test_check_export_measures_the_difference(tmp_path):
    """check_export (what `attncnn export` prints) sees a model that differs from the file."""
    path = tmp_path / "w.safetensors"
    save_weights(path, realistic("se_resnet20_cifar"), classes=list("abcd"), mean=(0.5,) * 3,
                 std=(0.25,) * 3, input_size=SIZE)
    out, model, _ = export_weights(path, "torchscript", tmp_path / "w.torchscript.pt")
    assert check_export(out, "torchscript", model, SIZE) < 1e-5
    with torch.no_grad():
        model.fc.bias += 0.01
    assert check_export(out, "torchscript", model, SIZE) == pytest.approx(0.01, rel=1e-3)
