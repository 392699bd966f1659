"""One suite over every registered model, plus the attention modules' contracts."""
import pytest
import torch

from attncnn import AttncnnError
from attncnn.models import (
    SpatialSoftmaxAttention,
    SqueezeExcite,
    attention_modules,
    count_params,
    create_model,
    get_spec,
    list_models,
    make_attention,
    record_attention,
)
from attncnn.models.registry import UnknownModelError

ALL_MODELS = list_models()


def small_input(name: str, batch: int = 2) -> torch.Tensor:
    c, h, w = get_spec(name).input_size
    side = 32 if h <= 32 else 64  # ImageNet models checked at 64 px to keep CI fast
    return torch.randn(batch, c, side, side, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_backward_reaches_every_parameter(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7)
    x = small_input(name)
    out = model(x)
    assert out.shape == (2, 7)
    out.logsumexp(1).sum().backward()
    for pname, p in model.named_parameters():
        if not p.requires_grad:  # frozen by design (FastNet's BN weights): must stay so
            assert p.grad is None, f"{pname} is frozen yet gets a gradient"
            continue
        assert p.grad is not None, f"{pname} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
    # softmax attention starts as the identity (zero conv), but must still learn:
    for mname, m in attention_modules(model):
        if isinstance(m, SpatialSoftmaxAttention):
            assert m.conv.weight.grad.abs().sum() > 0, f"{mname} gets an all-zero gradient"


@pytest.mark.parametrize("name", ALL_MODELS)
def test_eval_mode_is_deterministic_and_maps_are_normalised(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5).eval()
    for m in model.modules():  # move softmax attention off its uniform start
        if isinstance(m, SpatialSoftmaxAttention):
            torch.nn.init.normal_(m.conv.weight, std=0.5)
    x = small_input(name)
    with torch.no_grad(), record_attention(model) as maps:
        first = model(x)
    with torch.no_grad():
        second = model(x)
    assert torch.equal(first, second)
    modules = dict(attention_modules(model))
    assert set(maps) == set(modules)
    kind = model.model_args["attention"]
    assert (len(maps) > 0) == (kind is not None)
    for mname, w in maps.items():
        assert torch.isfinite(w).all()
        if kind == "softmax":  # mean-1 softmax weights: every map averages to exactly 1
            torch.testing.assert_close(w.mean((2, 3)), torch.ones(w.shape[:2]))
            assert (w >= 0).all()
        else:  # SE / CBAM gates are sigmoids
            assert ((w >= 0) & (w <= 1)).all()


# Published counts (10 / 1000 classes) and the precision they were published with:
# a figure given as "1.7M" is matched within half its last digit, others within 1%.
PUBLISHED_PARAMS = {
    "resnet20_cifar": (0.27e6, 0.005e6),
    "resnet56_cifar": (0.85e6, 0.005e6),
    "resnet110_cifar": (1.7e6, 0.05e6),
    "densenet_bc100_k12": (0.8e6, 0.05e6),
    "resnet50": (25.56e6, 0.005e6),
    "se_resnet50": (28.09e6, 0.005e6),
    "cbam_resnet50": (28.09e6, 0.005e6),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_parameter_count_matches_published(name):
    published, half_digit = PUBLISHED_PARAMS[name]
    with torch.device("meta"):
        n = count_params(create_model(name))
    assert abs(n - published) <= max(0.01 * published, half_digit), f"{name}: {n}"


@pytest.mark.parametrize("placement", ["block", "stage", "end"])
def test_paper_attention_adds_at_most_two_percent_to_resnet110(placement):
    base = count_params(create_model("resnet110_cifar"))
    attn = count_params(create_model("attn_resnet110_cifar", attention_placement=placement))
    assert base < attn <= 1.02 * base


def test_placement_sets_the_number_of_modules():
    counts = {p: len(list(attention_modules(create_model("attn_resnet20_cifar", attention_placement=p))))
              for p in ("block", "stage", "end")}
    assert counts == {"block": 9, "stage": 3, "end": 1}
    assert not list(attention_modules(create_model("resnet20_cifar")))


def test_fresh_softmax_attention_is_identity_and_groups_share_maps():
    x = torch.randn(2, 8, 5, 6)
    att = make_attention("softmax", 8, num_maps=2)
    torch.testing.assert_close(att(x), x)
    torch.nn.init.normal_(att.conv.weight)
    w = att.attention(x)  # [2, 2, 5, 6]
    y = att(x)
    torch.testing.assert_close(y[:, :4], x[:, :4] * w[:, :1])  # map 0 weights channels 0-3
    torch.testing.assert_close(y[:, 4:], x[:, 4:] * w[:, 1:])
    torch.testing.assert_close(w.flatten(2).sum(-1), torch.full((2, 2), 30.0))


def test_temperature_flattens_and_residual_mode_keeps_identity_path():
    x = torch.randn(1, 4, 6, 6)
    sharp = make_attention("softmax", 4, temperature=0.5)
    flat = make_attention("softmax", 4, temperature=4.0)
    flat.load_state_dict(sharp.state_dict())
    torch.nn.init.normal_(sharp.conv.weight)
    flat.conv.weight.data.copy_(sharp.conv.weight)
    assert sharp.attention(x).std() > flat.attention(x).std()
    res = make_attention("softmax", 4, mode="residual")
    torch.testing.assert_close(res(x), 2 * x)  # uniform map: x * (1 + 1)


def test_logit_bound_caps_the_weights_and_none_lifts_it():
    x = torch.randn(2, 4, 16, 16)
    bounded = make_attention("softmax", 4, logit_bound=1.0)
    free = make_attention("softmax", 4, logit_bound=None)
    torch.nn.init.normal_(bounded.conv.weight, std=10.0)
    free.load_state_dict(bounded.state_dict())
    wb, wf = bounded.attention(x), free.attention(x)
    assert wb.max() <= torch.e**2 + 1e-4 and wb.min() >= torch.e**-2 - 1e-6
    assert wf.max() > torch.e**2  # the same conv, unclamped, concentrates far more
    torch.testing.assert_close(wb.mean((2, 3)), torch.ones(2, 1))


@pytest.mark.parametrize("bad", [
    dict(kind="softmax", channels=6, num_maps=4),
    dict(kind="softmax", channels=6, kernel_size=2),
    dict(kind="softmax", channels=6, temperature=0),
    dict(kind="softmax", channels=6, mode="other"),
    dict(kind="softmax", channels=6, logit_bound=0),
    dict(kind="se", channels=6, colour="red"),
    dict(kind="se", channels=6, reduction=0),
    dict(kind="cbam", channels=6, reduction=0),
    dict(kind="cbam", channels=6, kernel_size=4),
    dict(kind="transformer", channels=6),
])
def test_bad_attention_options_are_one_line_errors(bad):
    with pytest.raises(AttncnnError) as info:
        make_attention(bad.pop("kind"), bad.pop("channels"), **bad)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name, args, argument", [
    ("resnet20_cifar", dict(widths=[0, 0, 0]), "widths"),
    ("resnet20_cifar", dict(widths=[-4, 8, 8]), "widths"),
    ("resnet20_cifar", dict(widths=[4, 8]), "widths"),
    ("resnet20_cifar", dict(depth=2), "depth"),     # 6n+2 with n = 0: no blocks at all
    ("resnet20_cifar", dict(depth=-4), "depth"),
    ("resnet20_cifar", dict(in_channels=0), "in_channels"),
    ("resnet20_cifar", dict(num_classes=0), "num_classes"),
    ("attn_resnet20_cifar", dict(attention_options={"num_maps": 0}), "num_maps"),
    ("densenet_bc100_k12", dict(depth=4), "depth"),
    ("densenet_bc100_k12", dict(growth=0), "growth"),
    ("densenet_bc100_k12", dict(compression=0.0), "compression"),
    ("resnet9", dict(width=0), "width"),
    ("resnet9", dict(num_classes=-1), "num_classes"),
    ("resnet9", dict(num_classes="x"), "num_classes"),
    ("resnet9", dict(num_classes=2.7), "num_classes"),   # not silently 2
    ("resnet9", dict(num_classes=True), "num_classes"),  # not silently 1
    ("resnet18", dict(in_channels=0), "in_channels"),
])
def test_nonsense_sizes_are_one_line_errors_naming_the_argument(name, args, argument):
    with torch.device("meta"), pytest.raises(AttncnnError, match=argument) as info:
        create_model(name, **args)
    assert "\n" not in str(info.value)


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModelError, match="did you mean.*attn_resnet110_cifar"):
        create_model("attn_resnet110_cifra")
    with pytest.raises(AttncnnError, match="attention_placement"):
        create_model("attn_resnet20_cifar", attention_placement="everywhere")
    with pytest.raises(AttncnnError, match="bad model argument"):
        create_model("resnet20_cifar", widht=3)


