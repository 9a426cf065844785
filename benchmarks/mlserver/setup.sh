#!/usr/bin/env bash
# Create the separate virtualenv MLServer runs in (never driftloop's own venv: MLServer pins
# its own dependency versions). Idempotent: an existing venv with mlserver installed is reused.
#
#   benchmarks/mlserver/setup.sh [VENV_DIR]     (default: <repo>/.bench/mlserver-venv)
#
# uvloop 0.21.0 is pinned beside mlserver: with newer uvloop releases `mlserver start` fails to
# start. scikit-learn is pinned to driftloop's version so the joblib file written by driftloop's
# sklearn loads in MLServer's.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${1:-$repo/.bench/mlserver-venv}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
sklearn="$("$repo/.venv/bin/python" -c 'import sklearn; print(sklearn.__version__)' 2>/dev/null || echo 1.9.1)"

if [ -x "$venv/bin/mlserver" ]; then
  echo "$venv"
  exit 0
fi
mkdir -p "$(dirname "$venv")"
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet \
  "mlserver==1.7.1" "mlserver-sklearn==1.7.1" "uvloop==0.21.0" "scikit-learn==$sklearn"
echo "$venv"
