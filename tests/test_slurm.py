"""Sweeps on a real SLURM cluster: Debian's slurmctld, slurmd and munged on this machine (scripts/slurm/cluster.sh,
started by ``bash scripts/test.sh --slurm``, which .ci/run passes). Every job here is queued by the real slurmctld,
started by the real slurmd and run by the real srun; nothing is a stand-in (tests/test_submitit.py has the
stand-in sbatch/srun/sacct tests, which run everywhere).

``pytest -m slurm`` runs just these. Without a cluster (no ``SLURM_CONF``, or sinfo does not answer) they are
skipped with the command that starts one, unless ``RNNLAB_SLURM_REQUIRED=1`` (set by ``--slurm``) makes that a
failure. The cluster has no accounting database, so ``sacct`` cannot answer and rnnlab reads job states from
squeue (rnnlab.runtime.launchers.SlurmStates)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import check_pruning_search, job_dirs, sweep_dir, trial_jobs, trial_reports

pytestmark = [pytest.mark.cli, pytest.mark.slurm]

RNNLAB_TRAIN = Path(sys.executable).parent / "rnnlab-train"
# each job one CPU and 1 GB, so that the sweep fits a small machine (the preset asks for 4 CPUs and 8 GB)
LAUNCHER = ["hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]
TINY = ["task=classify", "data=synthetic_text", "data.num_samples=200", "model.hidden_size=4", "model.embed_dim=4",
        "trainer.max_steps=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]  # fmt: skip


# ------------------------------------------------------------------------------------------------ the cluster
def cluster_env() -> dict[str, str] | None:
    """The environment that reaches the cluster (SLURM_CONF, the SLURM commands on PATH), or None without one."""
    conf = os.environ.get("SLURM_CONF")
    path = f"{os.environ.get('PATH', '')}{os.pathsep}/usr/sbin"
    if not conf or not Path(conf).is_file() or shutil.which("sinfo", path=path) is None:
        return None
    env = {"SLURM_CONF": conf, "PATH": path}
    try:
        states = subprocess.run(["sinfo", "--noheader", "--Node", "--format=%T"], capture_output=True, text=True,
                                timeout=30, env={**os.environ, **env}).stdout.split()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return env if any(s.rstrip("*") in ("idle", "mixed", "allocated") for s in states) else None


@pytest.fixture(scope="module")
def cluster() -> dict[str, str]:
    env = cluster_env()
    if env is None:
        reason = (
            "no SLURM cluster answers (bash scripts/test.sh --slurm, or scripts/slurm/cluster.sh start, starts one)"
        )
        if os.environ.get("RNNLAB_SLURM_REQUIRED") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return env


def slurm(cluster: dict[str, str], *args: str) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=60, env={**os.environ, **cluster})
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout


def job_states(cluster: dict[str, str], job: str) -> dict[str, tuple[str, str]]:
    """{job id (array tasks as <array>_<index>): (state, node list)} from slurmctld."""
    lines = slurm(cluster, "squeue", "--noheader", "--states=all", "--format=%i|%T|%N", f"--jobs={job}").split()
    return {jid: (state, nodes) for jid, state, nodes in (line.split("|") for line in lines)}


def environment(tmp_path: Path, cluster: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "RNNLAB_SLURM_PARTITION")}
    env = {k: v for k, v in env.items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}  # not inside a job
    env.update(cluster, RNNLAB_OUTPUT_DIR=str(tmp_path / "out"), OMP_NUM_THREADS="1")
    return env


def run_cli(tmp_path: Path, cluster: dict[str, str], *args: str, timeout: float = 600):
    return subprocess.run([str(RNNLAB_TRAIN), *args], cwd=tmp_path, env=environment(tmp_path, cluster),
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def wait_for(condition, timeout: float, what: str, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def summary(job: Path) -> dict:
    return json.loads((job / "summary.json").read_text())


def owner(job: Path) -> dict:
    return json.loads((job / ".rnnlab-owner.json").read_text())


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


# ------------------------------------------------------------------------------------------------ a sweep
def test_a_sweep_runs_as_a_slurm_array_and_lists_the_job_that_failed(tmp_path, cluster):
    started = time.monotonic()
    result = run_cli(tmp_path, cluster, "-m", *LAUNCHER, *TINY, "model=rnn,gru", "model.hidden_size=4,0")
    wall = time.monotonic() - started
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "sacct" not in result.stderr + result.stdout  # states came from squeue, without a warning per poll

    sweep = sweep_dir(tmp_path)
    jobs = job_dirs(sweep)
    assert len(jobs) == 4
    array = hydra_job_id(jobs[0]).split("_")[0]
    assert [hydra_job_id(job) for job in jobs] == [f"{array}_{i}" for i in range(4)]  # one array, SLURM's ids
    host = slurm(cluster, "hostname", "-s").strip()
    done = {f"{array}_{i}": "COMPLETED" for i in range(4)}
    ended = lambda: {j: st for j, (st, _) in job_states(cluster, array).items()} == done  # noqa: E731
    wait_for(ended, 120, "SLURM to end the array")
    states = job_states(cluster, array)
    assert {jid: state for jid, (state, _) in states.items()} == {f"{array}_{i}": "COMPLETED" for i in range(4)}
    assert {nodes for _, nodes in states.values()} == {host}
    script = (sweep / ".submitit" / array / f"{array}_submission.sh").read_text()
    for flag in ("--array=0-3%4", "--cpus-per-task=1", "--mem=1GB", "--job-name=rnnlab", "--signal=USR2@120"):
        assert f"#SBATCH {flag}\n" in script

    failing = []
    for job in jobs:
        record = summary(job)
        assert owner(job)["slurm_job"] == hydra_job_id(job)  # the run knew its SLURM job
        if "model.hidden_size=0" in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()):
            failing.append(job)
            assert (record["status"], record["error"]) == ("failed", "model.hidden_size must be > 0, got 0")
        else:
            assert (record["status"], record["global_step"]) == ("completed", 3)
            assert list((job / "tensorboard").glob("events.out.tfevents.*")), job  # logged to TensorBoard
    assert len(failing) == 2
    listed = [line.split(": ", 1) for line in result.stderr.splitlines() if line.startswith("  ")]
    assert result.stderr.count("rnnlab: error: 2 of 4 jobs failed:") == 1
    error = "model.hidden_size must be > 0, got 0"
    assert listed == [[f"  {os.path.relpath(job, tmp_path)}", error] for job in failing]
    print(f"[slurm] sweep of 4 jobs: {wall:.1f} s")


def hydra_job_id(job: Path) -> str:
    return str(yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"])


# ------------------------------------------------------------------------------------------------ preemption
LONG = ["task=classify", "data=synthetic_text", "data.num_samples=2000", "model=gru", "model.hidden_size=8",
        "model.embed_dim=4", "trainer.precision=64", "trainer.max_steps=1500", "trainer.max_epochs=null",
        "trainer.val_check_interval=500", "trainer.check_val_every_n_epoch=null", "trainer.limit_test_batches=2",
        "trainer.enable_progress_bar=false", "logger=csv", "callbacks.model_checkpoint.save_last_every_n_steps=50",
        "seed=11"]  # fmt: skip


def start_sweep(tmp_path: Path, cluster: dict[str, str], *args: str) -> subprocess.Popen:
    log = open(tmp_path / "sweep.log", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen([str(RNNLAB_TRAIN), "-m", *args], cwd=tmp_path, env=environment(tmp_path, cluster),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def running_job(tmp_path: Path) -> tuple[Path, str]:
    """The sweep's one job directory and its SLURM job id, once it has written a last.ckpt."""
    job = wait_for(lambda: next(iter((tmp_path / "out" / "multiruns").glob("*/0_*/checkpoints/last.ckpt")), None),
                   240, "the job's first last.ckpt").parents[1]  # fmt: skip
    return job, owner(job)["slurm_job"]


