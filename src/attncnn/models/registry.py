"""Model registry: every named model of the paper's tables, built by `create_model`.

Names follow `<attention>_<backbone>`: no prefix (no attention), then one prefix per
attention kind (`attention_kinds.ATTENTION_KINDS`: `attn_` for the paper's spatial softmax
attention, `se_`, `cbam_`), e.g. `attn_resnet110_cifar`. A backbone is one
`_register_family` line at the end of this file.
A model built here remembers how: `model.model_name` and `model.model_args` (plain JSON
values), so a weights file can rebuild it without the training config.
"""
from __future__ import annotations

import fnmatch
import inspect
from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from attncnn.errors import AttncnnError, UnknownModelError, did_you_mean
from attncnn.models.attention_kinds import ATTENTION_KINDS
from attncnn.models.common import check_sizes
from attncnn.models.densenet import DenseNetBC
from attncnn.models.fastnet import FastNet
from attncnn.models.resnet import CifarResNet, ResNet
from attncnn.models.resnet9 import ResNet9


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    defaults: dict = field(default_factory=dict)
    input_size: tuple[int, int, int] = (3, 32, 32)
    family: str = ""


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, builder: Callable[..., nn.Module], *, input_size=(3, 32, 32),
             family: str = "", **defaults) -> ModelSpec:
    """Add a model under `name`; `defaults` are its constructor arguments."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    spec = ModelSpec(name, builder, dict(defaults), tuple(input_size), family)
    _REGISTRY[name] = spec
    return spec


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern (e.g. "*resnet110*"), sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        hint = did_you_mean(name, _REGISTRY, n=3) or "; see `attncnn models`"
        raise UnknownModelError(f"unknown model {name!r}{hint}") from None


def create_model(name: str, num_classes: int | None = None, *, pretrained=None,
                 **overrides) -> nn.Module:
    """Build the registered model `name`, overriding any constructor argument.

    pretrained (never fetched from the network; see docs/pretrained.md):
    - a tag of the weights shipped with attncnn (`list_pretrained()`), e.g. "digits": the
      model is built as those weights were trained (their arguments; an override that
      contradicts them is refused) and loaded;
    - a local file (.safetensors, or .pth/.pt read with weights_only=True; ours, or a
      torchvision / timm ResNet for resnet18/34/50/101 and their attention versions), or
      "model:tag" (another model's shipped weights): loaded into the model built from
      `name` and the overrides. Attention tensors the file lacks keep their initial values.
    A num_classes other than the weights' gets a new, freshly initialised head.
    The model then carries `pretrained_cfg` (source, classes, mean, std, input size, ...);
    None without pretrained.
    """
    spec = get_spec(name)
    source = None
    if pretrained is not None and pretrained is not False:
        from attncnn.pretrained.load import resolve

        source = resolve(name, pretrained)
        if source.use_recipe:
            overrides = source.recipe_args(name, spec.defaults, spec.builder, overrides,
                                           num_classes)
    args = {**spec.defaults, **overrides}
    if num_classes is not None:
        args["num_classes"] = num_classes  # checked below: "x", 2.7 and True are refused
    if "num_classes" in args:  # also guards builders registered from outside this package
        check_sizes(name, num_classes=args["num_classes"])
    _check_argument_names(name, spec.builder, args)
    try:
        model = spec.builder(**args)
    except TypeError as err:
        raise AttncnnError(f"{name}: bad model argument ({err})") from None
    model.model_name = name
    model.model_args = args
    model.input_size = spec.input_size
    model.pretrained_cfg = None
    if source is not None:
        source.load(model)
    return model


def _check_argument_names(name: str, builder, args: dict) -> None:
    """Refuse an argument the builder does not take, naming the closest one it does
    (`depthh` -> did you mean 'depth'?)."""
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):  # no signature to read: the builder will say
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    known = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in args:
        if key not in known:
            raise AttncnnError(f"{name}: bad model argument {key!r}{did_you_mean(key, known)} "
                               f"(it takes {', '.join(known)})")


def _register_family(backbone: str, builder, family: str, input_size, **defaults) -> None:
    """`backbone` without attention, and `<prefix><backbone>` for every attention kind."""
    register(backbone, builder, input_size=input_size, family=family, attention=None,
             attention_placement="block", **defaults)
    for kind, spec in ATTENTION_KINDS.items():
        register(f"{spec.prefix}{backbone}", builder, input_size=input_size, family=family,
                 attention=kind, attention_placement=spec.placement, **defaults)


# The backbones: one `_register_family` line (or loop) each.
for _depth in (20, 32, 44, 56, 110):
    _register_family(f"resnet{_depth}_cifar", CifarResNet, "cifar-resnet", (3, 32, 32),
                     depth=_depth, num_classes=10)
# The fast-training net of benchmarks/time_to_accuracy.py; the paper's attention after each stage.
_register_family("resnet9", ResNet9, "resnet9", (3, 32, 32), num_classes=10)
# airbench94's shape (a whitening stem, three conv groups), for the CPU race of issue 16.
_register_family("fastnet", FastNet, "fastnet", (3, 32, 32), num_classes=10)
_register_family("densenet_bc100_k12", DenseNetBC, "densenet-bc", (3, 32, 32),
                 depth=100, growth=12, num_classes=10)
for _depth in (18, 34, 50, 101):
    _register_family(f"resnet{_depth}", ResNet, "imagenet-resnet", (3, 224, 224),
                     depth=_depth, num_classes=1000)
