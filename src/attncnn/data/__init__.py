"""Data: readers decode small images once into uint8 tensors; batches are made on the device.

The contract every reader keeps (see `attncnn.data.sources`):
    load_split(cfg, split) -> ArrayDataset      images decoded once into memory: small ones
                                                (CIFAR), or photos decoded to a fixed square
                                                (Imagenette at 160 px) that training crops
                                                further in batches (`crops`)
or, for large data sets (ImageNet), a streaming loader with the same `epoch()` interface as
`DeviceLoader`. `build_loaders(cfg, device, ...)` is what the training engine calls.
"""
from attncnn.data.config import DataConfig
from attncnn.data.dataset import ArrayDataset
from attncnn.data.loader import DeviceLoader
from attncnn.data.sources import Loaders, build_loaders, register_source, source_names

__all__ = ["ArrayDataset", "DataConfig", "DeviceLoader", "Loaders", "build_loaders",
           "register_source", "source_names"]
