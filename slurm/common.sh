# Shared by slurm/sweep.sh and slurm/multinode.sh, sourced from the repository root.
#
# Preemption: `#SBATCH --signal=B:USR1@120` makes Slurm send SIGUSR1 to the batch shell two minutes
# before the time limit (or on preemption). The shell forwards it to the training processes, which
# save a checkpoint and exit with REQUEUE_EXIT_CODE; the job then requeues itself, and the requeued
# job resumes from that checkpoint.
#
# `accelerate launch` (and torchrun, srun) report any failure of the training processes as status 1,
# so the launcher's status cannot say "requeue me". The main training process therefore also writes
# its exit status to the file CVAE_DIST_STATUS_FILE names (see expect_status and training_status).

# Exit status with which cvae_dist/train.py says "checkpoint saved, run me again" (75 = EX_TEMPFAIL).
REQUEUE_EXIT_CODE=${REQUEUE_EXIT_CODE:-75}

# The port of a job's rendezvous: distinct for every job (and array task) that may share a node.
job_port() {
  echo $((20000 + ${SLURM_JOB_ID:-0} % 40000))
}

# forward_usr1 children|self COMMAND...: run COMMAND in the background and pass SIGUSR1 on while
# waiting for it. `accelerate launch` would die of SIGUSR1 (Python's default action), so for it the
# signal goes to its children, the training processes; srun forwards SIGUSR1 to its tasks itself.
forward_usr1() {
  local target=$1
  shift
  "$@" &
  local pid=$! status
  local signal_them="kill -USR1 $pid"
  [ "$target" = children ] && signal_them="pkill -USR1 -P $pid"
  # shellcheck disable=SC2064  # expanded now, on purpose
  trap "echo \"\$(hostname): SIGUSR1, asking training to save a checkpoint\" >&2; $signal_them" USR1
  while true; do
    status=0
    wait "$pid" || status=$?
    # A trapped signal interrupts `wait` while the command still runs: wait again.
    kill -0 "$pid" 2>/dev/null || break
  done
  trap - USR1
  return "$status"
}

# expect_status FILE: have training's main process write its exit status to FILE (removed now, so
# that a status left by an earlier run of this job is never read).
expect_status() {
  export CVAE_DIST_STATUS_FILE=$1
  rm -f "$CVAE_DIST_STATUS_FILE"
}

# training_status LAUNCHER_STATUS: the exit status of training itself. The main process's status wins
# only where both failed: when another process failed where the main one did not, the launcher's stands.
training_status() {
  local written=0
  if [ "$1" -ne 0 ] && [ -s "$CVAE_DIST_STATUS_FILE" ]; then
    written=$(<"$CVAE_DIST_STATUS_FILE")
  fi
  if [ "$written" -ne 0 ]; then echo "$written"; else echo "$1"; fi
}

# requeue_if_asked STATUS: requeue this job when training exited to be continued later. An array task
# is named <array job>_<task>: one task's SLURM_JOB_ID is the array's own id, which would requeue every task.
requeue_if_asked() {
  if [ "$1" -eq "$REQUEUE_EXIT_CODE" ] && [ -n "${SLURM_JOB_ID:-}" ]; then
    local job=$SLURM_JOB_ID
    [ -n "${SLURM_ARRAY_JOB_ID:-}" ] && job="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
    echo "training saved a checkpoint to continue from; requeueing job $job" >&2
    scontrol requeue "$job"
  fi
}
