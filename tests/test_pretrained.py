"""Weights shipped inside the package, loaded by name: `create_model(name, pretrained=TAG)`,
`list_pretrained()`, `attncnn predict --model --pretrained`, and the `--ship` refresh."""
import json
import shutil
import socket
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import attncnn
from attncnn import AttncnnError, create_model, list_pretrained
from attncnn.cli import main
from attncnn.inference.weights import create_model_from_weights, read_weights_metadata
from attncnn.pretrained.shipped import BEGIN, END, read_index, render_table, ship

ROOT = Path(__file__).resolve().parents[1]
X = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def one_line(err):
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_list_pretrained_names_the_shipped_files_found_as_package_data():
    entries = list_pretrained()
    assert attncnn.list_pretrained is list_pretrained
    pairs = {(e["model"], e["tag"]) for e in entries}
    assert {("attn_resnet20_cifar", "digits"), ("resnet20_cifar", "digits")} <= pairs
    folder = resources.files("attncnn.pretrained")
    total = 0
    for e in entries:
        blob = folder.joinpath(e["file"]).read_bytes()
        total += len(blob)
        assert len(blob) == e["bytes"]
        for key in ("top1", "data", "split", "results", "commit", "model_args", "row_top1_mean"):
            assert e[key] is not None, key
        assert (ROOT / e["results"]).is_file()
    assert total < 5e6  # "a few MB in all"
    assert list_pretrained("resnet20_cifar") == [e for e in entries if e["model"] == "resnet20_cifar"]


def test_tag_loads_the_published_weights_with_their_recipe(no_network):
    entry = next(e for e in list_pretrained() if (e["model"], e["tag"]) == ("attn_resnet20_cifar", "digits"))
    model = create_model("attn_resnet20_cifar", pretrained="digits").eval()
    assert model.model_args == entry["model_args"]            # e.g. depth 8, not the default 20
    published, meta = create_model_from_weights(ROOT / entry["weights_from"])
    with torch.no_grad():
        assert torch.equal(model(X), published(X))
    cfg = model.pretrained_cfg
    assert cfg["classes"] == meta["classes"] and cfg["mean"] == meta["mean"]
    assert cfg["std"] == meta["std"] and cfg["input_size"] == meta["input_size"]
    assert cfg["results"] == entry["results"] and cfg["tag"] == "digits" and cfg["head"] == "pretrained"
    assert create_model("attn_resnet20_cifar").pretrained_cfg is None


def test_a_tag_accepts_agreeing_arguments_and_refuses_conflicting_ones():
    entry = next(e for e in list_pretrained("attn_resnet20_cifar") if e["tag"] == "digits")
    args = entry["model_args"]
    model = create_model("attn_resnet20_cifar", pretrained="digits", depth=args["depth"],
                         attention=args["attention"])
    assert model.model_args == args
    for bad, named in ((dict(depth=20), "depth=8, not 20"),
                       (dict(attention_placement="block"), "attention_placement="),
                       (dict(in_channels=1), "in_channels=3, not 1")):
        with pytest.raises(AttncnnError, match=named) as err:
            create_model("attn_resnet20_cifar", pretrained="digits", **bad)
        one_line(err)


def test_another_class_count_gets_a_new_head():
    plain = create_model("resnet20_cifar", pretrained="digits").eval()
    model = create_model("resnet20_cifar", pretrained="digits", num_classes=3).eval()
    assert model.fc.out_features == 3 and model.model_args["num_classes"] == 3
    assert model.pretrained_cfg["head"] == "new" and model.pretrained_cfg["classes"] is None
    with torch.no_grad():
        assert torch.equal(model.forward_features(X), plain.forward_features(X))


@pytest.mark.parametrize("name, tag, pattern", [
    ("se_resnet20_cifar", "cifar10", r"no shipped weights tagged 'cifar10'.*se_resnet20_cifar has: digits"),
    ("attn_resnet50", "digits", r"attn_resnet50 has no shipped weights \(shipped: .*attn_resnet20_cifar:digits"),
    ("attn_resnet20_cifar", True, r"pretrained=True is ambiguous"),
    ("attn_resnet20_cifar", "resnet20_cifar:imagenet", r"no shipped weights 'resnet20_cifar:imagenet'; resnet20_cifar has: cifar10, digits"),
])
def test_unknown_tags_list_what_exists(name, tag, pattern):
    with pytest.raises(AttncnnError, match=pattern) as err:
        create_model(name, pretrained=tag)
    one_line(err)


def test_model_colon_tag_adds_attention_to_a_plain_network():
    """The no-attention weights, loaded into the same network with the paper's module at the
    end: the module starts as the identity, so the logits do not change."""
    plain = create_model("resnet20_cifar", pretrained="digits").eval()
    model = create_model("attn_resnet20_cifar", pretrained="resnet20_cifar:digits", depth=8,
                         attention_placement="end").eval()
    assert model.pretrained_cfg["attention_at_init"] == 2
    with torch.no_grad():
        torch.testing.assert_close(model(X), plain(X), atol=1e-5, rtol=0)
    with pytest.raises(AttncnnError, match=r"not in the file .*built with .*depth=8") as err:
        create_model("attn_resnet20_cifar", pretrained="resnet20_cifar:digits")   # depth 20
    one_line(err)


def test_a_damaged_shipped_file_is_refused(monkeypatch, tmp_path):
    folder = tmp_path / "pretrained"
    shutil.copytree(Path(str(resources.files("attncnn.pretrained"))), folder)
    target = folder / "resnet20_cifar-digits.safetensors"
    data = bytearray(target.read_bytes())
    data[-3] ^= 0xFF
    target.write_bytes(bytes(data))
    monkeypatch.setattr("attncnn.pretrained.shipped.package_dir", lambda: folder)
    with pytest.raises(AttncnnError, match="does not match its checksum"):
        create_model("resnet20_cifar", pretrained="digits")


