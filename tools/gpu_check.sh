#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one go (under 5 minutes on one H200), from the repository root:
#   1. the tests marked `cuda` (skipped on a machine without a GPU): each computation on the GPU against
#      the CPU's, the captured AEVB step against the eager one bit for bit, batched runs and runs trained together against single runs,
#      the compiled by-hand wake-sleep step against autograd's;
#   2. the CUDA benchmark: ours (one captured graph), the pytorch/examples-style eager loop on the GPU and the
#      products-only limit, in one run, with the GPU's name (results/benchmarks_cuda.json's form; CHECK_BENCHMARK=0 leaves it out,
#      CHECK_ONLY=name,... measures only those workloads);
# everything it writes goes to $OUT (default gpu_check/): gpu_tests.log, benchmarks_cuda.json, benchmark.log.
#
# Needs: torch with CUDA, numpy, scipy, tqdm, pytest (a machine without pytest: carry its wheels, see
# docs/performance.md), the data in $AEVB_DATA_DIR (default: data/ in the repository).
set -uo pipefail
out=${OUT:-gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python -c "import torch, sys; ok = torch.cuda.is_available(); print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0) if ok else 'no GPU'); sys.exit(0 if ok else 1)" \
  || { echo "gpu_check: torch finds no CUDA GPU here; run this on a GPU machine" >&2; exit 2; }
python -c "import pytest" 2>/dev/null || { echo "gpu_check: pytest is not installed; see docs/performance.md" >&2; exit 2; }
status=0
python -m pytest -q -p no:cacheprovider -m cuda -rs tests/test_device.py tests/test_batched.py tests/test_together.py tests/test_algorithms.py 2>&1 | tee "$out/gpu_tests.log" || status=1
if [ "${CHECK_BENCHMARK:-1}" != 0 ]; then  # 0: the tests only (about 70 s of the 170)
  # shellcheck disable=SC2086
  python -m vae_utils benchmark --device cuda --repeats 3 --min-time 1 ${CHECK_ONLY:+--only "$CHECK_ONLY"} \
    --out "$out/benchmarks_cuda.json" 2>&1 \
    | tee "$out/benchmark.log" || status=1
fi
exit $status
