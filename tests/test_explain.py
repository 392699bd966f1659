"""attention_maps, Grad-CAM and the localisation score: shapes, normalisation, known answers."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attncnn.analysis.explain import (
    AttentionMap,
    Grid,
    LocalisationMeter,
    attention_maps,
    box_masks,
    gradcam,
    localisation,
    record_grids,
    to_distribution,
)
from attncnn.models import SpatialSoftmaxAttention, create_model

SMALL = dict(depth=8, widths=(4, 8, 8), num_classes=3)   # a ResNet-8, fast on 2 cores


def small_model(kind, placement, **options):
    name = {"softmax": "attn_", "cbam": "cbam_", "se": "se_", None: ""}[kind] + "resnet20_cifar"
    torch.manual_seed(0)
    return create_model(name, attention_placement=placement, attention_options=options, **SMALL)


@pytest.mark.parametrize("placement", ["block", "stage", "end"])
@pytest.mark.parametrize("kind", ["softmax", "cbam", "se", None])
def test_maps_are_distributions_at_input_resolution(kind, placement):
    model = small_model(kind, placement)
    images = torch.randn(2, 3, 24, 20)
    maps = attention_maps(model, images)
    expected = {"block": 3, "stage": 3, "end": 1}[placement] if kind in ("softmax", "cbam") else 0
    spatial = [a for a in maps if a.kind != "gradcam"]
    assert len(spatial) == expected
    assert [a.kind for a in maps if a.kind == "gradcam"] == ([] if expected else ["gradcam"])
    for a in maps:
        assert a.map.shape == (2, 24, 20)
        assert (a.map >= 0).all()
        assert torch.allclose(a.map.sum((1, 2)), torch.ones(2), atol=1e-5)
        assert a.raw.dim() == 4 and a.raw.shape[0] == 2
        assert a.placement == (placement if a.kind != "gradcam" else "last-stage")
    assert len({a.name for a in maps}) == len(maps)


@pytest.mark.parametrize("name, overrides, size, count", [
    ("attn_densenet_bc100_k12", dict(depth=16, growth=4), 16, 3),
    ("cbam_densenet_bc100_k12", dict(depth=16, growth=4, attention_placement="end"), 16, 1),
    ("se_densenet_bc100_k12", dict(depth=16, growth=4), 16, 0),
    ("attn_resnet18", dict(attention_placement="stage"), 64, 4),
])
def test_every_backbone_family_gives_normalised_maps(name, overrides, size, count):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **overrides)
    maps = attention_maps(model, torch.randn(1, 3, size, size))
    assert len(maps) == max(count, 1)                       # no spatial attention: Grad-CAM
    for a in maps:
        assert a.map.shape == (1, size, size)
        assert torch.allclose(a.map.sum((1, 2)), torch.ones(1), atol=1e-5)


def test_untrained_softmax_attention_is_uniform_and_raw_is_mean_one():
    # The softmax conv starts at zero: every map is uniform, raw weights are exactly 1.
    maps = attention_maps(small_model("softmax", "stage"), torch.randn(2, 3, 16, 16))
    for a in maps:
        assert torch.allclose(a.map, torch.full_like(a.map, 1 / 256))
        assert torch.allclose(a.raw, torch.ones_like(a.raw))
    assert [tuple(a.raw.shape[-2:]) for a in maps] == [(16, 16), (8, 8), (4, 4)]


def test_multi_map_modules_give_their_mean_or_each_map():
    model = small_model("softmax", "end", num_maps=2)
    nn.init.normal_(model.attention.conv.weight)
    images = torch.randn(2, 3, 16, 16)
    (mean,) = attention_maps(model, images)
    split = attention_maps(model, images, split_maps=True)
    assert [a.name for a in split] == ["attention#0", "attention#1"]
    assert mean.raw.shape == (2, 2, 4, 4)
    cifar_last_stage = Grid((4.0, 4.0), (0.0, 0.0))            # cell i on pixel 4i
    assert torch.allclose(mean.map, to_distribution(mean.raw.mean(1), (16, 16), cifar_last_stage))
    assert not torch.allclose(split[0].map, split[1].map)


def test_overall_and_gradcam_always_are_added_on_request():
    model = small_model("cbam", "stage")
    model.train()
    maps = attention_maps(model, torch.randn(2, 3, 16, 16), overall=True, gradcam_mode="always")
    assert [a.name for a in maps][-2:] == ["overall", "gradcam"]
    assert torch.allclose(maps[-2].map, torch.stack([a.map for a in maps[:-2]]).mean(0))
    assert model.training                                   # mode restored


class PeakModel(nn.Module):
    """One softmax attention module on the input itself: a 1x1 conv reading channel 0 x 10."""

    def __init__(self):
        super().__init__()
        self.attn = SpatialSoftmaxAttention(3, kernel_size=1, logit_bound=None)  # raw logit 10
        with torch.no_grad():
            self.attn.conv.weight.zero_()
            self.attn.conv.weight[0, 0] = 10.0

    def forward(self, x):
        return self.attn(x).mean((2, 3))


def test_score_of_a_known_softmax_peak_matches_the_hand_computation():
    x = torch.zeros(1, 3, 16, 16)
    x[0, 0, 5, 9] = 1.0                                     # the peak: row 5, column 9
    (a,) = attention_maps(PeakModel(), x)
    peak = math.exp(10) / (math.exp(10) + 255)             # softmax over 256 positions
    rest = 1 / (math.exp(10) + 255)
    assert a.map[0, 5, 9].item() == pytest.approx(peak, rel=1e-5)

    box = torch.tensor([[8.0, 4.0, 12.0, 7.0]])            # columns 8-11, rows 4-6: 12 pixels
    s = localisation(a.map, box, tolerance=0)
    assert s["hit"].item() == 1.0
    assert s["mass"].item() == pytest.approx(peak + 11 * rest, rel=1e-5)
    assert s["chance"].item() == pytest.approx(12 / 256)

    far = torch.tensor([[0.0, 10.0, 4.0, 16.0]])           # columns 0-3, rows 10-15: 24 pixels
    s = localisation(a.map, far, tolerance=0)
    assert s["hit"].item() == 0.0
    assert s["mass"].item() == pytest.approx(24 * rest, rel=1e-5)


def test_pointing_tolerance_counts_a_peak_just_outside_the_box():
    maps = torch.zeros(1, 8, 8)
    maps[0, 2, 5] = 1.0                                     # column 5, one pixel right of the box
    box = torch.tensor([[1.0, 1.0, 5.0, 4.0]])             # columns 1-4, rows 1-3
    assert localisation(maps, box, tolerance=0)["hit"].item() == 0.0
    assert localisation(maps, box, tolerance=1)["hit"].item() == 1.0
    assert box_masks(box, (8, 8), 1).sum().item() == 6 * 5  # columns 0-5, rows 0-4


def test_a_uniform_map_scores_exactly_chance():
    maps = torch.full((3, 10, 10), 0.01)
    boxes = torch.tensor([[0.0, 0.0, 5.0, 5.0], [2.0, 3.0, 4.0, 9.0], [0.0, 0.0, 10.0, 10.0]])
    s = localisation(maps, boxes, tolerance=1)
    assert torch.allclose(s["mass"], s["chance"])
    assert torch.allclose(s["hit"], s["chance_hit"])      # ties: the expected random tie-break
    assert torch.allclose(s["chance"], torch.tensor([0.25, 0.12, 1.0]))


def test_meter_averages_over_images_with_boxes_only():
    maps = torch.zeros(2, 4, 4)
    maps[:, 0, 0] = 1.0
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]])   # the 2nd has no box
    meter = LocalisationMeter(tolerance=0)
    meter.update([AttentionMap("m", "end", "softmax", maps, maps)], boxes)
    meter.update([AttentionMap("m", "end", "softmax", maps[:1], maps[:1])], boxes[:1])
    (row,) = meter.rows()
    assert row["count"] == 2 and row["mass"] == 1.0 and row["hit"] == 1.0
    assert row["chance"] == pytest.approx(4 / 16)


class LinearFeatures(nn.Module):
    """forward_features = the input itself; forward_head: GAP, fc (a hand-set 3 -> 2 linear
    layer)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.5, 2.0]]))
            self.fc.bias.zero_()

    def forward_features(self, x):
        return x * 1.0

    def forward_head(self, x):
        return self.fc(x.mean((2, 3)))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def test_gradcam_on_a_linear_model_is_the_class_weighted_feature_sum():
    torch.manual_seed(0)
    model = LinearFeatures()
    x = torch.randn(2, 3, 4, 4)
    for k in (0, 1):
        cam, _ = gradcam(model, x, torch.tensor([k, k]))
        expected = torch.relu(torch.einsum("c,bchw->bhw", model.fc.weight[k], x) / 16)
        assert torch.allclose(cam, expected, atol=1e-6)
    cam, logits = gradcam(model, x)                        # default: the predicted class
    pred = logits.argmax(1)
    expected = torch.relu(torch.einsum("bc,bchw->bhw", model.fc.weight[pred], x) / 16)
    assert torch.allclose(cam, expected, atol=1e-6)
    assert model.fc.weight.grad is None                    # parameters untouched
    assert "forward_features" not in vars(model)           # the model is not patched


