import torch

from attncnn.engine.metrics import ClassificationMeter, topk_accuracy


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
    assert topk_accuracy(logits, labels) == [25.0, 50.0]
