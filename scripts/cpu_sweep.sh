#!/usr/bin/env bash
# The CPU tiers' experiments (docs/cpu_cifar10.md, docs/cpu_imagenette.md), run or continued
# from a git worktree at a fixed commit, so that code changes on main cannot touch a run that
# is under way (results record the commit). Run it again in the next session and it carries
# on: `attncnn sweep` skips finished runs, resumes interrupted ones from their checkpoint and
# publishes each finished run into this repository's results/ (float16 weights, re-checked);
# a run published there is done even on a new machine without the run directories.
#
#   scripts/cpu_sweep.sh tier        # CIFAR-10: the six rows x seeds 0, 1, 2 on the test half
#   scripts/cpu_sweep.sh val         # CIFAR-10: the recipe's validation frontier (24 epochs)
#   scripts/cpu_sweep.sh fast_val    # CIFAR-10: FastNet's validation frontier (8, 16, 24 epochs)
#   scripts/cpu_sweep.sh fast_tier   # CIFAR-10: the six rows on FastNet x seeds 0, 1, 2 (24 epochs)
#   scripts/cpu_sweep.sh imagenette  # Imagenette: the four rows x seeds 0, 1 on the val half
#   scripts/cpu_sweep.sh imagenette_val   # Imagenette: the recipe's check on held-out train
#   scripts/cpu_sweep.sh tier --dry-run   # what is done, what resumes, what is new
#   ROWS="resnet20 attn_resnet20_stage" SEEDS=1 scripts/cpu_sweep.sh tier   # a subset
#   THREADS=2 scripts/cpu_sweep.sh tier   # one job on both cores (the last run left: a run
#                                    # resumes at another thread count; the sweep allows it)
#   scripts/cpu_sweep.sh tier & scripts/cpu_sweep.sh tier &
#                                    # two jobs, one per core, sharing the queue: each run is
#                                    # taken under a lock, so the two never train the same one
#
# Needs a Python with torch and attncnn's dependencies (the README's set-up), the data at
# $DATA (default: ../shared/data/<the job's tarball>), and one core per job: each job runs
# with one torch thread (THREADS=N: N), so two can share a 2-core machine. Run directories
# live under $RUNS (outside the work tree). Every run published so far trained under bf16 autocast, so the
# jobs run only on a CPU with bf16 units (below; BF16_OPTIONAL=1 overrides).
set -euo pipefail
# The whole script is one { ... } block, read before any of it runs: bash reads a script as
# it goes, so an edit made while a job runs (a commit pinned below, say) would otherwise be
# read mid-line by the running job (the seventh session's jobs ended on a syntax error so).
{
REPO=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-$HOME/runs}
SHARED=$(cd "$REPO/.." && pwd)/shared/data
job=${1:?usage: $0 tier|val|fast_val|fast_tier|imagenette|imagenette_val [attncnn sweep options]}; shift
TARBALL=cifar10-jpeg.tar.gz
# Each job: its commit, its configs folder C and rows (the config files' names; ROWS=...
# picks a subset where the job allows it), seeds, run and results folders.
case "$job" in
  tier) COMMIT=5ec744164eea9a220c7c9bc064ed2156c634e81b; C='$WT'/configs/cpu_cifar10
        ROWS=${ROWS:-resnet20 attn_resnet20_stage attn_resnet20_stage_residual
                     attn_resnet20_block se_resnet20 cbam_resnet20}
        SEEDS=${SEEDS:-0 1 2}; OUT=$RUNS/cpu_cifar10; PUB=results/cpu_cifar10 ;;
  val)  COMMIT=87ede25ab1fc8c4ea552520491777f07ed0026e6; C='$WT'/configs/cpu_cifar10_val
        ROWS=resnet20_e24                                         # 6 and 12 epochs: published
        SEEDS=0; OUT=$RUNS/cpu_cifar10_val; PUB=results/cpu_cifar10_val ;;
  fast_val) COMMIT=1a65073f3d1c5badff197e177dd75b3521171850
        C='$WT'/configs/cpu_cifar10_fast_val
        ROWS=${ROWS:-fastnet_e8 fastnet_e16 fastnet_e24}
        SEEDS=0; OUT=$RUNS/cpu_cifar10_fast_val; PUB=results/cpu_cifar10_fast_val ;;
  fast_tier) COMMIT=cf6c06098dba6c3f647ecba2aee7a06412b58eb7; C='$WT'/configs/cpu_cifar10_fast
        ROWS=${ROWS:-fastnet attn_fastnet_stage attn_fastnet_stage_residual attn_fastnet_block
                     se_fastnet cbam_fastnet}
        SEEDS=${SEEDS:-0 1 2}; OUT=$RUNS/cpu_cifar10_fast; PUB=results/cpu_cifar10_fast ;;
  imagenette) COMMIT=841f0609dd3a95eeb8d8edcc41d8af788efd0622; C='$WT'/configs/cpu_imagenette
        ROWS=${ROWS:-resnet18 attn_resnet18 se_resnet18 cbam_resnet18}
        SEEDS=${SEEDS:-0 1}; OUT=$RUNS/cpu_imagenette; PUB=results/cpu_imagenette
        TARBALL=imagenette2-160.tar.gz ;;
  imagenette_val) COMMIT=841f0609dd3a95eeb8d8edcc41d8af788efd0622
        C='$WT'/configs/cpu_imagenette_val; ROWS=resnet18
        SEEDS=0; OUT=$RUNS/cpu_imagenette_val; PUB=results/cpu_imagenette_val
        TARBALL=imagenette2-160.tar.gz ;;
  *) echo "unknown job $job (tier, val, fast_val, fast_tier, imagenette or imagenette_val)" >&2; exit 2 ;;
