"""`attncnn predict`: files, folders and globs in; top-k out; bad files named, others kept."""
import csv
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from attncnn import AttncnnError
from attncnn.cli import main
from attncnn.data.image_input import ImageInput
from attncnn.inference.predict import collect_images, predict_files
from attncnn.inference.weights import create_model_from_weights, save_weights
from attncnn.models import create_model

CLASSES = ["ant", "bee", "cow", "dog"]
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def prepare_image(path, size, mean, std):
    """What predict feeds the model for `path`, for weights of input size `size` that do
    not record their data source (shorter side, centre crop)."""
    return ImageInput.for_weights({"input_size": [3, size, size], "mean": mean,
                                   "std": std}).prepare(path)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("se_resnet20_cifar", num_classes=4)
    torch.nn.init.normal_(model.fc.weight, std=1.0)  # outputs that differ between images
    path = tmp_path_factory.mktemp("w") / "w.safetensors"
    return save_weights(path, model, classes=CLASSES, mean=MEAN, std=STD, input_size=(3, 16, 16))


@pytest.fixture
def images(tmp_path):
    """A folder of PNG/JPEG images of assorted sizes and modes, a non-image, a hidden file."""
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), np.uint8)).save(root / "wide.png")
    Image.fromarray(rng.integers(0, 256, (9, 7), np.uint8), "L").save(root / "sub" / "grey.jpg")
    Image.fromarray(rng.integers(0, 256, (16, 16, 4), np.uint8), "RGBA").save(root / "alpha.png")
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), np.uint8)).convert("P").save(root / "pal.png")
    (root / "broken.jpg").write_text("not a jpeg at all")
    (root / "notes.txt").write_text("skipped: no image extension")
    (root / ".hidden.png").write_bytes(b"skipped: hidden")
    return root


def test_collect_expands_folders_globs_and_files_once(images):
    found = collect_images([str(images), str(images / "*.png"), str(images / "notes.txt"),
                            str(images / "nothing*.png")])
    names = [p.replace(str(images) + "/", "") for p in found.files]
    assert names == ["alpha.png", "broken.jpg", "pal.png", "wide.png", "sub/grey.jpg", "notes.txt"]
    assert found.missing == [str(images / "nothing*.png")]


def test_prepare_resizes_the_short_side_and_centre_crops(tmp_path):
    """A 20x10 image with a distinct left, middle and right: the crop keeps the middle."""
    img = np.zeros((10, 20, 3), np.uint8)
    img[:, :5] = 255           # left quarter white: cropped away
    img[:, 5:15] = (0, 128, 255)
    img[:, 15:] = 255          # right quarter white: cropped away
    Image.fromarray(img).save(tmp_path / "x.png")
    x = prepare_image(tmp_path / "x.png", 8, mean=(0, 0, 0), std=(1, 1, 1))
    assert x.shape == (3, 8, 8)
    middle = torch.tensor([0, 128 / 255, 1.0]).view(3, 1, 1).expand(3, 8, 8)
    torch.testing.assert_close(x[:, :, 2:6], middle[:, :, 2:6], atol=0.02, rtol=0)
    x = prepare_image(tmp_path / "x.png", 8, mean=MEAN, std=STD)  # normalised with the weights'
    torch.testing.assert_close(x[:, 4, 4], (middle[:, 4, 4] - torch.tensor(MEAN)) / torch.tensor(STD),
                               atol=0.1, rtol=0)


def test_predictions_equal_the_model_on_prepared_images(weights, images):
    model, meta = create_model_from_weights(weights)
    files = [str(images / "wide.png"), str(images / "broken.jpg"), str(images / "sub" / "grey.jpg")]
    results = list(predict_files(model, meta, files, top_k=3, batch_size=1))
    assert [r.file for r in results] == files
    assert "broken.jpg" in results[1].reason and "not a readable image" in results[1].reason
    x = torch.stack([prepare_image(f, 16, MEAN, STD) for f in (files[0], files[2])])
    with torch.no_grad():
        probs = model(x).softmax(1)
    for r, p in zip((results[0], results[2]), probs):
        top = p.topk(3)
        assert r.indices == top.indices.tolist()
        assert r.classes == [CLASSES[i] for i in r.indices]
        assert r.probs == pytest.approx(top.values.tolist(), abs=1e-5)
        assert r.probs == sorted(r.probs, reverse=True)


