#!/usr/bin/env bash
# The README's GPU benchmark rows in one run: training steps of both stages (eager and
# compiled, MFU beside the peak measured in the same run) and generation of one request and batches
# of 8 and 32, DDIM-64 and DPM-Solver++(2M)-16, eager and with CUDA graphs. Needs torch with CUDA and
# this repo (no Ray). About 5-8 minutes on one H100/H200; each row has its own time limit.
#
#   bash jobs/gpu_rows.sh > gpu_rows.jsonl              # on the GPU machine
#   SMALL=1 bash jobs/gpu_rows.sh cpu                   # the same commands at toy sizes, to check first
#   ROW_LIMIT=100 PYTHON=python3 bash jobs/gpu_rows.sh  # each row's limit in seconds (240 by default), interpreter
# Eager rows run first, so a lease that ends early still returns them.
set -uo pipefail
device=${1:-cuda}
cd "$(dirname "$0")"
if [[ "${SMALL:-0}" == 1 ]]; then
  cfg=tiny; diffusion_batch=8; ae_batch=4; seconds=5; limit=300
else
  cfg=paper; diffusion_batch=128; ae_batch=32; seconds=60; limit=${ROW_LIMIT:-240}
fi

row() {  # one benchmark invocation -> its JSON lines on stdout; a failure becomes a JSON line too
  echo "# $*" >&2
  local out
  if out=$(timeout "$limit" "${PYTHON:-python}" benchmark.py "$@" --device "$device" 2>/tmp/gpu_rows.err); then
    grep '^{' <<<"$out"
  else
    printf '{"failed": "%s", "rc": %d, "error": "%s"}\n' "$*" "$?" "$(tail -1 /tmp/gpu_rows.err | tr -d '"\\')"
  fi
}

"${PYTHON:-python}" -c "import torch; print('{\"torch\": \"%s\", \"device\": \"%s\"}' % (torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'))"
row train-step --config "$cfg" --batch "$diffusion_batch" --dtype auto --top 0
row train-step --stage autoencoder --config "$cfg" --batch "$ae_batch" --dtype auto --top 0
row generate --config "$cfg" --seconds "$seconds" --steps 64 --cfg 2 --dtypes auto --batch 1 8 32
row generate --config "$cfg" --seconds "$seconds" --steps 16 --cfg 2 --dtypes auto --batch 1 8 32 --sampler dpmpp-2m
row train-step --config "$cfg" --batch "$diffusion_batch" --dtype auto --top 0 --compile reduce-overhead
row generate --config "$cfg" --seconds "$seconds" --steps 16 --cfg 2 --dtypes auto --batch 1 --sampler dpmpp-2m --compile reduce-overhead
row train-step --stage autoencoder --config "$cfg" --batch "$ae_batch" --dtype auto --top 0 --compile default