esac
CONFIGS=""; for r in $ROWS; do CONFIGS="$CONFIGS $C/$r.yaml"; done
DATA=${DATA:-$SHARED/$TARBALL}
WT=${WT:-$HOME/exp/wt-${COMMIT:0:7}}
if [ ! -d "$WT/src" ]; then
  git -C "$REPO" worktree add --detach "$WT" "$COMMIT"
fi
[ -f "$DATA" ] || { echo "no CIFAR-10 JPEG copy at $DATA (set DATA=...)" >&2; exit 2; }
# a worktree whose main checkout was re-cloned has no git metadata: the stamp names the commit
export PYTHONPATH="$WT/src" ATTNCNN_GIT_COMMIT=$COMMIT ATTNCNN_GIT_DIRTY=0
# the code and configs are the worktree's; run from this checkout so that the published
# files name their weights relative to it (results/weights/...)
cd "$REPO"
CONFIGS=${CONFIGS//'$WT'/$WT}
# A run published here (results file and weights) is done even where its run directory is
# gone: a new machine brings the repository, not $RUNS. (`attncnn sweep --publish` knows this
# since after the tier's commit; the worktree's sweep does not, so it is decided here.)
published() {  # CONFIG SEED: a finished run of this config's model, row tag and seed is
  # in $PUB with its weights (the row as trained: a tag replaced at publishing is kept in
  # published_tags_override)
  python - "$1" "$2" "$PUB" <<'PY'
import json, sys
from pathlib import Path
from attncnn.engine.config import load_config
cfg, seed = load_config(sys.argv[1]), int(sys.argv[2])
row = (cfg.run.tags or {}).get("row") or Path(sys.argv[1]).stem
for path in Path(sys.argv[3]).glob("*.json"):
    try:
        doc = json.loads(path.read_text())
    except ValueError:
        continue
    tags = {**(doc.get("tags") or {}), **(doc.get("published_tags_override") or {})}
    weights = doc.get("published_weights")
    if (doc.get("status"), doc.get("seed"), doc.get("model"), tags.get("row")) == (
            "finished", seed, cfg.model.name, row) and weights and Path(weights).is_file():
        sys.exit(0)
sys.exit(1)
PY
}
# Each run is taken under a lock (a directory made atomically, holding the job's pid), so
# two jobs started alike, one per core, share the queue: each skips the run the other is
# training. A lock whose job is gone (killed, or the session ended) is taken over.
LOCKS=$OUT/.locks
take() {  # NAME: 0 if this job now holds the lock
  local lock=$LOCKS/$1 pid
  mkdir -p "$LOCKS"
  if mkdir "$lock" 2>/dev/null; then echo $$ > "$lock/pid"; return 0; fi
  pid=$(cat "$lock/pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then return 1; fi
  echo $$ > "$lock/pid"; return 0              # stale: its job is gone
}
dry=0; case " $* " in *" --dry-run "*) dry=1 ;; esac
# Every run these jobs have published trained under bf16 autocast (`run.amp: auto` on a CPU
# with bf16 units). On a CPU without them auto means float32: a new run trains in float32
# (the report pools it with its row's bf16 seeds when it completes them, naming its
# precision: docs/reproduce.md), and a resumed one keeps its bf16, then emulated, many times
# slower (15x for FastNet on an AVX2 EPYC). So they wait for such a CPU unless
# BF16_OPTIONAL=1, which a new float32 run needs (say so beside any figure it gives).
if [ $dry = 0 ] && [ "${BF16_OPTIONAL:-0}" != 1 ] && ! PYTHONPATH="$REPO/src" python -c \
    "import sys; from attncnn.engine.device import cpu_has_native_bf16 as f; sys.exit(not f())"; then
  echo "cpu_sweep: this CPU has no bf16 units (no avx512_bf16/amx_bf16 flag in /proc/cpuinfo), and" \
       "the $job runs published so far trained under bf16 autocast; run it on a CPU that has" \
       "them, or set BF16_OPTIONAL=1" >&2
  exit 3
fi
rc_all=0
for seed in $SEEDS; do              # seed-major, as the sweep goes
  for config in $CONFIGS; do
    name=$(basename "$config" .yaml)-s$seed
    if published "$config" "$seed"; then echo "published: $name"; continue; fi
    if [ $dry = 0 ] && ! take "$name"; then
      echo "skipped: $name (another job holds it: $LOCKS/$name)"; continue
    fi
    rc=0
    python -m attncnn sweep "$config" --seeds "$seed" --out-dir "$OUT" \
      --publish "$PUB" --weights results/weights --set "data.root=$DATA" \
      --threads "${THREADS:-1}" -q "$@" || rc=$?
    [ $dry = 1 ] || rm -rf "${LOCKS:?}/$name"
    [ $rc -lt 128 ] || exit $rc     # stopped by a signal: the checkpoint is saved; stop here
    [ $rc = 0 ] || rc_all=$rc
  done
done
exit $rc_all
}
