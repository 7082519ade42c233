#!/usr/bin/env bash
# The open GPU questions of the project in one call, so that a session lent a GPU for a few
# minutes can answer them at once (benchmarks/README.md, "Goals"; the results issues' GPU costs):
#
#   1. bench_updates.py, full size, every D4RL algorithm the benchmark knows (IL, BCQ, CQL,
#      TD3+BC, IQL, ReBRAC): project, fast (compiled; its compile time) and plain upd/s. This
#      gives what the paper protocol (1M gradient steps) costs per run on one GPU, and whether
#      Inductor now compiles the full-size CQL graph.
#   2. bench_updates.py, the Atari rows (Nature CNN, batch 32): one 10k-update epoch's cost.
#   3. d4rl_cql.py end to end (defaults: --compile on CUDA, 3 x 256, batch 256) on a synthetic
#      1M-transition D4RL file: does the script's compiled path run, and at what rate.
#   4. atari_qrdqn.py online on Pong for a few thousand env steps: env steps/s of the expert's
#      training on this machine (the Atari chain's longest step).
#
#   bash benchmarks/gpu_goals.sh     # writes into $OUT/gpu-goals (the device tool) or log/gpu-goals
#   DEVICE=cpu ALGOS=bc ATARI_ALGOS=atari_il E2E_EPOCHS=1 E2E_STEPS=100 QRDQN_STEPS=200 \
#       bash benchmarks/gpu_goals.sh  # a quick check of the script itself on a CPU
#
# Each part has its own time limit, so that one slow compile cannot take the others' time; a cut
# benchmark still leaves the rows it finished (one JSON line each in its log).
set -uo pipefail

OUT_DIR="${OUT:-log}/gpu-goals"
mkdir -p "$OUT_DIR"
PYTHON="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
ALGOS="${ALGOS:-bc td3_bc iql rebrac bcq cql}"
ATARI_ALGOS="${ATARI_ALGOS:-atari_cql atari_crr atari_il atari_bcq}"
BENCH_LIMIT="${BENCH_LIMIT:-250}"
ATARI_LIMIT="${ATARI_LIMIT:-100}"
E2E_LIMIT="${E2E_LIMIT:-90}"
E2E_EPOCHS="${E2E_EPOCHS:-3}"
E2E_STEPS="${E2E_STEPS:-2000}"
QRDQN_LIMIT="${QRDQN_LIMIT:-90}"
QRDQN_STEPS="${QRDQN_STEPS:-10000}"

{
    date -u +"%Y-%m-%dT%H:%M:%SZ"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
        || echo "no GPU"
    "$PYTHON" -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
    echo "cores $(nproc)"
} > "$OUT_DIR/machine.txt" 2>&1
cat "$OUT_DIR/machine.txt"

# the benchmark refuses names it does not know: keep those it has (older checkouts lack some)
known=$("$PYTHON" benchmarks/bench_updates.py --help | tr -d '\n' | grep -o '{[^}]*}' | head -1)
algos=$(for a in $ALGOS; do [[ "$known" == *"$a"* ]] && printf '%s ' "$a"; done)

part() {  # part NAME LIMIT COMMAND...: run with a time limit, log to $OUT_DIR/NAME.log
    local name=$1 limit=$2 started
    shift 2
    started=$(date +%s)
    echo "== $name (limit ${limit}s): $*"
    timeout "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
    echo "$name: exit $?, $(($(date +%s) - started)) s"
    grep '^{' "$OUT_DIR/$name.log" | cut -c1-300
}

part bench "$BENCH_LIMIT" "$PYTHON" benchmarks/bench_updates.py --device "$DEVICE" --seconds 1 \
    --rounds 1 --sizes full --algos $algos --transitions 1000000 \
    --json "$OUT_DIR/bench.json" --markdown "$OUT_DIR/bench.md"

part atari "$ATARI_LIMIT" "$PYTHON" benchmarks/bench_updates.py --device "$DEVICE" --seconds 1 \
    --rounds 1 --algos $ATARI_ALGOS --json "$OUT_DIR/atari.json" --markdown "$OUT_DIR/atari.md"

data="$(realpath -m "$OUT_DIR/synthetic-1m.hdf5")"
(cd benchmarks && "$PYTHON" -c "
from pathlib import Path
from bench_updates import write_d4rl_file
write_d4rl_file(Path('$data'), 1_000_000)
")
part e2e_cql "$E2E_LIMIT" "$PYTHON" examples/offline/d4rl_cql.py --task HalfCheetah-v2 \
    --expert-data-task "$data" --epoch "$E2E_EPOCHS" --epoch-num-steps "$E2E_STEPS" \
    --device "$DEVICE" --no-progress --logdir "$(realpath -m "$OUT_DIR/runs")"
tail -3 "$OUT_DIR/e2e_cql.log"
rm -f "$data"  # 100 MB: not worth bringing back

part qrdqn "$QRDQN_LIMIT" "$PYTHON" examples/atari/atari_qrdqn.py --task PongNoFrameskip-v4 \
    --epoch 1 --epoch-num-steps "$QRDQN_STEPS" --test-num 2 --device "$DEVICE" \
    --logdir "$(realpath -m "$OUT_DIR/runs")"
tail -3 "$OUT_DIR/qrdqn.log"
find "$OUT_DIR" -name summary.json -exec grep -H '"train_seconds"' {} \;