def test_gradcam_of_a_resnet_equals_cam():
    model = small_model(None, "block").eval()
    x = torch.randn(2, 3, 16, 16)
    cam, logits = gradcam(model, x)
    with torch.no_grad():
        features = model.forward_features(x)
    w = model.fc.weight[logits.argmax(1)]
    expected = torch.relu(torch.einsum("bc,bchw->bhw", w, features) / 16)
    assert torch.allclose(cam, expected, atol=1e-5)


def test_an_all_zero_map_becomes_uniform():
    d = to_distribution(torch.zeros(1, 2, 2), (4, 4))
    assert torch.allclose(d, torch.full((1, 4, 4), 1 / 16))


# --- alignment: a map cell lands on the pixel its receptive field centres on ---------------

@pytest.mark.parametrize("name, overrides, size", [
    ("resnet20_cifar", dict(depth=8), 48),                  # stride-2 3x3 convs: cell i at 4i
    ("densenet_bc100_k12", dict(depth=16, growth=4), 64),   # 2x2 average pools: 4i + 1.5
    ("resnet9", dict(width=4), 96),                         # 2x2 max pools: 8i + 3.5
])
def test_grid_is_the_receptive_field_centre_of_the_last_stage(name, overrides, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **overrides).eval()
    x = torch.randn(4, 3, size, size, requires_grad=True)
    with record_grids(model, (size, size)) as grids:
        features = model.forward_features(x)
    i, j = features.shape[-2] // 2, features.shape[-1] // 2 - 1    # an interior cell
    features[:, :, i, j].sum().backward()
    g = x.grad.abs().sum((0, 1))                            # the cell's receptive field
    rows, cols = g.sum(1).nonzero().flatten(), g.sum(0).nonzero().flatten()
    assert rows.min() > 0 and rows.max() < size - 1         # unclipped by the border
    grid = grids[tuple(features.shape[-2:])]
    assert grid.stride[0] * i + grid.offset[0] == (rows.min() + rows.max()) / 2
    assert grid.stride[1] * j + grid.offset[1] == (cols.min() + cols.max()) / 2


