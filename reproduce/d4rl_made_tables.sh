#!/usr/bin/env bash
# The three D4RL results tables of examples/offline/README.md on the project's own expert-level
# data ("Results on the made data"), CPU protocol:
#
#   1. Tianshou's rows: IL, BCQ, CQL, TD3+BC on HalfCheetah medium and expert        (3 seeds)
#   2. Tianshou's observation-normalisation table: TD3+BC --norm-obs 1 / 0 on HalfCheetah and
#      Walker2d, medium and expert                                                       (3 seeds)
#   3. CORL's rows: IL, TD3+BC, IQL, ReBRAC on Hopper and Walker2d medium, medium-replay and
#      medium-expert; BCQ and CQL on the medium datasets                                 (2 seeds)
#
# Protocol (every row): 100,000 gradient steps (20 epochs x 5,000), batch 256, 10 evaluation
# episodes after every epoch, --compile. Networks: the papers' for IL, TD3+BC and IQL (2 x 256)
# and ReBRAC (3 x 256, LayerNorm critics, its per-dataset BC coefficients; batch 256 instead of
# its 1024); BCQ and CQL 64 x 64
# (BCQ's VAE 128 x 128): at their papers' sizes they run at 4-8 updates/s on one core of the
# 2-core CPU (benchmarks/README.md), i.e. 3.5-7 h per 100k-step run.
# One run per core (OMP_NUM_THREADS=1). Measured cost per run on the 2-core AMD EPYC: see the
# upd/s column of each table (the sweep's run.log files hold the wall times).
#
# Produces, below the repository root:
#   $D4RL_MADE_DIR (default ~/.d4rl/made)          the made datasets (make_d4rl_dataset.py make)
#   log/tables/d4rl/<dataset>/<script>/seed<k>/       the runs with each script's own settings
#   log/tables/d4rl-norm-obs-0/<dataset>/d4rl_td3_bc/ the --norm-obs 0 runs of table 2
#   examples/offline/results/d4rl-{halfcheetah,obs-norm,corl}/
#                                   each table's results.md, learning curves and kept summaries,
#                                   also put into examples/offline/README.md (--into)
#
# Runs start in order of seeds (seed 0 of every table first; within a seed, tables 1 and 2,
# which need all three seeds, before table 3), NUM_CPUS at a time, so a sweep stopped early
# leaves whole tables with fewer seeds; rerunning skips finished runs (those of the committed
# tables too) and continues interrupted ones. log/ may be a link to a folder outside the clone,
# so that runs survive a fresh checkout: ln -s ~/offline-runs/log log
#
#   bash reproduce/d4rl_made_tables.sh            # everything (tens of CPU hours on 2 cores)
#   SEEDS="0" bash reproduce/d4rl_made_tables.sh  # the first seed of every table
#   TABLES_ONLY=1 bash reproduce/d4rl_made_tables.sh  # only the tables, from the runs so far
#   SKIP_MAKE=1 ...                                   # the data is being made elsewhere
#   NUM_CPUS=1 ...                                    # one run at a time (the other core is busy)
#   PROTOCOL=paper NUM_CPUS=4 ...                     # the papers' protocol, 4 runs on a GPU (below)
#
# The papers' protocol (PROTOCOL=paper): 1,000,000 gradient steps (200 epochs x 5,000), every
# network at its paper's size (the scripts' defaults: BCQ 400 x 300 with a 750 x 750 VAE, CQL
# 3 x 256), ReBRAC's batch 1024, 3 seeds in every table; runs in log/tables-paper/, tables in
# examples/offline/results/paper-protocol/ (not put into the README). 123 runs: IL 24, TD3+BC 39,
# BCQ 12, CQL 12, IQL 18, ReBRAC 18. ESTIMATED cost on one H200 from its measured update rates
# (benchmarks/README.md, 2026-12-04: 1M updates IL 1.4 min, TD3+BC 4.1, IQL 5.5, ReBRAC 9.4,
# CQL 24; BCQ not measured there, ~15 from its CPU rate relative to CQL's): ~15.5 GPU-hours of
# updates one run at a time, plus 200 evaluations of 10 episodes per run (~13 min a run on the
# H100's host; --eval-in-background takes them off the training process). NUM_CPUS=4 puts 4 runs
# on one GPU (each run's sweep gives it 0.25 of the GPU); how much that shortens the 15.5 h is
# not measured. On this 2-core CPU the same protocol would take well over 1,000 core-hours (BCQ
# and CQL at their papers' sizes run at 4-7 upd/s: 40-60 h for each of their 24 runs).
set -euo pipefail
cd "$(dirname "$0")/.."

