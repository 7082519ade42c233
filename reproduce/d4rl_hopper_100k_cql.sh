#!/usr/bin/env bash
# The two CQL rows of "Results: 100k gradient steps on the project's own data"
# (examples/offline/README.md) rerun with CQL as the collection defines it now: the corrected
# update (README, "The algorithms: the papers' maths") and the script's defaults (--cql-weight 10,
# no Lagrange multiplier, as CORL's D4RL MuJoCo configs). Everything else as in that table: its
# data (the weak Hopper files of commit 0300a10, made again from that commit), 100,000 gradient
# steps (20 epochs x 5,000), batch 256, 64 x 64 networks, 10 evaluation episodes after every
# epoch, --compile, seed 0. On the medium data also the table's old settings (--cql-weight 1 with
# the Lagrange multiplier) with the corrected maths and with Tianshou 2.0.1's: what changed.
#
# Produces, below the repository root:
#   log/data-0300a10/hopper-made-{medium-50k,expert-100k}.hdf5   the table's two datasets
#   log/results-100k-cql/<dataset>/d4rl_cql/seed<k>/             the runs (and -lagrange, -tianshou:
#                                                                the table's old CQL settings)
#   examples/offline/results/hopper-100k-cql/   their table, curves and kept summaries (to commit;
#                                               test_results_tables.py makes it again), also put
#                                               into examples/offline/README.md
#
# Measured cost: the data 30 s; the runs at the table's upd/s (one run at a time on one core of
# the 2-core AMD EPYC VM, the other core busy with the Pong expert, 2026-12-05).
# Rerunning skips finished runs and continues interrupted ones (sweep.py).
#
#   bash reproduce/d4rl_hopper_100k_cql.sh             (from the repository root)
#   SEEDS="0 1" NUM_CPUS=1 bash reproduce/d4rl_hopper_100k_cql.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export OMP_NUM_THREADS=1
DATA=log/data-0300a10
if [[ ! -f $DATA/hopper-made-expert-100k.hdf5 ]]; then
  # that commit's bundled medium file, and its expert file made by that commit's own code
  old=$(mktemp -d)
  git archive 0300a10 | tar -x -C "$old"
  mkdir -p $DATA
  cp "$old/examples/offline/data/hopper-made-medium-50k.hdf5" $DATA/
  (cd "$old" && PYTHONPATH="$old" python examples/offline/make_d4rl_dataset.py make \
    --snapshots examples/offline/snapshots/hopper --levels expert --num-transitions 100000 \
    --workers 2 --out "$OLDPWD/$DATA")
  rm -rf "$old"
fi
read -r -a seeds <<< "${SEEDS:-0}"
MEDIUM=Hopper-v2="$DATA/hopper-made-medium-50k.hdf5"
RUN=(python examples/offline/sweep.py --scripts d4rl_cql --num-cpus "${NUM_CPUS:-2}" --cpus-per-run 1
  --epoch 20 --epoch-num-steps 5000 --batch-size 256 --hidden-sizes 64 64 --test-num 10 --compile)
# the corrected CQL with its defaults, on both datasets
"${RUN[@]}" --seeds "${seeds[@]}" --sweep-dir log/results-100k-cql \
  --datasets "$MEDIUM" Hopper-v2="$DATA/hopper-made-expert-100k.hdf5"
# what changed, on the medium data: the table's old settings (--cql-weight 1 with the Lagrange
# multiplier) with the corrected maths, and with Tianshou 2.0.1's (the table's run, made again)
OLD_SETTINGS=(--seeds 0 --datasets "$MEDIUM" --cql-weight 1 --with-lagrange)
"${RUN[@]}" "${OLD_SETTINGS[@]}" --sweep-dir log/results-100k-cql-lagrange
"${RUN[@]}" "${OLD_SETTINGS[@]}" --sweep-dir log/results-100k-cql-tianshou --tianshou-2.0.1-maths

OUT=examples/offline/results/hopper-100k-cql
rm -rf "${OUT:?}/runs"
python examples/offline/aggregate_results.py log/results-100k-cql{,-lagrange,-tianshou} --out "$OUT" --keep-runs \
  --references reproduce/d4rl_references.json --into examples/offline/README.md
