import torch

from attncnn.engine.metrics import ClassificationMeter


def test_meter_counts_top1_top5_confusion_and_per_class():
    logits = torch.tensor([[9.0, 1, 0, 0, 0, 0], [0, 9, 1, 0, 0, 0], [1, 2, 3, 4, 5, 9],
                           [9, 8, 7, 6, 5, 0]])
    labels = torch.tensor([0, 2, 0, 5])
    m = ClassificationMeter(6)
    m.update(logits[:2], labels[:2])
    m.update(logits[2:], labels[2:])
    s = m.summary()
    assert s["count"] == 4 and s["top1"] == 25.0
    assert s["top5"] == 50.0  # rows 3 and 4 hold their label in last (6th) place
    assert m.confusion[2, 1] == 1 and m.confusion[0, 0] == 1 and m.confusion[0, 5] == 1
    assert s["per_class"][0] == 50.0 and s["per_class"][2] == 0.0
    torch.testing.assert_close(torch.tensor(s["loss"]),
                               torch.nn.functional.cross_entropy(logits, labels).double().float())


def test_top5_is_none_for_five_classes_or_fewer_and_prints_as_n_a():
    """With <= 5 classes every label is within the top 5: 100% would say nothing."""
    from attncnn.engine.metrics import percent

    for classes in (2, 5):
        m = ClassificationMeter(classes)
        m.update(torch.randn(4, classes), torch.tensor([0, 1, 1, 0]))
        assert m.summary()["top5"] is None and m.summary()["count"] == 4
    assert percent(None) == "n/a" and percent(87.125) == "87.12%"


def test_evaluate_restores_mode_and_counts_every_sample():
    from attncnn.engine.metrics import evaluate

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).train()
    batches = [(torch.randn(5, 4), torch.randint(0, 3, (5,))) for _ in range(3)]
    s = evaluate(model, batches, 3)
    assert model.training and s["count"] == 15 and len(s["confusion"]) == 3
    with torch.no_grad():
        pred = torch.cat([model(x).argmax(1) for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    assert s["top1"] == 100.0 * int((pred == labels).sum()) / 15


def test_evaluate_with_flip_averages_the_logits_of_the_image_and_its_mirror():
    from attncnn.engine.metrics import ClassificationMeter, evaluate

    class LeftRight(torch.nn.Module):
        """Logits [mean of the left half, mean of the right half, 0]: not mirror-invariant."""

        def forward(self, x):
            half = x.shape[3] // 2
            left, right = x[..., :half].mean((1, 2, 3)), x[..., half:].mean((1, 2, 3))
            return torch.stack([left, right, torch.zeros_like(left)], 1)

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 4, 4, generator=gen)
    x[:3, ..., :2] += 1.0       # brighter on the left: class 0 unflipped
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    plain = evaluate(LeftRight(), [(x, y)], 3)
    flipped = evaluate(LeftRight(), [(x, y)], 3, flip=True)
    expected = ClassificationMeter(3)
    model = LeftRight()
    expected.update((model(x) + model(x.flip(3))) / 2, y)
    assert flipped["loss"] == expected.summary()["loss"]
    assert flipped["loss"] != plain["loss"]
    # averaged with its mirror, each image's two halves score alike: ties go to class 0
    assert flipped["confusion"] == [[3, 0, 0], [3, 0, 0], [0, 0, 0]]
