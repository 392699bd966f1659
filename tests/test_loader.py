"""DeviceLoader: order and augmentation are functions of (seed, epoch, step)."""
import torch

from attncnn.data import ArrayDataset, DeviceLoader
from attncnn.data.loader import random_crop_flip


def toy(n=40, size=8):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return ArrayDataset(images, torch.arange(n) % 4, ["a", "b", "c", "d"])


def test_train_epoch_is_a_shuffled_partition_with_drop_last():
    loader = DeviceLoader(toy(42), 8, train=True, augment=False)
    assert len(loader) == 5
    seen = torch.cat([y for _, y in loader.epoch(3)])
    assert len(seen) == 40
    other = torch.cat([y for _, y in loader.epoch(4)])
    assert not torch.equal(seen, other)  # a new order every epoch


def test_resume_mid_epoch_gives_the_same_batches():
    loader = DeviceLoader(toy(), 8, train=True, seed=5)
    full = list(loader.epoch(2))
    resumed = list(loader.epoch(2, start_step=3))
    for (xa, ya), (xb, yb) in zip(full[3:], resumed):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_ranks_split_the_one_process_global_batch():
    data = toy()
    one = list(DeviceLoader(data, 8, train=True, seed=1).epoch(0))
    r0 = list(DeviceLoader(data, 8, train=True, seed=1, rank=0, world_size=2).epoch(0))
    r1 = list(DeviceLoader(data, 8, train=True, seed=1, rank=1, world_size=2).epoch(0))
    for (x, y), (x0, y0), (x1, y1) in zip(one, r0, r1):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


def test_eval_sees_every_sample_once_in_order_across_ranks():
    data = toy(13)
    r = [torch.cat([y for _, y in DeviceLoader(data, 4, train=False, rank=k, world_size=2)])
         for k in range(2)]
    assert sorted(torch.cat(r).tolist()) == sorted(data.labels.tolist())
    x, _ = next(iter(DeviceLoader(data, 13, train=False)))
    mean = torch.tensor(data.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.std).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (data.images.float() / 255 - mean) / std)


def test_crop_is_a_translation_and_flip_mirrors():
    img = torch.arange(3 * 6 * 6, dtype=torch.uint8).view(1, 3, 6, 6).repeat(64, 1, 1, 1)
    out = random_crop_flip(img, 2, True, torch.Generator().manual_seed(0))
    assert out.shape == img.shape and out.dtype == torch.uint8
    plain = random_crop_flip(img, 0, True, torch.Generator().manual_seed(0))
    flipped = [bool(torch.equal(p, img[0].flip(2))) for p in plain]
    assert all(torch.equal(p, img[0]) or f for p, f in zip(plain, flipped))
    assert 10 < sum(flipped) < 54
    # every output is the padded image shifted by (dy, dx) in [-2, 2], possibly mirrored
    padded = torch.nn.functional.pad(img[0], (2, 2, 2, 2))
    windows = {padded[:, i:i + 6, j:j + 6] for i in range(5) for j in range(5)}
    windows = [w for w in windows] + [w.flip(2) for w in windows]
    assert all(any(torch.equal(o, w) for w in windows) for o in out[:16])
