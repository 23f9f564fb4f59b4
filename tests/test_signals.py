"""The signal contract (rnnlab/runtime/signals.py), with real signals to real runs: SIGTERM and SIGINT end a run at
the end of a step with a checkpoint of that step, summary.json ``interrupted``, one line saying how to resume and
exit status 143 / 130; the resume is bit-identical to an uninterrupted run. A sweep stops, lists the interrupted job
and exits 143. A signal before the first training step gives the run directory back."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rnnlab.runtime import rundir
from rnnlab.runtime.signals import RunInterrupted
from rnnlab.train import train

pytestmark = pytest.mark.compose

BIN = Path(sys.executable).parent
BATCHES = 12  # training batches an epoch
RUN = ["task=classify", "data=synthetic_text", "data.num_samples=600", "data.batch_size=32", "model=gru",
       "model.hidden_size=8", "model.num_layers=2", "model.dropout=0.3", "optimizer=adam", "trainer.precision=64",
       f"trainer.limit_train_batches={BATCHES}", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
       "trainer.log_every_n_steps=1", "logger=csv", "seed=11", "trainer.enable_progress_bar=false",
       "print_sample=false"]  # fmt: skip
FOREVER = "trainer.max_epochs=100000"


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    out["OMP_NUM_THREADS"] = "1"
    return out


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "rnnlab-train"), *args], cwd=cwd, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_for(path_glob: tuple[Path, str], proc: subprocess.Popen, timeout: float = 120) -> None:
    root, pattern = path_glob
    deadline = time.monotonic() + timeout
    while not list(root.glob(pattern)):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    time.sleep(0.5)  # well into the next epoch's steps


def losses(run_dir: Path) -> pd.Series:
    frame = pd.read_csv(run_dir / "csv" / "metrics.csv")
    return frame[["step", "train/loss"]].dropna().groupby("step")["train/loss"].last()


def params(run_dir: Path, backend: str) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    if backend == "numpy":
        return dict(ckpt["numpy_backend"]["params"])
    return {k: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.cli
@pytest.mark.parametrize(("backend", "signum"), [("torch", signal.SIGTERM), ("numpy", signal.SIGTERM),
                                                 ("torch", signal.SIGINT)])  # fmt: skip
def test_a_signal_checkpoints_the_step_and_the_printed_resume_is_exact(tmp_path, backend, signum):
    stopped = tmp_path / "stopped"
    proc = start([*RUN, f"model.backend={backend}", FOREVER, f"hydra.run.dir={stopped}"], tmp_path)
    wait_for((stopped / "checkpoints", "last.ckpt"), proc)
    proc.send_signal(signum)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err
    name = signal.Signals(signum).name
    lines = [line for line in err.splitlines() if line.startswith("rnnlab:")]
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith(f"rnnlab: interrupted by {name} at step "), lines[0]
    info = summary(stopped)
    assert info["status"] == "interrupted"
    assert info["interrupted"]["signal"] == name
    step = info["interrupted"]["step"]
    assert step > BATCHES  # the first validation (step 12) was behind it
    last = torch.load(stopped / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert info["interrupted"]["checkpoint_step"] == last["global_step"]
    if "(during validation)" not in lines[0]:
        assert last["global_step"] == step  # the step it stopped in is the step it saved
    assert json.loads((stopped / rundir.OWNER_FILE).read_text())["status"] == "interrupted"

    # resume with the printed command, to a fixed number of epochs; an uninterrupted run to the same end
    command = shlex.split(lines[0].split("; resume: ", 1)[1])
    assert command[0] == "rnnlab-train"
    assert command[-1] == "ckpt_path=stopped/checkpoints/last.ckpt"
    epochs = last["global_step"] // BATCHES + 2
    resumed, whole = tmp_path / "resumed", tmp_path / "whole"
    rest = [a for a in command[1:] if not a.startswith("trainer.max_epochs=")]
    done = subprocess.run([str(BIN / "rnnlab-train"), *rest, f"trainer.max_epochs={epochs}",
                           f"hydra.run.dir={resumed}"], cwd=tmp_path, env=env(), capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"trainer.max_epochs={epochs} (was 100000)" in done.stdout + done.stderr  # announced
    done = subprocess.run([str(BIN / "rnnlab-train"), *RUN, f"model.backend={backend}",
                           f"trainer.max_epochs={epochs}", f"hydra.run.dir={whole}"], cwd=tmp_path, env=env(),
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    sa, sb = summary(resumed), summary(whole)
    assert sa["global_step"] == sb["global_step"] == epochs * BATCHES
    assert sa["test_metrics"] == sb["test_metrics"]
    a, b = losses(resumed), losses(whole)
    assert a.index[0] == last["global_step"]
    np.testing.assert_array_equal(a.to_numpy(), b[a.index].to_numpy())
    pa, pb = params(resumed, backend), params(whole, backend)
    for key in pa:
        torch.testing.assert_close(pa[key], pb[key], rtol=0, atol=0)


@pytest.mark.cli
def test_sigterm_stops_a_sweep_and_lists_the_interrupted_job(tmp_path):
    sweep = tmp_path / "sweep"
    proc = start(["-m", *RUN, FOREVER, "seed=1,2,3", f"hydra.sweep.dir={sweep}"], tmp_path)
    wait_for((sweep, "*/checkpoints/last.ckpt"), proc)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err
    jobs = [p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(jobs) == 1  # the jobs not begun did not begin
    lines = [line for line in err.splitlines() if line.startswith(("rnnlab:", "  "))]
    assert (
        lines[0]
        == "rnnlab: the sweep was interrupted after 1 job began; the jobs not begun did not run; not completed:"
    )
    assert lines[1].startswith(f"  {os.path.relpath(jobs[0], tmp_path)}: interrupted by SIGTERM at step ")
    assert summary(jobs[0])["status"] == "interrupted"
    assert "ckpt_path=" in summary(jobs[0])["error"]


# ---------------------------------------------------------------------------------------- in-process
TINY = ("task=classify", "data=synthetic_text", "data.num_samples=200", "data.batch_size=16", "model=gru",
        "model.hidden_size=8", "model.embed_dim=8", "trainer.max_steps=4", "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "logger=csv")  # fmt: skip


@pytest.fixture(autouse=True)
def _no_claims_left():
    rundir.forget_claims()
    yield
    rundir.forget_claims()


def test_a_signal_before_the_first_step_gives_the_directory_back(compose, tmp_path, monkeypatch):
    import rnnlab.data.datamodules as datamodules

    build = datamodules.build_datamodule

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # while the data loads
        return build(*args, **kwargs)

    monkeypatch.setattr(datamodules, "build_datamodule", signalled)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RunInterrupted, match="interrupted by SIGTERM before the first training step") as info:
        train(compose(*TINY, run_dir=tmp_path / "run"))
    assert info.value.exit_code == 143
    assert not (tmp_path / "run").exists()
    assert signal.getsignal(signal.SIGTERM) is before  # the contract's handler is gone with the run


def test_a_signal_while_testing_keeps_the_trained_run(compose, tmp_path, monkeypatch):
    from rnnlab.tasks.classify import ClassifyTask

    def test_step(self, batch, batch_idx):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(ClassifyTask, "test_step", test_step)
    run = tmp_path / "run"
    with pytest.raises(RunInterrupted, match=r"^interrupted by SIGTERM at step 4; resume: .*ckpt_path=.*last.ckpt"):
        train(compose(*TINY, run_dir=run))
    info = summary(run)
    assert info["status"] == "interrupted"
    assert info["interrupted"]["checkpoint_step"] == 4
    assert (run / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.cli
def test_sigterm_to_a_ddp_run_stops_every_process_at_one_step(tmp_path):
    """Two processes (Lightning's launcher starts the second): SIGTERM to the process group, as a scheduler or a
    terminal sends it, reaches both; they stop at the same step, the checkpoint of that step is written once, rank 0
    prints the one line, and the printed resume ends as the uninterrupted two-process run."""
    ddp = [a.replace("data.batch_size=32", "data.batch_size=16") for a in RUN if "dropout" not in a] + [
        "trainer.strategy=ddp", "trainer.devices=2"]  # fmt: skip
    stopped = tmp_path / "stopped"
    proc = subprocess.Popen([str(BIN / "rnnlab-train"), *ddp, FOREVER, f"hydra.run.dir={stopped}"], cwd=tmp_path,
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    wait_for((stopped / "checkpoints", "last.ckpt"), proc)
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "Received SIGTERM: stopping at the end of this training step" in out  # rank 0 (logs to stdout)
    assert "Received SIGTERM: stopping at the end of this training step" in err  # rank 1 (warnings, to stderr)
    lines = [line for line in err.splitlines() if line.startswith("rnnlab:")]
    assert len(lines) == 1, err[-3000:]
    assert "model.num_layers=2" in lines[0]  # the run's own overrides
    assert "trainer.strategy=ddp" in lines[0]
    assert "hydra.job.name" not in lines[0]  # rank 0's line, not the command Lightning re-ran for rank 1
    last = torch.load(stopped / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    info = summary(stopped)["interrupted"]
    assert info["checkpoint_step"] == info["step"] == last["global_step"]
    assert f"at step {info['step']};" in lines[0]
    epochs = last["global_step"] // BATCHES + 2
    for name, extra in (("resumed", [f"ckpt_path={stopped}/checkpoints/last.ckpt"]), ("whole", [])):
        done = subprocess.run([str(BIN / "rnnlab-train"), *ddp, f"trainer.max_epochs={epochs}", *extra,
                               f"hydra.run.dir={tmp_path / name}"], cwd=tmp_path, env=env(), capture_output=True,
                              text=True)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    sa, sb = summary(tmp_path / "resumed"), summary(tmp_path / "whole")
    assert sa["global_step"] == sb["global_step"] == epochs * BATCHES
    assert sa["test_metrics"] == sb["test_metrics"]


# A signal at a chosen moment, in-process: inside a training step (mid-epoch, or the epoch's last step, before its
# validation), between two steps (after the step's end was checked: the run stops before the next step, whose batch
# is already fetched), or inside a validation; each stop resumes to the uninterrupted run's outcome, bit for bit.
EXACT = (*(a for a in RUN if not a.startswith(("trainer.enable_progress_bar", "print_sample"))), "trainer.max_epochs=3")


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory, compose_factory) -> dict[str, Path]:
    out = {}
    for backend in ("torch", "numpy"):
        run_dir = tmp_path_factory.mktemp(f"whole-{backend}") / "run"
        rundir.forget_claims()
        train(compose_factory((*EXACT, f"model.backend={backend}"), run_dir))
        out[backend] = run_dir
    return out


@pytest.mark.parametrize("backend", ["torch", "numpy"])
@pytest.mark.parametrize(
    ("where", "step", "stopped_at", "point"),
    [
        ("training_step", 5, 6, "after the step"),
        ("training_step", 11, 12, "after the step"),
        ("on_train_batch_end", 6, 6, "before the step"),
        ("validation_step", 12, 12, None),
    ],
)
def test_a_signal_anywhere_resumes_exactly(compose, tmp_path, monkeypatch, whole_run, backend, where, step, stopped_at,
                                           point):  # fmt: skip
    from rnnlab.tasks.classify import ClassifyTask

    original = getattr(ClassifyTask, where)

    def signalled(self, *args):
        # on_train_batch_end: the module's hook runs after every callback's, so the signal arrives between steps
        if self.global_step == step and not self.trainer.sanity_checking and not getattr(self, "_sent", False):
            self._sent = True
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *args)

    monkeypatch.setattr(ClassifyTask, where, signalled)
    settings = (*EXACT, f"model.backend={backend}")
    with pytest.raises(RunInterrupted):
        train(compose(*settings, run_dir=tmp_path / "stopped"))
    monkeypatch.undo()
    info = summary(tmp_path / "stopped")["interrupted"]
    assert info["step"] == info["checkpoint_step"] == stopped_at
    if point is not None:
        assert info["stopped"] == point
    train(compose(*settings, f"ckpt_path={info['checkpoint']}", run_dir=tmp_path / "resumed"))
    sa, sb = summary(tmp_path / "resumed"), summary(whole_run[backend])
    assert sa["test_metrics"] == sb["test_metrics"]
    a, b = losses(tmp_path / "resumed"), losses(whole_run[backend])
    np.testing.assert_array_equal(a.to_numpy(), b[a.index].to_numpy())
    pa, pb = params(tmp_path / "resumed", backend), params(whole_run[backend], backend)
    for key in pa:
        torch.testing.assert_close(pa[key], pb[key], rtol=0, atol=0)


def test_a_stop_between_steps_keeps_validations_counted_in_steps(compose, tmp_path, monkeypatch):
    """Validation every 5 global steps (check_val_every_n_epoch=null: Lightning counts the batches of the whole run,
    batch_progress.total, which its restart does not rewind): a stop between steps 6 and 7 resumes with the
    validations at steps 10, 15, ... as in the run left alone (before the fix: at 9, 14, ..., one batch early, found
    when a SLURM preemption signal came between two steps)."""
    from rnnlab.tasks.classify import ClassifyTask

    settings = (*EXACT, "trainer.val_check_interval=5", "trainer.check_val_every_n_epoch=null", "trainer.max_steps=16",
                "trainer.max_epochs=null")  # fmt: skip
    train(compose(*settings, run_dir=tmp_path / "whole"))
    original = ClassifyTask.on_train_batch_end

    def signalled(self, *args):
        if self.global_step == 6 and not getattr(self, "_sent", False):
            self._sent = True
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *args)

    monkeypatch.setattr(ClassifyTask, "on_train_batch_end", signalled)
    with pytest.raises(RunInterrupted):
        train(compose(*settings, run_dir=tmp_path / "stopped"))
    monkeypatch.undo()
    info = summary(tmp_path / "stopped")["interrupted"]
    assert (info["stopped"], info["checkpoint_step"]) == ("before the step", 6)
    train(compose(*settings, f"ckpt_path={info['checkpoint']}", run_dir=tmp_path / "resumed"))

    def validations(run: Path) -> list[tuple[int, float]]:
        frame = pd.read_csv(run / "csv" / "metrics.csv")
        rows = frame[frame["val/loss"].notna()]
        return list(zip(rows["step"].astype(int), rows["val/loss"], strict=True))

    whole, resumed = validations(tmp_path / "whole"), validations(tmp_path / "resumed")
    assert [step for step, _ in whole] == [4, 9, 14]  # logged at step index 4: after 5 optimizer steps
    assert resumed == [v for v in whole if v[0] >= 6]
    assert summary(tmp_path / "resumed")["test_metrics"] == summary(tmp_path / "whole")["test_metrics"]


@pytest.mark.unit
def test_a_repeated_preemption_signal_requeues_the_job_once():
    """scancel --signal=USR2 reaches the job's task directly and through srun: the second delivery must not hand the
    signal to submitit again (its second `scontrol requeue` fails and the job's result becomes that error)."""
    from rnnlab.runtime.signals import SignalContract

    calls = []
    contract = SignalContract()
    contract._preempt = (signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    contract.in_fit = True
    contract._handle(signal.SIGUSR2, None)  # noted: the fit stops at the end of the step
    assert (contract.signum, calls) == (signal.SIGUSR2, [])
    contract._handle(signal.SIGUSR2, None)  # again, before the stop is done: ignored
    contract.in_fit = False
    contract._handle(signal.SIGUSR2, None)  # again, after the fit: ignored too
    assert calls == []
    contract.requeue()  # the end of the interrupted run hands it over, once
    contract.requeue()
    assert calls == [signal.SIGUSR2]
