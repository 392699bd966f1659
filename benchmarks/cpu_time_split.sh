#!/usr/bin/env bash
# Where the CPU time-to-90% gap between ours and airbench94 goes (issue 16; docs/bench.md,
# "CIFAR-10 to 90% on the CPU"). Both reached 90% on the test half at the same rung (10
# epochs), so the gap is seconds per epoch and seconds of evaluation, not epochs; these runs
# split it, each at that rung, on the test half, 2 threads, the machine otherwise idle:
#
#   ref       airbench94 and ours (attn_fastnet, the paper's module after each group,
#             mode residual; float32 final evaluation): the end-to-end command at its rung
#   bf16eval  ours with the final evaluation under bf16 autocast (as airbench evaluates);
#             the same weights' float32 accuracy is recorded after the clock stops
#   noattn    ours without attention (fastnet), bf16 evaluation: ours' loop on airbench94's
#             shape, so noattn - airbench is the implementation and bf16eval - noattn the
#             attention modules
#
# Each writes $RESULTS/cpu-split-<name>.json and is skipped when that file is complete. Run
# it from a worktree at a fixed commit (the files record it), results into this checkout:
#   git worktree add --detach ~/exp/wt-X <commit>
#   RESULTS=$PWD/results/time_to_accuracy ~/exp/wt-X/benchmarks/cpu_time_split.sh [name ...]
# Needs the README's set-up plus airbench (pip install airbench==0.1.8) and the data at
# $DATA (default ../shared/data/cifar10-jpeg.tar.gz). About 30 minutes in all. Then
# `python benchmarks/cpu_time_split_summary.py --markdown` prints the split.
set -euo pipefail
{
REPO=$(cd "$(dirname "$0")/.." && pwd)
RESULTS=${RESULTS:-$REPO/results/time_to_accuracy}
DATA=${DATA:-$(cd "$REPO/.." && pwd)/shared/data/cifar10-jpeg.tar.gz}
[ -f "$DATA" ] || { echo "cpu_time_split: no CIFAR-10 JPEG copy at $DATA (set DATA=...)" >&2; exit 2; }
# The gap it splits was measured under bf16 (both sides, training; airbench's evaluation too):
# on a CPU without bf16 units both would run float32 and `bf16eval` would be emulated.
if [ "${BF16_OPTIONAL:-0}" != 1 ] && ! PYTHONPATH="$REPO/src" python -c \
    "import sys; from attncnn.engine.device import cpu_has_native_bf16 as f; sys.exit(not f())"; then
  echo "cpu_time_split: this CPU has no bf16 units; the gap it splits was measured with them" \
       "(run it on such a CPU, or set BF16_OPTIONAL=1)" >&2
  exit 3
fi
RESIDUAL='attention_options={mode: residual}'
run() {  # NAME ARGS...: one time_to_accuracy command, unless its complete file is there
  local name=$1; shift
  local out=$RESULTS/cpu-split-$name.json
  if [ -f "$out" ] && python -c "import json,sys; sys.exit(not json.load(open('$out'))['complete'])"; then
    echo "cpu_time_split: $name done ($out)"; return
  fi
  echo "cpu_time_split: $name ..."
  PYTHONPATH="$REPO/src" python "$REPO/benchmarks/time_to_accuracy.py" --device cpu --target 90 \
    --threads 2 --data "$DATA" --base fastnet --out "$out" "$@"
}
names=${*:-ref bf16eval noattn}
for name in $names; do
  case "$name" in
    ref)      run ref --recipe "$RESIDUAL" --epochs 10 --airbench-epochs 10 ;;
    bf16eval) run bf16eval --skip-airbench --recipe "$RESIDUAL" --recipe eval_amp=true --epochs 10 ;;
    noattn)   run noattn --skip-airbench --recipe model=fastnet --recipe eval_amp=true --epochs 10 ;;
    *) echo "cpu_time_split: unknown run $name (ref, bf16eval or noattn)" >&2; exit 2 ;;
  esac
done
exit
}
