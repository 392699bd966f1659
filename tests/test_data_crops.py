"""ImageNet-style crops on decoded image sets (attncnn.data.crops), and the folder options that
use them: shorter-side decoding, random-resized training crops, centre-crop evaluation, class
display names, and weights that carry these settings to `eval` and `predict`."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attncnn.data import DataConfig, DeviceLoader, build_loaders
from attncnn.data.crops import centre_view, random_boxes, resized_crops
from attncnn.data.dataset import ArrayDataset
from attncnn.data.image_input import ImageInput, resize_centre_crop, to_tensor
from attncnn.data.sources import load_split
from attncnn.errors import AttncnnError

CLASSES = {"n001": "cat", "n002": "dog"}
ROOT = Path(__file__).resolve().parents[1]


def gradient_images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """uint8 [n, 3, h, w]: smooth random images (resampling differences stay small)."""
    gen = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 4, 4, generator=gen) * 255
    return torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear",
                                           align_corners=True).round().byte()


def test_random_boxes_fit_the_image_with_the_asked_area_and_aspect():
    gen = torch.Generator().manual_seed(0)
    boxes = random_boxes(gen, (50, 40), 60, 90, (0.35, 1.0))
    assert boxes.shape == (50, 40, 4)
    x0, y0, w, h = boxes.reshape(-1, 4).unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all()
    assert (x0 + w <= 90 + 1e-3).all() and (y0 + h <= 60 + 1e-3).all()
    area = w * h / (60 * 90)
    assert area.min() >= 0.35 - 1e-4 and area.max() <= 1 + 1e-4
    aspect = w / h
    whole = (w == 90) & (h == 60)              # the fallback when no try fits
    assert (aspect[~whole] >= 3 / 4 - 1e-4).all() and (aspect[~whole] <= 4 / 3 + 1e-4).all()
    assert area.std() > 0.1 and x0.std() > 1   # random, not one box
    again = random_boxes(torch.Generator().manual_seed(0), (50, 40), 60, 90, (0.35, 1.0))
    assert torch.equal(boxes, again)


def test_random_boxes_fall_back_to_the_whole_image_when_nothing_fits():
    # a 1-pixel-high image: no box of a third of the area with aspect <= 4/3 fits
    boxes = random_boxes(torch.Generator().manual_seed(1), (20,), 1, 30, (0.3, 0.4))
    assert torch.equal(boxes[:, 2:], torch.tensor([[30.0, 1.0]]).expand(20, 2))


def test_resized_crops_of_the_whole_image_are_the_image_and_mirror_flips_it():
    images = gradient_images(3, 12, 12)
    whole = torch.tensor([[0.0, 0.0, 12.0, 12.0]]).expand(3, 4)
    same = resized_crops(images, whole, torch.tensor([False, False, True]), 12)
    assert torch.allclose(same[:2], images[:2].float(), atol=1e-3)
    assert torch.allclose(same[2], images[2].float().flip(-1), atol=1e-3)


def test_resized_crops_take_the_box_and_resize_it():
    images = gradient_images(2, 32, 32, seed=3)
    boxes = torch.tensor([[8.0, 4.0, 16.0, 16.0], [0.0, 16.0, 32.0, 16.0]])
    out = resized_crops(images, boxes, torch.tensor([False, False]), 16)
    # box 0: a 16x16 window at (x 8, y 4), at its own size: the window's pixels
    assert torch.allclose(out[0], images[0, :, 4:20, 8:24].float(), atol=1e-3)
    # box 1: the bottom half, 32 wide -> 16 (16 high -> 16): the mean of each pair of columns
    half = images[1, :, 16:32].float()
    pairs = (half[:, :, 0::2] + half[:, :, 1::2]) / 2
    assert torch.allclose(out[1], pairs, atol=1e-3)


def test_centre_view_matches_predicts_resize_and_centre_crop():
    images = gradient_images(4, 40, 40, seed=5)
    data = ArrayDataset(images, torch.arange(4), ["a", "b", "c", "d"])
    view = centre_view(data, 24, 0.875)
    assert view.images.shape == (4, 3, 24, 24) and view.images.dtype == torch.uint8
    for i in range(4):
        pil = Image.fromarray(images[i].permute(1, 2, 0).numpy())
        ref = to_tensor(resize_centre_crop(pil, (24, 24), 0.875, "bicubic")).float()
        assert (view.images[i].float() - ref).abs().mean() < 1.5
    assert centre_view(ArrayDataset(images[:, :, :24, :24], torch.arange(4), list("abcd")),
                       24, 1.0).images.data_ptr() == images.data_ptr()  # nothing to do


def loader(data, **kw):
    return DeviceLoader(data, 8, train=True, seed=3, train_crop="random_resized", crop_size=16,
                        crop_scale=(0.35, 1.0), **kw)


def test_random_resized_loader_is_a_pure_function_of_seed_epoch_and_step():
    data = ArrayDataset(gradient_images(32, 24, 24), torch.arange(32) % 2, ["a", "b"])
    full = list(loader(data).epoch(1))
    assert len(full) == 4 and full[0][0].shape == (8, 3, 16, 16)
    resumed = list(loader(data).epoch(1, start_step=2))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
               for a, b in zip(full[2:], resumed))
    halves = [list(loader(data, rank=r, world_size=2).epoch(1)) for r in (0, 1)]
    for step, (x, y) in enumerate(full):
        assert torch.equal(torch.cat([halves[0][step][0], halves[1][step][0]]), x)
    assert not torch.equal(full[0][0], list(loader(data).epoch(2))[0][0])


def make_photos(root, sizes=((30, 50), (50, 30)), per_class=3):
    """root/<split>/<wnid>/<i>.png: non-square photos, a bright centre square on dark sides."""
    for split in ("train", "val"):
        for c, wnid in enumerate(CLASSES):
            d = root / split / wnid
            d.mkdir(parents=True)
            for i in range(per_class):
                h, w = sizes[i % len(sizes)]
                pixels = np.full((h, w, 3), 10, np.uint8)
                s = min(h, w)
                top, left = (h - s) // 2, (w - s) // 2
                pixels[top:top + s, left:left + s] = (200, 60 + 100 * c, 30)
                Image.fromarray(pixels).save(d / f"{i}.png")
    return root


def photo_cfg(root, tmp_path, **kw):
    base = dict(name="folder", root=str(root), cache_dir=str(tmp_path / "cache"),
                eval_split="val", image_size=20, image_fit="crop", train_crop="random_resized",
                crop_size=16, crop_scale=(0.35, 1.0), class_names=dict(CLASSES), batch_size=4)
    base.update(kw)
    return DataConfig(**base)


def test_crop_fit_decodes_the_centre_square_and_class_names_replace_folders(tmp_path):
    root = make_photos(tmp_path / "photos")
    data = load_split(photo_cfg(root, tmp_path), "val")   # a folder's own "val" split
    assert data.images.shape == (6, 3, 20, 20)
    assert data.images.float().mean(dim=(0, 2, 3))[0] > 190  # the dark sides were cut away
    assert data.classes == ["cat", "dog"] and data.info["class_folders"] == list(CLASSES)
    squeezed = load_split(photo_cfg(root, tmp_path, image_fit="resize"), "val")
    assert squeezed.images.float().mean(dim=(0, 2, 3))[0] < 150  # resize keeps the sides


def test_loaders_give_crop_size_batches_and_a_centre_cropped_eval_set(tmp_path):
    loaders = build_loaders(photo_cfg(make_photos(tmp_path / "p"), tmp_path))
    assert loaders.input_size == (3, 16, 16) and loaders.classes == ["cat", "dog"]
    x, _ = next(loaders.train.epoch(0))
    assert x.shape == (4, 3, 16, 16)
    assert loaders.eval.data.images.shape == (6, 3, 16, 16)


def test_bad_crop_settings_and_unknown_class_folders_are_one_line_errors(tmp_path):
    root = make_photos(tmp_path / "photos")
    with pytest.raises(AttncnnError, match="data.class_names names class folder.*n003.*did you mean"):
        load_split(photo_cfg(root, tmp_path, class_names={"n003": "emu"}), "train")
    for kw, match in (({"train_crop": "random_resize"}, "train_crop must be one of .*did you mean"),
                      ({"crop_scale": (0.5, 0.2)}, "crop_scale must be"),
                      ({"eval_crop_ratio": 0.0}, "eval_crop_ratio must be in"),
                      ({"image_fit": "fill"}, "image_fit must be one of"),
                      ({"class_names": {"n001": "x", "n002": "x"}}, "two classes one name: x")):
        with pytest.raises(AttncnnError, match=match) as err:
            photo_cfg(root, tmp_path, **kw).validate("c.yaml")
        assert "\n" not in str(err.value) and "c.yaml: data." in str(err.value)
    with pytest.raises(AttncnnError, match="class_names names the class folders of a 'folder'"):
        DataConfig(name="digits", class_names={"a": "b"}).validate()
    with pytest.raises(AttncnnError, match="'imagenet' makes its own random-resized crops"):
        DataConfig(name="imagenet", train_crop="random_resized").validate()


def test_weights_carry_the_input_settings_to_eval_and_predict(tmp_path):
    from attncnn.engine.config import Config
    from attncnn.engine.train import train
    from attncnn.inference.evaluation import evaluate_weights
    from attncnn.inference.weights import read_weights_metadata

    root = make_photos(tmp_path / "photos")
    cfg = Config()
    cfg.model.name, cfg.model.args = "attn_resnet20_cifar", {"depth": 8, "widths": [4, 8, 8]}
    cfg.data = photo_cfg(root, tmp_path)
    cfg.schedule.epochs, cfg.schedule.milestones = 1, []
    cfg.run.out_dir, cfg.run.device, cfg.run.tensorboard = str(tmp_path / "runs"), "cpu", False
    record = train(cfg, quiet=True)
    run_dir = tmp_path / "runs" / record["run_name"]
    meta = read_weights_metadata(run_dir / "model.safetensors")
    assert meta["classes"] == ["cat", "dog"] and meta["input_size"] == [3, 16, 16]
    assert meta["summary"]["data_input"]["train_crop"] == "random_resized"
    # eval with only --data folder --root: the weights' settings are taken, with a note
    plain = DataConfig(name="folder", root=str(root), cache_dir=str(tmp_path / "cache"))
    result = evaluate_weights(run_dir / "model.safetensors", plain, "val")
    assert math.isclose(result["final"]["top1"], record["final"]["top1"], abs_tol=1e-6)
    assert any("data.class_names" in n and "data.crop_size" in n for n in result["notes"])
    spec = ImageInput.for_weights(meta)
    assert (spec.fit, spec.crop_ratio, spec.size) == ("crop", 0.875, (16, 16))
    # explain: --data folder prepares samples as evaluation did; files get their true class
    # from the class folder's display name
    from attncnn.commands.explain import _load_inputs
    args = type("Args", (), dict(data="folder", data_root=str(root), split="val", num=3, seed=0,
                                 score=False, images=[]))()
    images, labels, _, classes, _, _ = _load_inputs(args, [{"meta": meta}])
    assert images.shape == (3, 3, 16, 16) and classes == ["cat", "dog"]
    files = type("Args", (), dict(data=None, images=[str(root / "val" / "n002" / "0.png")]))()
    _, labels, _, _, _, _ = _load_inputs(files, [{"meta": meta, "input": spec}])
    assert labels.tolist() == [1]


def test_shared_imagenette_loads_as_the_config_says(shared_data, tmp_path_factory):
    from attncnn.data.sources import eval_input
    from attncnn.engine.config import load_config

    cfg = load_config(str(ROOT / "configs/cpu_imagenette/resnet18.yaml"),
                      [f"data.root={shared_data / 'imagenette2-160.tar.gz'}",
                       f"data.cache_dir={tmp_path_factory.mktemp('c')}"]).data
    val = load_split(cfg, "val")
    assert val.images.shape == (1966, 3, 160, 160) and val.name == "Imagenette (160 px rebuild)"
    assert val.classes[0] == "tench" and val.classes[9] == "parachute"
    assert eval_input(val, cfg).images.shape == (1966, 3, 128, 128)
    assert 80 < val.images.float().mean() < 160   # real photographs, not blank
