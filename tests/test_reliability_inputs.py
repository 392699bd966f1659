"""Bad inputs, property-based: random YAML and bytes as configs, absurd hyper-parameters,
random and damaged bytes as images (folder reader, predict), wrong shapes and dtypes into
a model. Each is either accepted and sane, or refused with one AttncnnError line that names
the problem: never a traceback from inside torch/PIL/yaml, never a silent wrong value."""
import io
import math
import string

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from attncnn.cli import main
from attncnn.data.config import DataConfig
from attncnn.data.image_input import ImageInput
from attncnn.data.folder import load_folder
from attncnn.engine.config import Config, _SECTION_CLASSES, load_config
from attncnn.errors import AttncnnError
from attncnn.models import create_model

FIXTURES_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
KNOWN = {name: [f.name for f in cls.__dataclass_fields__.values()]
         for name, cls in _SECTION_CLASSES.items()}

scalars = (st.none() | st.booleans() | st.integers(-10**20, 10**20)
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(string.printable, max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(string.ascii_letters, max_size=6), inner,
                                        max_size=3), max_leaves=6)


@st.composite
def raw_configs(draw):
    """Mostly known sections and keys (so values get checked), some unknown ones."""
    raw = {}
    for section in draw(st.lists(st.sampled_from([*KNOWN, "optim", "data", "bogus"]),
                                 max_size=4, unique=True)):
        keys = KNOWN.get(section, ["x"])
        raw[section] = {draw(st.sampled_from(keys) | st.text(string.ascii_lowercase, max_size=5)):
                        draw(values) for _ in range(draw(st.integers(0, 4)))}
    return raw


def assert_sane(cfg: Config):
    """What a loaded config promises the engine (it would fail late or silently otherwise)."""
    o, s, d, r = cfg.optim, cfg.schedule, cfg.data, cfg.run
    assert math.isfinite(o.lr) and o.lr > 0 and 0 <= o.momentum < 1
    assert math.isfinite(o.weight_decay) and o.weight_decay >= 0 and 0 <= o.label_smoothing < 1
    assert s.name in ("step", "cosine", "linear") and s.epochs >= 1 and math.isfinite(s.gamma) and s.gamma > 0
    assert 0 <= s.warmup_start <= 1 and 0 <= s.end_factor <= 1
    assert math.isfinite(o.norm_bias_lr_scale) and o.norm_bias_lr_scale > 0
    assert d.pad_mode in ("zeros", "reflect") and cfg.model.whiten_images >= 0
    assert math.isfinite(s.warmup_epochs) and s.warmup_epochs >= 0
    assert list(s.milestones) == sorted(s.milestones) and all(m >= 0 for m in s.milestones)
    assert d.batch_size >= 1 and d.eval_batch_size >= 1 and 0 <= d.val_fraction < 1
    assert 0 <= r.seed < 2**32 and 0 <= d.seed < 2**32 and r.checkpoint_every_steps >= 0
    assert r.name is None or (r.name not in ("", ".", "..") and "/" not in r.name)


def load_or_error(path, overrides=()):
    try:
        cfg = load_config(path, overrides)
    except AttncnnError as err:
        assert "\n" not in str(err) and str(err)
        return None
    assert_sane(cfg)
    return cfg


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURES_OK)
@given(raw=raw_configs())
def test_random_yaml_configs_load_sane_or_fail_in_one_line(tmp_path, raw):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    load_or_error(path)


