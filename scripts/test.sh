#!/usr/bin/env bash
# The test suite: set up (virtualenv, test extras, Fashion-MNIST) and run pytest. Extra arguments go to
# pytest (e.g. scripts/test.sh -m slow for the slow tests). .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=test source scripts/setup_env.sh
export TF_CPP_MIN_LOG_LEVEL=2 CUDA_VISIBLE_DEVICES=""
exec "$VENV/bin/python" -m pytest -q "$@"
