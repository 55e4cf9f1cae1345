#!/usr/bin/env bash
# The GPU checks of the project in one call (for a lent machine with one GPU and its own
# PyTorch and transformers): the extraction benchmark at the paper's shapes and the scoring
# benchmark with torch on the GPU. Logs go to $OUT (or ./gpu-logs).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
out=${OUT:-gpu-logs}
mkdir -p "$out"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
  python3 - <<'PY'
import torch
a = torch.randn(256, 128, device="cuda").bfloat16()
try:
    torch.mm(a.T, a, out_dtype=torch.float32)
    print("torch.mm(..., out_dtype=float32) on bf16: supported (tensor cores, float32 output)")
except Exception as error:
    print("torch.mm out_dtype unsupported:", type(error).__name__, str(error)[:120])
PY
} 2>&1 | tee "$out/env.txt"
python3 benchmarks/extract_ops.py --shape 32 256 4096 --shape 64 256 896 2>&1 | tee "$out/extract-ops.txt"
# Once-per-run costs and the steady state: is the 8B gap a fixed cost (the 17.7 GB of sums)?
python3 benchmarks/extract_ops.py --fixed 25 896 --fixed 33 4096 2>&1 | tee "$out/extract-fixed.txt"
[ -n "${SKIP_MARGINAL:-}" ] || python3 benchmarks/extract.py --device cuda --shapes qwen2-0.5b llama3-8b \
  --marginal 128 512 --precisions split 2>&1 | tee "$out/extract-marginal.txt"
# OVERLAP= (set, empty) leaves out the moments(overlap=True) contender.
precisions=${PRECISIONS:-split}  # "auto" on a GPU; tf32x3 was slower and less accurate in run 2
python3 benchmarks/extract.py --device cuda --shapes qwen2-0.5b --batch-size 64 --texts 1024 --repeats ${REPEATS:-3} \
  --precisions $precisions ${OVERLAP---overlap} 2>&1 | tee "$out/extract-qwen2.txt"
python3 benchmarks/extract.py --device cuda --shapes llama3-8b --batch-size 32 --texts 512 --repeats ${REPEATS:-3} \
  --precisions $precisions ${OVERLAP---overlap} 2>&1 | tee "$out/extract-llama3.txt"
# The scoring benchmark was measured in run 1; RUN_SCORE=1 repeats it.
[ -z "${RUN_SCORE:-}" ] || python3 benchmarks/score.py --skip-small --repeats 3 2>&1 | tee "$out/score.txt"
