"""`attncnn eval`: accuracy, per-class table, confusion PNG and results JSON, from weights or a run."""
import dataclasses
import json

import pytest
import torch
from PIL import Image

from attncnn import AttncnnError
from attncnn.cli import main
from attncnn.data import ArrayDataset, DataConfig, register_source
from attncnn.inference.evaluation import evaluate_weights, plot_confusion
from attncnn.inference.weights import save_weights
from attncnn.models import create_model

CLASSES = ["left", "right", "none"]
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@register_source("tiny_eval_test")
def tiny_source(cfg: DataConfig, split: str) -> ArrayDataset:
    """12 images of 8x8, 4 per class; `root` picks the class names (to test mismatches)."""
    gen = torch.Generator().manual_seed(0 if split == "train" else 1)
    images = torch.randint(0, 256, (12, 3, 8, 8), generator=gen, dtype=torch.uint8)
    labels = torch.arange(12) % 3
    classes = ["left", "right", "nil"] if cfg.root == "renamed" else CLASSES
    return ArrayDataset(images, labels, classes, name="tiny test set", mean=(0.1,) * 3, std=(1.0,) * 3)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = create_model("cbam_resnet20_cifar", num_classes=3).eval()
    torch.nn.init.normal_(model.fc.weight, std=1.0)  # predictions that vary between images
    return model


@pytest.fixture
def weights(tmp_path, model):
    return save_weights(tmp_path / "w.safetensors", model, classes=CLASSES, mean=MEAN, std=STD,
                        input_size=(3, 8, 8), summary={"final": {"top1": 12.5}})


