#!/usr/bin/env bash
# Train the course's network on one RTX card (accelerate_configs/rtx.yaml: bf16 autocast).
#
#   launch/single_gpu.sh [cvae_dist/train.py flags]
#   launch/single_gpu.sh --DR ~/data/course --num_epoch 70
#
# The defaults suit an 8 GB card: 4 windows of 16 frames per step. A window of the `lab` network
# saves about 1.8 GB of activations for backward in fp32 (measured on CPU, see the README), about
# half that in bf16, so a batch of 4 leaves room for cuDNN's workspace. For an effective batch of
# 8 use BATCH_SIZE=4 GRAD_ACCUM=2, which trains the same as a batch of 8 (tests/test_distributed.py).
# Runs land in runs/<RUN_NAME>; the line to watch them in TensorBoard is printed first.
#
# Environment overrides: BATCH_SIZE (4), GRAD_ACCUM (1), RUNS (runs), RUN_NAME (lab-<date>-<time>),
# ACCELERATE_CONFIG (accelerate_configs/rtx.yaml: bf16, which the training script turns into fp16 on an RTX 20xx).
set -euo pipefail
export NUM_GPUS=1 ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-accelerate_configs/rtx.yaml}
exec "$(dirname "$0")/multi_gpu.sh" "$@"