def test_own_safetensors_and_checkpoint_files_load_by_path(tmp_path):
    entry = next(e for e in list_pretrained("resnet20_cifar") if e["tag"] == "digits")
    src = ROOT / entry["weights_from"]
    model = create_model("resnet20_cifar", pretrained=str(src), depth=8).eval()
    assert model.pretrained_cfg["classes"] == read_weights_metadata(src)["classes"]
    ckpt = tmp_path / "last.pt"   # a training checkpoint: {"model": state_dict, ...}
    torch.save({"format": "x", "model": model.state_dict(), "epoch": 2}, ckpt)
    again = create_model("resnet20_cifar", pretrained=ckpt, depth=8).eval()
    with torch.no_grad():
        assert torch.equal(again(X), model(X))
    assert again.pretrained_cfg["mean"] is None   # a bare state dict says nothing of its data


def test_predict_with_a_shipped_tag(tmp_path, capsys, no_network):
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(tmp_path / f"{i}.png")
    code = main(["predict", "--model", "attn_resnet20_cifar", "--pretrained", "digits",
                 str(tmp_path), "--format", "json", "--top-k", "2", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 2 and all(r["top"][0]["class"] in list("0123456789") for r in rows)
    for argv, message in (
        (["--pretrained", "digits"], "--model and --pretrained go together"),
        ([], "pass --weights FILE, or --model NAME --pretrained TAG"),
        (["--model", "se_resnet20_cifar", "--pretrained", "cifar10"], "se_resnet20_cifar has: digits"),
    ):
        assert main(["predict", *argv, str(tmp_path)]) == 2
        assert message in capsys.readouterr().err


def test_ship_keeps_the_best_run_per_model_and_matches_the_packaged_index(tmp_path):
    entries = ship([str(ROOT / "results/digits_ablation")], "digits", dest=tmp_path, root=ROOT)
    by_model = {e["model"]: e for e in entries}
    for model, e in by_model.items():   # the best of every finished published run of the model
        tops = []
        for path in (ROOT / "results/digits_ablation").glob("*.json"):
            rec = json.loads(path.read_text())
            if rec.get("model") == model and "final" in rec:
                tops.append((rec.get("published_check") or rec["final"])["top1"])
        assert e["top1"] == pytest.approx(max(tops), abs=1e-4) and e["candidates"] == len(tops)
    packaged = read_index()["weights"]
    written = read_index(tmp_path)["weights"]
    assert written == [e for e in packaged if e["tag"] == "digits"], \
        "the shipped set is stale: run attncnn pretrained --ship digits results/digits_ablation"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["index.json", *(e["file"] for e in written)])
    # another tag is kept; re-shipping a tag drops its old files
    (tmp_path / "x.safetensors").write_bytes((tmp_path / written[0]["file"]).read_bytes())
    index = read_index(tmp_path)
    index["weights"].append({**written[0], "tag": "old", "file": "x.safetensors"})
    (tmp_path / "index.json").write_text(json.dumps(index))
    ship([str(ROOT / "results/digits_ablation/resnet8-digits-s1.json")], "old", dest=tmp_path, root=ROOT)
    assert not (tmp_path / "x.safetensors").exists()
    tags = {(e["model"], e["tag"]) for e in read_index(tmp_path)["weights"]}
    assert ("resnet20_cifar", "old") in tags and ("attn_resnet20_cifar", "digits") in tags


def test_ship_refuses_mixed_data_and_bad_tags(tmp_path):
    with pytest.raises(AttncnnError, match="different data") as err:
        ship([str(ROOT / "results/digits_ablation"), str(ROOT / "results/cpu_short")], "mix",
             dest=tmp_path, root=ROOT)
    one_line(err)
    with pytest.raises(AttncnnError, match="use lower-case letters"):
        ship([str(ROOT / "results/digits_ablation")], "Bad Tag", dest=tmp_path, root=ROOT)
    with pytest.raises(AttncnnError, match="no finished runs with published weights"):
        ship([str(ROOT / "results/bench")], "bench", dest=tmp_path, root=ROOT)


def test_readme_table_is_generated_from_the_index():
    text = (ROOT / "README.md").read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    assert text[start:end].strip() == render_table().strip(), \
        "README is stale: run attncnn pretrained --readme README.md"


def test_predict_fits_files_alike_for_a_file_given_as_pretrained_or_as_weights(tmp_path):
    """`predict --model M --pretrained FILE` reads image files as `predict --weights FILE`:
    the weights' training summary (data_source: folder -> the whole image resized) travels
    with the model, instead of the by-size centre crop of weights that record no source."""
    from attncnn.data.image_input import ImageInput
    from attncnn.inference.weights import save_weights
    from attncnn.pretrained.load import model_for_prediction

    model = create_model("resnet20_cifar")   # as --model builds it: depth 20, 10 classes
    path = save_weights(tmp_path / "folder.safetensors", model, classes=list("abcdefghij"),
                        mean=(0.5,) * 3, std=(0.25,) * 3, input_size=(3, 32, 32),
                        summary={"data_source": "folder"})
    _, meta = model_for_prediction("resnet20_cifar", str(path))
    _, as_weights = create_model_from_weights(path)
    assert ImageInput.for_weights(meta).fit == ImageInput.for_weights(as_weights).fit == "resize"
