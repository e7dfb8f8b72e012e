#!/usr/bin/env bash
# The test suite: set up (virtualenv, test extras, Fashion-MNIST) and run pytest. Extra arguments go to
# pytest (e.g. scripts/test.sh -m slow for the slow tests). .ci/run calls exactly this.
# Tests run in TFSSL_TEST_WORKERS (default 2) pytest-xdist processes, one test file per process at a
# time: most of a test's time is single-threaded graph tracing, so two processes keep both cores busy.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=test source scripts/setup_env.sh
export TF_CPP_MIN_LOG_LEVEL=2 CUDA_VISIBLE_DEVICES=""
exec "$VENV/bin/python" -m pytest -q -n "${TFSSL_TEST_WORKERS:-2}" --dist=loadfile "$@"
