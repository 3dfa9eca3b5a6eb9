#!/usr/bin/env bash
# Profile the jobs' engine on this machine's GPU (run on the H100 device machine): vLLM where it
# is installed, else the built-in runtime (ENGINE=static|vllm picks one), for 1B, 8B and 32B-class
# models, plus eager transformers generate() as the baseline.
# Rows go to ${OUT:-.}/profiles.csv; scheduler/data/profiles.csv holds the committed ones.
set -euo pipefail
out="${OUT:-.}/profiles.csv"
EAGER="${EAGER-llama-3-8b}"
py="${PYTHON:-python3}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$py" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
for model in ${MODELS:-llama-3.2-1b llama-3-8b qwen2.5-32b}; do
  "$py" -m scheduler.profiler --model "$model" --gpu "${GPU:-H100}" --batch "${BATCHES:-1,8,32,64}" \
    --input-tokens "${INPUTS:-512,2048}" --output-tokens 128 --engine "${ENGINE:-auto}" --out "$out"
done
if [ -n "$EAGER" ]; then
  "$py" -m scheduler.profiler --model "$EAGER" --engine eager --gpu "${GPU:-H100}" --batch 1,8 \
    --input-tokens 512 --output-tokens 64 --out "${OUT:-.}/eager.csv"
fi
