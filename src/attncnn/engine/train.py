"""The training run: one function, `train(cfg)`, from a config to a results file.

    results = train(load_config("configs/quickstart.yaml"))

What happens, in order: pick the device and join the process group (torchrun), build the
loaders (seeded by data.seed and run.seed) and the model, restore a checkpoint when
resuming, then for every epoch run the steps (engine/loop.py, engine/step.py; by default
bf16 autocast on CUDA and on CPUs with bf16 in hardware, channels_last on both, torch.compile
on CUDA), evaluate, log, checkpoint.
Finally write results.json and the weights file (engine/run_dir.py).

Stops (engine/loop.py):
- SIGINT / SIGTERM: the current step finishes, a checkpoint is saved, results.json says
  "interrupted", and `train` returns; the CLI exits 130 / 143.
- a NaN/inf loss: `NonFiniteLossError` (one line); no checkpoint is written after the bad
  step, so last.pt is the last good state.
"""
from __future__ import annotations

import dataclasses
import sys
import signal
import time
from pathlib import Path

import torch

from attncnn.data import build_loaders
from attncnn.engine import checkpoint as ckpt
from attncnn.engine.config import AUTO, Config, dump_config, load_config
from attncnn.engine.device import (cpu_has_native_bf16, resolve_amp, resolve_channels_last,
                                  resolve_device, resolve_flag)
from attncnn.engine.distributed import Dist, setup
from attncnn.engine.environment import environment, utc_now
from attncnn.engine.logger import MetricsLog, Progress, format_epoch
from attncnn.engine.lookahead import Lookahead
from attncnn.engine.loop import EpochLoop, EpochSteps, NonFiniteLossError, StopRequest
from attncnn.engine.metrics import evaluate
from attncnn.engine.optim import build_loss, build_optimizer
from attncnn.engine.results import results_record, write_json_atomic
from attncnn.engine.run_dir import (WEIGHTS, choose_run_dir, export_weights, trim_metrics,
                                    write_text_atomic)
from attncnn.engine.step import autocast_dtype, make_train_step
from attncnn.errors import AttncnnError, first_line
from attncnn.models import count_macs, count_params, create_model

