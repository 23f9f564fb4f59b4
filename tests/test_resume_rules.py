"""What a resume may change and what it must keep, and the checks on the checkpoint itself:

* a resumed run depends on no other directory: the run it continues may be moved or deleted (the best checkpoint
  is copied into the new run; a best checkpoint that is gone means the test split uses the final weights);
* ``seed=null`` resumes with the seed recorded in the checkpoint; a changed seed, ``data.*`` or ``model.*`` is
  refused with one line; ``optimizer.lr`` and ``trainer.max_*`` apply, announced;
* a checkpoint holding NaN or Inf weights is refused, naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rnnlab.errors import ConfigError
from rnnlab.generate import UsageError, generate, parse
from rnnlab.runtime import rundir
from rnnlab.train import train

pytestmark = pytest.mark.compose

BIN = Path(sys.executable).parent
# 9 training batches an epoch, a validation every 2 steps; float64
TINY = ("task=classify", "data=synthetic_text", "data.num_samples=200", "data.batch_size=16", "model=gru",
        "model.hidden_size=8", "model.embed_dim=8", "trainer.val_check_interval=2", "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2", "logger=csv", "trainer.precision=64",
        "trainer.log_every_n_steps=1")  # fmt: skip


@pytest.fixture(autouse=True)
def _no_claims_left():
    rundir.forget_claims()
    yield
    rundir.forget_claims()


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def params(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    if "numpy_backend" in ckpt:
        return dict(ckpt["numpy_backend"]["params"])
    return {k: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(OMP_NUM_THREADS="1", RNNLAB_OUTPUT_DIR=str(cwd / "out"))
    return subprocess.run([str(BIN / "rnnlab-train"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


# -------------------------------------------------------------------------- 5: a moved or deleted run
@pytest.mark.cli
def test_resume_after_the_run_was_moved_or_deleted(tmp_path):
    """The checkpoint records the absolute path of its run's best-*.ckpt. Moved: the best file is found next to the
    resumed checkpoint and the test split is scored with it, as it was. Deleted: the test split is scored with the
    final weights, said in one line; no traceback either way."""
    args = [*TINY, "trainer.max_steps=8", "optimizer.lr=0.5", "trainer.enable_progress_bar=false"]
    first = tmp_path / "first"
    assert cli(*args, f"hydra.run.dir={first}", cwd=tmp_path).returncode == 0
    original = summary(first)
    (best,) = (first / "checkpoints").glob("best-*.ckpt")
    moved = tmp_path / "moved"
    shutil.move(first, moved)

    resumed = tmp_path / "resumed"
    result = cli(*args, f"ckpt_path={moved}/checkpoints/last.ckpt", f"hydra.run.dir={resumed}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert summary(resumed)["test_metrics"] == original["test_metrics"]  # the same best checkpoint
    assert (resumed / "checkpoints" / best.name).is_file()  # a copy of its own

    copy = tmp_path / "only-last.ckpt"
    shutil.copy(moved / "checkpoints" / "last.ckpt", copy)
    shutil.rmtree(moved)
    shutil.rmtree(resumed)  # its copy of the best checkpoint too
    again = tmp_path / "again"
    result = cli(*args, f"ckpt_path={copy}", f"hydra.run.dir={again}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert f"{best} is gone (moved or deleted)" in result.stdout + result.stderr
    assert summary(again)["status"] == "completed"
    assert set(summary(again)["test_metrics"]) == set(original["test_metrics"])


# --------------------------------------------------------------------------------------- 6: the seed
def test_seed_null_resumes_with_the_recorded_seed(compose, tmp_path):
    train(compose(*TINY, "seed=null", "trainer.max_steps=3", run_dir=tmp_path / "first"))
    drawn = summary(tmp_path / "first")["seed"]
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    train(compose(*TINY, "seed=null", "trainer.max_steps=6", f"ckpt_path={last}", run_dir=tmp_path / "resumed"))
    assert summary(tmp_path / "resumed")["seed"] == drawn
    train(compose(*TINY, f"seed={drawn}", "trainer.max_steps=6", run_dir=tmp_path / "whole"))
    a, b = params(tmp_path / "resumed"), params(tmp_path / "whole")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("seed=12", "seed (11 -> 12)"),
        ("data.num_samples=300", "data.num_samples (200 -> 300)"),
        ("data.batch_size=8", "data.batch_size (16 -> 8)"),
        ("model.dropout=0.1", "model.dropout (0.0 -> 0.1)"),
        ("model.cell=lstm", "model.cell (gru -> lstm)"),
        ("optimizer.weight_decay=0.01", "optimizer.weight_decay (0.0 -> 0.01)"),
        ("trainer.precision=32", "trainer.precision (64 -> 32)"),
        ("trainer.gradient_clip_val=1", "trainer.gradient_clip_val (5.0 -> 1.0)"),
    ],
)
def test_a_resume_keeps_what_shapes_the_run(compose, tmp_path, override, named):
    train(compose(*TINY, "seed=11", "trainer.max_steps=3", run_dir=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"  # mid-epoch: step 3 of 9
    with pytest.raises(ConfigError) as info:
        train(compose(*TINY, "seed=11", "trainer.max_steps=6", override, f"ckpt_path={last}",
                      run_dir=tmp_path / "resumed"))  # fmt: skip
    line = str(info.value)
    assert line.startswith("ckpt_path: a resumed run keeps what shapes the model, the data and the arithmetic")
    assert named in line
    assert line.endswith(str(last))
    assert not (tmp_path / "resumed").exists()


def test_a_key_the_checkpoint_predates_must_keep_its_default(compose, tmp_path):
    """A checkpoint written before a schema gained a key (here model.variant, removed from its record) resumes with
    the key's default, and refuses another value: the checkpoint's model had the default's shape."""
    tiny = [o if o != "model=gru" else "model=lstm" for o in TINY]
    train(compose(*tiny, "seed=11", "trainer.max_steps=3", run_dir=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    del ckpt["rnnlab"]["config"]["model"]["variant"]
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    with pytest.raises(ConfigError) as info:
        train(compose(*tiny, "seed=11", "trainer.max_steps=4", "model.variant=peephole", f"ckpt_path={old}",
                      run_dir=tmp_path / "peephole"))  # fmt: skip
    assert "model.variant (not in the checkpoint, so standard -> peephole)" in str(info.value)
    train(compose(*tiny, "seed=11", "trainer.max_steps=4", f"ckpt_path={old}", run_dir=tmp_path / "standard"))
    assert summary(tmp_path / "standard")["status"] == "completed"


def test_data_path_is_compared_by_content(compose, tmp_path):
    """A text file that was moved resumes; one whose content changed does not."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"line {i}: to be or not to be\n" for i in range(200)))
    lm = ("data=text_file", "data.seq_len=16", "model.hidden_size=4", "model.embed_dim=4", "logger=csv",
          "trainer.limit_val_batches=1", "trainer.limit_test_batches=1")  # fmt: skip
    train(compose(*lm, f"data.path={corpus}", "trainer.max_steps=2", run_dir=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    moved = tmp_path / "elsewhere.txt"
    corpus.rename(moved)
    train(compose(*lm, f"data.path={moved}", "trainer.max_steps=3", f"ckpt_path={last}", run_dir=tmp_path / "a"))
    moved.write_text(moved.read_text() + "one more line\n")
    with pytest.raises(ConfigError, match=r"changes data.path \(the file's content differs from the checkpoint's"):
        train(compose(*lm, f"data.path={moved}", "trainer.max_steps=3", f"ckpt_path={last}", run_dir=tmp_path / "b"))


# ----------------------------------------------------------------------------- 7: the learning rate, NaN
@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_a_new_learning_rate_applies_from_the_first_resumed_step(compose, tmp_path, caplog, backend):
    train(compose(*TINY, f"model.backend={backend}", "trainer.max_steps=3", run_dir=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    with caplog.at_level("INFO", logger="rnnlab"):
        train(compose(*TINY, f"model.backend={backend}", "trainer.max_steps=6", "optimizer.lr=0.5",
                      f"ckpt_path={last}", run_dir=tmp_path / "resumed"))  # fmt: skip
    assert "optimizer.lr=0.5 (was 0.002), trainer.max_steps=6 (was 3)" in caplog.text
    frame = pd.read_csv(tmp_path / "resumed" / "csv" / "metrics.csv")
    assert sorted(set(frame["lr-Adam"].dropna())) == [0.5]
    # the steps after the resume are those of Adam at 0.5 from the checkpoint's moments: not those at 0.002
    train(compose(*TINY, f"model.backend={backend}", "trainer.max_steps=6", f"ckpt_path={last}",
                  run_dir=tmp_path / "same-lr"))  # fmt: skip
    a, b = params(tmp_path / "resumed"), params(tmp_path / "same-lr")
    assert max(float(np.abs(np.asarray(a[k]) - np.asarray(b[k])).max()) for k in a) > 1e-3


def _poisoned(checkpoint: Path, target: Path) -> Path:
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    name = next(k for k, v in saved["state_dict"].items() if v.is_floating_point())
    saved["state_dict"][name].view(-1)[0] = float("nan")
    torch.save(saved, target)
    return target


def test_nan_weights_are_refused_naming_the_file(compose, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"line {i}: to be or not to be\n" for i in range(200)))
    lm = ("data=text_file", f"data.path={corpus}", "data.seq_len=16", "model.hidden_size=4", "model.embed_dim=4",
          "logger=csv", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1")  # fmt: skip
    train(compose(*lm, "trainer.max_steps=2", run_dir=tmp_path / "first"))
    bad = _poisoned(tmp_path / "first" / "checkpoints" / "last.ckpt", tmp_path / "nan.ckpt")
    with pytest.raises(ConfigError, match=rf"^ckpt_path: the checkpoint's weights hold NaN or Inf \(net\..*: {bad}$"):
        train(compose(*lm, "trainer.max_steps=4", f"ckpt_path={bad}", run_dir=tmp_path / "resumed"))
    assert not (tmp_path / "resumed").exists()
    with pytest.raises(UsageError, match=rf"^ckpt_path: the checkpoint's weights hold NaN or Inf .*: {bad}$"):
        generate(parse([f"ckpt_path={bad}", "length=5"]))