class CellLogits(nn.Module):
    """Stands in for an attention conv: logit 10 at cell (i, j), 0 elsewhere."""

    def __init__(self, i, j):
        super().__init__()
        self.i, self.j = i, j

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 1, *x.shape[-2:])
        logits[:, :, self.i, self.j] = 10.0
        return logits


@pytest.mark.parametrize("cell", [(0, 0), (2, 5), (7, 3)])
def test_attention_at_cell_ij_of_a_cifar_resnet_peaks_on_pixel_4i_4j(cell):
    # The last stage of a CIFAR ResNet is stride 4 with cell i centred on pixel 4i (stride-2
    # 3x3 convs with padding 1; the shortcuts subsample x[::2]). Evenly tiled resizing
    # (align_corners=False) would put the peak at 4i + 1.5.
    model = small_model("softmax", "end")
    model.attention.conv = CellLogits(*cell)
    (a,) = attention_maps(model, torch.randn(2, 3, 32, 32))
    peak = a.map[0].flatten().argmax().item()
    assert divmod(peak, 32) == (4 * cell[0], 4 * cell[1])
    assert torch.equal(a.map[0], a.map[1])


def test_to_distribution_puts_a_cell_on_its_grid_position():
    one_hot = torch.zeros(1, 4, 4)
    one_hot[0, 1, 2] = 1.0
    on_pixels = to_distribution(one_hot, (16, 16), Grid((4.0, 4.0), (0.0, 0.0)))
    assert divmod(on_pixels[0].flatten().argmax().item(), 16) == (4, 8)
    between = to_distribution(one_hot, (16, 16), Grid((4.0, 4.0), (0.5, 0.0)))   # row 4.5
    assert between[0, 4, 8] == between[0, 5, 8] == between[0].max()
    assert to_distribution(one_hot, (16, 16), Grid((4.0, 4.0), (0.0, 0.0)))[0, 9:, :].sum() == 0