__all__ = ["NonFiniteLossError", "resume_config", "train"]


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resume_config(run_dir: str | Path, overrides=()) -> Config:
    """The resolved config a run saved (run_dir/config.yaml), with `overrides` applied."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise AttncnnError(f"cannot resume: {run_dir} is not a run directory (no config.yaml)")
    return load_config(path, overrides, check_data_root=True)


def train(cfg: Config, *, resume: str | Path | None = None, quiet: bool = False) -> dict:
    """Train per `cfg`; returns the results record (also written to <run_dir>/results.json).

    resume: a run directory; training continues from its newest checkpoint, and the run
    writes into that directory. The record's "status" is "finished" or "interrupted"
    ("signal" then names the signal); a non-finite loss raises `NonFiniteLossError`.
    """
    device = resolve_device(cfg.run.device, what="run.device")
    dist = setup(device.type, cfg.run.dist_timeout_s)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    try:
        with dist.naming_peer_failures():  # here too for a peer lost while the run is set up
            return _Run(cfg, device, dist, resume, quiet).run()
    finally:
        dist.close()


class _Run:
    """One run: set up in `__init__`, trained by `run()`, recorded by `_finish()`."""

    def __init__(self, cfg: Config, device: torch.device, dist: Dist, resume, quiet: bool):
        self.cfg, self.device, self.dist = cfg, device, dist
        self.started_at, self.t_start = utc_now(), time.perf_counter()
        # a resumed run adds the wall time its earlier sessions spent up to their last
        # checkpoint (None: a checkpoint written before attncnn kept it)
        self.wall_before: float | None = 0.0
        self.sessions = 1
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        self.amp = resolve_amp(cfg.run.amp, device)
        self.channels_last = resolve_channels_last(cfg.run.channels_last, device)
        self.compile = resolve_flag(cfg.run.compile, device)
        self.autocast_dtype = autocast_dtype(self.amp)
        self.progress = Progress(dist.is_main, quiet)

        if resume is not None:
            self.run_dir = Path(resume)
        else:
            self.run_dir, taken = choose_run_dir(cfg)
            dist.barrier()  # every rank has chosen before rank 0 writes anything there
            if taken is not None:
                self.progress.message(f"run directory {taken} exists; writing to {self.run_dir} "
                                      f"(continue {taken} with --resume {taken})")
        self.name = self.run_dir.name
        state = (ckpt.find_resume_checkpoint(self.run_dir, notice=self.progress.message)
                 if resume is not None else None)
        if state is None and (self.run_dir / ckpt.LAST).exists():
            raise AttncnnError(f"{self.run_dir} already holds a run; continue it with --resume "
                               f"{self.run_dir} or pick another run.name")
        if state is not None:
            self._keep_arithmetic(state)

        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        seed_everything(cfg.run.seed)
        try:
            self.loaders = build_loaders(cfg.data, device, dist.rank, dist.world_size,
                                         self.channels_last, run_seed=cfg.run.seed)
        except ValueError as err:  # e.g. a batch that does not split over the ranks
            raise AttncnnError(f"data: {err}") from None
        self.steps_per_epoch = len(self.loaders.train)
        if self.steps_per_epoch == 0:
            raise AttncnnError(f"data.batch_size={cfg.data.batch_size} is larger than the "
                               f"training set ({cfg.data.name})")

        self.net = create_model(cfg.model.name, num_classes=self.loaders.num_classes,
                                **cfg.model.args).to(device)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        if cfg.run.sync_bn and dist.enabled:
            self.net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.net)
        # Whitened before the optimiser is built, as the whitened stem is frozen (on resume
        # too, so that the optimiser's parameters match its checkpoint's; the checkpoint
        # then restores the same stem).
        if cfg.model.whiten_images:
            self._whiten(cfg.model.whiten_images)
        stop_at = None
        if cfg.model.whiten_bias_epochs:   # airbench: the whitened stem's bias, 3 epochs
            stop_at = {self.net.whitening_bias(): round(cfg.model.whiten_bias_epochs
                                                        * self.steps_per_epoch)}
        self.optimizer = build_optimizer(self.net, cfg.optim, device, stop_at)
        criterion = build_loss(cfg.optim)

        self.epoch, self.step = 0, 0            # position of the next step to run
        self.history: list[dict] = []
        self.best: dict | None = None
        self.partial = None                      # train sums of a half-done epoch
        if state is not None:
            self._restore(state)
        self.lookahead = None
        if cfg.optim.lookahead:
            self.lookahead = Lookahead(self.net)
            if state is not None and state.get("lookahead") is not None:
                self.lookahead.load_state_dict(state["lookahead"])

        self.model = self.net
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            self.model = DistributedDataParallel(self.net, device_ids=ids)
        self.eval_model = self.net
        if self.compile:
            self.model = torch.compile(self.model, mode=cfg.run.compile_mode)
            self.eval_model = torch.compile(self.net, mode=cfg.run.compile_mode)
        step = make_train_step(self.model, self.optimizer, criterion, device, self.autocast_dtype)
        self.loop = EpochLoop(cfg, step, self.optimizer, self.loaders.train, device, dist,
                              self.progress, self.run_dir, self.lookahead)

        if dist.is_main:
            write_text_atomic(self.run_dir / "config.yaml", dump_config(cfg))
            if state is not None:
                trim_metrics(self.run_dir / "metrics.jsonl", self.epoch)
        self.log = MetricsLog(self.run_dir, dist.is_main, cfg.run.tensorboard,
                              notice=self.progress.message)
        if state is not None:
            ckpt.set_rng_state(state["rng"])  # last: everything above may draw numbers

    def _keep_arithmetic(self, state: dict) -> None:
        """A resumed run keeps the precision it started with. `run.amp: auto` resolves by the
        machine (bf16 autocast on CUDA and on CPUs with bf16 in hardware), so a run stopped on
        one machine and resumed on another would otherwise change its arithmetic mid-run, and
        its seeds would no longer share one recipe. An explicit run.amp is obeyed, and said."""
        started = state.get("amp")  # None: a checkpoint written before attncnn kept it
        if started is None or bool(started) == self.amp:
            return
        then, now = (("bf16 autocast" if amp else "float32") for amp in (started, self.amp))
        if self.cfg.run.amp != AUTO:
            self.progress.message(f"run.amp={self.cfg.run.amp}: this run started in {then} and "
                                  f"continues in {now}, as set")
            return
        self.amp, self.autocast_dtype = bool(started), autocast_dtype(bool(started))
        slow = (" (this CPU has no bf16 units: it is emulated, many times slower; set "
                "run.amp=false to switch)"
                if self.amp and self.device.type == "cpu" and not cpu_has_native_bf16() else "")
        self.progress.message(f"run.amp=auto: this run started in {then} and continues in "
                              f"{then}, though this machine would choose {now}{slow}")

    def _whiten(self, count: int) -> None:
        """The model's whitening stem from the first `count` training images, normalised
        as the loader feeds them (the same on every rank)."""
        data = getattr(self.loaders.train, "data", None)
        if data is None:
            raise AttncnnError(f"model.whiten_images needs an in-memory data source; "
                               f"{self.cfg.data.name!r} streams from disk")
        self.net.whiten(self.loaders.train.normalise(data.images[:count]))

    # -- checkpoints --

    def _restore(self, state: dict) -> None:
        source = f"checkpoint in {self.run_dir}"
        ckpt.check_compatible(state, self.net.model_name, self.loaders.num_classes, source)
        try:
            self.net.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            first = str(err).strip().splitlines()[0][:160]
            raise AttncnnError(f"{source} does not fit the model this config builds "
                               f"(model.args differ?): {first}") from None
        self.epoch, self.step = state["epoch"], state["step"]
        self.history, self.best = list(state["history"]), state["best"]
        self.partial = state["train_sums"]
        self.wall_before = state.get("wall_time_s")
        self.started_at = state.get("started_at", self.started_at)
        self.sessions = state.get("sessions", 1) + 1
        self.progress.message(f"resuming {self.run_dir} at epoch {self.epoch + 1} step {self.step}")

    def _state(self, sums: torch.Tensor) -> dict:
        return {
            "format": ckpt.FORMAT,
            "model_name": self.net.model_name,
            "model_args": self.net.model_args,
            "num_classes": self.loaders.num_classes,
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "train_sums": sums.detach().cpu().clone(),
            "history": self.history,
            "best": self.best,
            "rng": ckpt.rng_state(),
            "config": dataclasses.asdict(self.cfg),
            "started_at": self.started_at,
            "sessions": self.sessions,
            "wall_time_s": self._wall_time_s(),
            "lookahead": self.lookahead.state_dict() if self.lookahead is not None else None,
            "amp": self.amp,  # as resolved: a resume elsewhere keeps it (_keep_arithmetic)
        }

    def _wall_time_s(self) -> float | None:
        """Wall time so far: this session's, plus the earlier sessions' up to their last
        checkpoint (None if a checkpoint did not record theirs)."""
        if self.wall_before is None:
            return None
        return self.wall_before + time.perf_counter() - self.t_start

    def _save(self, sums: torch.Tensor, best: bool = False) -> None:
        """Checkpoint (all ranks call this; rank 0 writes). `sums` are the epoch's train
        sums so far, stored summed over ranks and restored into rank 0 only."""
        sums = sums.clone()
        self.dist.all_reduce_([sums])
        if self.dist.is_main:
            state = self._state(sums)
            ckpt.save_last(state, self.run_dir)
            if best:
                ckpt.save_best(state, self.run_dir)
        self.dist.barrier()

    def _save_at(self, sums: torch.Tensor, step: int) -> None:
        """The loop's checkpoint: step `step` of the current epoch."""
        self.step = step
        self._save(sums)

    # -- the epochs --

    def run(self) -> dict:
        stop = StopRequest().install()
        status, error = "failed", None
        try:
            with self.dist.naming_peer_failures():  # so that results.json gets the one line
                while self.epoch < self.cfg.schedule.epochs:
                    if not self._train_epoch(stop) and self.epoch < self.cfg.schedule.epochs:
                        break
            status = "finished" if self.epoch >= self.cfg.schedule.epochs else "interrupted"
        except BaseException as err:
            error = str(err) if isinstance(err, AttncnnError) else f"{type(err).__name__}: {err}"
            raise
        finally:
            stop.restore()
            self.progress.close()
            try:
                record = self._finish(status, error, stop.signum)
            except Exception as finish_error:
                if error is None or isinstance(finish_error, AttncnnError):
                    raise    # attncnn's own messages name the run's error too (one line)
                # the run's own error is the one to see; this one only costs its record
                print(f"attncnn: warning: the failed run's results could not be written "
                      f"({first_line(finish_error)})", file=sys.stderr)
            finally:
                self.log.close()
        return record

    def _train_epoch(self, stop: StopRequest) -> bool:
        """Run the rest of the current epoch, then evaluate, log and checkpoint it; False if
        a stop was requested."""
        # [loss sum, correct, count] over this rank's samples, kept on the device
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        if self.partial is not None and self.dist.is_main:
            sums += self.partial.to(self.device)
        self.partial = None
        self.model.train()
        done = self.loop.run(self.epoch, self.step, sums, stop, self._save_at)
        if done is None:
            return False
        self.epoch, self.step = self.epoch + 1, 0
        is_best = self._end_epoch(done)
        self._save(torch.zeros(3, dtype=torch.float64, device=self.device), best=is_best)
        return not self.dist.any(stop.signum is not None, self.device)

    def _end_epoch(self, done: EpochSteps) -> bool:
        """Record the epoch just run (self.epoch of them are done): train figures, the
        evaluation when due, the log line. True if it is the best evaluated so far."""
        cfg, epoch, sums = self.cfg, self.epoch, done.sums
        record = {
            "epoch": epoch,
            "lr": done.lr,
            "train_loss": float(sums[0] / sums[2]),
            "train_top1": 100.0 * float(sums[1] / sums[2]),
            "eval_loss": None, "eval_top1": None, "eval_top5": None,
            "epoch_time_s": round(done.seconds, 3),
            "train_images_per_s": round(done.steps * cfg.data.batch_size
                                        / max(done.seconds, 1e-9), 1),
        }
        is_best = False
        if epoch % cfg.run.eval_every_epochs == 0 or epoch == cfg.schedule.epochs:
            summary = self._evaluate(final=epoch == cfg.schedule.epochs)
            record.update(eval_loss=summary["loss"], eval_top1=summary["top1"],
                          eval_top5=summary["top5"], eval_per_class=summary["per_class"])
            if self.best is None or summary["top1"] > self.best["top1"]:
                self.best, is_best = {"top1": summary["top1"], "epoch": epoch}, True
        self.history.append(record)
        self.log.write({"kind": "epoch", **{k: v for k, v in record.items()
                                            if k != "eval_per_class"}},
                       epoch * self.steps_per_epoch)
        self.progress.epoch_line(format_epoch(record, cfg.schedule.epochs))
        return is_best

    def _evaluate(self, final: bool = False) -> dict:
        """The eval split's summary; the last epoch's in float32 (no autocast), as `attncnn
        eval` computes it, so that the recorded figure is what the weights file gives."""
        batches = self.loaders.eval.epoch(0)
        return evaluate(self.eval_model, batches, self.loaders.num_classes, self.device,
                        None if final else self.autocast_dtype, reduce=self.dist.all_reduce_,
                        flip=self.cfg.data.eval_flip, translate=self.cfg.data.eval_translate)

    # -- the end --

    def _finish(self, status: str, error: str | None, signum: int | None) -> dict:
        cfg, loaders = self.cfg, self.loaders
        final = None
        if self.history and self.history[-1]["eval_top1"] is not None:
            h = self.history[-1]
            final = {"top1": h["eval_top1"], "top5": h["eval_top5"], "loss": h["eval_loss"],
                     "per_class": h["eval_per_class"], "epoch": h["epoch"]}
        weights = None
        if status == "finished" and self.dist.is_main:
            summary = {"run_name": self.name, "data": loaders.name,
                       "data_source": cfg.data.name,   # with data_root: which data
                       "data_root": Path(cfg.data.root).name if cfg.data.root else None,
                       "epochs": len(self.history), "final": final,
                       "eval_flip": cfg.data.eval_flip,
                       "eval_translate": cfg.data.eval_translate,
                       "data_input": cfg.data.input_settings()}
            try:
                weights = export_weights(self.run_dir, self.net, loaders, summary)
            except OSError as err:  # e.g. a full disk: one line; last.pt holds the weights
                raise AttncnnError(f"cannot write {self.run_dir / WEIGHTS}: "
                                   f"{err.strerror or err}; free space, then resume") from None
        data = {"source": cfg.data.name, "name": loaders.name,
                "train_split": cfg.data.train_split, "eval_split": cfg.data.eval_split,
                "val_fraction": cfg.data.val_fraction,
                "num_train": loaders.train.num_samples, "num_eval": loaders.eval.num_samples,
                "classes": list(loaders.classes)}
        record = results_record(
            cfg=cfg, run_name=self.name, model=self.net, params=count_params(self.net),
            macs=count_macs(self.net, loaders.input_size), data=data, amp=self.amp,
            status=status, history=self.history, final=final, best=self.best,
            env=environment(self.device, self.dist.world_size), started_at=self.started_at,
            finished_at=utc_now(), wall_time_s=self._wall_time_s(), sessions=self.sessions,
            weights=weights, error=error)
        record["run_dir"] = str(self.run_dir)
        if signum is not None:
            record["signal"] = signal.Signals(signum).name
        if self.dist.is_main:
            try:
                write_json_atomic(record, self.run_dir / "results.json")
            except OSError as err:  # e.g. a full disk: one line, naming the first error too
                first = f" (the run had stopped: {error})" if error else ""
                raise AttncnnError(f"cannot write {self.run_dir / 'results.json'}: "
                                   f"{err.strerror or err}{first}") from None
        return record
