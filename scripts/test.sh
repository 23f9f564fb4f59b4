#!/usr/bin/env bash
# Set up .venv (first time only), then run ruff and the whole test suite. .ci/run calls exactly this.
# Extra arguments go to pytest: bash scripts/test.sh -k config; bash scripts/test.sh -m "unit or compose" (the
# tiers: tests/conftest.py); a later -n wins (-n 0 runs in this process; --pdb does that by itself).
# pytest-xdist: one worker per core this process may use (-n auto; PYTEST_XDIST_AUTO_NUM_WORKERS=N overrides it),
# each on one thread (tests/conftest.py), so the workers fill the cores without oversubscribing them. --dist loadfile
# keeps a module on one worker: a module-scoped fixture (a trained run, the two-process DDP run) is built once, not
# once per worker, and the modules with the most tests start first.
#
# --slurm (opt-in; .ci/run passes it): first start a real single-node SLURM cluster on this machine
# (scripts/slurm/cluster.sh start --install: Debian's slurmctld, slurmd and munge, installed with apt-get if missing,
# which needs root), so that tests/test_slurm.py runs for real instead of being skipped; the cluster is stopped
# when the tests end. `bash scripts/test.sh --slurm -m slurm` runs just those tests.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SLURM=0
ARGS=()
for arg in "$@"; do
    if [ "$arg" = "--slurm" ]; then SLURM=1; else ARGS+=("$arg"); fi
done
bash "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
"$ROOT/.venv/bin/ruff" check .
"$ROOT/.venv/bin/ruff" format --check .
if [ "$SLURM" = 1 ]; then
    STARTED="$(bash "$ROOT/scripts/slurm/cluster.sh" start --install)"
    echo "$STARTED"
    eval "$(grep '^export SLURM_CONF=' <<< "$STARTED")"
    export RNNLAB_SLURM_REQUIRED=1  # a cluster that stops answering fails the slurm tests instead of skipping them
    trap 'bash "$ROOT/scripts/slurm/cluster.sh" stop' EXIT
fi
"$ROOT/.venv/bin/python" -m pytest -n auto --dist loadfile ${ARGS[@]+"${ARGS[@]}"}
