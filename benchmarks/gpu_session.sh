#!/usr/bin/env bash
# One prepared GPU session: everything issues 5 and 7 need measured, in one command that
# ends inside a 10-minute limit, with every output under $OUT.
#
#   bash benchmarks/gpu_session.sh            # on the GPU machine, from the repository root
#   SMOKE=1 OUT=/tmp/gs bash benchmarks/gpu_session.sh    # CPU dry run of the same steps
#
# Before, on the machine that has ../shared and a package index: benchmarks/gpu_session_prepare.sh
# (data, the airbench wheel, the commit stamp); carry `data` and `.whl` (both git-ignored).
# Details and what to do with the outputs: docs/gpu-session.md.
#
# Steps, most important first, each under its own time cap (BUDGET_* seconds):
#   1. tta     benchmarks/time_to_accuracy.py: our attention recipe and airbench to 94% (#7)
#   2. recipe  the paper's 200-epoch attn_resnet110_cifar on the JPEG copy, stopped by SIGTERM
#              at its cap: a checkpoint is saved, the epoch times say whether 200 epochs fit
#              in 10 minutes, and the run resumes in a later session (`attncnn train --resume`)
#   3. bench   attention overhead (params, MACs, train/infer images/s, step-time ratios) on
#              ResNet-110 and ResNet-50, bf16 + channels_last, eager
# Outputs ($OUT, at most 8 files come back): session.log, tta.json, bench.json,
# recipe-run.tar.gz (the run directory: config, metrics, results.json if finished, last.pt).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to the folder for the outputs}
mkdir -p "$OUT"
exec > >(tee "$OUT/session.log") 2>&1
SMOKE=${SMOKE:-0}
DATA=${DATA:-data/cifar10-jpeg.tar.gz}
[ -f "$DATA" ] || DATA=../shared/data/cifar10-jpeg.tar.gz
PY=${PY:-python3}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# the copy of the tree on the GPU machine has no .git: results name the stamped commit
if [ -z "${ATTNCNN_GIT_COMMIT:-}" ] && [ -f data/git-stamp ]; then
  read -r ATTNCNN_GIT_COMMIT dirty < data/git-stamp
  export ATTNCNN_GIT_COMMIT ATTNCNN_GIT_DIRTY=$dirty
fi

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
if [ "$SMOKE" = 1 ]; then
  BUDGET_TTA=${BUDGET_TTA:-240} BUDGET_RECIPE=${BUDGET_RECIPE:-60} BUDGET_BENCH=${BUDGET_BENCH:-120}
else
  BUDGET_TTA=${BUDGET_TTA:-200} BUDGET_RECIPE=${BUDGET_RECIPE:-240} BUDGET_BENCH=${BUDGET_BENCH:-90}
fi
echo "== $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo "${ATTNCNN_GIT_COMMIT:-?}") data $DATA smoke $SMOKE"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
  torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv

step() {  # step NAME SECONDS COMMAND...: run under a cap; SIGTERM first, SIGKILL 20 s later
  local name=$1 cap=$2; shift 2
  echo "== $(date -u +%T) $name (cap ${cap}s): $*"
  local t0=$SECONDS
  timeout -k 20 -s TERM "$cap" "$@"
  echo "== $name exit $? after $((SECONDS - t0)) s"
}

# 1. time to 94%: ours beside airbench, same GPU, same decoded images
if [ "$SMOKE" = 1 ]; then
  step tta "$BUDGET_TTA" "$PY" benchmarks/time_to_accuracy.py --smoke --data "$DATA" --out "$OUT/tta.json"
else
  step tta "$BUDGET_TTA" "$PY" benchmarks/time_to_accuracy.py --data "$DATA" --out "$OUT/tta.json"
fi

# 2. the paper's recipe, as far as its cap allows (SIGTERM -> checkpoint -> resumable)
RUNS=runs/gpu_session
if [ "$SMOKE" = 1 ]; then
  RECIPE=(-c configs/quickstart.yaml --set schedule.epochs=50 --set run.device=cpu)
else
  RECIPE=(-c configs/cifar10_jpeg/attn_resnet110.yaml --set "data.root=$DATA")
fi
step recipe "$BUDGET_RECIPE" "$PY" -m attncnn train "${RECIPE[@]}" --out-dir "$RUNS" --quiet
RUN_DIR=$(ls -dt "$RUNS"/*/ 2>/dev/null | head -1)
if [ -n "$RUN_DIR" ]; then
  # the newest checkpoint only (a ResNet-110 one is ~14 MB; a file coming back is <= 16 MB)
  tar -czf "$OUT/recipe-run.tar.gz" --exclude=best.pt --exclude=last.prev.pt \
      --exclude=tensorboard -C "$(dirname "$RUN_DIR")" "$(basename "$RUN_DIR")"
  ls -la "$OUT/recipe-run.tar.gz"
fi

# 3. attention overhead, ResNet-110 (CIFAR, batch 128) and ResNet-50 (224 px, batch 64)
if [ "$SMOKE" = 1 ]; then
  BENCH=(resnet20_cifar attn_resnet20_cifar se_resnet20_cifar cbam_resnet20_cifar
         --device cpu --batch-size 8 --steps 2 --windows 2 --warmup 1)
  step bench "$BUDGET_BENCH" "$PY" -m attncnn bench "${BENCH[@]}" --json "$OUT/bench.json"
else
  step bench-110 "$BUDGET_BENCH" "$PY" -m attncnn bench resnet110_cifar attn_resnet110_cifar \
      se_resnet110_cifar cbam_resnet110_cifar --device cuda --amp --channels-last \
      --batch-size 128 --json "$OUT/bench-resnet110.json"
  step bench-50 "$BUDGET_BENCH" "$PY" -m attncnn bench resnet50 attn_resnet50 se_resnet50 \
      cbam_resnet50 --device cuda --amp --channels-last --batch-size 64 \
      --json "$OUT/bench-resnet50.json"
fi
echo "== $(date -u +%T) done; outputs: $(ls "$OUT" | tr '\n' ' ')"
