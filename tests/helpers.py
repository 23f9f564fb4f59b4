"""Helpers shared by the tests (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HEAVY = ("torch", "lightning", "pytorch_lightning", "torchmetrics", "tensorboard")

# Runs rnnlab-train's entry point in a fresh interpreter, then reports its exit code and which heavy packages it
# imported: {"code": ..., "heavy": [...]} after the @@PROBE@@ marker on stdout.
PROBE = f"""
import json, sys
sys.argv = ["rnnlab-train", *json.loads(sys.argv[1])]
import rnnlab.cli
code = 0
try:
    rnnlab.cli.train_main()
except SystemExit as exit:
    code = exit.code or 0
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
print("@@PROBE@@" + json.dumps({{"code": code, "heavy": heavy}}))
"""


def probe(args: list[str], cwd: Path, **kwargs: Any) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """(the finished process, its probe report) of ``rnnlab-train *args`` run through :data:`PROBE`."""
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], cwd=cwd, capture_output=True, text=True,
                            timeout=120, **kwargs)  # fmt: skip
    return result, json.loads(result.stdout.rpartition("@@PROBE@@")[2])


def sweep_dir(cwd: Path) -> Path:
    """The one sweep directory under ``cwd/out/multiruns``."""
    (only,) = (cwd / "out" / "multiruns").iterdir()
    return only


def job_dirs(sweep: Path) -> list[Path]:
    """The job directories of a sweep, in job-number order."""
    return sorted((p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: int(p.name.split("_", 1)[0]))  # fmt: skip


def central_difference(p: Any, idx: tuple[int, ...], loss: Any, eps: float = 1e-6) -> float:
    """(loss(p[idx] + eps) - loss(p[idx] - eps)) / 2 eps for a parameter array ``p`` changed in place and restored."""
    keep = p[idx]
    p[idx] = keep + eps
    up = loss()
    p[idx] = keep - eps
    down = loss()
    p[idx] = keep
    return (up - down) / (2 * eps)
