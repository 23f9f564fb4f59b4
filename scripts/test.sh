#!/usr/bin/env bash
# Set up .venv (first time only), then run ruff and the whole test suite. .ci/run calls exactly this.
# Extra arguments go to pytest: bash scripts/test.sh -k config; bash scripts/test.sh -m "unit or compose" (the
# tiers: tests/conftest.py); a later -n wins (-n 0 runs in this process; --pdb does that by itself).
# pytest-xdist: one worker per core this process may use (-n auto; PYTEST_XDIST_AUTO_NUM_WORKERS=N overrides it),
# each on one thread (tests/conftest.py), so the workers fill the cores without oversubscribing them. --dist loadfile
# keeps a module on one worker: a module-scoped fixture (a trained run, the two-process DDP run) is built once, not
# once per worker, and the modules with the most tests start first.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
"$ROOT/.venv/bin/ruff" check .
"$ROOT/.venv/bin/ruff" format --check .
exec "$ROOT/.venv/bin/python" -m pytest -n auto --dist loadfile "$@"
