#!/usr/bin/env bash
# The CQL rows of "Results: 100k gradient steps on the project's own data" (examples/offline/README.md)
# rerun with CQL as the collection defines it now: the corrected update (README, "What the corrected
# classes change") and the script's defaults (--cql-weight 10, no Lagrange multiplier, as CORL's
# D4RL MuJoCo configs). Same protocol as the table: 100,000 gradient steps (20 epochs x 5,000),
# batch 256, 64 x 64 networks, 10 evaluation episodes after every epoch, --compile.
#
# Produces, below the repository root:
#   log/data/hopper-made-expert-100k.hdf5            the expert dataset (the medium one is bundled)
#   log/results-100k-cql/<dataset>/d4rl_cql/seed<k>/ the runs
#   examples/offline/results/hopper-100k-cql/        their table, curves and kept summaries (to
#                                                    commit; test_results_tables.py remakes it)
#
# Measured cost: see the upd/s column of the table (one run at a time on one core of the 2-core
# AMD EPYC VM, the other core busy with the Pong expert, 2026-12-05).
# Rerunning skips finished runs and continues interrupted ones (sweep.py).
#
#   bash reproduce/d4rl_hopper_100k_cql.sh             (from the repository root)
#   SEEDS="0" NUM_CPUS=1 bash reproduce/d4rl_hopper_100k_cql.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export OMP_NUM_THREADS=1
EXPERT=log/data/hopper-made-expert-100k.hdf5
if [[ ! -f $EXPERT ]]; then
  python examples/offline/make_d4rl_dataset.py make --snapshots examples/offline/snapshots/hopper \
    --levels expert --num-transitions 100000 --workers 2 --out log/data
fi
read -r -a seeds <<< "${SEEDS:-0 1}"
python examples/offline/sweep.py --scripts d4rl_cql --seeds "${seeds[@]}" \
  --datasets examples/offline/data/hopper-made-medium-50k.hdf5 "$EXPERT" \
  --sweep-dir log/results-100k-cql --num-cpus "${NUM_CPUS:-2}" --cpus-per-run 1 \
  --epoch 20 --epoch-num-steps 5000 --batch-size 256 --hidden-sizes 64 64 --test-num 10 --compile

OUT=examples/offline/results/hopper-100k-cql
rm -rf "${OUT:?}/runs"
python examples/offline/aggregate_results.py log/results-100k-cql --out "$OUT" --keep-runs
