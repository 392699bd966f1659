"""Models: attention modules, backbones and the registry that names them. `attention`
holds the attention modules (softmax, SE, CBAM) and records their maps through forward
hooks; `attention_kinds` names the kinds (`ATTENTION_KINDS`: module, model-name prefix,
default placement) and builds one (`make_attention`); `common` holds what backbones share
(`AttentionPlan`, which puts the chosen kind at the chosen placement, and the `Backbone`
base class with its classifier head); `resnet`, `resnet9` and `densenet` are the
backbones; `registry` names every backbone with and without each attention kind
(`create_model`, `list_models`) and checks arguments; `profile` counts parameters and
MACs. Models know nothing of data or training: they take a batch of normalised images
and return logits.
"""
from attncnn.models.attention import (
    CBAM,
    AttentionModule,
    SpatialSoftmaxAttention,
    SqueezeExcite,
    attention_modules,
    record_attention,
)
from attncnn.models.attention_kinds import ATTENTION_KINDS, make_attention
from attncnn.models.profile import count_macs, count_params
from attncnn.models.registry import create_model, get_spec, list_models, register

__all__ = [
    "ATTENTION_KINDS", "AttentionModule", "CBAM", "SpatialSoftmaxAttention", "SqueezeExcite",
    "attention_modules", "make_attention", "record_attention", "count_macs", "count_params",
    "create_model", "get_spec", "list_models", "register",
]
