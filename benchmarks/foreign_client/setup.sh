#!/usr/bin/env bash
# Create the separate virtualenv the foreign-client check runs in (never driftloop's own venv:
# tritonclient's gRPC stubs need protobuf < 7 and register the same `inference.*` descriptor
# names as driftloop's generated code, so the two cannot share a process).
# Idempotent: an existing venv with tritonclient installed is reused. Pinned, from the
# package index pip is configured with (PyPI by default).
#
#   benchmarks/foreign_client/setup.sh [VENV_DIR]   (default: <repo>/.bench/foreign-client-venv)
#
# WITH_KSERVE=1 also installs the KServe SDK (kserve, its InferenceGRPCClient) into the venv.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${1:-$repo/.bench/foreign-client-venv}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3

TRITONCLIENT="tritonclient[grpc]==2.73.0"
PROTOBUF="protobuf==6.33.6"
KSERVE="kserve==0.21.0"

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import tritonclient.grpc" 2>/dev/null; then
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet "$TRITONCLIENT" "$PROTOBUF"
fi
if [ "${WITH_KSERVE:-0}" = "1" ] && ! "$venv/bin/python" -c "import kserve" 2>/dev/null; then
  "$venv/bin/pip" install --quiet "$KSERVE" "$PROTOBUF"
fi
echo "$venv"
