#!/usr/bin/env bash
# One GPU acceptance run of cvae_dist in under 7 minutes; see benchmarks/gpu_check.py --help.
#
#   benchmarks/gpu_check.sh OUT [--dry-run] [--steps STEP,...] [--peak_tflops P]
#
# Runs with the machine's python3 (PYTHON overrides it), the repository first on PYTHONPATH, so it
# needs no install of cvae_dist: only torch, accelerate and the packages step 1 lists.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" "$repo/benchmarks/gpu_check.py" "$@"
