#!/usr/bin/env bash
# The GPU check (docs/gpu.md): installs the wheels that scripts/fetch_gpu_wheels.sh put in
# gpu_wheels/ (no network needed; skipped where there is no gpu_wheels/, and the machine's own
# packages are used) into a folder of their own put first on PYTHONPATH (the machine's
# environment is left as it is), then runs r2d2_plugin.tools.gpu_check, which writes
# results/gpu/ and prints one summary line. Arguments go to gpu_check (e.g. --out DIR).
# Without a CUDA device it stops at once, installing and writing nothing, with a non-zero status.
#
#   bash scripts/gpu_check.sh               # PYTHON=... to use another interpreter than python3
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${GPU_CHECK_SITE:-/tmp/gpu_check_site}
if ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  echo "gpu_check: no CUDA device is visible to $PY's torch; this check measures the plugin's CUDA" \
    "path and stops here (nothing installed, nothing written). Run it on a machine with an NVIDIA" \
    "GPU and a CUDA build of torch (docs/gpu.md)." >&2
  exit 1
fi
if [ -f gpu_wheels/requirements.txt ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" \
    --find-links gpu_wheels -r gpu_wheels/requirements.txt
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$PY" -m r2d2_plugin.tools.gpu_check "$@"
