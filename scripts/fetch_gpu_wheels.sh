#!/usr/bin/env bash
# Fetch, where PyPI is reachable, what the GPU check (scripts/gpu_check.sh, docs/gpu.md) needs and
# a bare GPU machine lacks, into gpu_wheels/ (ignored by git): the wheels for its Python 3.12
# x86-64 image, this plugin's own wheel, requirements.txt naming them all, and a Fashion-MNIST
# subset (fashion-mnist/: 1,000 training and 200 test images of each class, drawn with seed 0
# from the official files of Debian's dataset-fashion-mnist, as gzipped IDX files under their
# original names). Prints the size of what travels to the GPU machine (at most 64 MiB).
#
#   bash scripts/fetch_gpu_wheels.sh          # PYTHON=... to use another interpreter than .venv's
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=gpu_wheels
LIMIT_MIB=64
# The GPU image has torch, torchvision, torchaudio, timm, transformers, tensorboard, scikit-learn,
# scikit-image, numpy, pyyaml, requests, click, protobuf, ... (.library/device/KINDS.md) but not
# these, which importing semilearn 0.3.2 imports: USB itself, its YAML reader and progress bar;
# wandb and aim (USB's hooks import both at import time) with what they import in turn. The
# versions are those this project's CPU environment runs; typing-extensions too, as pydantic 2.14
# needs 4.16 or later and the image's version is not recorded.
WHEELS=(
  semilearn==0.3.2 ruamel.yaml==0.17.40 ruamel.yaml.clib==0.2.15 progress==1.6.1
  wandb==0.31.0 pydantic==2.14.4 pydantic-core==2.50.5 typing-inspection==0.4.5
  annotated-types==0.8.0 typing-extensions==4.16.0 opentelemetry-api==1.45.2 platformdirs==4.14.9
  aim==3.29.1 aimrocks==0.5.2 restrictedpython==9.0 cachetools==8.0.2 fastapi==0.165.0
  starlette==1.10.0 sqlalchemy==2.1.9 pytz==2026.6 websockets==17.4
)
mkdir -p "$OUT"
rm -f "$OUT"/*.whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$OUT" "${WHEELS[@]}"
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$OUT" .
printf '%s\n' "${WHEELS[@]}" r2d2-usb > "$OUT/requirements.txt"
"$PY" -m r2d2_plugin.tools.gpu_check --write_data "$OUT/fashion-mnist"

mib() { awk '{s += $1} END {printf "%.1f", s / 1048576}'; }
wheels=$(stat -c %s "$OUT"/*.whl | mib)
data=$(stat -c %s "$OUT"/fashion-mnist/* | mib)
tree=$( (git ls-files --cached --others --exclude-standard; find "$OUT" -type f) | sort -u \
  | while read -r f; do [ -f "$f" ] && stat -c %s "$f"; done | mib)
echo "fetch_gpu_wheels: $OUT/ holds $wheels MiB of wheels and $data MiB of data; with the working tree, $tree MiB travel (limit $LIMIT_MIB MiB)"
awk -v t="$tree" -v l="$LIMIT_MIB" 'BEGIN {exit !(t <= l)}' || { echo "fetch_gpu_wheels: over $LIMIT_MIB MiB" >&2; exit 1; }
