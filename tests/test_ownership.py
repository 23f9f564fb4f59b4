"""A run never loses or overwrites another's data: every run and sweep claims its directory atomically, before it
writes anything; every path a run writes to lies inside a directory it owns; a run that ends before its first
training step gives its directory back; a requeued SLURM job takes back its own claim and resumes there.

The race runs real concurrent processes; the CLI cases run the real ``rnnlab-train``."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rnnlab.errors import ConfigError
from rnnlab.runtime import rundir
from rnnlab.train import train

pytestmark = pytest.mark.unit

BIN = Path(sys.executable).parent
TINY = ("task=classify", "data=synthetic_text", "data.num_samples=200", "data.batch_size=16", "model=gru",
        "model.hidden_size=8", "model.embed_dim=8", "trainer.max_steps=4", "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "logger=csv")  # fmt: skip
CLI_TINY = [*TINY, "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=default"]


@pytest.fixture(autouse=True)
def _no_claims_left():
    rundir.forget_claims()
    yield
    rundir.forget_claims()


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    environment.update({"OMP_NUM_THREADS": "1", "RNNLAB_OUTPUT_DIR": str(cwd / "out"), **(env or {})})
    return subprocess.run([str(BIN / "rnnlab-train"), *args], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return [line for line in result.stderr.splitlines() if line.startswith("rnnlab:") or line.startswith("  ")]


# ---------------------------------------------------------------------------------------------- claims
def test_a_directory_is_claimed_once(tmp_path):
    first = rundir.claim(tmp_path / "run", "run", "hydra.run.dir")
    owner = json.loads((tmp_path / "run" / rundir.OWNER_FILE).read_text())
    assert owner["pid"] == os.getpid()
    assert owner["kind"] == "run"
    assert owner["status"] == "running"
    with pytest.raises(ConfigError, match=r"^hydra.run.dir=.*/run belongs to a run \(pid \d+ on .*still running\)"):
        rundir.claim(tmp_path / "run", "run", "hydra.run.dir")  # a second run of this very process too
    first.finish("completed")
    with pytest.raises(ConfigError, match=r"belongs to a run .*; completed\); a run never writes into another"):
        rundir.claim(tmp_path / "run", "run", "paths.run_dir")
    with pytest.raises(ConfigError, match=r"^hydra.sweep.dir=.* belongs to a run"):
        rundir.claim(tmp_path / "run", "sweep", "hydra.sweep.dir")  # a sweep pointed at a run
    rundir.claim(tmp_path / "sweep", "sweep", "hydra.sweep.dir")
    with pytest.raises(ConfigError, match=r"^hydra.run.dir=.* belongs to a sweep"):
        rundir.claim(tmp_path / "sweep", "run", "hydra.run.dir")  # and a run pointed at a sweep


def test_a_run_from_before_claims_is_refused_too(tmp_path):
    old = tmp_path / "old"
    (old / "checkpoints").mkdir(parents=True)
    (old / "summary.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"already holds a run \(checkpoints, summary.json\)"):
        rundir.claim(old, "run", "hydra.run.dir")
    assert sorted(p.name for p in old.iterdir()) == ["checkpoints", "summary.json"]
    unrelated = tmp_path / "mine"
    unrelated.mkdir()
    (unrelated / "notes.txt").write_text("x")
    claim = rundir.claim(unrelated, "run", "hydra.run.dir")  # unrelated files are no run: allowed
    (unrelated / "summary.json").write_text("{}")
    claim.release()  # an early failure takes away what the run wrote, never what was there before
    assert sorted(p.name for p in unrelated.iterdir()) == ["notes.txt"]


def _claim_at_once(path: str, barrier, results) -> None:
    barrier.wait()
    try:
        rundir.claim(path, "run", "hydra.run.dir")
        results.put("won")
    except ConfigError as err:
        results.put(str(err))


def test_claims_race_between_processes(tmp_path):
    """Eight processes claim one directory at the same instant, ten times over: exactly one wins each time."""
    context = multiprocessing.get_context("fork")
    for attempt in range(10):
        target = tmp_path / f"race{attempt}"
        barrier, results = context.Barrier(8), context.Queue()
        procs = [context.Process(target=_claim_at_once, args=(str(target), barrier, results)) for _ in range(8)]
        for proc in procs:
            proc.start()
        outcomes = [results.get(timeout=60) for _ in procs]
        for proc in procs:
            proc.join(timeout=60)
        assert outcomes.count("won") == 1, outcomes
        assert all("belongs to a run" in o for o in outcomes if o != "won"), outcomes


def test_a_requeued_slurm_job_takes_back_its_own_claim(tmp_path, monkeypatch):
    run = tmp_path / "job"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "41")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    rundir.claim(run, "run", "hydra.sweep.subdir")
    owner = json.loads((run / rundir.OWNER_FILE).read_text())
    assert owner["slurm_job"] == "41_3"
    rundir.forget_claims()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owner["pid"] = int(dead.stdout)  # the process of the job's first run: gone
    (run / rundir.OWNER_FILE).write_text(json.dumps(owner))

    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")  # another task of the array: not its claim
    with pytest.raises(ConfigError, match=r"belongs to a run \(pid \d+ on .*, SLURM job 41_3, .*process is gone"):
        rundir.claim(run, "run", "hydra.sweep.subdir")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")  # the same job, requeued
    again = rundir.claim(run, "run", "hydra.sweep.subdir")
    assert again.taken_back
    assert again.holds_results()  # never given back: it resumes there
    assert json.loads((run / rundir.OWNER_FILE).read_text())["taken_back_from"]["pid"] == owner["pid"]

    rundir.forget_claims()
    owner = json.loads((run / rundir.OWNER_FILE).read_text())
    with pytest.raises(ConfigError, match="still running"):  # the claim of a live process is never taken
        rundir.claim(run, "run", "hydra.sweep.subdir")
    assert owner["pid"] == os.getpid()


# --------------------------------------------------------------------------------- train() and its paths
@pytest.mark.compose
def test_paths_run_dir_of_an_earlier_run_is_refused(compose, tmp_path):
    earlier = tmp_path / "earlier"
    train(compose(*TINY, run_dir=earlier))
    before = snapshot(earlier)
    with pytest.raises(ConfigError, match=r"^paths.run_dir=.*earlier belongs to a run .*completed\)"):
        train(compose(*TINY, "seed=5", run_dir=earlier))
    assert snapshot(earlier) == before


@pytest.mark.compose
@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("callbacks.model_checkpoint.dirpath={other}/checkpoints", "callbacks.model_checkpoint.dirpath"),
        ("logger.csv.save_dir={other}", "logger.csv"),
        ("trainer.default_root_dir={other}", "trainer.default_root_dir"),
    ],
)
def test_every_path_a_run_writes_lies_inside_its_directory(compose, tmp_path, override, key):
    other = tmp_path / "other"
    train(compose(*TINY, run_dir=other))
    before = snapshot(other)
    with pytest.raises(ConfigError, match=rf"^{key}=.*other.* is outside this run's directory"):
        train(compose(*TINY, override.format(other=other), run_dir=tmp_path / "mine"))
    assert snapshot(other) == before
    assert not (tmp_path / "mine").exists()  # refused before training: the directory was given back


@pytest.mark.compose
def test_a_run_that_fails_before_training_gives_its_directory_back(compose, tmp_path, monkeypatch):
    import rnnlab.train as train_module

    def broken(*args, **kwargs):
        raise ConfigError("task.sample_prompt: a failure after the claim")

    monkeypatch.setattr(train_module, "check_monitor", broken)
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="a failure after the claim"):
        train(compose(*TINY, run_dir=run))
    assert not run.exists()
    monkeypatch.undo()
    train(compose(*TINY, run_dir=run))  # the same directory again: free
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


# ------------------------------------------------------------------------------------------------ the CLI
@pytest.mark.cli
def test_cli_concurrent_runs_with_one_directory(tmp_path):
    """Two real runs started at the same instant with the same hydra.run.dir: one trains, the other ends with one
    line and exit 1, and the directory holds the winner's files only (its seed in .hydra and summary.json)."""
    run = tmp_path / "shared"
    alone = tmp_path / "alone"
    assert cli(*CLI_TINY, "seed=1", f"hydra.run.dir={alone}", cwd=tmp_path).returncode == 0
    events_of_one_run = len(list((alone / "tensorboard").glob("events.*")))
    for attempt in range(3):
        target = run.with_name(f"shared{attempt}")
        environment = {**os.environ, "OMP_NUM_THREADS": "1", "RNNLAB_OUTPUT_DIR": str(tmp_path / "out")}
        procs = [subprocess.Popen([str(BIN / "rnnlab-train"), *CLI_TINY, f"seed={seed}", f"hydra.run.dir={target}"],
                                  cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for seed in (1, 2)]  # fmt: skip
        outs = [p.communicate(timeout=300) for p in procs]
        codes = [p.returncode for p in procs]
        assert sorted(codes) == [0, 1], outs
        winner = (1, 2)[codes.index(0)]
        loser_err = outs[codes.index(1)][1]
        assert "Traceback" not in loser_err
        lines = [line for line in loser_err.splitlines() if line.strip()]
        assert len(lines) == 1, loser_err
        assert lines[0].startswith(f"rnnlab: error: hydra.run.dir={target}"), loser_err
        assert json.loads((target / "summary.json").read_text())["seed"] == winner
        assert f"seed={winner}" in (target / ".hydra" / "overrides.yaml").read_text()
        assert len(list((target / "tensorboard").glob("events.*"))) == events_of_one_run
        owner = json.loads((target / rundir.OWNER_FILE).read_text())
        assert owner["status"] == "completed"
        assert f"seed={winner}" in owner["argv"]


@pytest.mark.cli
def test_cli_sweep_jobs_that_share_a_directory(tmp_path):
    """``-m seed=1,2 hydra.sweep.subdir=job``: the second job is refused, writes nothing, and is listed; exit 1."""
    sweep = tmp_path / "sweep"
    result = cli("-m", *CLI_TINY, "seed=1,2", f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=job", cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    lines = error_lines(result)
    assert lines[0] == "rnnlab: error: 1 of 2 jobs failed:"
    assert "job: hydra.sweep.subdir=" in lines[1]
    assert "belongs to a run" in lines[1]
    assert json.loads((sweep / "job" / "summary.json").read_text())["seed"] == 1
    assert "seed=1" in (sweep / "job" / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.cli
def test_cli_run_and_sweep_directories_do_not_mix(tmp_path):
    run, sweep = tmp_path / "run", tmp_path / "sweep"
    assert cli(*CLI_TINY, f"hydra.run.dir={run}", cwd=tmp_path).returncode == 0
    assert cli("-m", *CLI_TINY, "seed=1", f"hydra.sweep.dir={sweep}", cwd=tmp_path).returncode == 0
    runs, sweeps = snapshot(run), snapshot(sweep)
    for args, key in (
        (["-m", "seed=3", f"hydra.sweep.dir={run}"], "hydra.sweep.dir"),
        ([f"hydra.run.dir={sweep}"], "hydra.run.dir"),
        ([f"paths.run_dir={run}", f"hydra.run.dir={tmp_path / 'new'}"], "paths.run_dir"),
        ([f"callbacks.model_checkpoint.dirpath={run}/checkpoints"], "callbacks.model_checkpoint.dirpath"),
    ):
        result = cli(*args[:1], *CLI_TINY, *args[1:], cwd=tmp_path)
        assert result.returncode == 1
        lines = error_lines(result)
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"rnnlab: error: {key}="), result.stderr
    assert snapshot(run) == runs
    assert snapshot(sweep) == sweeps
    assert not (tmp_path / "new").exists()  # the refused run gave back the directory it had claimed


@pytest.mark.cli
def test_cli_early_error_gives_the_directory_back(tmp_path):
    run = tmp_path / "run"
    bad = cli(*CLI_TINY, "trainer.val_check_interval=1000", f"hydra.run.dir={run}", cwd=tmp_path)
    assert bad.returncode == 1
    assert error_lines(bad)[0].startswith("rnnlab: error: trainer.val_check_interval=1000 is more than the 9 ")
    assert not run.exists()  # neither .hydra/ nor an empty cli.log is left behind
    good = cli(*CLI_TINY, f"hydra.run.dir={run}", cwd=tmp_path)
    assert good.returncode == 0, good.stderr[-3000:]
