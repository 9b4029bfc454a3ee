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
touch "$stamp"
"$venv/bin/python" -c "import torch, accelerate; print(f'ready: torch {torch.__version__}, accelerate {accelerate.__version__}, cuda available: {torch.cuda.is_available()}')"
