#!/usr/bin/env bash
# Issue 17: the whole Pong chain, as in Tianshou's Atari offline examples: a QR-DQN expert trained
# online -> 1M transitions of it playing with 20% random actions -> the 1e5 and 1e4 subsets ->
# IL, BCQ, CQL, CRR and CRR w/ CQL offline, 5 epochs of 10,000 gradient steps each.
#
# Produces, below the repository root (PongNoFrameskip-v4 = $TASK):
#   log/$TASK/qrdqn/expert-seed0/          the expert's run (checkpoints, curves, summary.json)
#   log/$TASK/qrdqn/policy.pth             its best policy (copied there by atari_qrdqn.py)
#   log/$TASK/qrdqn/expert.hdf5            1,000,000 recorded transitions (6.6 GiB)
#   log/$TASK/qrdqn/expert.size_1e5.hdf5, expert.size_1e4.hdf5   their first 1e5 / 1e4
#   log/results-pong/<dataset>/<script>/seed<k>/   IL and CQL (seeds 0 1 2), BCQ and CRR (seed
#                                          0) on 1M; CQL on 1e5 (weight 10) and 1e4 (weight 1)
#   log/results-pong-crr-cql/...           CRR w/ CQL (--min-q-weight 10) on 1M
#   log/results-pong-cql-w1/...            CQL with --min-q-weight 1 on 1M
#   log/results-pong-cql-w0/...            --min-q-weight 0 (offline QR-DQN) on 1M, a diagnostic
#   examples/offline/results/atari-pong/   the table (results.md), learning curves, and the kept
#                                          run summaries and buffers' returns (runs/) to commit;
#                                          the table also goes into examples/offline/README.md
#
# Cost on the CPU. MEASURED: 2-core AMD EPYC VM, one core (taskset -c 0, OMP_NUM_THREADS=1),
# shared with other jobs (load average 8-11), 2026-12-04:
#   atari_qrdqn.py --task PongNoFrameskip-v4 --device cpu --epoch 1 --epoch-num-steps 20000
#   (otherwise the published settings: 10 training envs, batch 32, 0.1 updates per env step,
#   100k buffer, 10 test games): 20,000 env steps and 2,000 updates in 238 s of training:
#   84 env steps/s in all; collection alone 565 env steps/s, updates alone 12.5/s (80 ms each:
#   the updates are 2/3 of the time); the two evaluations of 10 games of an untrained policy 34 s;
#   two checkpoints (each writes the full 100k-slot buffer, 0.7 GB) 8 s; peak RSS 3.4 GB.
#   That was Tianshou's own update. Its compiled functional step (atari_qrdqn.py --compile, the
#   default for this run's 1M+ updates), same machine, load average 3-4, 2026-12-04, with
#   --epoch-num-steps 10000 --test-num 2: 109.5 env steps/s in all (95.5 with --no-compile);
#   per update in one process: Tianshou's 14.7/s, the step eager 13.2/s, compiled 19.4/s
#   (compile 6-17 s); benchmarks/README.md ("Online QR-DQN's step on this CPU").
#   atari_buffer.py subset: 1e5 rows 4.1 s, 1e4 rows 0.5 s (on a 120k-row file).
# MEASURED, same machine, 2026-12-05, one core each, the sweep on the other core:
#   1. expert: test return 20.0 (stop) after 21 epochs, 2.1M env steps, 210k updates: 15,341 s
#      of training (4.3 h: collection 2,969 s, updates 11,810 s, evaluations 437 s), over two
#      sittings (resumed from a checkpoint at 1.2M env steps); 137 env steps/s overall.
#   2. recording 1M transitions: 20 min 17 s (821 steps/s), peak RSS 8.0 GiB; behaviour -3.8.
#   4. IL 50k updates: 40.5 and 40.2 min; CQL 73.5 min (including the evaluations).
# MEASURED again, same kind of machine, 2026-12-05, a fresh one (the first sitting's runs were
# lost with its machine; USE_COMMITTED_EXPERT=1), two runs at a time, one per core:
#   2. recording 1M transitions: 14 min 6 s (1,183 steps/s; the test suite on the other core),
#      peak RSS 8.0 GiB; behaviour -3.8 ± 8.4 over 336 games, the first recording's return.
#   4. start to summary (buffer load, --compile, 50k updates, 6 evaluations of 10 games): IL
#      17.5 and 17.7 min, CQL 32 min (weights 10 and 1), BCQ 35 min, CRR 33 min; 9.7 GB RSS each.
# MEASURED on another kind of machine, a 2-core Intel Xeon (AVX-512) VM, 2026-12-06, fresh, with
# USE_COMMITTED_EXPERT=1, two runs at a time (one per core):
#   2. recording 1M transitions: 20 min (~830 steps/s; the D4RL data making on the other core);
#      the same behaviour returns as on the AMD machines (runs/behaviour.json unchanged).
#   4. CQL (1M, seed 2) 61.6 min and CQL on 1e4 51.7 min start to summary: twice the AMD times,
#      with another 1M run (or the D4RL CQL run) on the other core.
# ESTIMATED from the rates above (before these runs):
#   1. expert: Pong reaches 20 after roughly 1-2M env steps (Tianshou's Pong agents: ~15 epochs
#      of 100k), at ~130-150 env steps/s with the compiled update (collection 14 ms + update
#      52 ms per 10 env steps; ~100/s under heavy load): 2-4.5 h, plus ~1 min of evaluation and
#      checkpoints per epoch. It stops by itself at a test return of 20; interrupt it any time
#      and rerun this file: it resumes exactly from the last checkpoint (every epoch and every
#      50k env steps).
#   2. recording 1M transitions (eps 0.2, 10 test envs): at the collection rate, ~500 steps/s,
#      about 35 min (the README measured 230 steps/s with --test-num 2: 72 min); needs ~8 GB.
#   3. subsets: seconds.  5. the table: seconds (it reads only the buffers' rewards and flags).
#   4. offline, 50k updates per run at the README's CPU rates (bench_updates, measured before
#      the corrected CRR/CQL steps landed; --compile, on by default for 50k steps, may be
#      faster): IL 18 upd/s -> 46 min, CQL ~10.6 -> 1.3 h, BCQ ~8 and CRR / CRR w/ CQL ~8 ->
#      1.7 h, plus ~5 min for 6 evaluations of 10 games and ~30 s to load the 1M buffer.
#      All 11 runs: ~15 core-hours, ~8 h with two runs at a time (each 1M run holds 7 GB: two
#      need ~16 GB of RAM; NUM_CPUS=1 runs them one by one). Measured since (above): 17-35 min
#      a run, all 11 about 6 core-hours, 3 h on two cores, and 9.7 GB for each 1M run.
#   Breakout (not in this file): Tianshou's 100 epochs of 100k env steps without an early stop,
#   10M env steps, ~20 h of expert training at the compiled rate on a CPU core: a GPU job.
# On one GPU, ESTIMATED from the H200 rows of benchmarks/README.md (2026-12-04: online QR-DQN
# on Pong 533 env steps/s end to end with Tianshou's update, collection alone 2,600/s; Atari CQL
# and CRR 1,800-1,850 updates/s on the fast path, a 10k-update CQL epoch 5.4 s):
#   1. expert, 1-2M env steps: 0.5-1 h.  2. recording 1M transitions: ~7 min of collection.
#   4. each offline run, 50k updates: ~30 s of updates + 6 evaluations of 10 games (~20 s each
#      at the collection rate): ~3 min; all 11 runs ~35 min, one at a time (4 share a GPU).
#   Breakout: its 10M env steps of expert training ~5.2 h, the rest as for Pong.
#
#   bash reproduce/atari_pong.sh        (from the repository root; rerun to continue)
#   USE_COMMITTED_EXPERT=1 bash reproduce/atari_pong.sh   skips step 1: records and compares with
#                                       the committed expert, runs/atari_qrdqn/PongNoFrameskip-v4/
#   TABLE_ONLY=1 ...                    skips step 4: the table from the runs finished so far
#   NUM_CPUS=1 ...                      one run at a time (the other core is busy)
# log/ may be a link to a folder outside the clone (ln -s ~/offline-runs/log log), so that a
# fresh checkout continues the same runs.
set -euo pipefail
cd "$(dirname "$0")/.."

