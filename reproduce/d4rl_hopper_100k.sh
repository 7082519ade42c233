#!/usr/bin/env bash
# The table "Results: 100k gradient steps on the project's own data" of examples/offline/README.md
# (and examples/offline/results/: results.md and the two learning-curve PNGs, overwritten here).
#
# Produces, below the repository root:
#   log/data/hopper-made-expert-100k.hdf5      the expert dataset (the medium one is bundled)
#   log/results-100k/<dataset>/<script>/seed<k>/   the runs: IL, TD3+BC, BCQ with seeds 0 and 1,
#                                              CQL with seed 0, each 100,000 gradient steps
#   log/cql-probe/weight5, weight10            the CQL probe below the table (30,000 steps, no
#                                              Lagrange multiplier, medium data, seed 0)
#   examples/offline/results/                  the table and the plots
#
# Measured cost (README, 2-core CPU VM, two or three runs at a time, one thread each,
# 2026-11-25): the expert dataset 42 s; updates at the table's upd/s (IL ~390, TD3+BC 130-260,
# BCQ ~80, CQL ~30 upd/s); the CQL runs took 40-70 min each. Hours in all on a 2-core CPU.
# Rerunning skips finished runs and continues interrupted ones (sweep.py), so Ctrl-C is safe.
#
#   bash reproduce/d4rl_hopper_100k.sh        (from the repository root)
#
# The table's data was replaced on 2026-12-02: run this from commit 0300a10, which still holds it.
set -euo pipefail
cd "$(dirname "$0")/.."

export OMP_NUM_THREADS=1
python examples/offline/make_d4rl_dataset.py make --snapshots examples/offline/snapshots/hopper \
    --levels expert --num-transitions 100000 --workers 2 --out log/data
ARGS=(--datasets examples/offline/data/hopper-made-medium-50k.hdf5 log/data/hopper-made-expert-100k.hdf5
  --sweep-dir log/results-100k --num-cpus 2 --cpus-per-run 1
  --epoch 20 --epoch-num-steps 5000 --batch-size 256 --hidden-sizes 64 64 --test-num 10 --compile)
python examples/offline/sweep.py --scripts d4rl_il d4rl_td3_bc --seeds 0 1 "${ARGS[@]}"
# CQL as in the table: Tianshou 2.0.1's maths and the defaults it had then
# --cql-weight 1 with the Lagrange multiplier on (--lagrange-threshold 10)
python examples/offline/sweep.py --scripts d4rl_cql --seeds 0 "${ARGS[@]}" \
  --cql-weight 1 --with-lagrange --tianshou-2.0.1-maths
python examples/offline/sweep.py --scripts d4rl_bcq --seeds 0 1 "${ARGS[@]}" --vae-hidden-sizes 128 128
# the CQL probe below the table (30,000 steps, no Lagrange multiplier)
for w in 5 10; do
  python examples/offline/d4rl_cql.py --task Hopper-v2 --seed 0 \
    --expert-data-task examples/offline/data/hopper-made-medium-50k.hdf5 --run-dir log/cql-probe/weight$w \
    --epoch 6 --epoch-num-steps 5000 --batch-size 256 --hidden-sizes 64 64 --test-num 10 --compile \
    --no-with-lagrange --cql-weight $w --tianshou-2.0.1-maths
done
python examples/offline/aggregate_results.py log/results-100k --out examples/offline/results \
  --reference-label "Tianshou's published return, HalfCheetah expert / medium (D4RL data, not ours)" \
  --reference d4rl_il="11355 / 5098" d4rl_bcq="11510 / 5147" d4rl_cql="2864 / 6505" \
  d4rl_td3_bc="11788 / 5741"