@pytest.mark.parametrize("args, message", [
    (dict(widht=3), "bad model argument 'widht'; did you mean 'widths'?"),
    (dict(depthh=8), "bad model argument 'depthh'; did you mean 'depth'?"),
    (dict(attention="softmx"), "unknown attention kind 'softmx'; did you mean 'softmax'?"),
    (dict(attention_placement="stag"), "did you mean 'stage'?"),
    (dict(attention_options={"tempreature": 2}), "did you mean 'temperature'?"),
])
def test_misspelt_model_arguments_get_a_suggestion(args, message):
    with torch.device("meta"), pytest.raises(AttncnnError) as info:
        create_model("attn_resnet20_cifar", **args)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_registry_has_every_row_of_the_papers_tables():
    needed = {"resnet110_cifar", "densenet_bc100_k12", "se_resnet110_cifar",
              "cbam_resnet110_cifar", "attn_resnet110_cifar", "resnet50", "se_resnet50",
              "cbam_resnet50", "attn_resnet50"}
    assert needed <= set(ALL_MODELS)
    assert list_models("*resnet110*") == sorted(n for n in ALL_MODELS if "resnet110" in n)


def test_model_remembers_how_it_was_built():
    model = create_model("attn_resnet20_cifar", num_classes=3, attention_placement="end")
    again = create_model(model.model_name, **model.model_args)
    again.load_state_dict(model.state_dict())
    assert model.model_args["num_classes"] == 3


