"""ImageNet ResNet weights from torchvision / timm state-dict files: loaded by name mapping
into our ResNets with or without attention; the loaded network computes what the original
did (checked against a torchvision-shaped reference written here, torchvision not needed);
misfits and unsafe files fail in one line."""
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attncnn import AttncnnError, create_model
from attncnn.pretrained import attncnn_to_torchvision, torchvision_to_attncnn


# --- a reference ResNet with torchvision's module names (conv1, bn1, layerN.i.*, downsample, fc)
class RefBasic(nn.Module):
    expansion = 1

    def __init__(self, cin, width, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = None
        if stride != 1 or cin != width:
            self.downsample = nn.Sequential(nn.Conv2d(cin, width, 1, stride, bias=False),
                                            nn.BatchNorm2d(width))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class RefBottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, width, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)   # stride on the 3x3 (v1.5)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.downsample = None
        if stride != 1 or cin != width * 4:
            self.downsample = nn.Sequential(nn.Conv2d(cin, width * 4, 1, stride, bias=False),
                                            nn.BatchNorm2d(width * 4))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class RefResNet(nn.Module):
    def __init__(self, block, counts, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (width, count) in enumerate(zip((64, 128, 256, 512), counts)):
            blocks = []
            for j in range(count):
                blocks.append(block(cin, width, 2 if i > 0 and j == 0 else 1))
                cin = width * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def features(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


REF = {18: (RefBasic, (2, 2, 2, 2)), 50: (RefBottleneck, (3, 4, 6, 3))}


def reference(depth, num_classes=1000, seed=0):
    """A reference net whose every tensor is random (BN statistics too), in eval mode."""
    torch.manual_seed(seed)
    block, counts = REF[depth]
    net = RefResNet(block, counts, num_classes)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):   # fan-in scaled, so activations stay O(1)
                nn.init.normal_(m.weight, std=(1.0 / (m.in_channels * m.kernel_size[0] ** 2)) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.3, 0.8)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(7)
            elif isinstance(m, nn.Linear):
                m.weight.normal_(std=0.05)
                m.bias.normal_(std=0.1)
    return net.eval()


@pytest.fixture(scope="module")
def ref_files(tmp_path_factory):
    """{depth: (reference net, .pth path)} for ResNet-18 and ResNet-50."""
    out = {}
    for depth in (18, 50):
        net = reference(depth)
        path = tmp_path_factory.mktemp("tv") / f"resnet{depth}.pth"
        torch.save(net.state_dict(), path)
        out[depth] = (net, path)
    return out


X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("prefix", ["", "attn_"])
def test_loaded_logits_equal_the_reference(ref_files, depth, prefix):
    net, path = ref_files[depth]
    model = create_model(f"{prefix}resnet{depth}", pretrained=str(path)).eval()
    if prefix:   # the paper's module after every stage, left at its initial (identity) state
        assert model.model_args["attention_placement"] == "stage"
        assert model.pretrained_cfg["attention_at_init"] == 8   # conv weight + bias, 4 stages
    with torch.no_grad():
        want, got = net(X), model(X)
    assert want.abs().max() > 0.1   # a non-trivial output
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    cfg = model.pretrained_cfg
    assert cfg["format"] == "torchvision" and cfg["head"] == "pretrained"
    assert cfg["mean"] == [0.485, 0.456, 0.406] and cfg["input_size"] == [3, 224, 224]
    assert cfg["classes"] is None   # a state dict carries no class names


def test_new_head_when_the_class_count_differs(ref_files):
    net, path = ref_files[18]
    model = create_model("attn_resnet18", pretrained=path, num_classes=10).eval()
    assert model.fc.out_features == 10 and model.pretrained_cfg["head"] == "new"
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(X), net.features(X), atol=1e-5, rtol=0)
    torch.manual_seed(0)
    fresh = create_model("attn_resnet18", num_classes=10)
    assert fresh.fc.weight.std().item() == pytest.approx(model.fc.weight.std().item(), rel=0.2)