def expected_predictions(model):
    """What the model predicts on the test split, normalised with the weights' mean/std."""
    data = tiny_source(DataConfig(), "test")
    x = (data.images.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return model(x).argmax(1), data.labels


def test_evaluate_weights_counts_what_the_model_predicts(weights, model):
    result = evaluate_weights(weights, DataConfig(name="tiny_eval_test"), "test")
    pred, labels = expected_predictions(model)
    confusion = torch.zeros(3, 3, dtype=torch.long)
    confusion.index_put_((labels, pred), torch.ones(12, dtype=torch.long), accumulate=True)
    assert result["confusion"] == confusion.tolist()
    assert result["final"]["top1"] == pytest.approx(100 * (pred == labels).float().mean().item())
    assert result["final"]["top5"] is None  # 3 classes: always within the top 5, so n/a
    assert result["final"]["count"] == 12
    assert result["kind"] == "eval" and result["schema"] == "attncnn.result/1"
    assert result["data"]["classes"] == CLASSES and result["data"]["split"] == "test"
    assert result["training"] == {"final": {"top1": 12.5}}
    assert len(result["weights_sha256"]) == 64


def test_command_writes_png_and_json(weights, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["eval", "--weights", str(weights), "--data", "tiny_eval_test", "--out", str(out),
                 "--set", "data.eval_batch_size=5", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "results.json").read_text())
    assert f"top-1 {result['final']['top1']:.2f}%  top-5 n/a  loss" in printed  # 3 classes
    assert all(c in printed for c in CLASSES)  # the per-class table
    with Image.open(out / "confusion.png") as png:
        png.load()
        assert png.format == "PNG" and min(png.size) > 100


def test_eval_of_a_run_directory_uses_its_data_section(tmp_path, model, capsys):
    run = tmp_path / "run"
    run.mkdir()
    save_weights(run / "model.safetensors", model, classes=CLASSES, mean=MEAN, std=STD,
                 input_size=(3, 8, 8))
    (run / "config.yaml").write_text("data:\n  name: tiny_eval_test\n  eval_split: test\n")
    assert main(["eval", "--run", str(run)]) == 0
    result = json.loads((run / "eval-test" / "results.json").read_text())
    assert result["data"]["source"] == "tiny_eval_test" and result["final"]["count"] == 12
    assert (run / "eval-test" / "confusion.png").is_file()


def test_class_names_must_match_the_data(weights):
    with pytest.raises(AttncnnError, match=r"class 2 is 'none' in the weights, 'nil' in the data"):
        evaluate_weights(weights, DataConfig(name="tiny_eval_test", root="renamed"))


def test_class_count_must_match_the_data(tmp_path):
    path = save_weights(tmp_path / "w.safetensors", create_model("resnet20_cifar", num_classes=2),
                        classes=["a", "b"], mean=MEAN, std=STD, input_size=(3, 8, 8))
    with pytest.raises(AttncnnError, match="has 2 classes but data 'tiny_eval_test' has 3"):
        evaluate_weights(path, DataConfig(name="tiny_eval_test"))


@pytest.mark.parametrize("argv, expected", [
    (["--data", "tiny_eval_test", "--set", "optim.lr=1"], "only takes data.* settings"),
    ([], "--weights needs --data"),
    (["--data", "tiny_eval_tset"], "unknown data set 'tiny_eval_tset'; did you mean tiny_eval_test"),
    (["--data", "tiny_eval_test", "--translate-tta", "-1"], "--translate-tta must be >= 0"),
])
def test_command_errors_are_one_line(weights, argv, expected, capsys):
    assert main(["eval", "--weights", str(weights), *argv]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1


def test_confusion_png_for_many_classes(tmp_path):
    """Past 50 classes the axes lose their names but the picture is still written."""
    n = 60
    confusion = (torch.eye(n, dtype=torch.long) * 5 + 1).tolist()
    path = plot_confusion(confusion, [f"c{i}" for i in range(n)], tmp_path / "c.png", "many")
    with Image.open(path) as png:
        assert png.size[0] >= 500


def test_evaluate_weights_follows_the_runs_flip_setting(tmp_path, model):
    """Weights whose run evaluated with flip TTA are evaluated with it again (so `attncnn
    eval` reproduces the recorded figure); flip=False overrides."""
    flipped = save_weights(tmp_path / "f.safetensors", model, classes=CLASSES, mean=MEAN, std=STD,
                           input_size=(3, 8, 8), summary={"eval_flip": True})
    cfg = DataConfig(name="tiny_eval_test")
    with_flip = evaluate_weights(flipped, cfg, "test")
    without = evaluate_weights(flipped, cfg, "test", flip=False)
    assert with_flip["data"]["eval_flip"] is True and without["data"]["eval_flip"] is False
    data = tiny_source(DataConfig(), "test")
    x = (data.images.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = (model(x) + model(x.flip(3))) / 2
    expected = torch.nn.functional.cross_entropy(logits, data.labels).item()
    assert with_flip["final"]["loss"] == pytest.approx(expected, rel=1e-5)
    assert without["final"]["loss"] != pytest.approx(expected, rel=1e-5)


@pytest.fixture
def tiny_folder(tmp_path):
    """tiny-png/test/<class>/<image>: a folder data set of the classes (sorted, as folders)."""
    root = tmp_path / "tiny-png"
    gen = torch.Generator().manual_seed(2)
    for c in CLASSES:
        (root / "test" / c).mkdir(parents=True)
        for i in range(2):
            pixels = torch.randint(0, 256, (8, 8, 3), generator=gen, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(root / "test" / c / f"{i}.png")
    return root


def test_a_folder_is_named_as_the_weights_name_their_training_data(tmp_path, model, tiny_folder,
                                                                    capsys):
    """Published weights say "CIFAR-10 (JPEG q75 copy)"; evaluating them on that folder
    without a display_name labels it so, not with the archive's file name."""
    cfg = DataConfig(name="folder", root=str(tiny_folder), cache_dir=str(tmp_path / "cache"),
                     workers=1)

    def weights_with(summary):
        return save_weights(tmp_path / "w.safetensors", model, classes=sorted(CLASSES),
                            mean=MEAN, std=STD, input_size=(3, 8, 8), summary=summary)

    def named(summary, **changes):
        return evaluate_weights(weights_with(summary), dataclasses.replace(cfg, **changes))

    old = {"data": "Tiny (PNG copy)"}                      # weights written before issue 17
    result = named(old)
    assert result["data"]["name"] == "Tiny (PNG copy)"
    assert any("as in the weights' training run (it would be 'tiny-png'" in n
               for n in result["notes"])
    assert named(old, display_name="Mine")["data"]["name"] == "Mine"  # explicit wins
    new = {"data": "Tiny (PNG copy)", "data_source": "folder", "data_root": "tiny-png.tar.gz"}
    assert named(new)["data"]["name"] == "Tiny (PNG copy)"  # the archive, extracted
    other = {**new, "data_root": "other-set"}
    assert named(other)["data"]["name"] == "tiny-png" and named(other)["notes"] == []
    assert named({**new, "data_source": "cifar10"})["data"]["name"] == "tiny-png"

    path = weights_with(old)
    assert main(["eval", "-w", str(path), "--data", "folder", "--root", str(tiny_folder),
                 "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "data.workers=1",
                 "--out", str(tmp_path / "out")]) == 0
    assert "on Tiny (PNG copy) (test, 6 images)" in capsys.readouterr().out
