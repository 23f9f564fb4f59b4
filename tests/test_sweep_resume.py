"""Resuming a sweep (``resume_sweep=<sweep dir>``, rnnlab/runtime/sweep_resume.py) with real ``rnnlab-train -m``
sweeps: a sweep killed (SIGKILL) or interrupted (SIGINT) in its second job runs again with the same command plus
``resume_sweep``, skips the completed job (its files untouched), resumes the unfinished one from its own last.ckpt
to the same metrics.csv, test metrics and bit-identical float64 weights as the job left alone, and runs the jobs that
never started; through the basic launcher, submitit_local and joblib. A job without a checkpoint starts again from
scratch, its attempt kept as ``<job dir>.partial-N``. Wrong uses are one line each, and create nothing."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from helpers import job_dirs, sweep_dir

from rnnlab.runtime import rundir

pytestmark = pytest.mark.cli

BIN = Path(sys.executable).parent
BATCHES, EPOCHS = 12, 3  # 36 steps a job; a validation at every epoch's end
# float64 (bit-identical weights), a 2-layer cell with dropout (the RNG matters), Adam (its moments matter); last.ckpt
# every step, so that a kill leaves a checkpoint of a recent step
RUN = ["task=classify", "data=synthetic_text", "data.num_samples=600", "data.batch_size=32", "model.hidden_size=8",
       "model.num_layers=2", "model.dropout=0.3", "optimizer=adam", "trainer.precision=64",
       f"trainer.limit_train_batches={BATCHES}", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
       f"trainer.max_epochs={EPOCHS}", "trainer.log_every_n_steps=1", "logger=csv", "seed=11",
       "trainer.enable_progress_bar=false", "print_sample=false",
       "callbacks.model_checkpoint.save_last_every_n_steps=1"]  # fmt: skip
# a tiny classifier (2 steps) for the sweeps that only need finished jobs
TINY = ["task=classify", "data=synthetic_text", "data.num_samples=200", "model.hidden_size=4", "model.embed_dim=4",
        "trainer.max_steps=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "logger=csv",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]  # fmt: skip
NOT_COMPARED = ("time/", "throughput/", "memory/")  # wall-clock columns


def env(cwd: Path) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    out.update(RNNLAB_OUTPUT_DIR=str(cwd / "out"), OMP_NUM_THREADS="1")
    return out


def run_cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "rnnlab-train"), *args], cwd=cwd, env=env(cwd), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def stop_in_job(args: list[str], cwd: Path, job: str, signum: int, step: int) -> subprocess.CompletedProcess:
    """Start the sweep and send ``signum`` to it (its whole process group) once job ``job``'s last.ckpt holds step
    ``step`` or later. The sweep's stderr is returned with its exit code."""
    proc = subprocess.Popen([str(BIN / "rnnlab-train"), *args], cwd=cwd, env=env(cwd), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    reached, deadline = -1, time.monotonic() + 300
    try:
        while reached < step:
            assert proc.poll() is None, f"the sweep ended first: {proc.communicate()[1][-3000:]}"
            assert time.monotonic() < deadline, "no checkpoint in time"
            for last in (cwd / "out" / "multiruns").glob(f"*/{job}_*/checkpoints/last.ckpt"):
                reached = checkpoint_step(last)  # written atomically: complete whenever it is there
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signum)
        _out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(args, proc.returncode, "", err)


