#!/usr/bin/env bash
# One GPU session's checks, in one go: the kernel tests on the GPU, the kernel and step benchmarks,
# the slerp accuracy table. Every stage has its own time limit and writes under $OUT (default
# bench/results/session-<time>), so a stage that runs out of time loses only itself.
#
#   OUT=/some/dir bash bench/gpu_session.sh            # ~6-9 min on an H100/H200
#
# Needs: torch with CUDA, triton, hypothesis, pytest (no network, no install: PYTHONPATH=.).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results/session-$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
export OUT PYTHONPATH=".:bench${PYTHONPATH:+:$PYTHONPATH}"

stage() {  # stage NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name rc=$rc $((SECONDS - t0))s" | tee -a "$OUT/stages.txt"
    tail -n 3 "$OUT/$name.log"
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python -c "import sys, torch, triton; print('python', sys.version.split()[0]); print('torch', torch.__version__, 'cuda', torch.version.cuda); print('triton', triton.__version__)"
    git rev-parse HEAD 2>/dev/null || echo "commit unknown"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

stage kernel-tests 150 python -m pytest tests/kernels -q -x -p no:cacheprovider
stage bench-kernels 200 python -m pytest bench/test_kernels.py -q -p no:cacheprovider
stage bench-step 240 python -m pytest bench/test_step.py -q -p no:cacheprovider
stage slerp-accuracy 60 python bench/slerp_accuracy.py --device cuda
echo "results in $OUT"
