"""scripts/study_numpy_vs_torch.py end to end in its quick mode: the controlled sweep through the real CLI, then the
report. In float64 with the same weights, data and optimizer, the two backends' curves must coincide."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cli
ROOT = Path(__file__).resolve().parent.parent


def test_quick_controlled_study_writes_a_report_whose_backends_coincide(tmp_path):
    work, out = tmp_path / "work", tmp_path / "report"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RNNLAB_CACHE_DIR": os.environ["RNNLAB_CACHE_DIR"]}
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "study_numpy_vs_torch.py"), "--quick", "--stages", "controlled,report",
         "--work", str(work), "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    readme = (out / "README.md").read_text()
    section = readme.split("## 2. The controlled setting")[1].split("## 3.")[0]
    rows = [line for line in section.splitlines() if re.match(r"\| (sgd|adam) \|", line)]
    assert len(rows) == 8  # quick mode: rnn, gru x uni, bi x sgd, adam; one layer
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        acc_torch, acc_numpy, backends, torch_floor, numpy_floor = cells[5], cells[6], cells[7], cells[8], cells[9]
        assert acc_torch == acc_numpy, row
        assert float(backends) < 1e-9, row  # float64: every training loss agrees to rounding
        assert float(torch_floor) < 1e-9, row  # the noise floor was measured: torch with another thread count
        assert numpy_floor != "-", row
    for name in ("controlled_sgd.png", "noise_floor_sgd.png", "noise_floor_adam.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG")
    assert (out / "controlled_report" / "README.md").is_file()
    # no stage ran but the controlled one: the other parts say nothing rather than inventing numbers
    assert "## 3. Speed and memory\n\n## 4." in readme
