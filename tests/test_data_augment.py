"""Device-side augmentation on real data: seeded, a translation + mirror of each image."""
import torch

from attncnn.data import DataConfig, DeviceLoader
from attncnn.data.sources import load_split


def digits_train():
    return load_split(DataConfig(), "train").subset(torch.arange(128))


def batches(data, **kw):
    return list(DeviceLoader(data, 64, train=True, **kw).epoch(0))


def test_augmentation_is_a_function_of_the_seed():
    data = digits_train()
    a, b, c = batches(data, seed=1), batches(data, seed=1), batches(data, seed=2)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))


def test_augmented_images_are_shifted_or_mirrored_originals():
    data = digits_train()
    plain = torch.cat([x for x, _ in batches(data, seed=4, augment=False)])
    aug = torch.cat([x for x, _ in batches(data, seed=4, crop_padding=4)])
    mean = torch.tensor(data.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(data.std).view(1, 3, 1, 1) * 255
    fill = (-mean / std)[0]                                  # a zero pixel after normalising
    changed = 0
    for p, a in zip(plain, aug):                             # same order: order ignores augment
        padded = torch.nn.functional.pad(p - fill, (4, 4, 4, 4)) + fill
        windows = [padded[:, i:i + 32, j:j + 32] for i in range(9) for j in range(9)]
        assert any(torch.allclose(a, w) or torch.allclose(a, w.flip(2)) for w in windows)
        changed += not torch.equal(a, p)
    assert changed > 100                                     # nearly all are moved or flipped


def test_no_flip_keeps_orientation():
    data = digits_train()
    plain = torch.cat([x for x, _ in batches(data, seed=4, augment=False)])
    aug = torch.cat([x for x, _ in batches(data, seed=4, crop_padding=0, flip=False)])
    assert torch.equal(plain, aug)
