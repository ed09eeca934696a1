#!/usr/bin/env bash
# GPU figures in one prepared run of about 10 minutes: bench/gpu.py (see its docstring) writes results/gpu.json, from
# which the home page's GPU table and the chapters' measured run times are made. Commit that file.
#
#   bash bench/gpu.sh [--steps 20] [nbs/02_training.ipynb ...]
#
# On a machine with the project installed (pip install -e ".[dev]"), that is all. On a lent GPU machine that cannot
# reach a package index, the packages its image lacks travel as wheels in .whl/ (see /work/.library/device/README.md):
# they are installed into /tmp/site first, and llmstart itself is used from this checkout. Where $OUT is set (the
# device tool's folder of files that come back), results/gpu.json is copied there too.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline PYTHONUNBUFFERED=1
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
python3 - <<'PY'
import torch
assert torch.cuda.is_available(), "bench/gpu.sh measures a GPU and torch sees none"
print(torch.__version__, torch.cuda.get_device_name())
PY
status=0
timeout 570 python3 bench/gpu.py "$@" || status=$?
if [ -n "${OUT:-}" ] && [ -f results/gpu.json ]; then cp results/gpu.json "$OUT/"; fi
exit $status
