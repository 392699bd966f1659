#!/usr/bin/env bash
# Prepare benchmarks/gpu_session.sh on the machine that has ../shared and a package index:
# the data and the airbench wheel go into git-ignored folders to carry (`data`, `.whl`), and
# data/git-stamp names the commit the GPU machine's copy of the tree (which has no .git) is.
#   bash benchmarks/gpu_session_prepare.sh [PYTHON]     then: SMOKE=1 OUT=/tmp/gs bash benchmarks/gpu_session.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
mkdir -p data .whl
cp ../shared/data/cifar10-jpeg.tar.gz data/
if ! ls .whl/airbench-0.1.8-*.whl >/dev/null 2>&1; then
  "$PY" -m pip download -q --no-deps -d .whl airbench==0.1.8     # published as an sdist only
  "$PY" -m pip wheel -q --no-deps -w .whl .whl/airbench-0.1.8.tar.gz
  rm -f .whl/airbench-0.1.8.tar.gz
fi
dirty=0; [ -n "$(git status --porcelain --untracked-files=no)" ] && dirty=1
echo "$(git rev-parse HEAD) $dirty" > data/git-stamp
echo "prepared: $(du -sh data .whl | tr '\n' ' ')commit $(cut -c1-7 data/git-stamp) dirty=$dirty"
