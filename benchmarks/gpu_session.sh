#!/usr/bin/env bash
# The GPU figures of issue 14 in one call, for a session lent a GPU machine that has no internet (its image has torch,
# transformers, accelerate, safetensors and pillow, not diffusers, bitsandbytes or ftfy).
#
#   bash benchmarks/gpu_session.sh --download   # here, with the package index: the missing wheels into .whl/
#   bash benchmarks/gpu_session.sh              # there, from the repository root, with .whl carried along:
#                                               # installs them, prints the GPU, runs benchmarks/gpu_checks.py
#
# The wheels are requirements.txt's pins (Python 3.12, manylinux x86-64); .whl/ is kept out of git through
# .git/info/exclude. The log goes to $OUT/gpu_checks.log when $OUT is set (the device tool brings it back).
set -euo pipefail
cd "$(dirname "$0")/.."

pin() { grep -E "^$1==" requirements.txt; }  # the version the test suite runs against

if [ "${1:-}" = "--download" ]; then
    grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl \
        "$(pin diffusers)" "$(pin bitsandbytes)" "$(pin ftfy)" wcwidth importlib_metadata
    du -sh .whl
    exit 0
fi

[ -d .whl ] || { echo "No .whl folder: run 'bash benchmarks/gpu_session.sh --download' here first and carry .whl." >&2; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
log="${OUT:-/tmp}/gpu_checks.log"
python3 -m benchmarks.gpu_checks "$@" 2>&1 | tee "$log"
