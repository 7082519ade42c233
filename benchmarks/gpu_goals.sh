#!/usr/bin/env bash
# The GPU goals of the update-speed work (benchmarks/README.md, "Goals"), measured in one call, so
# that a session that is lent a GPU for a few minutes can run them at once:
#
#   1. bench_updates.py on the full-size CQL row and the Atari CQL row: project, fast (its
#      compile time in fast_compile_s) and plain updates/s. 1M CQL updates <= 30 min needs
#      >= 556 fast upd/s; one Atari epoch (10k CQL updates) <= 30 s needs >= 334.
#   2. d4rl_td3_bc.py end to end (its defaults: --compile on CUDA, 256x256, batch 256) for
#      6 x 5000 updates on a synthetic 1M-transition D4RL file, with and without
#      --eval-in-background: wall time, train_seconds and TensorBoard's update timing give the
#      1M-update extrapolation.
#
#   bash benchmarks/gpu_goals.sh            # writes into $OUT (the device tool's folder) or log/
#   DEVICE=cpu ALGOS=bc EPOCHS=1 EPOCH_STEPS=200 BENCH_LIMIT=200 bash benchmarks/gpu_goals.sh
#                                           # a quick check of the script itself on a CPU
#
# Each part has its own time limit so that one slow compile cannot take the others' time.
set -uo pipefail

OUT_DIR="${OUT:-log}/gpu-goals"
mkdir -p "$OUT_DIR"
PYTHON="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
BENCH_LIMIT="${BENCH_LIMIT:-300}"
E2E_LIMIT="${E2E_LIMIT:-120}"
ALGOS="${ALGOS:-cql atari_cql}"  # TD3+BC: end to end in part 2
EXTRA="${EXTRA:-}"  # e.g. --twin-ensemble (compiles CQL twice)
EPOCHS="${EPOCHS:-6}"
EPOCH_STEPS="${EPOCH_STEPS:-5000}"

{
    date -u +"%Y-%m-%dT%H:%M:%SZ"
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU"
    "$PYTHON" -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
    nproc
} > "$OUT_DIR/machine.txt" 2>&1

echo "== 1. bench_updates (limit ${BENCH_LIMIT}s)"
timeout "$BENCH_LIMIT" "$PYTHON" benchmarks/bench_updates.py --device "$DEVICE" --seconds 1 \
    --rounds 2 --sizes full --algos $ALGOS $EXTRA \
    --transitions 1000000 --json "$OUT_DIR/bench.json" --markdown "$OUT_DIR/bench.md" \
    > "$OUT_DIR/bench.log" 2>&1
echo "exit $?"
grep '^{' "$OUT_DIR/bench.log" | cut -c1-400

echo "== 2. d4rl_td3_bc.py end to end (limit ${E2E_LIMIT}s per run)"
DATA="$OUT_DIR/synthetic-1m.hdf5"
data_file="$(realpath -m "$DATA")"
(cd benchmarks && "$PYTHON" -c "
from pathlib import Path
from bench_updates import write_d4rl_file
write_d4rl_file(Path('$data_file'), 1_000_000)
")
for mode in --no-eval-in-background --eval-in-background; do
    started=$(date +%s)
    data_path="$(realpath "$DATA")"
    log_dir="$(realpath "$OUT_DIR")/runs$mode"
    (cd examples/offline && timeout "$E2E_LIMIT" "$PYTHON" d4rl_td3_bc.py --task HalfCheetah-v2 \
        --expert-data-task "$data_path" --epoch "$EPOCHS" --epoch-num-steps "$EPOCH_STEPS" \
        --device "$DEVICE" --no-progress --logdir "$log_dir" "$mode") > "$OUT_DIR/e2e$mode.log" 2>&1
    status=$?
    echo "$mode: exit $status, wall $(($(date +%s) - started)) s"
    tail -3 "$OUT_DIR/e2e$mode.log"
done
rm -f "$DATA"  # 100 MB: not worth bringing back
find "$OUT_DIR" -name summary.json -exec grep -H '"train_seconds"' {} \;
