#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv. Idempotent: a second run with an unchanged
# pyproject.toml does nothing. Sourced by scripts/quickstart.sh and scripts/test.sh.
#
#   PYTHON=python3.12 bash scripts/bootstrap.sh     # pick the interpreter (3.11 or newer)
#   RNNLAB_TORCH="torch==2.14.1" bash scripts/...   # pick the torch build to install first
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RNNLAB_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "rnnlab: error: needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "rnnlab: creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi

STAMP="$VENV/.rnnlab-installed"
WANT="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
    exit 0
fi

PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
# torch first, so that the project's range (torch>=2.4,<2.15) is already met: without a GPU the small CPU
# build (2.13.0 on this project's machines) instead of a multi-GB CUDA build.
if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
    if [ -n "${RNNLAB_TORCH:-}" ]; then
        TORCH_SPEC="$RNNLAB_TORCH"
    elif command -v nvidia-smi >/dev/null 2>&1; then
        TORCH_SPEC="torch>=2.4,<2.15"
    else
        TORCH_SPEC="torch==2.13.0"
    fi
    echo "rnnlab: installing $TORCH_SPEC"
    "${PIP[@]}" install --quiet "$TORCH_SPEC"
fi
echo "rnnlab: installing rnnlab and its dependencies"
"${PIP[@]}" install --quiet -e "$ROOT[dev]"
echo "$WANT" > "$STAMP"
