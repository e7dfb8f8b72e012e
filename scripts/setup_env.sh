# Sourced by demo.sh and test.sh: a virtualenv with tfssl installed, and Fashion-MNIST on disk.
#   VENV (default .venv)  where the virtualenv lives; EXTRAS (default none) pip extras to install.
set -euo pipefail
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing Debian's dataset-fashion-mnist (real Fashion-MNIST, offline)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "[setup] no apt as root: Fashion-MNIST will be downloaded by Keras on first use"
  fi
fi

# Headless chromium renders tfssl-report's page in tests/report/test_report_browser.py (skipped without it).
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing Debian's chromium (headless browser test of tfssl-report)"
    { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ||
      echo "[setup] could not install chromium: the browser test of tfssl-report will be skipped"
  else
    echo "[setup] no apt as root: without chromium the browser test of tfssl-report is skipped"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
echo "[setup] pip install -e .${EXTRAS:+[$EXTRAS]} (TensorFlow is large: the first time takes a minute or two)"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q -e ".${EXTRAS:+[$EXTRAS]}"
export PATH="$PWD/$VENV/bin:$PATH"
