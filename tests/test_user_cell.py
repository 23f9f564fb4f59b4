"""Your own cell, end to end (docs/extending.md, "Your own cell, step by step"): the documented example,
docs/examples/my_cells.py, copied into a directory of its own and used from the real command line. rnnlab-gradcheck
passes on it; it trains a character language model and (in a sweep over both backends) a classifier, with the two
backends' per-step losses equal in float64; rnnlab-generate, a resume and rnnlab-report find the cell from the
plug-in list the run recorded, without plugins= repeated. The file is copied, not rewritten here, so the page and
the test cannot drift apart; the code blocks of the page's section are checked against the file."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import job_dirs, sweep_dir
from test_guard import train_losses

pytestmark = pytest.mark.cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "my_cells.py"
BIN = Path(sys.executable).parent
CELL = ("plugins=[my_cells]", "model.cell=leaky_rnn")
SMALL = ("model.hidden_size=8", "model.embed_dim=8", "trainer.precision=64", "threads=1", "logger=csv",
         "trainer.max_epochs=null", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
         "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "print_sample=false")  # fmt: skip
LM = ("task=language_model", "data=text_file", "data.path=corpus.txt", "data.seq_len=16", "data.batch_size=8",
      "trainer.val_check_interval=3", "trainer.check_val_every_n_epoch=null")  # fmt: skip
LM_STEPS = {"numpy": 6, "torch": 9}  # the NumPy run stops at 6, then resumes to 9: the torch run is the whole one


def run(program: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["RNNLAB_OUTPUT_DIR"] = str(cwd / "out")
    return subprocess.run([str(BIN / program), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def run_dir(result: subprocess.CompletedProcess[str], cwd: Path) -> Path:
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd / re.search(r"^Run directory: (.+)$", result.stdout, re.MULTILINE).group(1).strip()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the user's module and a small corpus, as a user's project would."""
    where = tmp_path_factory.mktemp("project")
    shutil.copy(EXAMPLE, where / "my_cells.py")
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "sun", "while", "birds", "sang"]
    (where / "corpus.txt").write_text("\n".join(" ".join(rng.choice(words, 12)) for _ in range(300)) + "\n")
    return where


@pytest.fixture(scope="module")
def lm_runs(workdir: Path) -> dict[str, Path]:
    """Character language models: NumPy for 6 steps, torch for 9, and the NumPy run resumed to 9 steps from its
    last.ckpt without plugins= (the checkpoint records them)."""
    runs = {}
    for backend, steps in LM_STEPS.items():
        result = run("rnnlab-train", *CELL, *LM, *SMALL, f"model.backend={backend}", f"trainer.max_steps={steps}",
                     cwd=workdir)  # fmt: skip
        runs[backend] = run_dir(result, workdir)
    last = runs["numpy"] / "checkpoints" / "last.ckpt"
    result = run("rnnlab-train", "model.cell=leaky_rnn", *LM, *SMALL, "model.backend=numpy",
                 f"trainer.max_steps={LM_STEPS['torch']}", f"ckpt_path={last}", cwd=workdir)  # fmt: skip
    runs["resumed"] = run_dir(result, workdir)
    return runs


@pytest.fixture(scope="module")
def sweep(workdir: Path) -> list[Path]:
    result = run("rnnlab-train", "-m", *CELL, "model.backend=numpy,torch", "task=classify", "data=synthetic_text",
                 "data.num_samples=200", "data.batch_size=16", "model.bidirectional=true", "trainer.max_steps=4",
                 *SMALL, cwd=workdir)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return job_dirs(sweep_dir(workdir))


