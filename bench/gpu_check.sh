#!/usr/bin/env bash
# The GPU session's one script (docs/gpu.md "What a GPU session should run"; bench/gpu_check.py
# lists the steps). On the GPU check machine, which has torch but no vLLM, Ray or DeepSpeed, it first
# installs the stack from the pieces ../shared/gpu/build-stack.sh made, if they were copied to /tmp/b
# and not installed yet; elsewhere it uses the environment it runs in.
#
#   bench/gpu_check.sh MODEL_DIR [--out DIR] [--dry-run]
#
# Writes DIR/gpu-check.json and the jobs' folders; the last line names DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f /tmp/b/install.sh ] && [ ! -d /tmp/site ]; then
  bash /tmp/b/install.sh
fi
if [ -d /tmp/site ]; then
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PATH="/tmp/site/bin:$PATH"
fi
PYTHON=${PYTHON:-python3}
if [ -x .venv/bin/python ] && [ ! -d /tmp/site ]; then PYTHON=.venv/bin/python; fi
exec "$PYTHON" -m bench.gpu_check "$@"
