"""`attncnn sweep CONFIG... --seeds 0 1 2 --out-dir DIR [--publish DIR]`: configs x seeds.

    attncnn sweep configs/cpu_cifar10/*.yaml --seeds 0 1 2 --out-dir ~/runs/cpu_cifar10 \\
        --publish results/cpu_cifar10

Runs every (config, seed) pair seed-major, each in its own fixed run directory
`<out-dir>/<config stem>/<run name>`; run the same command again (e.g. in the next
session) and finished runs are skipped, stopped ones resumed (attncnn.engine.sweep).
With --publish, a run already published there counts as finished even where its run
directory is gone (a fresh machine with the repository alone). Each run trains under a
lock in its directory, so the same command started twice (one per core) shares the runs.
Exit status: 0 all finished, 1 some run failed (each reported in one line), 2 an error
before anything ran, 130 / 143 stopped by SIGINT / SIGTERM (checkpoint saved; run the
same command to continue).
"""
from __future__ import annotations

import argparse
import shlex
import sys

HELP = "train every config x seed, skipping finished runs and resuming stopped ones"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="YAML run configs")
    p.add_argument("--seeds", nargs="+", type=int, required=True, metavar="SEED",
                   help="run seeds, e.g. --seeds 0 1 2 (sets run.seed)")
    p.add_argument("--out-dir", default="runs", metavar="DIR",
                   help="runs go to DIR/<config file stem>/<run name> (default: runs)")
    p.add_argument("--publish", metavar="DIR",
                   help="publish each finished run's results here (attncnn publish --check)")
    p.add_argument("--weights", default="results/weights", metavar="DIR",
                   help="with --publish: folder for the weights files (default: results/weights)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value in every run, e.g. --set run.device=cpu")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch CPU threads for every run (sets run.threads)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (done / resume at epoch k / new) and run nothing")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar: one line per epoch")


def run(args: argparse.Namespace) -> int:
    import os
    import signal

    from attncnn.engine.sweep import plan_sweep, publish_stem_clashes, run_sweep
    from attncnn.errors import AttncnnError

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise AttncnnError("sweep runs its runs one after another in one process; start it "
                           "without torchrun")
    overrides = list(args.overrides)
    if args.threads is not None:
        if args.threads < 1:
            raise AttncnnError(f"--threads must be >= 1, got {args.threads}")
        overrides.append(f"run.threads={args.threads}")
    plan = plan_sweep(args.configs, args.seeds, args.out_dir, overrides,
                      publish_dir=args.publish, weights_dir=args.weights)
    if args.publish:
        publish_stem_clashes(plan)
    counts = {state: sum(r.state == state for r in plan) for state in ("done", "resume", "new")}
    seeds = len(dict.fromkeys(args.seeds))
    configs = len(plan) // seeds
    print(f"sweep: {len(plan)} runs ({configs} config{'s' * (configs != 1)} x {seeds} "
          f"seed{'s' * (seeds != 1)}, seed-major): "
          f"{counts['done']} done, {counts['resume']} to resume, {counts['new']} new")
    if args.dry_run:
        width = max(len(r.describe()) for r in plan)
        for r in plan:
            changed = f"  [config now differs in {', '.join(r.changed)}]" if r.changed else ""
            print(f"  {r.describe():<{width}}  {r.run_dir}  ({r.config}, seed {r.seed}){changed}")
        return 0

    outcome = run_sweep(plan, publish_dir=args.publish, weights_dir=args.weights,
                        quiet=args.quiet)
    stopped = outcome["interrupted"]
    if stopped is not None:
        name = stopped.get("signal", "a signal")
        print(f"sweep stopped by {name} during {stopped['run_dir']} (checkpoint saved); "
              f"continue with the same command:\n  {_command_line(args)}", file=sys.stderr)
        return 128 + int(signal.Signals[name]) if name in signal.Signals.__members__ else 130
    failed = outcome["failed"]
    busy = outcome["busy"]
    print(f"sweep: {len(outcome['finished'])} of {len(plan)} runs finished"
          + (f", {len(failed)} failed: {', '.join(str(d) for d, _ in failed)}" if failed else "")
          + (f", {len(busy)} left to another sweep: {', '.join(map(str, busy))}" if busy else ""))
    return 1 if failed else 0


def _command_line(args: argparse.Namespace) -> str:
    """The command that continues this sweep (the one that started it, without --dry-run)."""
    words = ["attncnn", "sweep", *args.configs, "--seeds", *map(str, args.seeds),
             "--out-dir", args.out_dir]
    if args.publish:
        words += ["--publish", args.publish, "--weights", args.weights]
    for item in args.overrides:
        words += ["--set", item]
    if args.threads is not None:
        words += ["--threads", str(args.threads)]
    if args.quiet:
        words.append("--quiet")
    return shlex.join(words)