export OMP_NUM_THREADS=1
DATA="${D4RL_MADE_DIR:-$HOME/.d4rl/made}"
SEEDS="${SEEDS:-0 1 2}"
if [ "${PROTOCOL:-cpu}" = paper ]; then
  EPOCHS=200 LOG=log/tables-paper RESULTS=examples/offline/results/paper-protocol
  BCQ_SIZES=() CQL_SIZES=() REBRAC_BATCH=(--batch-size 1024) INTO=() CORL_SEEDS=3
else  # the CPU protocol: 100k steps, BCQ and CQL at 64 x 64, table 3 with 2 seeds
  EPOCHS=20 LOG=log/tables RESULTS=examples/offline/results
  BCQ_SIZES=(--hidden-sizes 64 64 --vae-hidden-sizes 128 128) CQL_SIZES=(--hidden-sizes 64 64)
  REBRAC_BATCH=() CORL_SEEDS=2
  INTO=(--into examples/offline/README.md)
fi
# Every run is a sweep of its own, NUM_CPUS of them at a time, so that no core waits for the
# slowest run of a sweep (a finished run's sweep returns at once, without starting Ray).
SWEEP=(python examples/offline/sweep.py --num-cpus 1 --cpus-per-run 1
  --epoch "$EPOCHS" --epoch-num-steps 5000 --batch-size 256 --test-num 10 --compile)

# The data first: the file names below are those of the made files. 7-15 min per task on 2
# cores; the same files on the same kind of CPU (examples/offline/data/README.md).
if [ -z "${TABLES_ONLY:-}" ] && [ -z "${SKIP_MAKE:-}" ]; then
  for task in halfcheetah walker2d hopper; do
    if ! ls "$DATA/$task-made-medium-expert-"*.hdf5 > /dev/null 2>&1; then
      python examples/offline/make_d4rl_dataset.py make \
        --snapshots "examples/offline/snapshots/$task" --workers 2 --out "$DATA"
    fi
  done
fi
made() { echo "$DATA/$1-made-$2"*.hdf5; }  # the one file of a task's level
HALFCHEETAH=("$(made halfcheetah medium-1m)" "$(made halfcheetah expert)")
# Walker2d's data comes from gymnasium's Walker2d-v5 model: evaluate on it (data/README.md)
WALKER=("Walker2d-v5=$(made walker2d medium-1m)" "Walker2d-v5=$(made walker2d expert)")
CORL_MEDIUM=("$(made hopper medium-1m)" "Walker2d-v5=$(made walker2d medium-1m)")
CORL=("${CORL_MEDIUM[@]}" "$(made hopper medium-replay)" "$(made hopper medium-expert)"
  "Walker2d-v5=$(made walker2d medium-replay)" "Walker2d-v5=$(made walker2d medium-expert)")
REBRAC=("${CORL[0]} 0.01 0.01" "${CORL[1]} 0.05 0.1" "${CORL[2]} 0.05 0.5" "${CORL[3]} 0.1 0.01"
  "${CORL[4]} 0.05 0.01" "${CORL[5]} 0.01 0.01")  # dataset, actor and critic BC coefficients

