"""The training loop: one function, `train(cfg)`, from a config to a results file.

    results = train(load_config("configs/quickstart.yaml"))

What happens, in order: pick the device and join the process group (torchrun), build the
loaders and the model, restore a checkpoint when resuming, then for every epoch run the
steps (bf16 autocast, channels_last and torch.compile on CUDA by default), evaluate,
log, checkpoint. Finally write results.json and the weights file.

On the GPU nothing in the step loop waits for the device: losses and hits are summed into
device tensors and read at progress refreshes (every `SYNC_EVERY` steps) and epoch ends.
On the CPU a read costs nothing, so the loop checks every step.

Stops:
- SIGINT / SIGTERM: the current step finishes, a checkpoint is saved, results.json says
  "interrupted", and `train` returns; the CLI exits 130 / 143.
- a NaN/inf loss: `NonFiniteLossError` (one line); no checkpoint is written after the bad
  step, so last.pt is the last good state.
"""
from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from pathlib import Path

import torch

from attncnn.atomic import atomic_target
from attncnn.data import build_loaders
from attncnn.engine import checkpoint as ckpt
from attncnn.engine.config import Config, dump_config, load_config
from attncnn.engine.device import resolve_amp, resolve_channels_last, resolve_device, resolve_flag
from attncnn.engine.distributed import Dist, setup
from attncnn.engine.environment import environment, utc_now
from attncnn.engine.logger import MetricsLog, Progress
from attncnn.engine.metrics import evaluate, percent
from attncnn.engine.optim import build_loss, build_optimizer, lr_at, set_lr
from attncnn.engine.results import results_record, write_json_atomic
from attncnn.errors import AttncnnError
from attncnn.models import count_macs, count_params, create_model

SYNC_EVERY = 50  # GPU steps between reads of the device-side sums (progress, NaN, stop)


class NonFiniteLossError(AttncnnError):
    """The loss became NaN or infinite; the run stopped without saving the bad state."""


# -- small pieces ------------------------------------------------------------------------

def run_name(cfg: Config) -> str:
    return cfg.run.name or f"{cfg.model.name}-{cfg.data.name}-s{cfg.run.seed}"


RUN_FILES = ("config.yaml", ckpt.LAST, ckpt.PREVIOUS, "results.json")  # any: a run is there


def holds_run(run_dir: Path) -> bool:
    return any((Path(run_dir) / name).exists() for name in RUN_FILES)


def choose_run_dir(cfg: Config) -> tuple[Path, Path | None]:
    """(the directory a new run writes to, the taken default it moved away from, or None).

    run.name set: out_dir/name as it is (a run already there is refused, so that fixed
    names, e.g. a sweep's, never drift). Default name: the first of <name>, <name>-v2,
    <name>-v3, ... that holds no run, so running a config again never needs a new name.
    """
    first = Path(cfg.run.out_dir) / run_name(cfg)
    if cfg.run.name is not None or not holds_run(first):
        return first, None
    version = 2
    while holds_run(first.with_name(f"{first.name}-v{version}")):
        version += 1
    return first.with_name(f"{first.name}-v{version}"), first


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


