#!/bin/bash
# One training run over N nodes x G GPUs: one srun task per node, each running `accelerate launch`
# with that node's own rank, which starts one process per GPU. The ranks meet through a c10d
# rendezvous at the head node (the first node of the allocation).
#
#   sbatch slurm/multinode.sh [train.py flags]
#   sbatch --nodes=4 --gres=gpu:8 slurm/multinode.sh --DR /data/course --batch_size 4
#
# Submit from the repository root with the environment that has cvae-dist installed activated.
# Flags go to cvae_dist/train.py. Each node's rank is expanded inside its own task (SLURM_PROCID),
# not in this batch shell, where it would be 0 on every node.
#
# Environment overrides:
#   GPUS_PER_NODE      processes per node (default: GPUs nvidia-smi lists on the first node; 1 without a GPU)
#   SAVE_ROOT          run folder (default runs/multinode-<job id>; a requeued job keeps its id and resumes);
#                      training writes its exit status to SAVE_ROOT/exit_status, which decides a requeue
#   ACCELERATE_CONFIG  accelerate config (default accelerate_configs/multi_node.yaml; its node counts,
#                      rank, address and port are overridden here)
#   HEAD_ADDR          address of the head node (default: the first host of the allocation)
#   MAIN_PORT          rendezvous port on the head node (default: derived from the job id)
#   REQUEUE_EXIT_CODE  exit status with which training asks to be requeued (default 75)
#   CVAE_DIST_DIR      the repository (default: the folder sbatch was run from)
#
#SBATCH --job-name=cvae-multinode
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%j.out
set -euo pipefail
cd "${CVAE_DIST_DIR:-${SLURM_SUBMIT_DIR:-.}}"
source slurm/common.sh

if [ -z "${GPUS_PER_NODE:-}" ]; then
  GPUS_PER_NODE=$(nvidia-smi -L 2>/dev/null | wc -l || true)
  [ "$GPUS_PER_NODE" -gt 0 ] || GPUS_PER_NODE=1
fi
# One task per node, so there are as many machines as tasks (tests stand two tasks in for two nodes).
export NUM_MACHINES=$SLURM_NTASKS GPUS_PER_NODE
export HEAD_ADDR=${HEAD_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}
export MAIN_PORT=${MAIN_PORT:-$(job_port)}
export SAVE_ROOT=${SAVE_ROOT:-runs/multinode-$SLURM_JOB_ID}
export ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-accelerate_configs/multi_node.yaml}
resume=()
compgen -G "$SAVE_ROOT/checkpoints/checkpoint-*" >/dev/null && resume=(--resume_from_checkpoint latest)
echo "$NUM_MACHINES nodes x $GPUS_PER_NODE processes, head $HEAD_ADDR:$MAIN_PORT, run folder $SAVE_ROOT"

expect_status "$SAVE_ROOT/exit_status"
# The single quotes keep $SLURM_PROCID for each task to expand on its own node. The head node's
# task hosts the c10d store, decided by rank rather than by torch matching host names, which is
# ambiguous when tasks share a host.
status=0
forward_usr1 self srun --kill-on-bad-exit=1 bash -c '
  source slurm/common.sh
  is_host=false
  [ "$SLURM_PROCID" -eq 0 ] && is_host=true
  forward_usr1 children accelerate launch --config_file "$ACCELERATE_CONFIG" \
    --num_machines "$NUM_MACHINES" --num_processes $((NUM_MACHINES * GPUS_PER_NODE)) \
    --machine_rank "$SLURM_PROCID" --main_process_ip "$HEAD_ADDR" --main_process_port "$MAIN_PORT" \
    --rdzv_backend c10d --rdzv_conf "is_host=$is_host" cvae_dist/train.py --save_root "$SAVE_ROOT" "$@"
' multinode-task "${resume[@]}" "$@" || status=$?
status=$(training_status "$status")
requeue_if_asked "$status"
exit "$status"
