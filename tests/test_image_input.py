"""attncnn.data.image_input: one image file reaches one model as the same pixels in predict,
explain and the folder reader; EXIF orientation, modes, and the fit rule from the weights."""
import numpy as np
import pytest
import torch
from PIL import Image

from attncnn import AttncnnError
from attncnn.cli import main
from attncnn.data.config import DataConfig
from attncnn.data.folder import load_folder
from attncnn.data.image_input import ImageInput, open_rgb, resize_centre_crop
from attncnn.inference.weights import save_weights
from attncnn.models import create_model

CLASSES = ["a", "b", "c"]
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
ORIENTATION = 0x0112   # the EXIF tag


def upright(h=12, w=24) -> Image.Image:
    """A picture whose every orientation differs: a ramp across, another down, noise."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), rng.integers(0, 256, (h, w))], -1)
    return Image.fromarray(rgb.astype(np.uint8))


def save_sideways(img: Image.Image, path, **kw) -> None:
    """Store `img` turned 90 degrees, with EXIF orientation 6 ("turn 90 clockwise to view")."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    img.transpose(Image.ROTATE_90).save(path, exif=exif.tobytes(), **kw)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An EXIF-rotated JPEG, a non-square PNG, and assorted modes, in one folder."""
    root = tmp_path_factory.mktemp("pics")
    save_sideways(upright(), root / "1_rotated.jpg", quality=95)
    upright(20, 40).save(root / "2_wide.png")
    rgba = np.dstack([np.asarray(upright(16, 10)), np.tile(np.arange(10) * 28, (16, 1))])
    Image.fromarray(rgba.astype(np.uint8)).save(root / "3_alpha.png")
    Image.fromarray((np.arange(30 * 20).reshape(30, 20) * 100).astype(np.uint16)).save(
        root / "4_grey16.png")
    upright(9, 14).convert("CMYK").save(root / "5_cmyk.jpg")
    pal = upright(10, 10).convert("P", palette=Image.ADAPTIVE, colors=8)
    pal.save(root / "6_palette.gif", transparency=0)
    return sorted(str(p) for p in root.iterdir())


def weights_for(tmp_path, source, size=16):
    torch.manual_seed(0)
    model = create_model("attn_resnet20_cifar", depth=8, widths=(4, 8, 8), num_classes=3)
    summary = {"data_source": source} if source else {}
    return str(save_weights(tmp_path / f"{source}.safetensors", model, classes=CLASSES, mean=MEAN,
                            std=STD, input_size=(3, size, size), summary=summary))


def model_inputs(monkeypatch, argv) -> torch.Tensor:
    """Every image the model of a command run saw, in order, each once: the first forward
    pass per batch (explain runs the model again on the same batch for its maps)."""
    import attncnn.inference.weights

    seen = []
    create = attncnn.inference.weights.create_model_from_weights

    def recording(*args, **kwargs):
        model, meta = create(*args, **kwargs)
        model.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0].detach().clone()))
        return model, meta

    monkeypatch.setattr(attncnn.inference.weights, "create_model_from_weights", recording)
    assert main(argv) == 0
    batches = []
    for x in seen:
        if not any(b.shape == x.shape and torch.equal(b, x) for b in batches):
            batches.append(x)
    return torch.cat(batches)


@pytest.mark.parametrize("source", ["folder", "digits", None])
def test_predict_and_explain_feed_the_model_the_same_pixels(files, tmp_path, monkeypatch,
                                                              capsys, source):
    weights = weights_for(tmp_path, source)
    predicted = model_inputs(monkeypatch, ["predict", "-w", weights, *files, "--batch-size", "4"])
    explained = model_inputs(monkeypatch, ["explain", "-w", weights, *files, "--show", "0",
                                           "--batch-size", "4", "--out", str(tmp_path / "x")])
    assert predicted.shape == (len(files), 3, 16, 16)
    assert torch.equal(predicted, explained)
    meta = {"input_size": [3, 16, 16], "mean": MEAN, "std": STD,
            "summary": {"data_source": source}}
    spec = ImageInput.for_weights(meta)
    assert spec.fit == ("resize" if source == "folder" else "crop")
    assert torch.equal(predicted, torch.stack([spec.prepare(f) for f in files]))
    capsys.readouterr()


@pytest.mark.parametrize("fit", ["resize", "crop"])
def test_exif_orientation_is_applied(tmp_path, fit):
    """Lossless (PNG, whose EXIF Pillow reads too): exactly the upright picture; JPEG: close."""
    save_sideways(upright(), tmp_path / "sideways.png")
    upright().save(tmp_path / "upright.png")
    assert Image.open(tmp_path / "sideways.png").size == (12, 24)      # stored sideways
    spec = ImageInput((8, 8), fit, 1.0, "bicubic", MEAN, STD)
    want = spec.read(tmp_path / "upright.png")
    assert torch.equal(spec.read(tmp_path / "sideways.png"), want)
    save_sideways(upright(), tmp_path / "sideways.jpg", quality=95)
    got, ramps = spec.read(tmp_path / "sideways.jpg").float()[:2], want.float()[:2]
    assert (got - ramps).abs().mean() < 4                   # JPEG loss only (on the ramps)
    assert (got - ramps.rot90(1, (1, 2))).abs().mean() > 30  # what ignoring EXIF would give