@pytest.mark.parametrize("size", [(32, 32), (24, 20), (13, 7)])
def test_without_a_grid_cells_tile_the_image_like_interpolate(size):
    # Maps of unknown geometry keep the old behaviour: F.interpolate, align_corners=False.
    maps = torch.rand(3, 8, 8)
    expected = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    expected = expected / expected.sum((1, 2), keepdim=True)
    assert torch.allclose(to_distribution(maps, size), expected, atol=1e-7)


# --- the command: PNGs, score table and JSON ------------------------------------------------

def _boxes_source(cfg, split):
    """12 noise images with one known box each, 3 classes."""
    from attncnn.data.dataset import ArrayDataset

    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (12, 3, 16, 16), dtype=torch.uint8, generator=g)
    boxes = torch.tensor([[2.0, 3.0, 9.0, 12.0]]).repeat(12, 1)
    return ArrayDataset(images, torch.arange(12) % 3, ["a", "b", "c"], boxes)


@pytest.fixture
def weights_files(tmp_path):
    from attncnn.data.sources import register_source
    from attncnn.inference.weights import save_weights

    register_source("explain-test-boxes")(_boxes_source)
    paths = []
    for kind in ("softmax", None):
        model = small_model(kind, "stage")
        for name, module in model.named_modules():
            if isinstance(module, SpatialSoftmaxAttention):
                nn.init.normal_(module.conv.weight)           # maps with a peak, not uniform
        path = tmp_path / f"{kind}.safetensors"
        save_weights(path, model, classes=["a", "b", "c"], mean=(0.5,) * 3, std=(0.25,) * 3,
                     input_size=(3, 16, 16))
        paths.append(str(path))
    return paths


