"""DeviceLoader: order and augmentation are functions of (seed, epoch, step), drawn once per
epoch; batches are true crops/flips of their images."""
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from attncnn.data import ArrayDataset, DeviceLoader
from attncnn.data.loader import crop_flip


def toy(n=40, size=8):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return ArrayDataset(images, torch.arange(n) % 4, ["a", "b", "c", "d"])


def unnormalise(x, data):
    mean = torch.tensor(data.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(data.std).view(1, 3, 1, 1) * 255
    return (x * std + mean).round().to(torch.uint8)


def test_train_epoch_is_a_shuffled_partition_with_drop_last():
    loader = DeviceLoader(toy(42), 8, train=True, augment=False)
    assert len(loader) == 5
    seen = torch.cat([y for _, y in loader.epoch(3)])
    assert len(seen) == 40
    other = torch.cat([y for _, y in loader.epoch(4)])
    assert not torch.equal(seen, other)  # a new order every epoch


def test_sizes_global_and_per_rank_match_what_an_epoch_yields():
    for rank, world_size in ((0, 1), (1, 2)):
        train = DeviceLoader(toy(42), 8, train=True, rank=rank, world_size=world_size)
        evaluation = DeviceLoader(toy(42), 8, train=False, rank=rank, world_size=world_size)
        assert train.num_samples == evaluation.num_samples == 42  # the data set, every rank's
        for loader in (train, evaluation):
            yielded = sum(len(y) for _, y in loader.epoch(0))
            assert loader.num_samples_per_rank == yielded
        assert train.num_samples_per_rank == 40 // world_size  # whole global batches only
        assert evaluation.num_samples_per_rank == 42 // world_size


def test_the_seed_is_fixed_when_the_loader_is_built():
    import pytest

    loader = DeviceLoader(toy(), 8, train=True, seed=5)
    assert loader.seed == 5
    with pytest.raises(AttributeError):
        loader.seed = 6


def test_resume_mid_epoch_gives_the_same_batches():
    for rank, world_size in ((0, 1), (1, 2)):
        loader = DeviceLoader(toy(), 8, train=True, seed=5, rank=rank, world_size=world_size)
        full = list(loader.epoch(2))
        resumed = list(loader.epoch(2, start_step=3))
        assert len(resumed) == len(full) - 3
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
    data = ArrayDataset(toy(13).images, torch.arange(13), [str(i) for i in range(13)])
    r = [torch.cat([y for _, y in DeviceLoader(data, 4, train=False, rank=k, world_size=2)])
         for k in range(2)]
    assert r[0].tolist() == list(range(0, 13, 2)) and r[1].tolist() == list(range(1, 13, 2))
    x, _ = next(iter(DeviceLoader(data, 13, train=False)))
    mean = torch.tensor(data.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.std).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (data.images.float() / 255 - mean) / std)


def test_crop_flip_takes_the_window_at_each_offset_and_mirrors_it():
    images = toy(2, size=6).images
    padded = F.pad(images, (2, 2, 2, 2))
    cases = [(i, dy, dx, m) for i in range(2) for dy in range(5) for dx in range(5)
             for m in (False, True)]
    index, dy, dx, mirror = (torch.tensor(column) for column in zip(*cases))
    out = crop_flip(padded, index, dy, dx, mirror, (6, 6))
    assert out.shape == (len(cases), 3, 6, 6) and out.dtype == torch.uint8
    for o, (i, y, x, m) in zip(out, cases):
        window = padded[i, :, y:y + 6, x:x + 6]
        assert torch.equal(o, window.flip(-1) if m else window)


def test_train_batches_are_shifted_or_mirrored_copies_of_their_images():
    images = toy(12).images.clamp(min=1)  # no zero pixels: padding cannot pass for image
    data = ArrayDataset(images, torch.arange(12), [str(i) for i in range(12)])
    loader = DeviceLoader(data, 4, train=True, crop_padding=2, channels_last=True, seed=1)
    seen, moved = [], 0
    for x, y in loader.epoch(0):
        assert x.is_contiguous(memory_format=torch.channels_last) and x.dtype == torch.float32
        for img, label in zip(unnormalise(x, data), y):
            src = F.pad(images[label], (2, 2, 2, 2))
            windows = [src[:, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
            windows += [w.flip(-1) for w in windows]
            assert any(torch.equal(img, w) for w in windows)
            moved += not torch.equal(img, images[label])
        seen.append(y)
    assert sorted(torch.cat(seen).tolist()) == list(range(12))  # a permutation, drop_last exact
    assert moved > 6


def test_reflect_padding_crops_windows_of_the_mirrored_border():
    data = ArrayDataset(toy(8).images, torch.arange(8), [str(i) for i in range(8)])
    loader = DeviceLoader(data, 8, train=True, crop_padding=2, pad_mode="reflect", seed=3)
    x, y = next(iter(loader.epoch(0)))
    moved = 0
    for img, label in zip(unnormalise(x, data), y):
        src = F.pad(data.images[label:label + 1].float(), (2,) * 4, mode="reflect")[0]
        src = src.to(torch.uint8)
        windows = [src[:, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(img, w) or torch.equal(img, w.flip(-1)) for w in windows)
        moved += not torch.equal(img, data.images[label]) and not torch.equal(
            img, data.images[label].flip(-1))
    assert moved > 2  # some crops reach into the reflected border
    try:
        DeviceLoader(data, 8, train=True, pad_mode="edge")
    except ValueError as err:
        assert "pad_mode" in str(err)
    else:
        raise AssertionError("an unknown pad_mode was accepted")


class HostTraffic(TorchFunctionMode):
    """Records the torch calls that copy between host and device, wait for the device, or
    draw random numbers on the host."""
    NAMES = {"to", "cuda", "cpu", "copy_", "pin_memory", "item", "tolist", "numpy",
             "__bool__", "__int__", "__float__", "__index__", "tensor", "as_tensor",
             "randperm", "randint", "rand"}

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", repr(func))
        if name in self.NAMES:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def test_no_host_transfer_or_draw_after_the_first_batch_of_an_epoch():
    for train, augment in ((True, True), (True, False), (False, False)):
        loader = DeviceLoader(toy(), 8, train=train, augment=augment, world_size=2, rank=1)
        batches = loader.epoch(1, start_step=1)
        with HostTraffic() as first:
            next(batches)
        with HostTraffic() as rest:
            assert len(list(batches)) == len(loader) - 2
        assert rest.calls == [], (train, augment, rest.calls)
        if train:  # the epoch's plan: drawn and sent to the device once, at its start
            assert "randperm" in first.calls and "to" in first.calls
