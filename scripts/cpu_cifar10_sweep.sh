#!/usr/bin/env bash
# The old name of scripts/cpu_sweep.sh (CIFAR-10 jobs tier and val), kept for the docs and
# commands that use it.
exec "$(dirname "$0")/cpu_sweep.sh" "$@"