def test_gradcheck_passes(workdir):
    result = run("rnnlab-gradcheck", *CELL, cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^leak_l0_reverse +\S+ +\S+$", result.stdout, re.MULTILINE)  # its own parameter is checked
    assert "leaky_rnn: every gradient agrees" in result.stdout


def test_a_language_model_trains_alike_on_both_backends(lm_runs):
    losses = {backend: train_losses(lm_runs[backend]) for backend in LM_STEPS}
    assert [len(v) for v in losses.values()] == list(LM_STEPS.values())
    np.testing.assert_allclose(losses["numpy"], losses["torch"][: LM_STEPS["numpy"]], rtol=1e-9)
    for backend in LM_STEPS:
        path = lm_runs[backend]
        assert path.name.endswith(f"_language_model_leaky_rnn_{backend}")  # the cell's plain name
        summary = json.loads((path / "summary.json").read_text())
        assert (summary["status"], summary["cell"], summary["backend"]) == ("completed", "leaky_rnn", backend)
        assert yaml.safe_load((path / "config_resolved.yaml").read_text())["plugins"] == ["my_cells"]
        saved = torch.load(path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        assert saved["rnnlab"]["plugins"] == ["my_cells"]


def test_a_resume_finds_the_cell_from_the_checkpoint(lm_runs):
    """The finished 6-step NumPy run, resumed to 9 steps without plugins=: steps 6-8 equal the whole torch run's."""
    resumed = lm_runs["resumed"]
    assert yaml.safe_load((resumed / "config_resolved.yaml").read_text())["plugins"] == ["my_cells"]
    assert "plugins=[my_cells]" in yaml.safe_load((resumed / ".hydra" / "overrides.yaml").read_text())
    with open(resumed / "csv" / "metrics.csv", newline="") as fh:  # as train_losses reads them, from step 6 on
        logged = {int(row["step"]): float(row["train/loss"]) for row in csv.DictReader(fh) if row.get("train/loss")}
    assert list(logged) == [6, 7, 8]
    np.testing.assert_allclose(list(logged.values()), train_losses(lm_runs["torch"])[6:], rtol=1e-9)


def test_generate_finds_the_cell_from_the_checkpoint(lm_runs, workdir, tmp_path):
    """No plugins= for rnnlab-generate: the checkpoint records them. The NumPy network samples through the cell's
    step, the torch one through its torch_step, from the same weights (step 9): the same text. Where the module
    cannot be imported, one line."""
    texts = []
    for name in ("resumed", "torch"):
        result = run("rnnlab-generate", f"ckpt_path={lm_runs[name] / 'checkpoints' / 'last.ckpt'}", "prompt=the",
                     "length=80", "seed=3", cwd=workdir)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.startswith("the")
        texts.append(result.stdout)
    assert texts[0] == texts[1]
    last = lm_runs["numpy"] / "checkpoints" / "last.ckpt"
    elsewhere = run("rnnlab-generate", f"ckpt_path={last}", cwd=tmp_path)
    assert elsewhere.returncode == 1
    assert [line for line in elsewhere.stderr.splitlines() if line.strip()] == [
        "rnnlab-generate: error: ckpt_path: the run that wrote this checkpoint loaded plugins=[my_cells], and "
        "'my_cells' cannot be imported here (No module named 'my_cells'); run from its directory or put it on "
        f"PYTHONPATH: {last}"
    ]


def test_a_sweep_over_both_backends(sweep):
    assert len(sweep) == 2
    for job, backend in zip(sweep, ("numpy", "torch"), strict=True):
        summary = json.loads((job / "summary.json").read_text())
        assert (summary["status"], summary["cell"], summary["backend"], summary["task"]) == (
            "completed", "leaky_rnn", backend, "classify"
        )  # fmt: skip
    np.testing.assert_allclose(train_losses(sweep[0]), train_losses(sweep[1]), rtol=1e-9)


def test_the_report_groups_the_runs_by_the_cell(lm_runs, sweep, workdir):
    result = run("rnnlab-report", "out", "out=report", cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    import pandas as pd

    runs = pd.read_csv(workdir / "report" / "runs.csv")
    assert set(runs["cell"]) == {"leaky_rnn"}
    pairs = pd.read_csv(workdir / "report" / "pairs.csv")  # the sweep's jobs; the resumed run and the torch one
    assert sorted(zip(pairs["task"], pairs["cell"], strict=True)) == [("classify", "leaky_rnn"),
                                                                      ("language_model", "leaky_rnn")]  # fmt: skip


@pytest.mark.unit
def test_the_pages_code_is_the_files():
    """Every python block of docs/extending.md's "Your own cell, step by step" is a piece of the example file
    (dedented as the page shows it)."""
    page = (ROOT / "docs" / "extending.md").read_text(encoding="utf-8")
    section = page.split("## Your own cell, step by step", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```python\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert len(blocks) >= 4
    source = EXAMPLE.read_text(encoding="utf-8")
    for block in blocks:
        assert block in source or textwrap.indent(block, "    ") in source, block
