#!/usr/bin/env bash
# The GPU measurements of docs/benchmarks.md, in one go (parts 1-5 about 6 minutes on one H100;
# parts 6 and 7, not yet timed on a GPU, an estimated 4 more, mostly torch.compile's compiling):
#
#   bash benchmarks/gpu_suite.sh [OUT_DIR]
#   PARTS="6 7" bash benchmarks/gpu_suite.sh OTHER_OUT_DIR   # only the parts named (numbers)
#
# 1. the harness on the GPU: every contender's loss after one step agrees (float32, exact);
# 2. LeNet-5 and AlexNet steps for funcnn, raw JAX, stax, Flax linen and PyTorch CUDA in
#    float32 (exact), tf32 and bfloat16, interleaved rounds, medians;
# 3. the MLP step and the small-model epoch for every contender (float32);
# 4. fit_breakdown.py: fit's epoch with its shuffle and guard on and off against a plain scan;
# 5. gpu_check.py: LeNet on digits and an AlexNet step trained on the CPU and the GPU agree;
# 6. fit_overhead.py: fit's epoch against a hand-written JAX training loop, with and without
#    validation data (spiral MLP and LeNet on digits);
# 7. torch_best.py: PyTorch's LeNet-5 and AlexNet steps with torch.compile, cudnn.benchmark,
#    channels_last, autocast bfloat16, fused SGD, CUDA graphs, against funcnn float32 and bfloat16.
# PARTS splits the suite over two commands where one may run ten minutes at most; give each its
# own OUT_DIR (the log of each is OUT_DIR/gpu-log.txt).
# Hand-written JAX is listed first: on a GPU the first contender to compile a shape pays XLA's
# autotuning, which the others then find in the process's cache (see docs/benchmarks.md).
# Each part has its own time limit, so one that hangs does not take the others with it; a part
# that fails is named at the end and makes the exit status 1, after every other part has run.
# The JSON results and the whole log go to OUT_DIR (default: gpu-results/, relative to the
# directory it is called from).
set -u -o pipefail
out="${1:-${OUT:-gpu-results}}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
rm -f "$out"/gpu-*.json  # no stale results from an earlier run
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 TF_CPP_MIN_LOG_LEVEL=2
py="${PYTHON:-python3}"
parts="${PARTS:-}"
failed=()
part() {  # part TITLE LIMIT_S COMMAND...: run one part; a failure is noted, not fatal
  local title=$1 limit=$2 rc
  shift 2
  if [ -n "$parts" ] && [[ " $parts " != *" ${title%%.*} "* ]]; then
    return 0  # not among PARTS
  fi
  echo "== $title"
  timeout "$limit" "$@"
  rc=$?
  if [ "$rc" -ne 0 ]; then
    failed+=("$title (exit $rc$([ "$rc" -eq 124 ] && echo ", timed out after ${limit}s"))")
  fi
}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  "$py" -c "import jax, torch; print('jax', jax.__version__, jax.devices()); print('torch', torch.__version__, torch.cuda.get_device_name())"
  steps="lenet,alexnet"
  who="raw_jax,funcnn,stax,flax_linen,torch"
  part "1. harness check on the GPU (float32)" 150 \
    "$py" benchmarks/run.py --tiny --device gpu --workloads "$steps" --contenders "$who"
  for dtype in float32 tf32 bfloat16; do
    part "2. $dtype steps" 150 \
      "$py" benchmarks/run.py --quick --rounds 7 --device gpu --dtype "$dtype" \
      --workloads "$steps" --contenders "$who" --json "$out/gpu-$dtype.json"
  done
  part "3. every contender, float32: MLP step and small-model epoch" 150 \
    "$py" benchmarks/run.py --quick --device gpu --workloads mlp,epoch \
    --contenders "raw_jax,funcnn,raw_jax_shuffled,raw_jax_loop,stax,flax_linen,flax_nnx,equinox,torch" \
    --json "$out/gpu-mlp-epoch.json"
  part "4. fit_breakdown.py" 150 "$py" benchmarks/fit_breakdown.py --rounds 9 --device gpu
  part "5. gpu_check.py" 150 "$py" benchmarks/gpu_check.py --require-gpu
  part "6. fit_overhead.py" 150 "$py" benchmarks/fit_overhead.py --rounds 5 --device gpu
  part "7. torch_best.py" 360 "$py" benchmarks/torch_best.py --device cuda --quick
  if [ "${#failed[@]}" -ne 0 ]; then
    printf 'FAILED: %s\n' "${failed[@]}"
    exit 1
  fi
  echo "all parts succeeded"
} 2>&1 | tee "$out/gpu-log.txt"