# A fresh clone continues where the committed tables stopped: the summaries kept next to them mark
# those runs finished (-n: a run of this machine is never overwritten).
mkdir -p "$LOG"
for kept in "$RESULTS"/d4rl-*/runs/*/; do if [ -d "$kept" ]; then cp -rn "$kept" "$LOG"/; fi; done

# The grid, one run a line in the order the runs start: sweep directory, seed, script, dataset,
# and the script's own arguments (the lines are split at spaces: no spaces in $DATA).
grid=()
add() { grid+=("--sweep-dir $1 --seeds $2 --scripts $3 --datasets ${*:4}"); }
for seed in $SEEDS; do
  for dataset in "${HALFCHEETAH[@]}" "${WALKER[0]}"; do
    add "$LOG/d4rl" "$seed" d4rl_il "$dataset"
    add "$LOG/d4rl" "$seed" d4rl_td3_bc "$dataset"
  done
  add "$LOG/d4rl" "$seed" d4rl_td3_bc "${WALKER[1]}"  # IL on Walker2d expert: no table
  for dataset in "${HALFCHEETAH[@]}" "${WALKER[@]}"; do
    add "$LOG/d4rl-norm-obs-0" "$seed" d4rl_td3_bc "$dataset" --norm-obs 0
  done
  for dataset in "${HALFCHEETAH[@]}"; do
    add "$LOG/d4rl" "$seed" d4rl_bcq "$dataset" "${BCQ_SIZES[@]}"
    add "$LOG/d4rl" "$seed" d4rl_cql "$dataset" "${CQL_SIZES[@]}"
  done
  if [ "$seed" -lt "$CORL_SEEDS" ]; then  # table 3: two seeds on the CPU
    for script in d4rl_il d4rl_td3_bc d4rl_iql; do
      for dataset in "${CORL[@]}"; do add "$LOG/d4rl" "$seed" "$script" "$dataset"; done
    done
    for dataset in "${CORL_MEDIUM[@]}"; do
      add "$LOG/d4rl" "$seed" d4rl_bcq "$dataset" "${BCQ_SIZES[@]}"
      add "$LOG/d4rl" "$seed" d4rl_cql "$dataset" "${CQL_SIZES[@]}"
    done
    # ReBRAC with the paper's per-dataset BC coefficients (examples/offline/README.md)
    for dataset_coefs in "${REBRAC[@]}"; do
      read -r dataset actor_bc critic_bc <<< "$dataset_coefs"
      add "$LOG/d4rl" "$seed" d4rl_rebrac "$dataset" --actor-bc-coef "$actor_bc" \
        --critic-bc-coef "$critic_bc" "${REBRAC_BATCH[@]}"
    done
  fi
done
if [ -z "${TABLES_ONLY:-}" ]; then
  printf '%s\n' "${grid[@]}" | xargs -P "${NUM_CPUS:-2}" -L 1 "${SWEEP[@]}"
fi

# The tables: each from the runs it shows, their summaries kept next to it (to commit).
RUNS=$LOG/d4rl
table() {  # table NAME RUN_FOLDER...: results.md, plots and kept runs of one table
  local name=$1
  shift
  local present=()
  for folder in "$@"; do [ -d "$folder" ] && present+=("$folder"); done
  [ ${#present[@]} -gt 0 ] || return 0
  rm -rf "${RESULTS:?}/$name/runs"
  python examples/offline/aggregate_results.py "${present[@]}" --out "$RESULTS/$name" --keep-runs \
    --references reproduce/d4rl_references.json "${INTO[@]}"
}
table d4rl-halfcheetah "$RUNS"/halfcheetah-made-{medium,expert}-1m
# (a dataset given as TASK=FILE has its run folder named TASK_NAME)
table d4rl-obs-norm "$RUNS"/{,Walker2d-v5_}{halfcheetah,walker2d}-made-{medium,expert}-1m/d4rl_td3_bc \
  "$LOG"/d4rl-norm-obs-0
table d4rl-corl "$RUNS"/hopper-made-* "$RUNS"/Walker2d-v5_walker2d-made-medium-*
