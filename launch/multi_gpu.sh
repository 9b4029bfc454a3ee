#!/usr/bin/env bash
# Train on every GPU of this machine with data parallelism (DDP), one process per GPU.
#
#   launch/multi_gpu.sh [cvae_dist/train.py flags]
#   launch/multi_gpu.sh --DR ~/data/course --num_epoch 70
#
# Each GPU takes BATCH_SIZE windows per step, so the effective batch is
# NUM_GPUS x BATCH_SIZE x GRAD_ACCUM. Flags you add go to cvae_dist/train.py and win over these.
#
# Environment overrides:
#   NUM_GPUS           processes (default: the GPUs nvidia-smi lists)
#   BATCH_SIZE         windows per GPU per step (default 4, about 4 GB of activations in bf16)
#   GRAD_ACCUM         batches summed per optimizer step (default 1)
#   RUNS               folder of all runs, for `tensorboard --logdir` (default runs)
#   RUN_NAME           this run's folder under RUNS (default lab-<date>-<time>)
#   ACCELERATE_CONFIG  accelerate config (default accelerate_configs/multi_gpu.yaml)
#   MAIN_PORT          port of the processes' rendezvous (default: a free one)
set -euo pipefail
cd "$(dirname "$0")/.."

num_gpus=${NUM_GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l || true)}
if [ "${num_gpus:-0}" -lt 1 ]; then
  echo "error: no GPU found (nvidia-smi lists none); set NUM_GPUS to run anyway" >&2
  exit 2
fi
runs=${RUNS:-runs}
save_root="$runs/${RUN_NAME:-lab-$(date +%Y%m%d-%H%M%S)}"
port=${MAIN_PORT:-$(python -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')}

echo "training on $num_gpus GPU(s) into $save_root"
echo "follow it with: tensorboard --logdir $runs"
exec accelerate launch --config_file "${ACCELERATE_CONFIG:-accelerate_configs/multi_gpu.yaml}" \
  --num_processes "$num_gpus" --main_process_port "$port" \
  cvae_dist/train.py --preset lab --batch_size "${BATCH_SIZE:-4}" --gradient_accumulation_steps "${GRAD_ACCUM:-1}" \
  --save_root "$save_root" "$@"