def assert_as_if_never_stopped(tmp_path: Path, cluster: dict[str, str], job: Path) -> None:
    """The job (LONG, stopped and resumed through SLURM) ended as the same job run here uninterrupted, on one thread
    as the SLURM job had: the same test metrics, best validation loss and bit-identical weights."""
    reference = tmp_path / "reference"
    env = environment(tmp_path, cluster)
    result = subprocess.run([str(RNNLAB_TRAIN), *LONG, f"hydra.run.dir={reference}"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    record, expected = summary(job), summary(reference)
    assert record["test_metrics"] == expected["test_metrics"]
    assert record["fit_metrics"]["val/loss"] == expected["fit_metrics"]["val/loss"]
    ours, theirs = weights(job / "checkpoints" / "last.ckpt"), weights(reference / "checkpoints" / "last.ckpt")
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name


def release_requeued(cluster: dict[str, str], job_id: str) -> None:
    """slurmctld holds a requeued batch job back for a while (its BeginTime); let it start now."""
    wait_for(lambda: job_states(cluster, job_id).get(job_id, ("",))[0] == "PENDING", 120, "the requeued job")
    slurm(cluster, "scontrol", "update", f"JobId={job_id}", "StartTime=now")


@pytest.mark.parametrize("how", ["preemption signal", "scontrol requeue"])
def test_a_preempted_job_is_requeued_and_ends_as_if_never_stopped(tmp_path, cluster, how):
    started = time.monotonic()
    sweep = start_sweep(tmp_path, cluster, *LAUNCHER, *LONG)
    try:
        job, job_id = running_job(tmp_path)
        if how == "preemption signal":  # what SLURM sends before a time limit (submitit's --signal=USR2@90)
            slurm(cluster, "scancel", "--signal=USR2", job_id)
        else:  # an administrator's requeue: SLURM stops the job (SIGTERM, then SIGKILL) and queues it again
            slurm(cluster, "scontrol", "requeue", job_id)
        release_requeued(cluster, job_id)
        code = sweep.wait(timeout=600)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    log = (tmp_path / "sweep.log").read_text()
    assert code == 0, log[-3000:]
    wall = time.monotonic() - started

    record = summary(job)
    assert (record["status"], record["global_step"]) == ("completed", 1500)
    claim = owner(job)
    assert claim["slurm_job"] == job_id
    assert claim["taken_back_from"]["pid"] != claim["pid"]  # the second attempt took the directory back
    logs = "".join(p.read_text() for p in (sweep_dir(tmp_path) / ".submitit").rglob("*_log.*"))
    assert re.search(r"Restoring states from the checkpoint path at \S+/checkpoints/last\.ckpt", logs)
    if how == "preemption signal":
        assert "Requeued job" in logs  # submitit's checkpoint-and-requeue protocol

    assert_as_if_never_stopped(tmp_path, cluster, job)
    print(f"[slurm] {how}: requeued and resumed job {job_id}: {wall:.1f} s")


# ------------------------------------------------------------------------------------------------ a cancelled job
def test_a_cancelled_job_ends_the_sweep_with_its_resume_command(tmp_path, cluster):
    sweep = start_sweep(tmp_path, cluster, *LAUNCHER, *LONG)
    try:
        _, job_id = running_job(tmp_path)
        slurm(cluster, "scancel", job_id)
        code = sweep.wait(timeout=300)  # without accounting, only squeue can tell the launcher that the job ended
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    log = (tmp_path / "sweep.log").read_text()
    assert code == 1, log[-3000:]
    assert "Traceback" not in log
    # scancel sends SIGTERM: the run wrote a checkpoint of its step and its summary, and no result for submitit,
    # so only the job's state (from squeue: no accounting here) could tell the launcher that it had ended
    assert not list((sweep_dir(tmp_path) / ".submitit").rglob("*_result.pkl"))
    errors = [line for line in log.splitlines() if line.startswith("rnnlab: error:")]
    assert errors == ["rnnlab: error: 1 of 1 jobs failed:"]
    (listed,) = [line for line in log.splitlines() if line.startswith("  ")]
    assert re.fullmatch(r"  out/multiruns/[^/]+/0_\S+: interrupted by SIGTERM at step \d+; resume: rnnlab-train .*"
                        r"'ckpt_path=\S+/checkpoints/last\.ckpt'", listed), listed  # fmt: skip
    assert "CANCELLED" in (sweep_dir(tmp_path) / ".submitit" / job_id / f"{job_id}_0_log.err").read_text()


# ------------------------------------------------------------------------------------------------ DDP
DDP = ["task=classify", "data=synthetic_text", "data.num_samples=400", "data.min_len=5", "data.max_len=12",
       "model=gru", "model.hidden_size=16", "model.embed_dim=8", "trainer.precision=64", "trainer.max_steps=4",
       "trainer.val_check_interval=2", "trainer.num_sanity_val_steps=0", "trainer.accelerator=cpu", "seed=7",
       "trainer.enable_progress_bar=false", "logger=csv"]  # fmt: skip


def test_one_job_over_two_srun_tasks_trains_with_ddp_like_one_process(tmp_path, cluster):
    started = time.monotonic()
    result = run_cli(tmp_path, cluster, "-m", *LAUNCHER, "hydra.launcher.tasks_per_node=2", "trainer=ddp",
                     "data.batch_size=16", *DDP)  # fmt: skip
    wall = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    (job,) = job_dirs(sweep_dir(tmp_path))
    record = summary(job)
    assert (record["status"], record["world_size"], record["global_step"]) == ("completed", 2, 4)
    job_id = owner(job)["slurm_job"]
    wait_for(lambda: job_states(cluster, job_id)[job_id][0] == "COMPLETED", 120, f"SLURM to end job {job_id}")
    logs = sweep_dir(tmp_path) / ".submitit" / job_id
    for rank in (0, 1):  # each srun task is one DDP process
        assert f"Initializing distributed: GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in (
            logs / f"{job_id}_{rank}_log.out").read_text()  # fmt: skip

    single = tmp_path / "single"
    one = subprocess.run([str(RNNLAB_TRAIN), *DDP, "data.batch_size=32", f"hydra.run.dir={single}"], cwd=tmp_path,
                         env=environment(tmp_path, cluster), capture_output=True, text=True, timeout=600)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    reference = summary(single)
    for group in ("fit_metrics", "test_metrics"):
        for name, value in reference[group].items():
            if name.startswith(("time/", "train/")):  # training-step metrics are rank 0's half batch
                continue
            assert record[group][name] == pytest.approx(value, rel=1e-9, abs=1e-12), name  # as tests/test_ddp.py
    print(f"[slurm] DDP over 2 srun tasks: {wall:.1f} s")


def test_the_cluster_is_slurm_itself(cluster):
    """What ran above ran on slurmctld and slurmd: their versions, and the single node of scripts/slurm/slurm.conf."""
    version = slurm(cluster, "sinfo", "--version")
    assert re.match(r"slurm(-wlm)? \d+\.\d+", version), version
    conf = slurm(cluster, "scontrol", "show", "config")
    assert re.search(r"^ClusterName\s*=\s*rnnlab$", conf, re.MULTILINE)
    assert re.search(r"^AccountingStorageType\s*=\s*accounting_storage/none$", conf, re.MULTILINE)
    nodes = slurm(cluster, "scontrol", "show", "node", "-o")
    assert nodes.count("NodeName=") == 1
    assert f"CPUTot={os.cpu_count()}" in nodes


# ------------------------------------------------------------------------------------------------ a shared search
SEARCH_TINY = ["data.num_samples=200", "model.hidden_size=4", "model.embed_dim=4", "trainer.max_steps=2",
               "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "trainer.enable_progress_bar=false",
               "trainer.enable_model_summary=false"]  # fmt: skip


def test_an_optuna_study_shared_by_the_tasks_of_a_slurm_array(tmp_path, cluster):
    """Two SLURM array tasks, each a worker running the same search command (the default launcher inside the task),
    join one study in an sqlite file: 2 x 3 trials, all complete, none proposed twice, each task's sampler seeded
    with 1234 + its SLURM_ARRAY_TASK_ID."""
    import optuna

    started = time.monotonic()
    db = tmp_path / "search.db"
    # pruner=none: each trial reports its validation at step 2 to the shared study from its array task, none is
    # pruned (the preset's median pruner could prune the sixth trial against the first five), so all 6 complete
    command = " ".join([str(RNNLAB_TRAIN), "-m", "hparams_search=classify_optuna", "hydra.sweeper.n_trials=3",
                        f"hydra.sweeper.storage=sqlite:///{db}", "hydra/sweeper/pruner=none",
                        "trainer.val_check_interval=2", "trainer.check_val_every_n_epoch=null",
                        *SEARCH_TINY])  # fmt: skip
    env = {k: v for k, v in environment(tmp_path, cluster).items() if k != "RNNLAB_SEARCH_WORKER"}
    submitted = subprocess.run(["sbatch", "--parsable", "--array=0-1", "--cpus-per-task=1", "--mem=1G",
                                f"--output={tmp_path}/worker_%a.log", f"--chdir={tmp_path}", f"--wrap={command}"],
                               capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    array = submitted.stdout.strip().split(";")[0]
    ended = lambda: all(st in ("COMPLETED", "FAILED") for st, _ in job_states(cluster, array).values())  # noqa: E731
    wait_for(ended, 600, f"the search array {array}", step=2)
    logs = "".join((tmp_path / f"worker_{i}.log").read_text() for i in (0, 1))
    assert {st for st, _ in job_states(cluster, array).values()} == {"COMPLETED"}, logs[-3000:]
    wall = time.monotonic() - started

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.load_study(study_name="classify_optuna", storage=f"sqlite:///{db}").trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6  # no trial proposed twice
    assert all(list(t.intermediate_values) == [2] for t in trials)  # reported at the validation of step 2
    workers = [json.loads(p.read_text()) for p in (tmp_path / "out" / "multiruns").glob("*/optuna_worker.json")]
    by_index = {w["worker"]: w for w in workers}
    assert sorted(by_index) == [0, 1]
    for index, worker in by_index.items():
        assert worker["seed"] == 1234 + index
        assert worker["slurm_job"] == f"{array}_{index}"
    print(f"[slurm] Optuna study shared by a 2-task array (2 x 3 trials): {wall:.1f} s")


def test_a_pruning_search_sends_its_trials_to_slurm_and_prunes_them_through_the_storage(tmp_path, cluster):
    """An Optuna search with the threshold pruner whose trials are SLURM jobs (hydra/launcher=slurm_cpu, two at a
    time): each job, in its own SLURM task, finds its trial in the sweep's optuna_trials.json, reports each validation
    to the SQLite study and stops where the pruner says; the sweeper tells pruned trials PRUNED."""
    import optuna

    lower = 0.55
    db = tmp_path / "search.db"
    started = time.monotonic()
    result = run_cli(tmp_path, cluster, "-m", "hparams_search=classify_optuna", *LAUNCHER, *SEARCH_TINY,
                     "trainer.max_steps=6", "trainer.val_check_interval=2", "trainer.check_val_every_n_epoch=null",
                     "threads=1", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=4",
                     f"hydra.sweeper.storage=sqlite:///{db}", "hydra/sweeper/pruner=threshold",
                     f"hydra.sweeper.pruner.lower={lower}")  # fmt: skip
    wall = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_dir(tmp_path)
    jobs = trial_jobs(sweep)
    assert len(jobs) == 4
    assert len({hydra_job_id(job["dir"]) for job in jobs}) == 4  # four SLURM jobs
    check_pruning_search(sweep, jobs, max_steps=6)
    for job in jobs:  # the threshold rule: pruned at the first validation below `lower`
        mine = trial_reports(job)
        expected = next((step for step in sorted(mine) if mine[step] < lower), None)
        got = job["summary"]["optuna_trial"]["pruned"]
        assert (got["step"] if got else None) == expected, mine
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = {t.number: t for t in optuna.load_study(study_name="classify_optuna", storage=f"sqlite:///{db}").trials}
    for job in jobs:
        trial = study[job["entry"]["trial"]]
        assert trial.state.name == job["entry"]["state"]
        assert trial.intermediate_values == pytest.approx(trial_reports(job))
    states = sorted(t.state.name for t in study.values())
    assert "PRUNED" in states, states
    assert "COMPLETE" in states, states
    print(f"[slurm] pruning search of 4 SLURM jobs ({', '.join(states)}): {wall:.1f} s")


# ------------------------------------------------------------------------------------------------ resuming a sweep
def test_a_slurm_sweep_whose_login_process_died_is_resumed(tmp_path, cluster):
    """The login node's rnnlab-train -m is killed and its job cancelled part-way; the same command with
    resume_sweep= submits the job again, which resumes from its last.ckpt in its own directory, through SLURM, to the
    same weights as a job never stopped."""
    started = time.monotonic()
    sweep = start_sweep(tmp_path, cluster, *LAUNCHER, *LONG)
    try:
        job, job_id = running_job(tmp_path)
        os.killpg(sweep.pid, signal.SIGKILL)  # the login node's process, and only it
        slurm(cluster, "scancel", "--signal=KILL", "--full", job_id)  # then the job: its batch shell and srun
        wait_for(lambda: job_states(cluster, job_id)[job_id][0] in ("CANCELLED", "FAILED"), 120, "the cancelled job")
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    # SLURM gives the job's step SIGTERM when its batch shell dies, and KillWait (10 s) before SIGKILL: the run
    # checkpoints the step it is in, or, on a slow machine, is killed before it can; either is an unfinished job
    assert not (job / "summary.json").is_file() or summary(job)["status"] == "interrupted"
    step_before = torch.load(job / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]

    result = run_cli(tmp_path, cluster, "-m", *LAUNCHER, *LONG, f"resume_sweep={sweep_dir(tmp_path)}")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = "0 jobs skipped (completed before), 1 resumed from its last.ckpt, 0 started afresh"
    assert f"rnnlab: resumed sweep {os.path.relpath(sweep_dir(tmp_path), tmp_path)}: {counts}\n" in result.stderr
    record = summary(job)
    assert (record["status"], record["global_step"]) == ("completed", 1500)
    assert owner(job)["slurm_job"] != job_id  # a new SLURM job took the directory back
    assert_as_if_never_stopped(tmp_path, cluster, job)
    print(f"[slurm] sweep resumed after its login process died (killed at step {step_before}): "
          f"{time.monotonic() - started:.1f} s")  # fmt: skip