# -- the run -------------------------------------------------------------------------------

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
    def __init__(self, cfg: Config, device: torch.device, dist: Dist, resume, quiet: bool):
        self.cfg, self.device, self.dist = cfg, device, dist
        self.started_at, self.t_start = utc_now(), time.perf_counter()
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        self.amp = resolve_amp(cfg.run.amp, device)
        self.channels_last = resolve_channels_last(cfg.run.channels_last, device)
        self.compile = resolve_flag(cfg.run.compile, device)
        self.autocast_dtype = torch.bfloat16 if self.amp else None
        self.sync_every = 1 if device.type == "cpu" else SYNC_EVERY
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

        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        seed_everything(cfg.run.seed)
        try:
            self.loaders = build_loaders(cfg.data, device, dist.rank, dist.world_size,
                                         self.channels_last)
        except ValueError as err:  # e.g. a batch that does not split over the ranks
            raise AttncnnError(f"data: {err}") from None
        # data.seed alone fixes the held-out split; the batch order also follows run.seed,
        # so seed sweeps vary order and augmentation as well as the initial weights.
        if hasattr(self.loaders.train, "seed"):
            self.loaders.train.seed = cfg.data.seed + 1000 * cfg.run.seed
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
        self.optimizer = build_optimizer(self.net, cfg.optim, fused=device.type == "cuda")
        self.criterion = build_loss(cfg.optim)

        self.epoch, self.step = 0, 0            # position of the next step to run
        self.history: list[dict] = []
        self.best: dict | None = None
        self.partial = None                      # train sums of a half-done epoch
        if state is not None:
            self._restore(state)

        self.model = self.net
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            self.model = DistributedDataParallel(self.net, device_ids=ids)
        self.eval_model = self.net
        if self.compile:
            self.model = torch.compile(self.model, mode=cfg.run.compile_mode)
            self.eval_model = torch.compile(self.net, mode=cfg.run.compile_mode)

        if dist.is_main:
            _write_text_atomic(self.run_dir / "config.yaml", dump_config(cfg))
            if state is not None:
                _trim_metrics(self.run_dir / "metrics.jsonl", self.epoch)
        self.log = MetricsLog(self.run_dir, dist.is_main, cfg.run.tensorboard,
                              notice=self.progress.message)
        if state is not None:
            ckpt.set_rng_state(state["rng"])  # last: everything above may draw numbers

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
        }

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

    # -- the loop --

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
            record = self._finish(status, error, stop.signum)
            self.log.close()
        return record

    def _train_epoch(self, stop: StopRequest) -> bool:
        """Run the rest of the current epoch; False if a stop was requested."""
        cfg, device, epoch = self.cfg, self.device, self.epoch
        # [loss sum, correct, count] over this rank's samples, kept on the device
        sums = torch.zeros(3, dtype=torch.float64, device=device)
        if self.partial is not None and self.dist.is_main:
            sums += self.partial.to(device)
        self.partial = None
        bad = torch.zeros((), dtype=torch.bool, device=device)
        self.progress.start_epoch(epoch + 1, cfg.schedule.epochs, self.steps_per_epoch, self.step)
        t0, first_step, pending = time.perf_counter(), self.step, 0
        self.model.train()
        for x, y in self.loaders.train.epoch(epoch, self.step):
            global_step = epoch * self.steps_per_epoch + self.step
            lr = lr_at(global_step, self.steps_per_epoch, cfg.optim.lr, cfg.schedule)
            set_lr(self.optimizer, lr)
            with torch.autocast(device.type, dtype=self.autocast_dtype, enabled=self.amp):
                logits = self.model(x)
                loss = self.criterion(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            with torch.no_grad():
                loss = loss.detach().float()
                bad |= ~torch.isfinite(loss)
                hits = (logits.argmax(1) == y).sum()
                sums[:2] += torch.stack([loss.double() * len(y), hits.double()])
                sums[2] += len(y)  # a scalar argument: no host-to-device copy
            self.step += 1
            pending += 1

            last_of_epoch = self.step == self.steps_per_epoch
            every = cfg.run.checkpoint_every_steps
            periodic = every > 0 and (global_step + 1) % every == 0 and not last_of_epoch
            if pending >= self.sync_every or last_of_epoch or periodic:
                self._check_finite(bad, global_step)
                self.progress.update(pending, pending * x.shape[0] * self.dist.world_size,
                                     float(loss), 100.0 * float(sums[1] / sums[2].clamp(min=1)))
                pending = 0
                if self.dist.any(stop.signum is not None, device) and not last_of_epoch:
                    self._check_finite(bad, global_step)
                    self._save(sums)
                    self.progress.message(f"stopped at epoch {epoch + 1} step {self.step}; "
                                          f"checkpoint saved in {self.run_dir}")
                    return False
            if periodic:
                self._save(sums)

        train_time = time.perf_counter() - t0
        self._check_finite(bad, epoch * self.steps_per_epoch + self.step - 1)
        self.dist.all_reduce_([sums])
        self.epoch, self.step = epoch + 1, 0
        record = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": float(sums[0] / sums[2]),
            "train_top1": 100.0 * float(sums[1] / sums[2]),
            "eval_loss": None, "eval_top1": None, "eval_top5": None,
            "epoch_time_s": round(train_time, 3),
            "train_images_per_s": round((self.steps_per_epoch - first_step)
                                        * cfg.data.batch_size / max(train_time, 1e-9), 1),
        }
        is_best = False
        if (epoch + 1) % cfg.run.eval_every_epochs == 0 or epoch + 1 == cfg.schedule.epochs:
            summary = self._evaluate(final=epoch + 1 == cfg.schedule.epochs)
            record.update(eval_loss=summary["loss"], eval_top1=summary["top1"],
                          eval_top5=summary["top5"], eval_per_class=summary["per_class"])
            if self.best is None or summary["top1"] > self.best["top1"]:
                self.best, is_best = {"top1": summary["top1"], "epoch": epoch + 1}, True
        self.history.append(record)
        self.log.write({"kind": "epoch", **{k: v for k, v in record.items()
                                            if k != "eval_per_class"}},
                       self.epoch * self.steps_per_epoch)
        self.progress.epoch_line(_epoch_line(record, cfg.schedule.epochs))
        self._save(torch.zeros(3, dtype=torch.float64, device=device), best=is_best)
        return not self.dist.any(stop.signum is not None, device)

    def _check_finite(self, bad: torch.Tensor, global_step: int) -> None:
        if bool(bad):
            last = self.run_dir / ckpt.LAST
            kept = f"last good checkpoint: {last}" if last.exists() else "no checkpoint was written"
            raise NonFiniteLossError(
                f"loss is NaN/inf by global step {global_step + 1} (epoch {self.epoch + 1}); "
                f"stopped without saving ({kept}); lower optim.lr or enable warm-up")

    def _evaluate(self, final: bool = False) -> dict:
        """The eval split's summary; the last epoch's in float32 (no autocast), as `attncnn
        eval` computes it, so that the recorded figure is what the weights file gives."""
        batches = self.loaders.eval.epoch(0)
        return evaluate(self.eval_model, batches, self.loaders.num_classes, self.device,
                        None if final else self.autocast_dtype, reduce=self.dist.all_reduce_,
                        flip=self.cfg.data.eval_flip)

    # -- the end --

    def _finish(self, status: str, error: str | None, signum: int | None) -> dict:
        final = None
        if self.history and self.history[-1]["eval_top1"] is not None:
            h = self.history[-1]
            final = {"top1": h["eval_top1"], "top5": h["eval_top5"], "loss": h["eval_loss"],
                     "per_class": h["eval_per_class"], "epoch": h["epoch"]}
        weights = None
        if status == "finished" and self.dist.is_main:
            summary = {"run_name": self.name, "data": self.loaders.name,
                       "data_source": self.cfg.data.name,   # with data_root: which data
                       "data_root": Path(self.cfg.data.root).name if self.cfg.data.root else None,
                       "epochs": len(self.history), "final": final,
                       "eval_flip": self.cfg.data.eval_flip}
            try:
                weights = export_weights(self.run_dir, self.net, self.loaders, summary)
            except OSError as err:  # e.g. a full disk: one line; last.pt holds the weights
                raise AttncnnError(f"cannot write {self.run_dir / 'model.safetensors'}: "
                                   f"{err.strerror or err}; free space, then resume") from None
        data = {"source": self.cfg.data.name, "name": self.loaders.name,
                "train_split": self.cfg.data.train_split, "eval_split": self.cfg.data.eval_split,
                "num_train": _num_samples(self.loaders.train),
                "num_eval": _num_samples(self.loaders.eval),
                "classes": list(self.loaders.classes)}
        record = results_record(
            cfg=self.cfg, run_name=self.name, model=self.net, params=count_params(self.net),
            macs=count_macs(self.net, self.loaders.input_size), data=data, amp=self.amp,
            status=status, history=self.history, final=final, best=self.best,
            env=environment(self.device, self.dist.world_size), started_at=self.started_at,
            finished_at=utc_now(), wall_time_s=time.perf_counter() - self.t_start,
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


def _write_text_atomic(path: Path, text: str) -> None:
    """config.yaml is what --resume reads back: a half-written one (a kill or a full disk
    mid-write) would resume with defaults for the missing keys, so write a temp file and
    rename it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_target(path) as tmp:
            tmp.write_text(text)
    except OSError as err:
        raise AttncnnError(f"cannot write {path}: {err.strerror or err}") from None


def _trim_metrics(path: Path, epochs_done: int) -> None:
    """On resume, drop the lines of epochs the checkpoint has not got (logged just before
    a kill, they will be run and logged again) and a line cut short by the kill."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("epoch", 0) <= epochs_done:
            keep.append(line)
    _write_text_atomic(path, "".join(f"{line}\n" for line in keep))


def export_weights(run_dir: Path, net, loaders, summary: dict) -> str:
    """The one place the final weights file is written (attncnn.weights owns the format)."""
    from attncnn.weights import save_weights

    path = Path(run_dir) / "model.safetensors"
    save_weights(path, net, classes=list(loaders.classes), mean=tuple(loaders.mean),
                 std=tuple(loaders.std), input_size=tuple(loaders.input_size), summary=summary)
    return str(path)


def _num_samples(loader) -> int:
    data = getattr(loader, "data", None)
    return len(data) if data is not None and hasattr(data, "__len__") else loader.num_samples


def _epoch_line(r: dict, epochs: int) -> str:
    text = (f"epoch {r['epoch']}/{epochs}  lr {r['lr']:.4g}  train loss {r['train_loss']:.4f} "
            f"acc {r['train_top1']:.2f}%")
    if r["eval_top1"] is not None:
        text += (f"  eval loss {r['eval_loss']:.4f} top1 {r['eval_top1']:.2f}% "
                 f"top5 {percent(r['eval_top5'])}")
    return text + f"  {r['epoch_time_s']:.1f}s {r['train_images_per_s']:.0f} img/s"

