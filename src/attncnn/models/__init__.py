"""Models: attention modules, backbones and the registry that names them."""
from attncnn.models.attention import (
    CBAM,
    AttentionModule,
    SpatialSoftmaxAttention,
    SqueezeExcite,
    attention_modules,
    make_attention,
    record_attention,
)
from attncnn.models.profile import count_macs, count_params
from attncnn.models.registry import create_model, get_spec, list_models, register

__all__ = [
    "AttentionModule", "CBAM", "SpatialSoftmaxAttention", "SqueezeExcite", "attention_modules",
    "make_attention", "record_attention", "count_macs", "count_params", "create_model", "get_spec",
    "list_models", "register",
]