# --- forward = forward_head(forward_features), as timm splits a model ------------------------

@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_is_the_head_of_the_features(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5).eval()
    x = small_input(name)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.dim() == 4 and features.shape[:2] == (2, model.num_features)
        assert torch.equal(model.forward_head(features), model(x))
        pooled = model.forward_head(features, pre_logits=True)
    assert pooled.shape == (2, model.num_features)


# --- attention maps come out through forward hooks; the modules keep no state ----------------

HOOKED = [("attn_resnet20_cifar", "block", {"num_maps": 2}), ("se_resnet20_cifar", "stage", {}),
          ("cbam_resnet20_cifar", "end", {}), ("attn_resnet9", "stage", {}),
          ("cbam_densenet_bc100_k12", "stage", {})]


def hooked_model(name, placement, options):
    torch.manual_seed(0)
    small = {"resnet9": dict(width=4), "densenet": dict(depth=16, growth=4)}
    size = next((v for k, v in small.items() if k in name), dict(depth=8, widths=(4, 8, 8)))
    model = create_model(name, num_classes=3, attention_placement=placement,
                         attention_options=options, **size).eval()
    for m in model.modules():  # away from the uniform start
        if isinstance(m, SpatialSoftmaxAttention):
            torch.nn.init.normal_(m.conv.weight, std=0.5)
    return model


