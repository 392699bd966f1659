"""Weights files: round trips, mismatches and corrupt files fail in one line, pickles never run."""
import json
import pickle

import pytest
import torch

from attncnn import AttncnnError
from attncnn.engine.checkpoint import load_state_safely
from attncnn.inference.weights import (
    create_model_from_weights,
    load_weights,
    read_weights_metadata,
    save_weights,
)
from attncnn.models import SpatialSoftmaxAttention, create_model

CLASSES = ["cat", "dog", "emu"]
MEAN, STD = (0.4, 0.45, 0.5), (0.2, 0.25, 0.3)


def trained_like(name="attn_resnet20_cifar", num_classes=3, **kw):
    """A model whose every tensor differs from its fresh init (BN stats included)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes, **kw)
    for m in model.modules():
        if isinstance(m, SpatialSoftmaxAttention):
            torch.nn.init.normal_(m.conv.weight, std=0.3)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 16, 16))  # moves BN running stats, counts a batch
    return model.eval()


def save(tmp_path, model, name="w.safetensors", **kw):
    return save_weights(tmp_path / name, model, classes=CLASSES[: model.model_args["num_classes"]],
                        mean=MEAN, std=STD, input_size=(3, 32, 32), **kw)


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_round_trip_is_exact_and_keeps_metadata(tmp_path):
    model = trained_like(attention_options={"num_maps": 4})
    path = save(tmp_path, model, summary={"top1": 91.5, "epochs": 3})
    rebuilt, meta = create_model_from_weights(path)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))
    assert not rebuilt.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, rebuilt.state_dict()[k]), k
    assert meta["model"] == "attn_resnet20_cifar"
    assert meta["model_args"]["attention_options"] == {"num_maps": 4}
    assert meta["classes"] == CLASSES and meta["num_classes"] == 3
    assert meta["mean"] == list(MEAN) and meta["std"] == list(STD)
    assert meta["input_size"] == [3, 32, 32]
    assert meta["summary"] == {"top1": 91.5, "epochs": 3}
    assert read_weights_metadata(path) == meta


def test_float16_file_is_half_the_size_and_close(tmp_path):
    model = trained_like()
    full = save(tmp_path, model)
    half = save(tmp_path, model, name="h.safetensors", dtype=torch.float16)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    rebuilt, meta = create_model_from_weights(half)
    assert meta["dtype"] == "float16"
    state = rebuilt.state_dict()
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    tracked = [k for k in state if k.endswith("num_batches_tracked")]
    assert tracked and all(state[k].dtype == torch.int64 and state[k] == 1 for k in tracked)
    from safetensors import safe_open

    with safe_open(str(half), "pt") as f:  # parameters halved, BN statistics kept float32
        assert f.get_tensor("fc.weight").dtype == torch.float16
        assert f.get_tensor("stem.1.running_var").dtype == torch.float32
        assert f.get_tensor("stem.1.num_batches_tracked").dtype == torch.int64
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        ref, out = model(x), rebuilt(x)
    assert not torch.equal(ref, out)  # really rounded...
    assert torch.allclose(ref, out, atol=1e-2 * ref.abs().max().item())  # ...but close
    assert torch.equal(ref.argmax(1), out.argmax(1))


def test_float16_refuses_parameters_it_cannot_hold_but_keeps_large_bn_statistics(tmp_path):
    model = trained_like()
    with torch.no_grad():
        model.stem[1].running_var[0] = 4e5  # seen in a diverging run: kept as float32
    rebuilt, _ = create_model_from_weights(save(tmp_path, model, dtype=torch.float16))
    assert rebuilt.stem[1].running_var[0] == 4e5
    with torch.no_grad():
        model.fc.bias[0] = 1e6  # beyond float16's 65504
    with pytest.raises(AttncnnError, match="fc.bias does not fit in torch.float16"):
        save(tmp_path, model, name="x.safetensors", dtype=torch.float16)
    assert not (tmp_path / "x.safetensors").exists()  # nothing half-written


@pytest.mark.parametrize("other, expected", [
    (dict(name="resnet20_cifar"), "'attn_resnet20_cifar', not 'resnet20_cifar'"),
    (dict(num_classes=5), "3 classes"),
])
def test_loading_into_another_model_fails_in_one_line(tmp_path, other, expected):
    path = save(tmp_path, trained_like())
    with pytest.raises(AttncnnError) as err:
        load_weights(trained_like(**other), path)
    assert str(path) in one_line(err) and expected in str(err.value)


def test_tensors_that_do_not_fit_the_metadata_are_named(tmp_path):
    """A file whose metadata says 3 classes but whose fc is 5 wide (edited by hand)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = save(tmp_path, trained_like())
    wrong = trained_like(num_classes=5).state_dict()
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    bad = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in wrong.items()}, str(bad), metadata=meta)
    with pytest.raises(AttncnnError) as err:
        create_model_from_weights(bad)
    assert "fc.weight is [5, 64] in the file but [3, 64]" in one_line(err)


