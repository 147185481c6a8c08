#!/usr/bin/env bash
# One GPU session's checks, in one go: the kernel tests on the GPU, the slerp accuracy table, the
# kernel benchmarks and the step benchmarks at the issues' headline size (batch 128, 32 px). Every
# stage has its own time limit, so a stage that runs out of time loses only itself; the stages'
# limits add up to 465 s, inside one 600 s device command with room for start-up.
#
#   GLICO_COMMIT=$(git rev-parse HEAD) OUT=/some/dir bash bench/gpu_session.sh
#
# What lands in $OUT (5 files; a remote device may return only a few): session.log (versions, every
# stage's output and exit status), and per benchmark group the results JSON (written when pytest
# finishes; SIGINT on time-out lets it finish) and the rows as they were measured (*-rows.jsonl).
# GLICO_COMMIT records the commit where the tree travels without .git. The full step grid (batch 512,
# 64 px) is `python -m pytest bench/test_step.py`.
#
# Needs: torch with CUDA, triton, hypothesis, pytest (no network, no install: PYTHONPATH=.).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results/session-$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
export OUT PYTHONPATH=".:bench${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
LOG="$OUT/session.log"

stage() {  # stage NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    echo "===== $name (limit ${limit}s): $*" >> "$LOG"
    # SIGINT, not SIGTERM: pytest then stops cleanly and still writes its results JSON.
    timeout -s INT -k 20 "$limit" "$@" >> "$LOG" 2>&1
    local rc=$?
    echo "===== $name rc=$rc $((SECONDS - t0))s" | tee -a "$LOG"
}

{
    echo "===== environment"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python -c "import sys, torch, triton; print('python', sys.version.split()[0]); print('torch', torch.__version__, 'cuda', torch.version.cuda); print('triton', triton.__version__)"
    echo "commit ${GLICO_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
} >> "$LOG" 2>&1
cat "$LOG"

# Parallel workers when pytest-xdist is there: every distinct kernel shape is a real compile on a GPU.
PARALLEL=()
python -c "import xdist" 2>/dev/null && PARALLEL=(-n 8)
stage kernel-tests 120 python -m pytest tests/kernels/test_kernel_gpu.py tests/kernels -q --maxfail=5 -p no:cacheprovider "${PARALLEL[@]}"
stage slerp-accuracy 45 python bench/slerp_accuracy.py --device cuda
stage bench-kernels 150 python -m pytest bench/test_kernels.py -q -p no:cacheprovider
stage bench-step 150 python -m pytest bench/test_step.py -q -p no:cacheprovider -k "B128-32px or targets"
echo "results in $OUT"
