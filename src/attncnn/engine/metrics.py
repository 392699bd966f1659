"""Classification metrics accumulated over batches: loss, top-1, top-5, confusion matrix.

Sums are kept (not means) so that ranks of a distributed run can add theirs together.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from attncnn.engine.step import make_infer_step


TOP5 = 5


def percent(value) -> str:
    """"12.34%", or "n/a" for a figure that does not apply (top-5 of <= 5 classes)."""
    return "n/a" if value is None else f"{value:.2f}%"


class ClassificationMeter:
    """Accumulate `update(logits, labels)`; read `summary()` at the end of an epoch."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.top5_hits = torch.zeros((), dtype=torch.long, device=device)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor, loss_sum: torch.Tensor | None = None):
        """logits [B, K], labels [B]; loss_sum: summed loss of the batch (default: CE)."""
        logits = logits.float()
        if loss_sum is None:
            loss_sum = F.cross_entropy(logits, labels, reduction="sum")
        self.loss_sum += loss_sum.double()
        k = min(5, logits.shape[1])
        self.top5_hits += (logits.topk(k, 1).indices == labels[:, None]).any(1).sum()
        pred = logits.argmax(1)
        self.confusion += torch.bincount(
            labels * self.num_classes + pred, minlength=self.num_classes**2
        ).view(self.num_classes, self.num_classes)

    def state_tensors(self) -> list[torch.Tensor]:
        """The tensors to all-reduce (sum) across ranks before `summary()`."""
        return [self.confusion, self.loss_sum, self.top5_hits]

    def summary(self) -> dict:
        """{"loss", "top1", "top5" (percent), "count", "per_class" (percent per class)}.

        "top5" is None with 5 classes or fewer: every label is then within the top 5, and
        a 100% would say nothing."""
        count = int(self.confusion.sum())
        correct = int(self.confusion.diag().sum())
        per_class_total = self.confusion.sum(1).clamp(min=1)
        return {
            "loss": float(self.loss_sum) / max(count, 1),
            "top1": 100.0 * correct / max(count, 1),
            "top5": (100.0 * int(self.top5_hits) / max(count, 1)
                     if self.num_classes > TOP5 else None),
            "count": count,
            "per_class": (100.0 * self.confusion.diag() / per_class_total).tolist(),
        }


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches, num_classes: int, device="cpu",
             autocast_dtype: torch.dtype | None = None, reduce=None, flip: bool = False,
             translate: int = 0) -> dict:
    """Run `model` in eval mode over `batches` of (x, y); return `ClassificationMeter.summary()`.

    `reduce(tensors)` (optional) sums the meter's tensors across ranks in place.
    `flip`: test-time augmentation, the logits are the mean of the image's and its mirror's;
    `translate`: shifted copies too (`make_infer_step`).
    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    meter = ClassificationMeter(num_classes, device)
    infer = make_infer_step(model, device, autocast_dtype, flip=flip, translate=translate)
    for x, y in batches:
        meter.update(infer(x), y)
    if reduce is not None:
        reduce(meter.state_tensors())
    model.train(was_training)
    summary = meter.summary()
    summary["confusion"] = meter.confusion.cpu().tolist()
    return summary
