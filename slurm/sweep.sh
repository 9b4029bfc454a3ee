#!/bin/bash
# A sweep on Slurm: every array task trains one point of a grid in its own run folder under one
# log root, which `tensorboard --logdir LOG_ROOT` and `python -m cvae_dist.tb_summary LOG_ROOT` compare.
#
#   sbatch slurm/sweep.sh                                   # the KL-annealing grid (8 runs: --array=0-7 below)
#   sbatch --array=0-$(( $(python -m cvae_dist.sweep GRID.yaml --count) - 1 )) slurm/sweep.sh GRID.yaml [train.py flags]
#
# Submit from the repository root with the environment that has cvae-dist installed activated
# (sbatch passes your environment on). Flags after the grid go to every point's cvae_dist/train.py
# (for example --DR /data/course); give --DR so tasks do not race to write the synthetic set.
#
# Environment overrides:
#   LOG_ROOT           shared folder of the sweep's runs (default runs/<grid name>)
#   ACCELERATE_CONFIG  accelerate config of each task (default accelerate_configs/rtx.yaml, one GPU in
#                      bf16; accelerate_configs/cpu.yaml when the task has no GPU)
#   REQUEUE_EXIT_CODE  exit status with which training asks to be requeued (default 75)
#   CVAE_DIST_DIR      the repository (default: the folder sbatch was run from)
#
# A requeued task (preemption, or the SIGUSR1 sent 120 s before the time limit) resumes from its
# run folder's latest checkpoint and appends to its log. Training writes its exit status to
# <run folder>/exit_status, from which the task learns that it should requeue (see slurm/common.sh).
# Each task gets its own rendezvous port, so tasks sharing a node never collide even with a
# multi-GPU ACCELERATE_CONFIG.
#
#SBATCH --job-name=cvae-sweep
#SBATCH --array=0-7
#SBATCH --ntasks=1
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%A_%a.out
set -euo pipefail
cd "${CVAE_DIST_DIR:-${SLURM_SUBMIT_DIR:-.}}"
source slurm/common.sh

grid=${1:-slurm/grids/kl_annealing.yaml}
[ $# -gt 0 ] && shift
index=${SLURM_ARRAY_TASK_ID:?"run this as an array job: sbatch --array=0-<points-1> slurm/sweep.sh GRID.yaml"}
count=$(python -m cvae_dist.sweep "$grid" --count)
if [ "$index" -eq "${SLURM_ARRAY_TASK_MIN:-0}" ] && [ "${SLURM_ARRAY_TASK_COUNT:-$count}" -ne "$count" ]; then
  echo "warning: $grid has $count points but this array has ${SLURM_ARRAY_TASK_COUNT} tasks" >&2
fi
name=$(python -m cvae_dist.sweep "$grid" --index "$index" --name)
eval "point=($(python -m cvae_dist.sweep "$grid" --index "$index"))"

# CPU threads of the task's training process: the CPUs Slurm gave the task. Unset, `accelerate launch`
# with a CPU config gives every process all of the node's cores, and tasks sharing a node fight over
# them (PyTorch's threads then spin and wait: a step can take ten times longer).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}

log_root=${LOG_ROOT:-runs/$(basename "$grid" .yaml)}
run="$log_root/$name"
if [ -z "${ACCELERATE_CONFIG:-}" ]; then
  ACCELERATE_CONFIG=accelerate_configs/cpu.yaml
  nvidia-smi -L >/dev/null 2>&1 && ACCELERATE_CONFIG=accelerate_configs/rtx.yaml
fi
resume=()
compgen -G "$run/checkpoints/checkpoint-*" >/dev/null && resume=(--resume_from_checkpoint latest)
echo "task $index of $grid on $(hostname): $name${resume:+ (resuming)}"
echo "rendezvous port $(job_port)"

expect_status "$run/exit_status"
status=0
forward_usr1 children accelerate launch --config_file "$ACCELERATE_CONFIG" --main_process_port "$(job_port)" \
  cvae_dist/train.py "${point[@]}" --save_root "$run" "${resume[@]}" "$@" || status=$?
status=$(training_status "$status")
requeue_if_asked "$status"
exit "$status"
