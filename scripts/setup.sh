#!/usr/bin/env bash
# Create (or update) the virtual environment .venv with cvae-dist installed in editable mode.
#   scripts/setup.sh            runtime dependencies only
#   scripts/setup.sh dev        plus what the tests need (pytest, DeepSpeed, Optuna for the search, wandb and MLflow for --report_to)
# torch is pinned by constraints.txt, so a machine without a GPU gets the CPU build its index
# serves rather than a newer release with several GB of CUDA packages. Set TORCH_INDEX_URL to
# pick a build (e.g. https://download.pytorch.org/whl/cpu or .../cu128). Re-running is quick:
# nothing is installed again unless pyproject.toml or constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${1:-runtime}"
case "$profile" in
  runtime) extras="" ;;
  dev) extras="[dev,deepspeed,search,wandb,mlflow]" ;;
  *) echo "usage: scripts/setup.sh [runtime|dev]" >&2; exit 2 ;;
esac

venv="${VENV:-.venv}"
python="${PYTHON:-python3}"
stamp="$venv/.installed-$profile-$(cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)"
[ -f "$stamp" ] && exit 0

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
index=()
[ -n "${TORCH_INDEX_URL:-}" ] && index=(--extra-index-url "$TORCH_INDEX_URL")

echo "setting up $venv ($profile) ..."
"${pip[@]}" install --quiet --upgrade pip
# torch first, so that packages that import it while building (DeepSpeed) find it.
"${pip[@]}" install --quiet "${index[@]}" -c constraints.txt torch
"${pip[@]}" install --quiet "${index[@]}" -c constraints.txt -e ".$extras"
if [ "$profile" = dev ]; then
  # On a CPU, every DeepSpeed run loads DeepSpeed's shared-memory op, which g++ compiles on first use
  # (a minute of CPU on 2 cores, while the run waits): compile it once here, into torch's extension
  # cache (~/.cache/torch_extensions). A run reuses it only with the same `ninja`: the environment's,
  # first on PATH when it is activated (by absolute path, since ninja runs in the cache folder).
  # Where DeepSpeed drives a GPU, the op is not built.
  PATH="$(cd "$venv" && pwd)/bin:$PATH" "$venv/bin/python" - <<'PY' || echo "note: DeepSpeed's CPU op did not compile now; the first DeepSpeed run on a CPU compiles it" >&2
import deepspeed.ops
from deepspeed.accelerator import get_accelerator

builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
if builder is not None and deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
    print(f"compiling DeepSpeed's {builder.NAME} op for the CPU (once) ...", flush=True)
    builder.load(verbose=False)
PY
fi
touch "$stamp"
"$venv/bin/python" -c "import torch, accelerate; print(f'ready: torch {torch.__version__}, accelerate {accelerate.__version__}, cuda available: {torch.cuda.is_available()}')"
