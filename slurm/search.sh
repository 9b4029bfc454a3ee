#!/bin/bash
# A hyperparameter search on Slurm: every array task is an Optuna worker that trains trials of the
# search (each an ordinary run folder under one root) until the search's budget is spent.
#
#   sbatch --array=0-3 slurm/search.sh slurm/searches/kl_lr.yaml [train.py flags]    # 4 workers
#
# Submit from the repository root with the environment that has cvae-dist installed with its
# search extra activated (pip install -e '.[search]'). Flags after the search file go to every
# trial's cvae_dist/train.py (for example --DR /data/course); give --DR so that trials do not race to
# write the synthetic set. `--storage URL` among them is the search's (an Optuna database instead of
# the journal file LOG_ROOT/optuna.journal).
#
# Environment overrides:
#   LOG_ROOT           the search's root: its trials' run folders and its journal (default runs/<search name>)
#   ACCELERATE_CONFIG  accelerate config of each trial (default accelerate_configs/rtx.yaml, one GPU in
#                      bf16; accelerate_configs/cpu.yaml when the task has no GPU)
#   REQUEUE_EXIT_CODE  exit status with which the worker asks to be requeued (default 75)
#   CVAE_DIST_DIR      the repository (default: the folder sbatch was run from)
#
# A requeued task (preemption, or the SIGUSR1 sent 120 s before the time limit) goes on with the
# trial it was training, from that trial's latest checkpoint. A task killed outright leaves its trial
# RUNNING without a heartbeat: after the search's grace_period another worker fails it and retries it
# from its checkpoint (workers with no budget left wait for the others' trials to end for that).
#
#SBATCH --job-name=cvae-search
#SBATCH --array=0-3
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

search=${1:?"usage: sbatch --array=0-<workers-1> slurm/search.sh SEARCH.yaml [train.py flags]"}
shift
: "${SLURM_ARRAY_TASK_ID:?"run this as an array job: sbatch --array=0-<workers-1> slurm/search.sh SEARCH.yaml"}"

# As in slurm/sweep.sh: the trial's CPU threads are the CPUs Slurm gave the task.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}

log_root=${LOG_ROOT:-runs/$(basename "$search" .yaml)}
if [ -z "${ACCELERATE_CONFIG:-}" ]; then
  ACCELERATE_CONFIG=accelerate_configs/cpu.yaml
  nvidia-smi -L >/dev/null 2>&1 && ACCELERATE_CONFIG=accelerate_configs/rtx.yaml
fi
echo "search worker $SLURM_ARRAY_TASK_ID of $search on $(hostname), root $log_root, rendezvous port $(job_port)"

# The worker passes SIGUSR1 on to training itself (it knows which trial runs), and exits with 75 once
# training has checkpointed.
status=0
forward_usr1 self python -m cvae_dist.search "$search" --work --root "$log_root" \
  --accelerate_config "$ACCELERATE_CONFIG" --main_process_port "$(job_port)" "$@" || status=$?
requeue_if_asked "$status"
exit "$status"
