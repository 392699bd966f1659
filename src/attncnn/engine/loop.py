"""The step loop of one epoch, and how a run stops early.

On the GPU nothing in the step loop waits for the device: losses and hits are summed into
device tensors and read at progress refreshes (every `SYNC_EVERY` steps) and epoch ends.
On the CPU a read costs nothing, so the loop checks every step.

Stops:
- SIGINT / SIGTERM (`StopRequest`): the current step finishes, a checkpoint is saved and the
  epoch returns early.
- a NaN/inf loss: `NonFiniteLossError` (one line); no checkpoint is written after the bad
  step, so last.pt is the last good state.
"""
from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from attncnn.data.loader import BatchLoader
from attncnn.engine import checkpoint as ckpt
from attncnn.engine.config import Config
from attncnn.engine.distributed import Dist
from attncnn.engine.logger import Progress
from attncnn.engine.lookahead import Lookahead
from attncnn.engine.optim import lr_at, set_lr
from attncnn.errors import AttncnnError

SYNC_EVERY = 50  # GPU steps between reads of the device-side sums (progress, NaN, stop)


class NonFiniteLossError(AttncnnError):
    """The loss became NaN or infinite; the run stopped without saving the bad state."""


class StopRequest:
    """Set by SIGINT/SIGTERM: the loop finishes its step, checkpoints and returns."""

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def install(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:  # a second signal: stop now, the default way
            self.restore()
            signal.raise_signal(signum)
            return
        self.signum = signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


@dataclass
class EpochSteps:
    """The steps of an epoch that ran to its end: train sums over every rank."""
    sums: torch.Tensor          # float64 [loss sum, correct, count]
    lr: float                   # the learning rate of the last step
    seconds: float              # time in the step loop
    steps: int                  # steps this call ran (fewer than the epoch's after a resume)


class EpochLoop:
    """Runs an epoch's steps: the learning rate from the schedule, `step(x, y) -> (loss,
    logits)` (engine/step.py), train loss and hits summed on the device, progress, the NaN
    check, periodic checkpoints and stop requests.

    save(sums, step): checkpoint the position `step` of the current epoch with the epoch's
    train sums so far (every rank calls it; engine/train.py writes on rank 0).
    """

    def __init__(self, cfg: Config, step: Callable, optimizer: torch.optim.Optimizer,
                 loader: BatchLoader, device: torch.device, dist: Dist, progress: Progress,
                 run_dir: Path, lookahead: Lookahead | None = None):
        self.cfg, self.step_fn, self.optimizer, self.loader = cfg, step, optimizer, loader
        self.device, self.dist, self.progress, self.run_dir = device, dist, progress, run_dir
        self.lookahead = lookahead
        self.steps_per_epoch = len(loader)
        self.total_steps = cfg.schedule.epochs * self.steps_per_epoch
        self.sync_every = 1 if device.type == "cpu" else SYNC_EVERY

    def run(self, epoch: int, start_step: int, sums: torch.Tensor, stop: StopRequest,
            save: Callable[[torch.Tensor, int], None]) -> EpochSteps | None:
        """Steps start_step.. of `epoch`, adding to `sums` (this rank's, on the device).
        None if a stop was requested (a checkpoint was saved); else the epoch's figures."""
        cfg, device, spe = self.cfg, self.device, self.steps_per_epoch
        bad = torch.zeros((), dtype=torch.bool, device=device)
        self.progress.start_epoch(epoch + 1, cfg.schedule.epochs, spe, start_step)
        t0, step, pending, lr = time.perf_counter(), start_step, 0, None
        for x, y in self.loader.epoch(epoch, start_step):
            global_step = epoch * spe + step
            lr = lr_at(global_step, spe, cfg.optim.lr, cfg.schedule)
            set_lr(self.optimizer, lr, global_step)
            loss, logits = self.step_fn(x, y)
            if self.lookahead is not None:
                self.lookahead.after_step(global_step + 1, self.total_steps)
            with torch.no_grad():
                loss = loss.float()
                bad |= ~torch.isfinite(loss)
                hits = (logits.argmax(1) == y).sum()
                sums[:2] += torch.stack([loss.double() * len(y), hits.double()])
                sums[2] += len(y)  # a scalar argument: no host-to-device copy
            step += 1
            pending += 1

            last_of_epoch = step == spe
            every = cfg.run.checkpoint_every_steps
            periodic = every > 0 and (global_step + 1) % every == 0 and not last_of_epoch
            if pending >= self.sync_every or last_of_epoch or periodic:
                self.check_finite(bad, global_step, epoch)
                self.progress.update(pending, pending * x.shape[0] * self.dist.world_size,
                                     float(loss), 100.0 * float(sums[1] / sums[2].clamp(min=1)))
                pending = 0
                if self.dist.any(stop.signum is not None, device) and not last_of_epoch:
                    self.check_finite(bad, global_step, epoch)
                    save(sums, step)
                    self.progress.message(f"stopped at epoch {epoch + 1} step {step}; "
                                          f"checkpoint saved in {self.run_dir}")
                    return None
            if periodic:
                save(sums, step)

        if self.lookahead is not None and epoch + 1 == cfg.schedule.epochs:
            self.lookahead.finish()  # the end of training: the model takes the slow weights
        seconds = time.perf_counter() - t0
        self.check_finite(bad, epoch * spe + step - 1, epoch)
        self.dist.all_reduce_([sums])
        return EpochSteps(sums=sums, lr=lr, seconds=seconds, steps=spe - start_step)

    def check_finite(self, bad: torch.Tensor, global_step: int, epoch: int) -> None:
        if bool(bad):
            last = self.run_dir / ckpt.LAST
            kept = f"last good checkpoint: {last}" if last.exists() else "no checkpoint was written"
            raise NonFiniteLossError(
                f"loss is NaN/inf by global step {global_step + 1} (epoch {epoch + 1}); "
                f"stopped without saving ({kept}); lower optim.lr or enable warm-up")
