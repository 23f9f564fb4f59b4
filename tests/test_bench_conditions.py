"""The comparison study's speed numbers are taken under the conditions its report states: the timing pass runs with
glibc's default allocation (an earlier version timed torch under a fixed MALLOC_MMAP_THRESHOLD_, twice as slow),
memory in separate fresh processes, and the report refuses measurements taken any other way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--cells", "rnn", "--hidden", "8", "--lengths", "4", "--dtypes", "float32", "--iters", "1", "--rounds", "1",
        "--warmup", "0", "--batch", "4", "--input", "3"]  # fmt: skip


def bench(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> dict:
    out = tmp_path / "grid.json"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    environment.update(env or {})
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_grid.py"), *TINY, *extra, "--json", str(out)],
                          env=environment, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.cli
def test_the_timing_pass_runs_with_the_default_allocator(tmp_path):
    result = bench(tmp_path)
    timing = result["conditions"]["timing"]
    assert timing["allocator"] == "glibc default"  # bench_grid no longer re-executes itself with a mmap threshold
    assert result["conditions"]["memory"]["process"] == "a fresh process per backend and grid point"
    (row,) = result["rows"]
    for key in ("numpy_ms", "torch_ms", "numpy_rss_mb", "torch_rss_mb", "numpy_alloc_mb", "torch_alloc_mb"):
        assert row[key] is not None, key
        assert row[key] >= 0, key
    assert row["numpy_alloc_mb"] > 0
    assert row["torch_alloc_mb"] > 0
    assert result["environment"]["torch"]["version"]  # the report's record of the machine and libraries


@pytest.mark.cli
def test_the_report_refuses_timings_taken_under_a_tuned_allocator(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    from study_numpy_vs_torch import check_timing_conditions

    tuned = bench(tmp_path, "--no-memory", env={"MALLOC_MMAP_THRESHOLD_": "131072"})
    assert tuned["conditions"]["timing"]["allocator"] == {"MALLOC_MMAP_THRESHOLD_": "131072"}  # recorded as it was
    with pytest.raises(SystemExit, match=r"taken with a tuned allocator"):
        check_timing_conditions(tuned)
    assert check_timing_conditions(bench(tmp_path, "--no-memory"))["allocator"] == "glibc default"
