"""Tensor names of torchvision / timm ResNets and of ours, both ways.

torchvision's (and timm's) ResNet-18/34/50/101 name their tensors `conv1`, `bn1`,
`layerN.i.<conv|bn>K`, `layerN.i.downsample.0/1` and `fc`; our ImageNet ResNet
(attncnn.models.resnet.ResNet) holds the same tensors as `stem.0`, `stem.1`,
`stages.(N-1).i.<same>`, `stages.(N-1).i.shortcut.0/1` and `fc`, plus its attention
modules, which torchvision's lacks. `attncnn.pretrained.load` maps a torchvision-style
state dict with `from_torchvision` and names missing tensors the way the file would with
`attncnn_to_torchvision`.
"""
from __future__ import annotations

import re

import torch

from attncnn.errors import AttncnnError

IMAGENET_MEAN = (0.485, 0.456, 0.406)   # torchvision's and timm's ResNet normalisation
IMAGENET_STD = (0.229, 0.224, 0.225)

_TV_INNER = re.compile(r"^(conv[123]|bn[123]|downsample\.[01])\.")
_TV_BLOCK = re.compile(r"^layer([1-4])\.(\d+)\.(.+)$")
_OUR_BLOCK = re.compile(r"^stages\.([0-3])\.(\d+)\.(.+)$")
_OUR_INNER = re.compile(r"^(conv[123]|bn[123]|shortcut\.[01])\.")


def torchvision_to_attncnn(key: str) -> str | None:
    """The name in our ImageNet ResNet of a torchvision / timm ResNet tensor, or None when
    `key` is not one of a plain ResNet-18/34/50/101's.

    conv1, bn1 -> stem.0, stem.1; layerN.i.<conv|bn>K -> stages.(N-1).i.<same>;
    layerN.i.downsample.0/1 -> stages.(N-1).i.shortcut.0/1; fc -> fc.
    """
    head, _, rest = key.partition(".")
    if head in ("conv1", "bn1") and rest and "." not in rest:   # timm's deep stems: conv1.0...
        return f"stem.{0 if head == 'conv1' else 1}.{rest}"
    if head == "fc" and rest in ("weight", "bias"):
        return key
    m = _TV_BLOCK.match(key)
    if m and _TV_INNER.match(m.group(3)):
        inner = m.group(3).replace("downsample.", "shortcut.", 1)
        return f"stages.{int(m.group(1)) - 1}.{m.group(2)}.{inner}"
    return None


def attncnn_to_torchvision(key: str) -> str | None:
    """The inverse of `torchvision_to_attncnn`: None for tensors torchvision's ResNet lacks
    (attention modules)."""
    if key.startswith("stem.0."):
        return "conv1." + key[len("stem.0."):]
    if key.startswith("stem.1."):
        return "bn1." + key[len("stem.1."):]
    if key in ("fc.weight", "fc.bias"):
        return key
    m = _OUR_BLOCK.match(key)
    if m and _OUR_INNER.match(m.group(3)):
        inner = m.group(3).replace("shortcut.", "downsample.", 1)
        return f"layer{int(m.group(1)) + 1}.{m.group(2)}.{inner}"
    return None


def is_torchvision_style(state: dict) -> bool:
    ours = any(k.startswith(("stem.", "stages.")) for k in state)
    return not ours and any(k.startswith(("conv1.", "layer1.")) for k in state)


def from_torchvision(state: dict[str, torch.Tensor], name: str, family: str, source: str
                     ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(`state` under our names, {our name: the file's name}) for the model `name` of
    registry family `family`; one AttncnnError line naming `source` when the model is not
    an ImageNet ResNet or a tensor is not one of a plain torchvision/timm ResNet's."""
    if family != "imagenet-resnet":
        raise AttncnnError(f"{source} holds a torchvision/timm ResNet; it fits only "
                           f"resnet18/34/50/101 and their se_/cbam_/attn_ versions, "
                           f"not {name}")
    mapped, origin, unknown = {}, {}, []
    for key, value in state.items():
        ours = torchvision_to_attncnn(key)
        if ours is None:
            unknown.append(key)
        else:
            mapped[ours], origin[ours] = value, key
    if unknown:
        raise AttncnnError(f"{source}: {len(unknown)} tensors are not those of a plain "
                           f"torchvision/timm ResNet-18/34/50/101 (e.g. {unknown[0]})")
    return mapped, origin
