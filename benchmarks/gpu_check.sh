#!/usr/bin/env bash
# The one prepared GPU check: CUDA equality tests of PruneRNNVectorEnv (fp32 and bf16), then
# sequential vs vector env timings at K in {1, 16, 64} for the pydoc-char model (and the custom GRU task), then
# the bf16 score deviation and speed-up, all in one call.
#
# Run from the repository root:  python -m benchmarks gpu_check  (or: bash benchmarks/gpu_check.sh)
# Results go to $OUT (default benchmarks/results/gpu_check): gpu.txt (card, driver), equality_tests.txt,
# vector_speed/, vector_speed_bf16/ and precision/ (results.json, results.md each), gpu_check.json (summary).
# Without CUDA it writes {"skipped": ...} and exits 0.
#
# The pydoc-char model trains on first use (minutes, on the CPU). To skip that on a bare machine, copy the cached
# model into the repository first and carry it:
#   mkdir -p .gpu_cache && cp ~/.cache/prune-rnn-gym/pydoc-char-*.pt .gpu_cache/   (then carry ".gpu_cache")
# Environment: PYTHON (default: .venv/bin/python if present, else python3), OUT, KS (default "1 16 64"),
# TASKS (default "pydoc-char gru"), REPS (default 5).
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/gpu_check}"
mkdir -p "$OUT"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -d .gpu_cache ] && export PRUNE_RNN_CACHE="$PWD/.gpu_cache"
KS="${KS:-1 16 64}"
TASKS="${TASKS:-pydoc-char gru}"
REPS="${REPS:-5}"

skip() {
  printf '{"skipped": "%s"}\n' "$1" > "$OUT/gpu_check.json"
  echo "gpu_check: skipped: $1"
  exit 0
}

"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
  || skip "CUDA is not available to $PYTHON (torch missing or CPU-only)"
"$PYTHON" -c "import gymnasium, stable_baselines3, pytest" 2>/dev/null \
  || skip "gymnasium, stable-baselines3 or pytest missing for $PYTHON"

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
} > "$OUT/gpu.txt"
cat "$OUT/gpu.txt"

# 1. Equality on CUDA: the vector env's observations and rewards equal K independent envs' to 1e-5.
start=$(date +%s)
"$PYTHON" -m pytest tests/test_vector_env.py -q -p no:cacheprovider -k "cuda" 2>&1 | tail -n 30 \
  > "$OUT/equality_tests.txt"
eq_status=${PIPESTATUS[0]}
cat "$OUT/equality_tests.txt"

# 2. Timings: sequential env vs vector env (batched and auto) at each K, medians of interleaved repetitions.
# shellcheck disable=SC2086
"$PYTHON" -m benchmarks.vector_speed --device cuda --tasks $TASKS --ks $KS --reps "$REPS" --threads 4 \
  --out "$OUT/vector_speed"
speed_status=$?
# The same with bf16 autocast, for the pydoc-char model at the largest K only.
"$PYTHON" -m benchmarks.vector_speed --device cuda --precision bf16 --tasks pydoc-char --ks "${KS##* }" \
  --reps "$REPS" --threads 4 --out "$OUT/vector_speed_bf16" || speed_status=1

# 3. bf16 autocast on the GPU: score deviation and rank agreement against fp32, and the floor's speed-up.
# shellcheck disable=SC2086
"$PYTHON" -m benchmarks.precision --device cuda --tasks $TASKS --candidates 40 --reps "$REPS" \
  --out "$OUT/precision"
precision_status=$?

printf '{"card": "%s", "equality_tests_exit": %d, "vector_speed_exit": %d, "precision_exit": %d, "seconds": %d}\n' \
  "$(head -n 2 "$OUT/gpu.txt" | tail -n 1 | cut -d, -f1)" "$eq_status" "$speed_status" "$precision_status" \
  "$(( $(date +%s) - start ))" > "$OUT/gpu_check.json"
cat "$OUT/gpu_check.json"
exit $(( eq_status || speed_status || precision_status ))
