"""Pretrained weights: the ones shipped inside the package (by tag) and local files,
torchvision / timm ResNets included. `create_model(name, pretrained=...)` is the way in:

    create_model("attn_resnet20_cifar", pretrained="digits")
    create_model("attn_resnet50", pretrained="resnet50.pth", num_classes=10)

See `attncnn.pretrained.load` (what loads into what), `attncnn.pretrained.torchvision_names`
(torchvision / timm ResNet tensor names and ours) and `attncnn.pretrained.shipped` (the
index, `attncnn pretrained --ship`). No network access, ever.
"""
from attncnn.pretrained.load import load_state_into, read_state_dict
from attncnn.pretrained.shipped import list_pretrained, render_table, ship
from attncnn.pretrained.torchvision_names import attncnn_to_torchvision, torchvision_to_attncnn

__all__ = ["attncnn_to_torchvision", "list_pretrained", "load_state_into", "read_state_dict",
           "render_table", "ship", "torchvision_to_attncnn"]