def test_modes_become_rgb(tmp_path):
    Image.fromarray(np.full((2, 2), 51400, np.uint16)).save(tmp_path / "g16.png")
    assert open_rgb(tmp_path / "g16.png").getpixel((0, 0)) == (200, 200, 200)   # 51400 / 257
    Image.new("RGBA", (2, 2), (40, 50, 60, 0)).save(tmp_path / "clear.png")
    assert open_rgb(tmp_path / "clear.png").getpixel((0, 0)) == (255, 255, 255)  # on white
    Image.new("LA", (2, 2), (0, 255)).save(tmp_path / "la.png")
    assert open_rgb(tmp_path / "la.png").getpixel((0, 0)) == (0, 0, 0)           # opaque
    Image.new("RGB", (2, 2), (0, 0, 0)).convert("P").save(tmp_path / "p.gif", transparency=0)
    assert open_rgb(tmp_path / "p.gif").getpixel((0, 0)) == (255, 255, 255)
    Image.new("CMYK", (2, 2), (0, 0, 0, 0)).save(tmp_path / "cmyk.tif")
    assert open_rgb(tmp_path / "cmyk.tif").getpixel((0, 0)) == (255, 255, 255)
    Image.new("1", (2, 2), 1).save(tmp_path / "bw.png")
    assert open_rgb(tmp_path / "bw.png").getpixel((0, 0)) == (255, 255, 255)
    assert open_rgb((tmp_path / "bw.png").read_bytes()).mode == "RGB"           # bytes too


def test_an_unreadable_file_is_one_line_naming_it(tmp_path):
    spec = ImageInput.for_weights({"input_size": [3, 8, 8], "mean": MEAN, "std": STD})
    good = tmp_path / "good.png"
    upright().save(good)
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:60])
    (tmp_path / "text.jpg").write_text("hello")
    for name in ("cut.png", "text.jpg", "absent.png"):
        with pytest.raises(AttncnnError) as err:
            spec.read(tmp_path / name)
        assert str(err.value).startswith(f"{tmp_path / name}: not a readable image (")
        assert "\n" not in str(err.value)


def test_the_fit_rule_follows_the_weights_training_data():
    def rule(source, size=32, **kw):
        meta = {"input_size": [3, size, size], "mean": MEAN, "std": STD,
                "summary": {"data_source": source} if source else {}}
        spec = ImageInput.for_weights(meta, **kw)
        return spec.fit, spec.crop_ratio, spec.resample

    assert rule("folder") == rule("folder", 96) == ("resize", 1.0, "bicubic")
    assert rule("imagenet", 224) == ("crop", 0.875, "bilinear")
    assert rule("cifar10") == rule("digits") == rule(None) == ("crop", 1.0, "bicubic")
    assert rule(None, 224) == ("crop", 0.875, "bilinear")          # weights that do not say
    assert rule("folder", crop_ratio=0.5) == ("crop", 0.5, "bicubic")
    with pytest.raises(AttncnnError, match=r"crop ratio must be in \(0, 1\], got 1.5"):
        rule(None, crop_ratio=1.5)


def test_non_square_inputs_keep_their_shape(tmp_path):
    upright(30, 30).save(tmp_path / "sq.png")
    for fit in ("resize", "crop"):
        x = ImageInput((16, 24), fit, 0.875, "bilinear", MEAN, STD).read(tmp_path / "sq.png")
        assert x.shape == (3, 16, 24) and x.dtype == torch.uint8


def test_the_folder_reader_decodes_as_predict_reads_folder_weights(files, tmp_path):
    """Training and `eval` on folder data see what predict/explain feed weights trained on it."""
    root = tmp_path / "data"
    (root / "train" / "only").mkdir(parents=True)
    for f in files:
        (root / "train" / "only" / f.rsplit("/", 1)[1]).write_bytes(open(f, "rb").read())
    data = load_folder(DataConfig(name="folder", root=str(root), image_size=16, workers=1,
                                  cache_dir=str(tmp_path / "cache")), "train")
    spec = ImageInput.for_weights({"input_size": [3, 16, 16], "mean": MEAN, "std": STD,
                                   "summary": {"data_source": "folder"}})
    assert torch.equal(data.images, torch.stack([spec.read(f) for f in files]))


@pytest.mark.parametrize("wh", [(500, 375), (375, 500), (224, 224), (300, 100)])
def test_the_crop_rule_is_the_imagenet_evaluation_transform(wh):
    from attncnn.data.imagenet import resize_centre_crop as imagenet_eval

    img = upright(wh[1], wh[0])
    ours = resize_centre_crop(img, (224, 224), 0.875, "bilinear")
    assert np.array_equal(np.asarray(ours), np.asarray(imagenet_eval(img, 224)))