export OMP_NUM_THREADS=1
TASK=PongNoFrameskip-v4
DATA=log/$TASK/qrdqn
EXPERT_RUN=$DATA/expert-seed0
if [[ -n ${USE_COMMITTED_EXPERT:-} ]]; then
  EXPERT_RUN=runs/atari_qrdqn/$TASK  # its policy.pth and summary.json, as this step leaves them
fi

# 1. the expert, with Tianshou's published settings (the script's defaults); resumed if stopped
if [[ ! -f $EXPERT_RUN/summary.json ]]; then
  if [[ -f $EXPERT_RUN/checkpoint.pth ]]; then
    python examples/atari/atari_qrdqn.py --resume-path "$EXPERT_RUN"
  else
    python examples/atari/atari_qrdqn.py --task $TASK --seed 0 --run-dir "$EXPERT_RUN"
  fi
fi

# 2. its play with 20% random actions: 1M transitions (prints the behaviour policy's return)
if [[ ! -f $DATA/expert.hdf5 ]]; then
  python examples/atari/atari_qrdqn.py --task $TASK --watch --resume-path "$EXPERT_RUN/policy.pth" \
    --eps-test 0.2 --buffer-size 1000000 --save-buffer-name "$DATA/expert.hdf5"
fi

# 3. the first 1e5 and 1e4 transitions (Tianshou's 10% and 1% tables)
for subset in 1e5:100000 1e4:10000; do
  name=${subset%:*} size=${subset#*:}
  if [[ ! -f $DATA/expert.size_$name.hdf5 ]]; then
    python examples/atari/atari_buffer.py subset "$DATA/expert.hdf5" "$DATA/expert.size_$name.hdf5" \
      --size "$size"
  fi
done

# 4. offline: 5 epochs of 10,000 gradient steps. Two lanes of runs, one per core (NUM_CPUS=1:
#    one after the other), of about equal cost (~3 h each by the times measured above); each
#    lane starts with a run of its own column (CRR, BCQ) and an IL seed. Finished runs are
#    skipped and interrupted ones continued by sweep.py.
TABLE=examples/offline/results/atari-pong
# A fresh clone continues where the committed table stopped: the run summaries kept beside it
# mark those runs finished (-n: a run of this machine is never overwritten).
for kept in "$TABLE"/runs/results-pong*/; do
  if [[ -d $kept ]]; then cp -rn "$kept" log/; fi
done
ONE_M=$DATA/expert.hdf5
# a failed run does not stop its lane (sweep.py lists it at the end); the lane then returns 1
sweep() {
  python examples/offline/sweep.py --task $TASK --epoch 5 --num-cpus 1 --cpus-per-run 1 "$@" ||
    SWEEP_FAILED=1
}
lane_a() {
  sweep --scripts atari_crr --datasets "$ONE_M" --seeds 0 --sweep-dir log/results-pong
  sweep --scripts atari_il --datasets "$ONE_M" --seeds 0 --sweep-dir log/results-pong
  # CQL with --min-q-weight 1 on 1M (its own sweep directory: the seeds would collide): at
  # Tianshou's 10 the quantiles blow up on this buffer (2026-12-05: seeds 0 and 1 lost every
  # game; in 1,500 updates the quantile spread grew to 26-36 at 10 and stayed at ~1.4 at 1:
  # reproduce/atari_cql_probe.py, output in examples/offline/results/atari-pong/cql_probe.txt);
  # at 1 they stay in place, but seed 0 lost every game too (examples/offline/README.md)
  sweep --scripts atari_cql --datasets "$ONE_M" --seeds 0 --sweep-dir log/results-pong-cql-w1 \
    --min-q-weight 1
  # CQL on the subsets with Tianshou's weights: its default 10 on 1e5 (1 on 1e4, lane b)
  sweep --scripts atari_cql --datasets "$DATA/expert.size_1e5.hdf5" --seeds 0 \
    --sweep-dir log/results-pong --min-q-weight 10
  sweep --scripts atari_il --datasets "$ONE_M" --seeds 2 --sweep-dir log/results-pong
  sweep --scripts atari_cql --datasets "$ONE_M" --seeds 2 --sweep-dir log/results-pong
  # weight 0, i.e. offline QR-DQN: does the Q-learning part alone lose on this buffer?
  sweep --scripts atari_cql --datasets "$ONE_M" --seeds 0 --sweep-dir log/results-pong-cql-w0 \
    --min-q-weight 0
  [[ -z ${SWEEP_FAILED:-} ]]
}
lane_b() {
  sweep --scripts atari_bcq --datasets "$ONE_M" --seeds 0 --sweep-dir log/results-pong
  sweep --scripts atari_il --datasets "$ONE_M" --seeds 1 --sweep-dir log/results-pong
  sweep --scripts atari_cql --datasets "$ONE_M" --seeds 0 --sweep-dir log/results-pong
  # CRR w/ CQL: the same script with the conservative penalty, in a sweep directory of its own
  sweep --scripts atari_crr --datasets "$ONE_M" --seeds 0 --sweep-dir log/results-pong-crr-cql \
    --min-q-weight 10
  sweep --scripts atari_cql --datasets "$DATA/expert.size_1e4.hdf5" --seeds 0 \
    --sweep-dir log/results-pong --min-q-weight 1
  sweep --scripts atari_cql --datasets "$ONE_M" --seeds 1 --sweep-dir log/results-pong
  [[ -z ${SWEEP_FAILED:-} ]]
}
failed=
if [[ -n ${TABLE_ONLY:-} ]]; then
  :  # only the table (step 5), from the runs finished so far
elif [[ ${NUM_CPUS:-2} -ge 2 ]]; then
  lane_a & a=$!
  lane_b & b=$!
  wait $a || failed=1
  wait $b || failed=1
else
  lane_a || failed=1
  lane_b || failed=1
fi
if [[ -n $failed ]]; then
  echo "atari_pong.sh: some runs failed (their run.log files are listed above); rerun this file" \
    "to retry them before the table is made" >&2
  exit 1
fi

# 5. the table in Tianshou's Atari layout: a row per buffer, a column per algorithm, our expert
#    (Online QRDQN) and the whole games of each buffer (Behavioral) beside them, Tianshou's
#    published figures below ours. --keep-runs keeps the run summaries and the buffers' returns
#    (runs/behaviour.json), from which test/test_results_tables.py makes the table again.
sweeps=()  # those with runs so far (with TABLE_ONLY=1, some may not have started)
for dir in log/results-pong log/results-pong-crr-cql log/results-pong-cql-w{1,0}; do
  if [[ -d $dir ]]; then sweeps+=("$dir"); fi
done
rm -rf "${TABLE:?}/runs"
python examples/offline/aggregate_results.py "${sweeps[@]}" \
  --layout atari --expert-run "$EXPERT_RUN" \
  --buffers "$DATA/expert.hdf5" "$DATA/expert.size_1e5.hdf5" "$DATA/expert.size_1e4.hdf5" \
  --references reproduce/atari_references.json \
  --out "$TABLE" --keep-runs --into examples/offline/README.md
