"""What a run tells the user and the disk: a progress bar, metrics.jsonl, TensorBoard.

Only rank 0 logs (the others get `enabled=False`). The bar is drawn only on a TTY and
without --quiet; otherwise one line per epoch is printed.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


class MetricsLog:
    """Appends one JSON object per line to <run_dir>/metrics.jsonl and mirrors the numbers
    into TensorBoard event files when the tensorboard package is importable."""

    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True,
                 notice=print):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                notice("tensorboard is not installed: no event files "
                       "(pip install tensorboard; metrics.jsonl has the same numbers)")
            else:
                self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def write(self, record: dict, step: int) -> None:
        """record: {"kind": "epoch"|"step", ...numbers}; `step` is the global step."""
        if not self.enabled:
            return
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as err:  # e.g. a full disk: one line, not a traceback
            from attncnn.errors import AttncnnError

            raise AttncnnError(f"cannot write {self.path}: {err.strerror or err}") from None
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) \
                        and key not in ("epoch", "step", "global_step"):
                    self.writer.add_scalar(f"{record.get('kind', 'metrics')}/{key}", value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Progress:
    """Per-epoch progress: a tqdm bar (loss, accuracy, images/s, ETA) on a TTY, else silent
    until `epoch_line`, which always prints one line."""

    def __init__(self, enabled: bool, quiet: bool, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.bar_enabled = enabled and not quiet and getattr(self.stream, "isatty", lambda: False)()
        self.bar = None

    def start_epoch(self, epoch: int, epochs: int, total: int, done: int) -> None:
        self.t0, self.images = time.perf_counter(), 0
        if self.bar_enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc=f"epoch {epoch}/{epochs}",
                            file=self.stream, leave=False, dynamic_ncols=True, unit="step")

    def update(self, steps: int, images: int, loss: float, top1: float) -> None:
        self.images += images
        if self.bar is not None:
            rate = self.images / max(time.perf_counter() - self.t0, 1e-9)
            self.bar.set_postfix(loss=f"{loss:.3f}", acc=f"{top1:.1f}%", img_s=f"{rate:.0f}",
                                 refresh=False)
            self.bar.update(steps)

    def epoch_line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.enabled:
            print(text, file=self.stream, flush=True)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def format_epoch(r: dict, epochs: int) -> str:
    """The one line printed per epoch, from its history record."""
    from attncnn.engine.metrics import percent

    text = (f"epoch {r['epoch']}/{epochs}  lr {r['lr']:.4g}  train loss {r['train_loss']:.4f} "
            f"acc {r['train_top1']:.2f}%")
    if r["eval_top1"] is not None:
        text += (f"  eval loss {r['eval_loss']:.4f} top1 {r['eval_top1']:.2f}% "
                 f"top5 {percent(r['eval_top5'])}")
    return text + f"  {r['epoch_time_s']:.1f}s {r['train_images_per_s']:.0f} img/s"
