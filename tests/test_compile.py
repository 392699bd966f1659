"""torch.compile sees each model as one graph: no graph breaks from attention modules.

A graph break splits the compiled model and costs a trip through Python per break per step;
the GPU fast path (`run.compile`, `attncnn bench --compile`) relies on there being none.
Traced with `torch._dynamo.explain` (no code generation, so it is cheap on a CPU).
"""
import pytest
import torch

from attncnn.models import create_model


@pytest.mark.parametrize("name, args", [
    ("resnet20_cifar", {"depth": 8}),
    *[(f"{kind}_resnet20_cifar", {"depth": 8, "attention_placement": placement})
      for kind in ("attn", "se", "cbam") for placement in ("block", "stage", "end")],
    ("attn_resnet9", {}),
    ("attn_densenet_bc100_k12", {"depth": 22}),
])
def test_model_compiles_as_one_graph(name, args):
    import torch._dynamo as dynamo

    torch._dynamo.reset()
    model = create_model(name, num_classes=10, **args).train()
    explanation = dynamo.explain(model)(torch.randn(2, 3, 32, 32))
    assert explanation.graph_break_count == 0, [str(b.reason) for b in explanation.break_reasons]
    assert explanation.graph_count == 1
