#!/usr/bin/env bash
# The course's comparisons on the synthetic data (tiny preset), at most two runs at a time, one
# thread each. Writes runs/experiments/<name>/ and <name>.log; then
#   python -m cvae_dist.report runs/experiments/* --out docs/experiments
#   scripts/experiments.sh                  # every run
#   scripts/experiments.sh monotonic tf_on  # only these
# docs/experiments.md says which budget each reported run actually had.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=${OUT:-runs/experiments}
COMMON="--preset tiny --synthetic_train_frames 1600 --train_vi_len 16 --batch_size 2 --lr_milestones --num_workers 0 --seed 0"
declare -A RUNS=(
  # KL annealing with teacher forcing off (3 epochs = 150 optimizer steps; compared after 2 epochs).
  [without]="--num_epoch 3 --per_save 3 --kl_anneal_type Without --tfr 0"
  [cyclical]="--num_epoch 3 --per_save 3 --kl_anneal_type Cyclical --kl_anneal_unit step --kl_anneal_cycle 3 --kl_anneal_ratio 0.5 --tfr 0"
  [monotonic]="--num_epoch 2 --per_save 2 --eval_every 2 --kl_anneal_type Monotonic --kl_anneal_unit step --kl_anneal_ratio 0.5 --tfr 0"
  # Teacher forcing with beta fixed at 1; "off" is `without` after its first epoch (50 steps).
  # On throughout, half the video once (25 steps): the same run as tf_decay up to the end of its first epoch.
  [tf_on]="--num_epoch 1 --partial 0.5 --per_save 1 --kl_anneal_type Without --tfr 1 --tfr_d_step 0"
  # Decaying needs two epochs: half the video twice (25 steps each), tfr 1.0 then 0.5 (a coin per batch).
  [tf_decay]="--num_epoch 2 --partial 0.5 --per_save 2 --eval_every 2 --kl_anneal_type Without --tfr 1 --tfr_sde 1 --tfr_d_step 0.5 --tfr_coin batch"
)
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(without cyclical monotonic tf_on tf_decay)
mkdir -p "$OUT"
for name in "${names[@]}"; do
  echo "OMP_NUM_THREADS=1 $PYTHON -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no cvae_dist/train.py $COMMON ${RUNS[$name]} --save_root $OUT/$name > $OUT/$name.log 2>&1"
done | xargs -P 2 -I{} bash -c {}