def own_maps(module, x):
    """The attention `module` applies to x, from its parts (not its forward)."""
    if isinstance(module, SpatialSoftmaxAttention):
        return module.attention(x)
    if isinstance(module, SqueezeExcite):
        return torch.sigmoid(module.fc2(torch.relu(module.fc1(x.mean((2, 3), keepdim=True)))))
    x = x * torch.sigmoid(module.mlp(x.mean((2, 3), keepdim=True))
                          + module.mlp(x.amax((2, 3), keepdim=True)))          # CBAM
    pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
    return torch.sigmoid(module.spatial(pooled))


def all_hooks(model):
    return [h for m in model.modules()
            for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())]


@pytest.mark.parametrize("name, placement, options", HOOKED)
def test_recorded_maps_are_what_each_module_applies(name, placement, options):
    model = hooked_model(name, placement, options)
    modules = dict(attention_modules(model))
    inputs = {}
    handles = [m.register_forward_pre_hook(lambda m, args, n=n: inputs.__setitem__(n, args[0]))
               for n, m in modules.items()]
    x = small_input(name)
    with torch.no_grad(), record_attention(model) as maps:
        logits = model(x)
    for h in handles:
        h.remove()
    assert list(maps) == list(modules) and len(maps) > 0
    with torch.no_grad():
        for n, m in modules.items():
            torch.testing.assert_close(maps[n], own_maps(m, inputs[n]), rtol=0, atol=0)
        assert torch.equal(model(x), logits)   # recording changes nothing it computes


@pytest.mark.parametrize("name, placement, options", HOOKED[:2])
def test_record_attention_leaves_no_hooks_and_no_state(name, placement, options):
    model = hooked_model(name, placement, options)
    before = {n: dict(vars(m)) for n, m in attention_modules(model)}
    with torch.no_grad(), record_attention(model) as maps:
        model(small_input(name))
        assert all_hooks(model)
    assert maps and not all_hooks(model)
    with pytest.raises(RuntimeError), record_attention(model):  # removed on an error too
        raise RuntimeError("inside")
    assert not all_hooks(model)
    for n, m in attention_modules(model):       # forward passes set no attribute
        assert vars(m) == before[n] and not hasattr(m, "maps") and not hasattr(m, "record")


def test_model_init_leaves_softmax_attention_to_itself():
    """init_weights re-initialises every conv but the softmax modules', which start at zero
    (the identity) by their own init_weights; SE and CBAM take the backbone's He init."""
    torch.manual_seed(0)
    model = create_model("attn_resnet20_cifar", attention_placement="block")
    convs = [m.conv for _, m in attention_modules(model)]
    assert len(convs) == 9 and all(not c.weight.any() and not c.bias.any() for c in convs)
    se = create_model("se_resnet20_cifar")
    fc1 = next(m for _, m in attention_modules(se)).fc1
    fan_out = fc1.out_channels * fc1.kernel_size[0] * fc1.kernel_size[1]
    assert fc1.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.3)
    assert not fc1.bias.any()


def test_count_macs_copies_the_model_without_its_hooks(tmp_path):
    """A hook that holds what cannot be copied (an open file) neither breaks count_macs (the
    engine counts MACs at the end of every run) nor runs during the count, and stays on the
    model."""
    from attncnn.models import count_macs

    model = create_model("attn_resnet20_cifar", depth=8)
    plain = count_macs(model, (3, 32, 32))
    with open(tmp_path / "log.txt", "w") as log:
        calls = []

        class Holder:
            def __init__(self):
                self.log = log

            def hook(self, module, inputs, output):
                calls.append(module)

        holder = Holder()
        handle = model.register_forward_hook(holder.hook)
        model.stages[0].register_forward_pre_hook(lambda m, i: holder.hook(m, i, None))
        assert count_macs(model, (3, 32, 32)) == plain and calls == []
        model(torch.zeros(1, 3, 32, 32))
        assert len(calls) == 2
        handle.remove()