def test_save_refuses_class_names_that_do_not_match_the_outputs(tmp_path):
    with pytest.raises(AttncnnError, match="2 class names for a model with 3 outputs"):
        save_weights(tmp_path / "w.safetensors", trained_like(), classes=["a", "b"],
                     mean=MEAN, std=STD, input_size=(3, 32, 32))


def test_unknown_model_name_in_metadata_is_named(tmp_path):
    from safetensors.torch import save_file

    meta = {"format": "attncnn.weights/1", "model": "resnet21_cifar", "model_args": {},
            "num_classes": 3, "classes": CLASSES}
    path = tmp_path / "w.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"attncnn": json.dumps(meta)})
    with pytest.raises(AttncnnError) as err:
        create_model_from_weights(path)
    assert "unknown model 'resnet21_cifar'" in one_line(err) and str(path) in str(err.value)


@pytest.mark.parametrize("content, expected", [
    (b"definitely not a safetensors file", "not a readable safetensors file"),
    (b"", "not a readable safetensors file"),
    ("truncated", "not a readable safetensors file"),
    ("no-metadata", "no attncnn metadata"),
    (None, "not found"),
])
def test_corrupt_or_foreign_files_fail_in_one_line(tmp_path, content, expected):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    if content == "truncated":
        good = save(tmp_path, trained_like(), name="good.safetensors").read_bytes()
        path.write_bytes(good[: len(good) // 2])
    elif content == "no-metadata":
        save_file({"x": torch.zeros(2)}, str(path))
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(AttncnnError) as err:
        create_model_from_weights(path)
    assert expected in one_line(err) and str(path) in str(err.value)


def test_checkpoint_round_trip(tmp_path):
    state = {"model": trained_like().state_dict(), "epoch": 3, "history": [{"top1": 1.5}]}
    torch.save(state, tmp_path / "ckpt.pt")
    loaded = load_state_safely(tmp_path / "ckpt.pt")
    assert loaded["epoch"] == 3 and loaded["history"] == [{"top1": 1.5}]
    assert all(torch.equal(v, loaded["model"][k]) for k, v in state["model"].items())


class _Payload:
    """Unpickling this calls `open(marker, "w")`: code run by merely loading a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("via", ["torch.save", "raw pickle"])
def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path, via):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"model": {"w": torch.zeros(2)}, "extra": _Payload(marker)}
    if via == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    assert not marker.exists()
    with pytest.raises(AttncnnError) as err:
        load_state_safely(path)
    assert not marker.exists()
    assert str(path) in one_line(err)
    # the unsafe way really would have run it: the test is not vacuous
    if via == "torch.save":
        torch.load(path, weights_only=False)
        assert marker.exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"plain text"])
def test_unreadable_checkpoint_fails_in_one_line(tmp_path, content):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(content)
    with pytest.raises(AttncnnError) as err:
        load_state_safely(path)
    assert str(path) in one_line(err)


def test_the_documented_entry_points_import_from_the_package_itself():
    """The README names create_model_from_weights and attention_maps beside create_model."""
    import attncnn
    import attncnn.analysis.explain
    import attncnn.inference.weights

    assert attncnn.create_model_from_weights is attncnn.inference.weights.create_model_from_weights
    assert attncnn.attention_maps is attncnn.analysis.explain.attention_maps
    assert {"create_model_from_weights", "attention_maps"} <= set(attncnn.__all__)
    assert all(hasattr(attncnn, name) for name in attncnn.__all__)