def test_batching_does_not_change_results_and_flip_tta_averages(weights, images):
    model, meta = create_model_from_weights(weights)
    files = collect_images([str(images)]).files
    one = list(predict_files(model, meta, files, top_k=4, batch_size=1))
    many = list(predict_files(model, meta, files, top_k=4, batch_size=3))
    assert len(one) == len(many) == 5
    for a, b in zip(one, many):
        assert type(a) is type(b) and a.file == b.file
        if hasattr(a, "probs"):
            assert a.indices == b.indices and a.probs == pytest.approx(b.probs, abs=1e-5)
    f = str(images / "wide.png")
    (plain,) = predict_files(model, meta, [f], top_k=4)
    (tta,) = predict_files(model, meta, [f], top_k=4, tta="flip")
    x = prepare_image(f, 16, MEAN, STD)[None]
    with torch.no_grad():
        mirrored = model(x.flip(3)).softmax(1)[0]
    by_class = dict(zip(tta.indices, tta.probs))
    for i, p in zip(plain.indices, plain.probs):
        assert by_class[i] == pytest.approx((p + mirrored[i].item()) / 2, abs=1e-5)


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_command_prints_every_image_and_names_each_bad_file(weights, images, fmt, capsys):
    code = main(["predict", "--weights", str(weights), str(images), str(images / "notes.txt"),
                 "--format", fmt, "--top-k", "2", "--tta", "flip"])
    out, err = capsys.readouterr()
    assert code == 1  # some files failed
    bad = [line for line in err.splitlines() if line]
    assert len(bad) == 2 and "broken.jpg" in bad[0] and "notes.txt" in bad[1]
    good = ["alpha.png", "pal.png", "wide.png", "grey.jpg"]
    if fmt == "json":
        rows = json.loads(out)
        assert [r["file"].rsplit("/", 1)[1] for r in rows] == good
        assert all(len(r["top"]) == 2 and r["top"][0]["class"] in CLASSES for r in rows)
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out)))
        assert [r["file"].rsplit("/", 1)[1] for r in rows] == [g for g in good for _ in (1, 2)]
        assert [r["rank"] for r in rows] == ["1", "2"] * 4
        assert all(0 <= float(r["prob"]) <= 1 for r in rows)
    else:
        lines = out.splitlines()
        assert len(lines) == 4 and all(g in line for g, line in zip(good, lines))
        assert all("%" in line for line in lines)


def test_command_exits_0_when_all_images_work(weights, images, capsys):
    assert main(["predict", "-w", str(weights), str(images / "*.png")]) == 0
    assert capsys.readouterr().err == ""


def test_command_with_no_images_or_bad_weights_is_an_error(weights, tmp_path, capsys):
    assert main(["predict", "-w", str(weights), str(tmp_path / "none*.jpg")]) == 2
    assert "no such file or no match" in capsys.readouterr().err
    (tmp_path / "w.safetensors").write_text("junk")
    assert main(["predict", "-w", str(tmp_path / "w.safetensors"), str(tmp_path)]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err


def test_a_missing_folder_an_empty_one_or_top_k_0_is_one_error_line(weights, images, tmp_path,
                                                                    capsys):
    def error_lines(*argv):
        assert main(["predict", "-w", str(weights), *argv]) == 2
        return capsys.readouterr().err.splitlines()

    missing = tmp_path / "missing"
    assert error_lines(str(missing)) == [f"attncnn: error: no such file or no match: {missing}"]
    (tmp_path / "empty").mkdir()
    assert error_lines(str(tmp_path / "empty")) == [
        f"attncnn: error: no image files found in {tmp_path / 'empty'}"]
    for k in ("0", "-2"):  # not silently top-1
        assert error_lines(str(images), "--top-k", k) == [
            f"attncnn: error: --top-k must be >= 1, got {k}"]
    model, meta = create_model_from_weights(weights)
    with pytest.raises(AttncnnError, match="top_k must be >= 1, got 0"):
        list(predict_files(model, meta, [str(images / "wide.png")], top_k=0))


def test_unknown_tta_is_refused(weights):
    model, meta = create_model_from_weights(weights)
    with pytest.raises(AttncnnError, match="unknown --tta 'rotate'"):
        list(predict_files(model, meta, [], tta="rotate"))


def test_predict_on_saved_images_agrees_with_the_eval_loader(weights, tmp_path):
    """PNGs at the input size go through predict's preparation exactly as the data loader
    normalises a decoded data set: same probabilities."""
    from attncnn.data import ArrayDataset, DeviceLoader

    gen = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (5, 3, 16, 16), generator=gen, dtype=torch.uint8)
    files = []
    for i, img in enumerate(images):
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(files[-1])
    model, meta = create_model_from_weights(weights)
    data = ArrayDataset(images, torch.zeros(5, dtype=torch.long), CLASSES, mean=MEAN, std=STD)
    (x, _), = DeviceLoader(data, 8, train=False)
    with torch.no_grad():
        want = model(x).softmax(1)
    for r, p in zip(predict_files(model, meta, files, top_k=4), want):
        assert r.probs == pytest.approx(p[r.indices].tolist(), abs=1e-5)
