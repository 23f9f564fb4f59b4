#!/usr/bin/env bash
# Set up .venv (first time only), then run ruff and the whole test suite. .ci/run calls exactly this.
# Extra arguments go to pytest: bash scripts/test.sh -k config
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
"$ROOT/.venv/bin/ruff" check .
"$ROOT/.venv/bin/ruff" format --check .
exec "$ROOT/.venv/bin/python" -m pytest "$@"