def checkpoint_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def params(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return {k: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}


def metrics(run_dir: Path) -> pd.DataFrame:
    frame = pd.read_csv(run_dir / "csv" / "metrics.csv")
    return frame[sorted(c for c in frame.columns if not c.startswith(NOT_COMPARED))]


def files(directory: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every entry below ``directory`` (itself included): its bytes (None for a directory) and modification time."""
    entries = [directory, *sorted(directory.rglob("*"))]
    return {str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
            for p in entries}  # fmt: skip


def rnnlab_lines(result: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return [line for line in result.stderr.splitlines() if line.startswith(("rnnlab:", "  "))]


def assert_same_as_left_alone(job: Path, whole: Path, *, log_from: int = 0) -> None:
    """The job ended as the same job left alone: summary, test metrics, bit-identical weights, and metrics.csv (every
    row from step ``log_from`` on; every column but the wall-clock ones)."""
    sa, sb = summary(job), summary(whole)
    assert sa["status"] == "completed"
    assert sa["global_step"] == sb["global_step"] == BATCHES * EPOCHS
    assert sa["test_metrics"] == sb["test_metrics"]  # scored with the same best checkpoint
    assert sa["optimized_value"] == sb["optimized_value"]
    assert sa["fit_metrics"]["val/loss"] == sb["fit_metrics"]["val/loss"]
    pa, pb = params(job), params(whole)
    assert pa.keys() == pb.keys()
    for name in pa:
        torch.testing.assert_close(pa[name], pb[name], rtol=0, atol=0)
    a, b = metrics(job), metrics(whole)
    a, b = a[a.step >= log_from].reset_index(drop=True), b[b.step >= log_from].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


@pytest.fixture(scope="module")
def whole_gru(tmp_path_factory) -> Path:
    """Job 1 of the sweeps below (model=gru), run once from start to end without a sweep."""
    cwd = tmp_path_factory.mktemp("whole")
    done = run_cli(*RUN, "model=gru", f"hydra.run.dir={cwd / 'run'}", cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return cwd / "run"


# --------------------------------------------------------------------------------------- the basic launcher
def test_a_killed_sweep_skips_the_completed_job_resumes_the_killed_one_and_runs_the_rest(tmp_path, whole_gru):
    command = ["-m", "model=rnn,gru,lstm", *RUN]
    first = stop_in_job(command, tmp_path, "1", signal.SIGKILL, step=BATCHES + 3)  # in epoch 2, after a validation
    assert first.returncode == -signal.SIGKILL
    sweep = sweep_dir(tmp_path)
    done, killed = job_dirs(sweep)  # job 2 never started
    assert summary(done)["status"] == "completed"
    assert not (killed / "summary.json").exists()
    assert json.loads((killed / rundir.OWNER_FILE).read_text())["status"] == "running"  # its process is gone
    killed_at = checkpoint_step(killed / "checkpoints" / "last.ckpt")
    assert BATCHES < killed_at < BATCHES * EPOCHS
    before = files(done)
    multirun = (sweep / "multirun.yaml").read_bytes()

    result = run_cli(*command, f"resume_sweep={os.path.relpath(sweep, tmp_path)}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert rnnlab_lines(result) == [
        f"rnnlab: resumed sweep {os.path.relpath(sweep, tmp_path)}: 1 job skipped (completed before), 1 resumed "
        "from its last.ckpt, 1 started afresh"
    ]
    jobs = job_dirs(sweep)
    assert len(jobs) == 3
    assert jobs[:2] == [done, killed]  # the same directories: resume_sweep is in no job's name
    assert all("resume_sweep" not in p.name for p in jobs)
    assert files(done) == before  # skipped: not a byte nor a modification time changed
    assert f"Resuming {killed / 'checkpoints' / 'last.ckpt'} at step {killed_at}" in (killed / "cli.log").read_text()
    assert json.loads((killed / rundir.OWNER_FILE).read_text())["taken_back_from"]["status"] == "running"
    # the same end as the job left alone; its metrics.csv holds the whole run (the killed attempt's rows before
    # its checkpoint, then the resumed attempt's)
    assert_same_as_left_alone(killed, whole_gru)
    assert (summary(jobs[2])["status"], summary(jobs[2])["cell"]) == ("completed", "lstm")
    assert (sweep / "multirun.yaml.partial-1").read_bytes() == multirun  # the first attempt's record, kept
    overrides = yaml.safe_load((sweep / "multirun.yaml").read_text())["hydra"]["overrides"]["task"]
    assert overrides[-1] == f"resume_sweep={os.path.relpath(sweep, tmp_path)}"


# ----------------------------------------------------------------------------------- submitit_local, SIGINT
def test_an_interrupted_sweep_resumes_with_its_printed_command_through_submitit_local(tmp_path, whole_gru):
    first = stop_in_job(["-m", "model=rnn,gru", *RUN], tmp_path, "1", signal.SIGINT, step=BATCHES + 3)
    assert first.returncode == 128 + signal.SIGINT, first.stderr[-3000:]
    sweep = sweep_dir(tmp_path)
    done, stopped = job_dirs(sweep)
    assert summary(stopped)["status"] == "interrupted"
    stopped_at = checkpoint_step(stopped / "checkpoints" / "last.ckpt")
    lines = rnnlab_lines(first)
    prefix = "rnnlab: resume the sweep: "
    assert lines[-1].startswith(prefix), lines
    printed = shlex.split(lines[-1].removeprefix(prefix))
    assert printed == ["rnnlab-train", "-m", "model=rnn,gru", *RUN, f"resume_sweep={os.path.relpath(sweep, tmp_path)}"]
    before = files(done)

    # the printed command, with the jobs in processes of their own (the code path of the SLURM launchers)
    result = run_cli(*printed[1:], "hydra/launcher=submitit_local", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert rnnlab_lines(result) == [
        f"rnnlab: resumed sweep {os.path.relpath(sweep, tmp_path)}: 1 job skipped (completed before), 1 resumed "
        "from its last.ckpt, 0 started afresh"
    ]
    assert job_dirs(sweep) == [done, stopped]
    assert files(done) == before
    # the signal contract ends the fit inside the stopped step, before Lightning logs that step's training row;
    # every row from the checkpoint on is the left-alone job's
    assert_same_as_left_alone(stopped, whole_gru, log_from=stopped_at)
    assert (sweep / ".submitit").is_dir()


# ------------------------------------------------------------------------ joblib, an attempt without checkpoint
def test_a_job_without_a_checkpoint_starts_again_and_its_attempt_is_kept(tmp_path):
    from rnnlab.report.collect import find_run_dirs

    command = ["-m", "model=rnn,gru", *RUN, "callbacks.model_checkpoint.save_last=false"]
    proc = subprocess.Popen([str(BIN / "rnnlab-train"), *command], cwd=tmp_path, env=env(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not list((tmp_path / "out" / "multiruns").glob("*/0_*/csv/metrics.csv")):  # job 0 is training
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    sweep = sweep_dir(tmp_path)
    (stopped,) = job_dirs(sweep)
    assert summary(stopped)["status"] == "interrupted"
    assert not (stopped / "checkpoints" / "last.ckpt").exists()
    attempt = files(stopped)

    result = run_cli(*command, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                     f"resume_sweep={sweep}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert rnnlab_lines(result) == [
        f"rnnlab: resumed sweep {os.path.relpath(sweep, tmp_path)}: 0 jobs skipped (completed before), 0 resumed "
        "from their last.ckpt, 2 started afresh (1 of them again from scratch, without a checkpoint; the earlier "
        "attempt kept as <job dir>.partial-N)"
    ]
    kept = stopped.with_name(stopped.name + ".partial-1")
    assert files(kept) == attempt  # the stopped attempt, whole and unchanged
    (other,) = [p for p in job_dirs(sweep) if p.name.startswith("1_")]
    assert sorted(p.name for p in job_dirs(sweep)) == sorted([stopped.name, kept.name, other.name])
    for job in (stopped, other):
        assert (summary(job)["status"], summary(job)["global_step"]) == ("completed", BATCHES * EPOCHS)
        assert "taken_back_from" not in json.loads((job / rundir.OWNER_FILE).read_text())
    assert metrics(stopped).step.min() == 0  # from scratch
    # rnnlab-report: the attempt set aside is no run of the sweep
    assert find_run_dirs([sweep]) == sorted(p.resolve() for p in (stopped, other))


# ------------------------------------------------------------------------------------- jobs that are refused
def test_a_job_of_a_live_process_or_of_another_command_is_refused(tmp_path):
    command = ["-m", "model=rnn,gru", *TINY]
    assert run_cli(*command, cwd=tmp_path).returncode == 0
    sweep = sweep_dir(tmp_path)
    done, taken = job_dirs(sweep)
    shown = os.path.relpath(sweep, tmp_path)
    owner = json.loads((taken / rundir.OWNER_FILE).read_text())
    owner.update(status="running", pid=os.getpid())  # job 1 belongs to a live process (this one)
    (taken / rundir.OWNER_FILE).write_text(json.dumps(owner))
    (taken / "summary.json").unlink()
    before = files(taken)

    result = run_cli(*command, f"resume_sweep={shown}", cwd=tmp_path)
    assert result.returncode == 1
    lines = rnnlab_lines(result)
    assert lines[:2] == [
        f"rnnlab: resumed sweep {shown}: 1 job skipped (completed before), 0 resumed from their last.ckpt, 0 started "
        "afresh",
        "rnnlab: error: 1 of 2 jobs failed:",
    ]
    assert lines[2].startswith(f"  {os.path.relpath(taken, tmp_path)}: hydra.sweep.subdir=")
    assert lines[2].endswith("still running); a run never writes into another run's directory: resume the sweep "
                             "once that run has ended")  # fmt: skip
    assert len(lines) == 3
    assert files(taken) == before  # the job wrote nothing there

    # the same directories for other jobs (seed is no part of a job's name): refused, not skipped
    other = run_cli(*command, "seed=5", f"resume_sweep={shown}", cwd=tmp_path)
    assert other.returncode == 1
    lines = rnnlab_lines(other)
    assert lines[1] == "rnnlab: error: 2 of 2 jobs failed:"
    assert lines[2] == (f"  {os.path.relpath(done, tmp_path)}: resume_sweep: job 0's directory "
                        f"{os.path.relpath(done, tmp_path)} holds another job (none there, seed=5 here); resume a "
                        "sweep with its own command, plus resume_sweep=...")  # fmt: skip
    assert summary(done)["status"] == "completed"


# ----------------------------------------------------------------------------------------- one-line refusals
def _sweep_that_ended(root: Path, owner_pid: int | None = None) -> Path:
    """A sweep directory as a sweep leaves it (its claim, its multirun.yaml), without jobs."""
    sweep = root / "old" / "sweep"
    claim = rundir.claim(sweep, "sweep", "hydra.sweep.dir")
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    claim.finish("running" if owner_pid else "ended")
    if owner_pid is None:
        rundir.forget_claims()
    return sweep


@pytest.mark.parametrize(
    ("case", "line"),
    [
        ("missing", r"resume_sweep=old/nowhere: no such directory \(resume_sweep names the directory of the sweep "
                    r"to resume, outputs/multiruns/<time>\)"),
        ("file", r"resume_sweep=old/a_file is a file, not a sweep's directory"),
        ("not a sweep", r"resume_sweep=old is not the directory of an rnnlab sweep \(it has no \.rnnlab-owner\.json "
                        r"of a sweep\); resume_sweep names the directory of the sweep to resume, .*"),
        ("a run", r"resume_sweep=old/run is the directory of a run, not of a sweep; .*"),
        ("still running", r"resume_sweep=old/sweep belongs to a sweep \(pid \d+ on .*; still running\); a sweep is "
                          r"resumed once it has ended"),
        ("no -m", r"resume_sweep: resumes a sweep, and this command starts a single run; run the sweep's own "
                  r"command, with -m, plus resume_sweep=<the sweep's directory>"),
        ("optuna", r"resume_sweep: an Optuna search is not resumed job by job; it continues through its study's "
                   r"storage: run it with hydra.sweeper.storage=<database URL> hydra.sweeper.study_name=<name>, .*"),
        ("another dir", r"resume_sweep=old/sweep and hydra.sweep.dir=elsewhere name different directories; a "
                        r"resumed sweep runs in its own directory: leave hydra.sweep.dir out"),
    ],
)  # fmt: skip
def test_a_wrong_resume_sweep_is_one_line_and_creates_nothing(tmp_path, case, line):
    import re

    rundir.forget_claims()
    sweep = _sweep_that_ended(tmp_path, os.getpid() if case == "still running" else None)
    (tmp_path / "old" / "a_file").write_text("x")
    rundir.claim(tmp_path / "old" / "run", "run", "hydra.run.dir").finish("completed")
    rundir.forget_claims()
    target = {"missing": "old/nowhere", "file": "old/a_file", "not a sweep": "old", "a run": "old/run"}.get(
        case, "old/sweep")  # fmt: skip
    args = {"no -m": [], "optuna": ["-m", "hparams_search=classify_optuna"], "another dir": ["-m",
            "hydra.sweep.dir=elsewhere"]}.get(case, ["-m"])  # fmt: skip
    before = files(tmp_path / "old")
    grid = "model=rnn" if case == "no -m" else "model=rnn,gru"  # (without -m, Hydra itself refuses rnn,gru)
    result = run_cli(*args, grid, *TINY, f"resume_sweep={target}", cwd=tmp_path)
    assert result.returncode == 1
    lines = rnnlab_lines(result)
    assert len(lines) == 1, result.stderr[-3000:]
    assert re.fullmatch(f"rnnlab: error: {line}", lines[0]), lines[0]
    assert files(tmp_path / "old") == before  # nothing changed or created, no outputs/ and no sweep elsewhere
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]
    assert read_owner_status(sweep) == ("running" if case == "still running" else "ended")


def read_owner_status(path: Path) -> str:
    return str(rundir.read_owner(path).get("status"))


# ----------------------------------------------------------------------------------------------- pieces
@pytest.mark.unit
def test_a_sweep_job_on_another_host_has_ended_when_slurm_says_so(tmp_path, monkeypatch):
    """The owner of a job on another node (a SLURM job killed there, without a summary): running unless sacct says
    its SLURM job has ended; without sacct it is taken to be running."""
    owner = {"kind": "run", "pid": 4242, "host": "node-17", "slurm_job": "77_3", "status": "running"}
    monkeypatch.setenv("PATH", str(tmp_path))
    assert rundir.still_running(owner)  # no sacct here
    sacct = tmp_path / "sacct"
    for state, running in (("TIMEOUT", False), ("OUT_OF_MEMORY", False), ("RUNNING", True), ("PENDING", True),
                           ("CANCELLED by 1000", False)):  # fmt: skip
        sacct.write_text(f"#!/bin/sh\n[ \"$7\" = 77_3 ] && echo '{state}'\n")
        sacct.chmod(0o755)
        assert rundir.still_running(owner) is running, state
        assert ("its process is gone" in rundir.describe_owner(owner)) is not running
    assert not rundir.still_running({**owner, "status": "interrupted"})


@pytest.mark.unit
def test_set_aside_keeps_every_attempt(tmp_path):
    job = tmp_path / "3_model=gru"
    for n in (1, 2):
        job.mkdir()
        (job / "summary.json").write_text(str(n))
        assert rundir.set_aside(job) == tmp_path / f"3_model=gru.partial-{n}"
        assert not job.exists()
    assert [(tmp_path / f"3_model=gru.partial-{n}" / "summary.json").read_text() for n in (1, 2)] == ["1", "2"]
    assert [rundir.is_set_aside(p.name) for p in sorted(tmp_path.iterdir())] == [True, True]
    assert not rundir.is_set_aside("3_model=gru")
    assert not rundir.is_set_aside("3_lr=0.partial-x")


@pytest.mark.unit
def test_resume_sweep_is_no_part_of_a_job_name():
    from hydra import compose, initialize_config_dir

    from rnnlab.cli import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["resume_sweep=out/multiruns/x"], return_hydra_config=True)
    assert "resume_sweep" in cfg.hydra.job.config.override_dirname.exclude_keys
    assert cfg.hydra.sweep.dir == "out/multiruns/x"  # the sweep runs in the directory it resumes
