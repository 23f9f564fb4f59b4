"""Resume after a crash equals the uninterrupted run, on both backends, in float64: from the end of an epoch, from
the middle of one, and through the real CLI after SIGKILL. Plus: the same config and seed twice log the same
metrics, checkpoints are written atomically, and a resumed run keeps the crashed run's checkpoint ranking."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rnnlab.tasks.base import RecurrentTask
from rnnlab.train import train

pytestmark = pytest.mark.compose

# 2 epochs of 5 batches; 2-layer GRU with dropout (the RNG matters), Adam (its moments matter), float64
RUN = ("task=classify", "data=synthetic_text", "data.num_samples=600", "data.batch_size=32", "model=gru",
       "model.hidden_size=8", "model.num_layers=2", "model.dropout=0.3", "optimizer=adam", "trainer.precision=64",
       "trainer.limit_train_batches=5", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
       "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "logger=csv", "seed=11")  # fmt: skip
TOTAL_STEPS = 10
BACKENDS = ("torch", "numpy")
NOT_COMPARED = ("time/", "throughput/", "memory/", "lr-")  # wall-clock columns


def losses(run_dir: Path) -> pd.Series:
    frame = pd.read_csv(run_dir / "csv" / "metrics.csv")
    values = frame[["step", "train/loss"]].dropna()
    return values.groupby("step")["train/loss"].last()


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def params(run_dir: Path, backend: str) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    if backend == "numpy":
        return dict(ckpt["numpy_backend"]["params"])
    return {k: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}


def assert_same_outcome(resumed: Path, whole: Path, backend: str, stop: int) -> None:
    a, b = losses(resumed), losses(whole)
    assert list(a.index) == [s for s in b.index if s >= stop]  # the resumed run logs the steps after the break
    np.testing.assert_array_equal(a.to_numpy(), b[a.index].to_numpy())
    sa, sb = summary(resumed), summary(whole)
    assert sa["global_step"] == sb["global_step"] == TOTAL_STEPS
    assert sa["test_metrics"] == sb["test_metrics"]  # scored with the same best checkpoint
    for key in ("val/loss", "val/acc"):
        assert sa["fit_metrics"][key] == sb["fit_metrics"][key], key
    pa, pb = params(resumed, backend), params(whole, backend)
    assert pa.keys() == pb.keys()
    for name in pa:
        torch.testing.assert_close(pa[name], pb[name], rtol=0, atol=0)


@pytest.fixture(scope="module")
def whole_runs(tmp_path_factory, compose_factory) -> dict[str, Path]:
    out = {}
    for backend in BACKENDS:
        run_dir = tmp_path_factory.mktemp(f"whole-{backend}") / "run"
        train(compose_factory((*RUN, f"model.backend={backend}"), run_dir))
        out[backend] = run_dir
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stop", [3, 5, 7], ids=["mid-epoch-0", "epoch-end", "mid-epoch-1"])
def test_resume_equals_uninterrupted(compose, tmp_path, whole_runs, backend, stop):
    """Stop after `stop` steps (last.ckpt holds that state), resume to the end: the same per-step losses, the
    same validations, the same best checkpoint and test metrics, bit-identical parameters."""
    settings = (*RUN, f"model.backend={backend}")
    train(compose(*settings, f"trainer.max_steps={stop}", run_dir=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == stop
    train(compose(*settings, f"ckpt_path={last}", run_dir=tmp_path / "resumed"))
    assert_same_outcome(tmp_path / "resumed", whole_runs[backend], backend, stop)


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_from_an_epoch_end_without_validation(compose, tmp_path, backend):
    """last.ckpt written at the last batch of an epoch that has no validation (validation every 2nd epoch): the
    resume starts the next epoch, in its own order, and does not repeat the finished one."""
    settings = (*RUN, f"model.backend={backend}", "trainer.check_val_every_n_epoch=2")
    train(compose(*settings, run_dir=tmp_path / "whole"))
    train(compose(*settings, "trainer.max_steps=5", run_dir=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    train(compose(*settings, f"ckpt_path={last}", run_dir=tmp_path / "resumed"))
    assert_same_outcome(tmp_path / "resumed", tmp_path / "whole", backend, 5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mid_epoch_resume_needs_the_loader_position(compose, tmp_path, whole_runs, backend):
    """Teeth: the same mid-epoch checkpoint without the training loader's saved position starts the epoch's
    order from its first batch again, and the losses after the break differ."""
    settings = (*RUN, f"model.backend={backend}")
    train(compose(*settings, "trainer.max_steps=3", run_dir=tmp_path / "first"))
    ckpt = torch.load(tmp_path / "first" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["batches_taken"] == 3
    ckpt["loops"]["fit_loop"]["state_dict"].pop("combined_loader")
    torch.save(ckpt, tmp_path / "positionless.ckpt")
    train(compose(*settings, f"ckpt_path={tmp_path / 'positionless.ckpt'}", run_dir=tmp_path / "resumed"))
    a, b = losses(tmp_path / "resumed"), losses(whole_runs[backend])
    assert abs(a[3] - b[3]) > 1e-6


def test_torch_dropout_is_seeded_per_step(compose, tmp_path, monkeypatch, whole_runs):
    """Teeth: without the per-step seeding of torch's RNG (RecurrentTask.on_train_batch_start), torch's dropout
    masks after a restart come from a freshly seeded global RNG, and a resumed run departs from the whole one."""
    monkeypatch.setattr(RecurrentTask, "on_train_batch_start", lambda self, batch, batch_idx: None)
    settings = (*RUN, "model.backend=torch")
    train(compose(*settings, run_dir=tmp_path / "whole"))
    train(compose(*settings, "trainer.max_steps=5", run_dir=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    train(compose(*settings, f"ckpt_path={last}", run_dir=tmp_path / "resumed"))
    a, b = losses(tmp_path / "resumed"), losses(tmp_path / "whole")
    assert np.abs(a.to_numpy() - b[a.index].to_numpy()).max() > 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_config_and_seed_log_the_same_metrics(compose, tmp_path, whole_runs, backend):
    """Two runs of one config and seed: every logged value but the wall-clock ones is identical."""
    train(compose(*RUN, f"model.backend={backend}", run_dir=tmp_path / "again"))
    a = pd.read_csv(tmp_path / "again" / "csv" / "metrics.csv")
    b = pd.read_csv(whole_runs[backend] / "csv" / "metrics.csv")
    columns = [c for c in b.columns if not c.startswith(NOT_COMPARED)]
    assert {"train/loss", "val/loss", "val/acc", "test/acc"} <= set(columns)
    pd.testing.assert_frame_equal(a[columns], b[columns], check_exact=True)


# ------------------------------------------------------------------------------------------ SIGKILL
@pytest.mark.cli
@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, backend):
    """The real CLI, last.ckpt refreshed every step: SIGKILL the run in its second epoch, resume with
    ckpt_path=<run dir>/checkpoints/last.ckpt, and the outcome equals the same run left alone."""
    train_bin = Path(sys.executable).parent / "rnnlab-train"
    settings = [a.replace("limit_train_batches=5", "limit_train_batches=12") for a in RUN] + [
        f"model.backend={backend}", "callbacks.model_checkpoint.save_last_every_n_steps=1",
        "trainer.enable_progress_bar=false", "print_sample=false"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = tmp_path / "whole"
    done = subprocess.run([str(train_bin), *settings, f"hydra.run.dir={whole}"], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]

    crashed = tmp_path / "crashed"
    last = crashed / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen([str(train_bin), *settings, f"hydra.run.dir={crashed}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    step, deadline = -1, time.monotonic() + 120
    try:
        while step < 15 and proc.poll() is None and time.monotonic() < deadline:
            if last.is_file():  # written atomically: a complete file whenever it is there
                step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert 15 <= killed_at < 24
    assert not (crashed / "summary.json").exists()
    # a kill in the middle of a write leaves at most the writer's hidden temporary file; last.ckpt (loaded above)
    # is always a complete checkpoint
    leftovers = [p.name for p in (crashed / "checkpoints").iterdir() if p.name.startswith(".")]
    assert all(name.startswith(".last.ckpt.") and name.endswith(".tmp") for name in leftovers), leftovers

    resumed = tmp_path / "resumed"
    done = subprocess.run([str(train_bin), *settings, f"ckpt_path={last}", f"hydra.run.dir={resumed}"], env=env,
                          capture_output=True)  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    sa, sb = summary(resumed), summary(whole)
    assert sa["global_step"] == sb["global_step"] == 24
    assert sa["test_metrics"] == sb["test_metrics"]
    assert sa["fit_metrics"]["val/loss"] == sb["fit_metrics"]["val/loss"]
    a, b = losses(resumed), losses(whole)
    np.testing.assert_array_equal(a.to_numpy(), b[a.index].to_numpy())
    assert a.index[0] == killed_at


# ------------------------------------------------------------------------------------------ pieces
@pytest.mark.unit
def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    """A write that dies half-way leaves the previous checkpoint as it was, and no temporary file."""
    from rnnlab.runtime import checkpointing

    io = checkpointing.AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, target)
    before = target.read_bytes()

    def dies_half_way(obj, fh):
        fh.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(checkpointing.torch, "save", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"global_step": 2}, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def _foreign_state(old_dir: Path, score: float = 0.75) -> dict:
    best = old_dir / "best-step5.ckpt"
    return {"dirpath": str(old_dir), "best_model_score": torch.tensor(score), "best_model_path": str(best),
            "kth_best_model_path": str(best), "kth_value": torch.tensor(score),
            "best_k_models": {str(best): torch.tensor(score)},
            "last_model_path": str(old_dir / "last.ckpt")}  # fmt: skip


@pytest.mark.unit
def test_resumed_ranking_keeps_the_best_score_in_a_copy_of_its_own(tmp_path):
    """Resuming into a new directory keeps the crashed run's best score (Lightning's own class drops it) and copies
    its ranked checkpoints into the new run: the new run depends on no other directory, and never changes one."""
    from rnnlab.runtime.checkpointing import ResumingModelCheckpoint

    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir()
    old_best = old_dir / "best-step5.ckpt"
    old_best.write_bytes(b"x")
    cb = ResumingModelCheckpoint(dirpath=new_dir, monitor="val/acc", mode="max", save_top_k=1)
    cb.load_state_dict(_foreign_state(old_dir))
    copy = new_dir / "best-step5.ckpt"
    assert float(cb.best_model_score) == 0.75
    assert cb.best_model_path == str(copy)
    assert copy.read_bytes() == b"x"
    assert cb.best_k_models == {str(copy): torch.tensor(0.75)}
    cb._remove_checkpoint(None, str(old_best))  # never another run's file
    assert old_best.exists()
    old_best.unlink()  # the old run can go: this one has what it needs
    assert copy.read_bytes() == b"x"


@pytest.mark.unit
def test_resumed_ranking_finds_a_moved_run_or_drops_what_is_gone(tmp_path, caplog):
    """The recorded paths point at a directory that was moved: the files are found next to the resumed checkpoint.
    When they are gone altogether the ranking goes on without them (and the test split uses the final weights)."""
    from rnnlab.runtime.checkpointing import ResumingModelCheckpoint

    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "best-step5.ckpt").write_bytes(b"y")
    cb = ResumingModelCheckpoint(dirpath=tmp_path / "new", monitor="val/acc", mode="max", save_top_k=1)
    cb.resumed_from = str(moved / "last.ckpt")
    cb.load_state_dict(_foreign_state(tmp_path / "old"))  # tmp_path/old does not exist: the run was moved
    assert cb.best_model_path == str(tmp_path / "new" / "best-step5.ckpt")
    assert Path(cb.best_model_path).read_bytes() == b"y"

    gone = ResumingModelCheckpoint(dirpath=tmp_path / "other", monitor="val/acc", mode="max", save_top_k=1)
    gone.resumed_from = str(tmp_path / "nowhere" / "last.ckpt")
    with caplog.at_level("WARNING", logger="rnnlab"):
        gone.load_state_dict(_foreign_state(tmp_path / "old"))
    assert gone.best_model_path == ""
    assert gone.best_model_score is None
    assert gone.best_k_models == {}
    assert "is gone (moved or deleted)" in caplog.text


@pytest.mark.unit
def test_mid_epoch_state_needs_the_same_batch_size_and_process_count():
    """A checkpoint from inside an epoch continues only with the batching it was cut from; one from an epoch
    boundary with any."""
    from rnnlab.data.sampling import EpochSeededSampler, ResumableLoader
    from rnnlab.errors import ConfigError

    loader = ResumableLoader(range(100), batch_size=8, sampler=EpochSeededSampler(100, seed=1))
    with pytest.raises(ConfigError, match=r"batch_size=16 on 2 process\(es\), this run has data.batch_size=8 on 1"):
        loader.load_state_dict({"epoch": 0, "batches_taken": 3, "batch_size": 16, "processes": 2})
    loader.load_state_dict({"epoch": 1, "batches_taken": 0, "batch_size": 16, "processes": 2})  # an epoch end
    loader.load_state_dict({"epoch": 0, "batches_taken": 3, "batch_size": 8, "processes": 1})
    whole = list(EpochSeededSampler(100, seed=1))
    assert [int(i) for b in loader for i in b] == whole[24:]  # starts at batch 3
    assert [int(i) for b in loader for i in b] == whole  # and the next epoch is whole again