def test_timm_style_wrappers_and_safetensors_load(ref_files, tmp_path):
    from safetensors.torch import save_file

    net, _ = ref_files[18]
    state = net.state_dict()
    wrapped = tmp_path / "ckpt.pth.tar"   # a training checkpoint of a DDP model
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    plain = tmp_path / "resnet18.safetensors"   # no num_batches_tracked, as older files
    save_file({k: v.contiguous() for k, v in state.items() if "num_batches" not in k}, str(plain))
    for path in (wrapped, plain):
        model = create_model("resnet18", pretrained=path).eval()
        with torch.no_grad():
            torch.testing.assert_close(model(X), net(X), atol=1e-5, rtol=0)


def test_se_and_cbam_load_but_do_not_start_as_the_identity(ref_files):
    net, path = ref_files[18]
    for name in ("se_resnet18", "cbam_resnet18"):
        model = create_model(name, pretrained=path).eval()
        assert model.pretrained_cfg["attention_at_init"] > 0
        with torch.no_grad():
            assert not torch.allclose(model(X), net(X), atol=1e-3)   # documented: not identity


def test_key_mapping_round_trips():
    ours = create_model("resnet50")
    for key in ours.state_dict():
        tv = attncnn_to_torchvision(key)
        assert tv is not None and torchvision_to_attncnn(tv) == key, key
    assert torchvision_to_attncnn("layer3.5.downsample.1.running_var") == \
        "stages.2.5.shortcut.1.running_var"
    assert torchvision_to_attncnn("conv1.weight") == "stem.0.weight"
    for foreign in ("layer1.0.se.fc1.weight", "features.0.weight", "conv1.0.weight", "head.fc.weight"):
        assert torchvision_to_attncnn(foreign) is None, foreign
    attn = create_model("attn_resnet18", attention_placement="block")
    assert attncnn_to_torchvision("stages.0.0.attention.conv.weight") is None
    assert any(".attention." in k for k in attn.state_dict())


def one_line(err):
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_misfits_are_one_line_errors(ref_files, tmp_path):
    net, path18 = ref_files[18]
    _, path50 = ref_files[50]
    state = net.state_dict()

    def saved(name, obj):
        p = tmp_path / name
        torch.save(obj, p)
        return p

    cases = [
        ("resnet34", path18, r"tensors of resnet34 are not in the file \(e\.g\. layer1\.2\.conv1\.weight\)"),
        ("resnet18", path50, r"have no place in resnet18 \(e\.g\. layer1\.0\.conv3\.weight\)"),
        ("resnet18", saved("extra.pth", {**state, "layer1.0.se.fc1.weight": torch.zeros(4, 64, 1, 1)}),
         r"1 tensors are not those of a plain torchvision/timm ResNet.*layer1\.0\.se\.fc1\.weight"),
        ("resnet18", saved("shape.pth", {**state, "layer2.0.conv1.weight": torch.zeros(128, 64, 5, 5)}),
         r"layer2\.0\.conv1\.weight is \[128, 64, 5, 5\] in the file but \[128, 64, 3, 3\] in resnet18"),
        ("resnet18", saved("vgg.pth", {"features.0.weight": torch.zeros(64, 3, 3, 3),
                                       "classifier.0.weight": torch.zeros(10, 64)}),
         r"have no place in resnet18 \(e\.g\. features\.0\.weight\)"),
        ("resnet20_cifar", path18, r"torchvision/timm ResNet; it fits only resnet18/34/50/101"),
        ("resnet18", saved("list.pth", [1, 2, 3]), r"holds no state dict"),
        ("resnet18", saved("mixed.pth", {**state, "epoch": 3}), r"'epoch' holds a int, not a tensor"),
        ("resnet18", tmp_path / "absent.pth", r"pretrained file .*absent\.pth not found"),
    ]
    for name, path, pattern in cases:
        with pytest.raises(AttncnnError, match=pattern) as err:
            create_model(name, pretrained=str(path))
        one_line(err)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"conv1.weight": Evil()}, f, protocol=2)
    with pytest.raises(AttncnnError, match="refused to load") as err:
        create_model("resnet18", pretrained=str(path))
    one_line(err)
    assert "pwned" not in capsys.readouterr().out


def test_a_whole_pickled_module_is_refused(tmp_path):
    path = tmp_path / "module.pth"
    torch.save(nn.Linear(2, 2), path)
    with pytest.raises(AttncnnError, match="refused to load"):
        create_model("resnet18", pretrained=str(path))