def test_explain_command_writes_decodable_pngs_and_a_score_table(weights_files, tmp_path, capsys):
    import json

    from PIL import Image

    from attncnn.cli import main

    out = tmp_path / "out"
    argv = ["explain", "--weights", weights_files[0], "--weights", weights_files[1],
            "--data", "explain-test-boxes", "--score", "--show", "9", "--max-maps", "2",
            "--out", str(out)]
    assert main(argv) == 0
    pngs = sorted(out.glob("explain_*.png"))
    assert [p.name for p in pngs] == ["explain_01.png", "explain_02.png"]   # 8 rows + 1 row
    with Image.open(pngs[0]) as im:
        im.load()
        assert im.format == "PNG" and im.width > 300 and im.height > 800
    report = json.loads((out / "scores.json").read_text())
    assert report["num"] == 12 and report["tolerance"] == 1.0
    assert report["env"]["device"] == "cpu" and "git_commit" in report["env"]  # provenance
    attn, base = report["models"]
    assert [r["name"] for r in attn["rows"]] == ["stages.0.1", "stages.1.1", "stages.2.1", "overall"]
    assert [r["name"] for r in base["rows"]] == ["gradcam"]
    for row in attn["rows"] + base["rows"]:
        assert row["count"] == 12
        assert row["chance"] == pytest.approx(7 * 9 / 256)
        assert 0 <= row["mass"] <= 1 and 0 <= row["hit"] <= 1
    printed = capsys.readouterr().out
    assert "chance" in printed and "stages.2.1" in printed and "gradcam" in printed


def test_explain_command_reads_image_folders(weights_files, tmp_path):
    from PIL import Image

    from attncnn.cli import main

    folder = tmp_path / "pics" / "b"                         # a folder named after a class
    folder.mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (40, 30), (60 * i, 100, 200)).save(folder / f"{i}.png")
    assert main(["explain", "--weights", weights_files[0], str(tmp_path / "pics"),
                 "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "explain_01.png").is_file()


def test_explain_skips_unreadable_images_as_predict_does(weights_files, tmp_path, capsys):
    from PIL import Image

    from attncnn.cli import main

    folder = tmp_path / "pics"
    folder.mkdir()
    Image.new("RGB", (20, 20), (10, 200, 30)).save(folder / "a.png")
    (folder / "b.png").write_bytes(b"not an image")      # unreadable: skipped, named
    Image.new("RGB", (20, 20), (200, 20, 30)).save(folder / "c.png")
    out = tmp_path / "out"
    assert main(["explain", "-w", weights_files[0], str(folder), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"attncnn: skipped {folder / 'b.png'}: not a readable image (cannot "
                   f"identify image file)"]
    assert (out / "explain_01.png").is_file()
    for name in ("a.png", "c.png"):
        (folder / name).unlink()
    assert main(["explain", "-w", weights_files[0], str(folder), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"attncnn: error: no readable image among 1 file(s) in {folder}")


@pytest.mark.parametrize("extra, message", [
    ([], "--weights FILE or --run RUN_DIR"),
    (["--run", "no/such/run"], "no model.safetensors"),
    (["--weights", "{w}", "--data", "explain-test-boxes", "--score", "pic.png"], "not both"),
    (["--weights", "{w}", "missing.png"], "no such file or no match: missing.png"),
])
def test_explain_command_errors_name_the_problem(weights_files, tmp_path, capsys, extra, message):
    from attncnn.cli import main

    argv = ["explain", "--out", str(tmp_path / "o")] + [a.replace("{w}", weights_files[0]) for a in extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_score_needs_boxes(weights_files, tmp_path, capsys):
    from PIL import Image

    from attncnn.cli import main

    Image.new("RGB", (16, 16)).save(tmp_path / "p.png")
    assert main(["explain", "--weights", weights_files[0], str(tmp_path / "p.png"), "--score",
                 "--out", str(tmp_path / "o")]) == 2
    assert "needs object boxes" in capsys.readouterr().err


def test_attention_maps_can_return_the_logits_of_their_own_forward_pass():
    torch.manual_seed(0)
    model = create_model("attn_resnet20_cifar", num_classes=3, depth=8).eval()
    x = torch.randn(2, 3, 32, 32)
    maps, logits = attention_maps(model, x, return_logits=True)
    with torch.no_grad():
        assert torch.allclose(logits, model(x))
    assert [m.name for m in maps] == [m.name for m in attention_maps(model, x)]