@settings(max_examples=80, deadline=None, suppress_health_check=FIXTURES_OK)
@given(data=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_random_bytes_as_a_config_fail_in_one_line(tmp_path, data):
    path = tmp_path / "c.yaml"
    path.write_bytes(data)
    load_or_error(path)


@settings(max_examples=80, deadline=None)
@given(item=st.text(max_size=30))
def test_random_overrides_fail_in_one_line(item):
    load_or_error(None, [item])


ABSURD = {
    "optim.lr": [-1, 0, ".nan", ".inf", "-.inf", "fast"],
    "optim.momentum": [1, 1.5, -0.1, ".nan"],
    "optim.weight_decay": [-1e-4, ".nan"],
    "optim.label_smoothing": [1, -0.1, ".nan"],
    "data.batch_size": [0, -1, 2.5, "null"],
    "data.eval_batch_size": [0],
    "data.val_fraction": [1, 1.5, -0.1],
    "schedule.epochs": [0, -3, 1.5],
    "schedule.name": ["linaer", "Cosine", 3],
    "schedule.gamma": [0, -0.1, ".nan"],
    "schedule.warmup_epochs": [-1, ".nan", ".inf"],
    "schedule.milestones": ["[5, 2]", "[-1]", "[1.5]", "5"],
    "run.seed": [-1, 2**40],
    "run.checkpoint_every_steps": [-1],
    "run.dist_timeout_s": [0, -5, ".inf", ".nan"],
    "run.device": ["tpu", "cuda:x"],
    "run.name": ["..", "../escaped", "/tmp/absolute"],
    "data.label_mode": ["medium", 3],
    "data.eval_split": ["tset"],
    "model.name": ["attn_resnet21_cifar", ""],
}


@pytest.mark.parametrize("key,value", [(k, v) for k, vs in ABSURD.items() for v in vs])
def test_absurd_hyper_parameters_are_one_line_cli_errors(tmp_path, capsys, key, value):
    config = tmp_path / "c.yaml"
    config.write_text("data: {name: digits}\n")
    assert main(["train", "-q", "-c", str(config), "--set", f"{key}={value}",
                 "--out-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"attncnn: error: {config}: ") and key in err[0]
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def png_bytes(seed: int, size=(6, 5)) -> bytes:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), dtype=torch.uint8, generator=g)
    buf = io.BytesIO()
    Image.fromarray(pixels.numpy()).save(buf, format="PNG")
    return buf.getvalue()


@st.composite
def bad_image_bytes(draw):
    """Random bytes, or a real PNG truncated or with a byte changed."""
    kind = draw(st.sampled_from(["random", "truncated", "flipped"]))
    if kind == "random":
        return draw(st.binary(max_size=300))
    good = png_bytes(draw(st.integers(0, 3)))
    if kind == "truncated":
        return good[:draw(st.integers(0, len(good) - 1))]
    i = draw(st.integers(0, len(good) - 1))
    return good[:i] + bytes([good[i] ^ draw(st.integers(1, 255))]) + good[i + 1:]


@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURES_OK)
@given(data=bad_image_bytes(), skip=st.booleans())
def test_damaged_images_in_a_folder_name_the_file_or_are_skipped(tmp_path_factory, data, skip):
    root = tmp_path_factory.mktemp("folder")
    for c, cls in enumerate(("a", "b")):
        (root / "train" / cls).mkdir(parents=True)
        (root / "train" / cls / "good.png").write_bytes(png_bytes(c))
    (root / "train" / "b" / "bad.png").write_bytes(data)
    cfg = DataConfig(name="folder", root=str(root), cache_dir=str(root / "cache"), workers=1,
                     skip_corrupt=skip)
    try:
        ds = load_folder(cfg, "train")
    except AttncnnError as err:
        assert "\n" not in str(err) and "bad.png" in str(err) and not skip
        return
    # decoded after all (a harmless change) or skipped: never a wrong-sized or lost image
    assert ds.images.dtype == torch.uint8 and tuple(ds.images.shape[1:]) == (3, 5, 6)
    assert len(ds) + ds.info["skipped_corrupt"] == 3
    assert ds.labels.tolist().count(0) == 1


@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURES_OK)
@given(data=bad_image_bytes(), size=st.sampled_from([8, 32]))
def test_damaged_images_for_predict_name_the_file(tmp_path_factory, data, size):
    path = tmp_path_factory.mktemp("img") / "x.jpg"
    path.write_bytes(data)
    try:
        spec = ImageInput.for_weights({"input_size": [3, size, size], "mean": (0.5,) * 3,
                                       "std": (0.25,) * 3})
        x = spec.prepare(path)
    except AttncnnError as err:
        assert "\n" not in str(err) and str(path) in str(err)
        return
    assert x.shape == (3, size, size) and x.dtype == torch.float32 and torch.isfinite(x).all()


MODEL = create_model("attn_resnet20_cifar", num_classes=4, depth=8, widths=[4, 8, 8]).eval()


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(0, 9), min_size=0, max_size=6),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.uint8, torch.int64,
                              torch.bool]))
def test_wrong_shapes_and_dtypes_raise_or_give_a_batch_of_logits(shape, dtype):
    """The decision: no check in forward (it would add guards to TorchScript/ONNX export and
    torch.compile graphs); torch already raises for a wrong rank, channel count or dtype, so
    the only thing to prove is that nothing wrong comes back silently. The CLI boundary
    (predict/eval) always feeds decoded RGB float [N, 3, H, W]."""
    x = torch.zeros(shape, dtype=dtype)
    try:
        with torch.no_grad():
            y = MODEL(x)
    except (RuntimeError, ValueError, TypeError, IndexError):
        return
    if len(shape) == 4 and shape[1] == 3 and shape[0] == 0:
        assert y.shape == (0, 4)   # an empty batch gives no logits, whatever its dtype
        return
    assert len(shape) == 4 and shape[1] == 3 and dtype == torch.float32
    assert y.shape == (shape[0], 4) and torch.isfinite(y).all()
