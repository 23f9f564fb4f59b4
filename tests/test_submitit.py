"""Sweeps through hydra-submitit-launcher: real submitit_local sweeps, the SLURM presets composed, and a SLURM sweep
run end to end against stand-in sbatch/srun/sacct commands (Python scripts that run the batch script on this machine
the way SLURM would)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import job_dirs, sweep_dir
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from rnnlab.cli import config_dir
from rnnlab.runtime.launchers import uncompleted_line

pytestmark = pytest.mark.cli

RNNLAB_TRAIN = Path(sys.executable).parent / "rnnlab-train"
SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
# a tiny classifier: 200 samples, 3 steps, one validation and one test batch, CSV logs only
TINY = ["task=classify", "data=synthetic_text", "data.num_samples=200", "model.hidden_size=4", "model.embed_dim=4",
        "trainer.max_steps=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "logger=csv",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]  # fmt: skip


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    environment = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "RNNLAB_SLURM_PARTITION")}
    environment.update(RNNLAB_OUTPUT_DIR=str(cwd / "out"), OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run(
        [str(RNNLAB_TRAIN), *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout
    )


def hydra_job_id(job: Path) -> str:
    return str(yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"])


def assert_complete(job: Path, cell: str) -> None:
    summary = json.loads((job / "summary.json").read_text())
    assert (summary["status"], summary["cell"], summary["task"], summary["global_step"]) == (
        "completed", cell, "classify", 3)  # fmt: skip
    resolved = yaml.safe_load((job / "config_resolved.yaml").read_text())
    assert resolved["paths"]["run_dir"] == str(job)
    assert (job / "csv").is_dir()


# ----------------------------------------------------------------------------------------- submitit_local
def test_submitit_local_sweep_runs_each_job_in_its_own_process(tmp_path):
    result = run_cli("-m", "hydra/launcher=submitit_local", "model=rnn,gru", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_dir(tmp_path)
    assert f"Submitit 'local' sweep output dir : {sweep}" in result.stdout
    jobs = job_dirs(sweep)
    assert [p.name.split("_", 1)[0] for p in jobs] == ["0", "1"]
    logs = sweep / ".submitit"
    ids = []
    for job, cell in zip(jobs, ["rnn", "gru"], strict=True):
        assert f"model={cell}" in job.name
        assert "launcher" not in job.name  # hydra/launcher=... is no override of the job
        assert_complete(job, cell)
        job_id = hydra_job_id(job)  # submitit's job id (the worker's pid), and the name of its log directory
        ids.append(job_id)
        assert (logs / job_id / f"{job_id}_0_result.pkl").is_file()
        out = (logs / job_id / f"{job_id}_0_log.out").read_text()  # the job's stdout: submitit's, Hydra's, rnnlab's
        assert "Job completed successfully" in out
        assert f"Run directory: {job.relative_to(tmp_path)}" in out
    assert len(set(ids)) == 2
    assert not (tmp_path / "out" / "runs").exists()


def test_a_failing_job_says_why_in_its_log_and_the_sweep_fails(tmp_path):
    result = run_cli("-m", "hydra/launcher=submitit_local", "optimizer.lr=0.01,-1", "model=rnn", *TINY, cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    line = "optimizer.lr must be a finite number > 0, got -1.0"
    assert any(ln.startswith("rnnlab: error:") for ln in result.stderr.splitlines()), result.stderr[-3000:]
    assert any(ln.endswith(line) for ln in result.stderr.splitlines()), result.stderr[-3000:]  # the sweep says why
    assert "Traceback" not in result.stderr
    sweep = sweep_dir(tmp_path)
    good, bad = job_dirs(sweep)
    assert_complete(good, "rnn")  # the other job still ran
    assert (
        not (bad / "summary.json").exists() or json.loads((bad / "summary.json").read_text())["status"] != "completed"
    )
    job_id = hydra_job_id(bad)
    log = (sweep / ".submitit" / job_id / f"{job_id}_0_log.err").read_text()
    assert f"rnnlab: error: {line}" in log.splitlines()  # the failed job's own log says why, in one line
    assert "Traceback" not in log


# ---------------------------------------------------------------------------------- SLURM presets composed
@pytest.mark.unit
def test_slurm_cpu_preset_composes_to_the_submitit_slurm_launcher(raw_compose, monkeypatch):
    monkeypatch.setenv("RNNLAB_SLURM_PARTITION", "short")
    monkeypatch.setenv("RNNLAB_SLURM_ACCOUNT", "lab42")
    launcher = raw_compose("hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=2").hydra.launcher
    assert launcher._target_ == SLURM_LAUNCHER
    assert (launcher.partition, launcher.account, launcher.name) == ("short", "lab42", "rnnlab")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.cpus_per_task, launcher.gpus_per_node) == (1, 1, 2, None)
    assert (launcher.timeout_min, launcher.mem_gb) == (120, 8)
    assert list(launcher.setup) == ["export OMP_NUM_THREADS=2"]  # follows cpus_per_task
    assert launcher.max_num_timeout == 5  # ours: a job at its time limit is requeued (the plugin's default is 0)
    assert launcher.signal_delay_s == 120  # the plugin's keys are all there

    monkeypatch.delenv("RNNLAB_SLURM_PARTITION")
    monkeypatch.delenv("RNNLAB_SLURM_ACCOUNT")
    cfg = raw_compose("hydra/launcher=slurm_cpu")
    assert cfg.hydra.launcher.partition is None  # no variable: the cluster's default partition
    assert cfg.hydra.launcher.account is None
    assert cfg.hydra.launcher.submitit_folder == f"{cfg.hydra.sweep.dir}/.submitit/%j"


@pytest.mark.unit
def test_slurm_gpu_preset_follows_the_trainer(raw_compose, monkeypatch):
    monkeypatch.setenv("RNNLAB_SLURM_PARTITION", "gpu")
    launcher = raw_compose("hydra/launcher=slurm_gpu", "trainer=gpu").hydra.launcher
    assert launcher._target_ == SLURM_LAUNCHER
    assert launcher.partition == "gpu"
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node, launcher.mem_gb) == (1, 1, 1, 16)
    ddp = raw_compose("hydra/launcher=slurm_gpu", "trainer=gpu", "trainer.devices=4", "trainer.num_nodes=2")
    assert (ddp.hydra.launcher.nodes, ddp.hydra.launcher.gpus_per_node, ddp.hydra.launcher.tasks_per_node) == (2, 4, 4)


def test_slurm_gpu_without_a_device_count_is_one_line(tmp_path):
    result = run_cli("-m", "hydra/launcher=slurm_gpu", *TINY, cwd=tmp_path)  # trainer=default: devices=auto
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rnnlab: error: hydra.launcher.gpus_per_node")
    assert "auto" in lines[0]


def test_slurm_preset_without_srun_is_one_line(tmp_path):
    bare = {"PATH": str(RNNLAB_TRAIN.parent)}  # the venv's bin only: no sbatch, no srun, whatever this machine has
    result = run_cli("-m", "hydra/launcher=slurm_cpu", "model=rnn,gru", *TINY, cwd=tmp_path, env=bare)
    assert result.returncode == 1
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        "rnnlab: error: hydra/launcher: a SLURM launcher (slurm_cpu, slurm_gpu, submitit_slurm) needs srun, and srun "
        "is not on PATH; start SLURM sweeps on a machine of the cluster (hydra/launcher=submitit_local runs them here)"
    ], result.stderr
    assert not list((tmp_path / "out").rglob(".hydra"))  # no job ran


@pytest.mark.unit
def test_uncompleted_job_messages_become_one_line():
    job = "/s/.submitit/4200_1/4200_1_0"
    killed = (f"Job 4200_1 (task: 0) with path {job}_result.pkl\nhas not produced any output (state: OUT_OF_MEMORY)\n"
              "Error stream produced:\n----\noom-kill event")  # fmt: skip
    expected = f"job 4200_1 (task 0) ended without a result (state OUT_OF_MEMORY); its log: {job}_log.err"
    assert uncompleted_line(killed) == expected
    failed = "Job (task=0) failed during processing with trace:\n----\nTraceback ...\n  File x\nKeyError: 'hydra'\n"
    assert uncompleted_line(failed) == "a job failed outside its run: KeyError: 'hydra'"
    assert uncompleted_line("something else\nmore") == "something else"


SACCT_OFF = "#!/bin/sh\necho 'Slurm accounting storage is disabled' >&2\nexit 1\n"
SQUEUE = """#!/bin/sh
echo "$@" > "$(dirname "$0")/squeue.args"
printf '%s\\n' '4300_0|COMPLETED|node1' '4300_1|RUNNING|node2' '4300_[2-3%2]|PENDING|' '4301|CANCELLED|node1'
"""


@pytest.mark.unit
def test_without_accounting_job_states_come_from_squeue(tmp_path, monkeypatch):
    """On a cluster without accounting (sacct fails), submitit's watcher asks squeue, in sacct's own format, so a
    job that SLURM cancelled is seen to end; a pending array range counts for every index it holds."""
    from submitit.slurm import slurm as submitit_slurm

    from rnnlab.runtime.launchers import squeue_command, squeue_watcher

    for name, text in (("sacct", SACCT_OFF), ("squeue", SQUEUE)):
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    watcher = squeue_watcher(submitit_slurm.SlurmInfoWatcher)(delay_s=600)
    for job in ("4300_0", "4300_1", "4300_3", "4301"):
        watcher.register_job(job)
    states = {job: watcher.get_state(job, mode="force") for job in ("4300_0", "4300_1", "4300_3", "4301")}
    assert states == {"4300_0": "COMPLETED", "4300_1": "RUNNING", "4300_3": "PENDING", "4301": "CANCELLED"}
    assert watcher.accounting is False
    assert watcher.is_done("4301", mode="cache")
    assert not watcher.is_done("4300_3", mode="cache")
    args = (tmp_path / "squeue.args").read_text().split()
    assert args[:3] == ["--noheader", "--states=all", "--format=%i|%T|%N"]
    assert sorted(args[3].removeprefix("--jobs=").split(",")) == ["4300", "4301"]
    assert squeue_command(["sacct", "-o", "JobID,State,NodeList", "--parsable2", "-j", "7", "-j", "9"])[-1] == (
        "--jobs=7,9")  # fmt: skip


@pytest.mark.unit
def test_with_accounting_submitit_keeps_sacct(tmp_path, monkeypatch):
    from submitit.slurm import slurm as submitit_slurm

    from rnnlab.runtime.launchers import squeue_watcher

    (tmp_path / "sacct").write_text("#!/bin/sh\necho 'JobID|State|NodeList'\necho '4400|TIMEOUT|node1'\n")
    (tmp_path / "sacct").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    watcher = squeue_watcher(submitit_slurm.SlurmInfoWatcher)(delay_s=600)
    watcher.register_job("4400")
    assert watcher.get_state("4400", mode="force") == "TIMEOUT"
    assert watcher.accounting is True


def test_project_presets_do_not_shadow_the_plugin_and_help_lists_them(tmp_path):
    mine = {p.stem for p in (Path(config_dir()) / "hydra" / "launcher").glob("*.yaml")}
    assert mine == {"slurm_cpu", "slurm_gpu"}
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        options = set(GlobalHydra.instance().config_loader().get_group_options("hydra/launcher"))
    assert {"basic", "joblib", "submitit_local", "submitit_slurm"} <= options
    assert mine <= options
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = re.search(r"^hydra/launcher:\s+(.*)$", result.stdout, re.MULTILINE)
    assert line, result.stdout
    assert set(re.findall(r"[a-z0-9_]+", re.sub(r"\([^)]*\)", "", line.group(1)))) == options


_HELP_PROBE = """
import json, sys
sys.argv = ["rnnlab-train", "--help"]
import rnnlab.cli
try:
    rnnlab.cli.train_main()
except SystemExit:
    pass
print("@@" + json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("submitit", "torch", "lightning"))))
"""


def test_help_does_not_import_submitit(tmp_path):
    result = subprocess.run([sys.executable, "-c", _HELP_PROBE], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "hydra/launcher:" in result.stdout
    assert json.loads(result.stdout.rpartition("@@")[2]) == []  # Hydra finds the plugin; submitit loads at launch


# ------------------------------------------------------------------------ SLURM, with stand-in commands
# sbatch records the batch script and runs each array task in the background, with the variables SLURM sets; srun
# runs its command once per task (SLURM_PROCID 0, 1, ...) with its --output/--error; sacct reports the states the
# runner recorded.
SBATCH = r"""
import os, re, shutil, subprocess, sys
from pathlib import Path
state = Path(os.environ["FAKE_SLURM_DIR"])
flags = dict(re.findall(r"^#SBATCH --([\w-]+)=?(.*)$", Path(sys.argv[1]).read_text(), re.MULTILINE))
job = str(4200 + len(list(state.glob("*.sh"))))
shutil.copy(sys.argv[1], state / f"{job}.sh")
subprocess.Popen([sys.executable, str(state / "run_array.py"), job], start_new_session=True,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(f"Submitted batch job {job}")
"""
RUN_ARRAY = r"""
import os, re, subprocess, sys
from pathlib import Path
state, job = Path(os.environ["FAKE_SLURM_DIR"]), sys.argv[1]
script = state / f"{job}.sh"
flags = dict(re.findall(r"^#SBATCH --([\w-]+)=?(.*)$", script.read_text(), re.MULTILINE))
if "array" in flags:  # a sweep of several jobs: one array
    first, last = map(int, flags["array"].split("%")[0].split("-"))
    tasks = [(f"{job}_{i}", {"SLURM_JOB_ID": f"{job}{i:03d}", "SLURM_ARRAY_JOB_ID": job, "SLURM_ARRAY_TASK_ID": str(i)})
             for i in range(first, last + 1)]
else:  # a sweep of one job
    tasks = [(job, {"SLURM_JOB_ID": job})]
for name, ids in tasks:
    (state / f"{name}.state").write_text("RUNNING")
    env = dict(os.environ, **ids, SLURM_JOB_NAME=flags["job-name"], SLURM_NNODES=flags["nodes"],
               SLURM_JOB_NUM_NODES=flags["nodes"], SLURM_NODELIST="localhost", SLURM_JOB_NODELIST="localhost",
               SLURM_CPUS_PER_TASK=flags["cpus-per-task"], SLURM_NTASKS_PER_NODE=flags["ntasks-per-node"],
               SLURM_SUBMIT_DIR=os.getcwd())
    out, err = (flags[k].replace("%A", job).replace("%a", ids.get("SLURM_ARRAY_TASK_ID", "")).replace("%j", job)
                for k in ("output", "error"))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as stdout, open(err, "a") as stderr:
        code = subprocess.call(["bash", str(script)], env=env, stdout=stdout, stderr=stderr)
    killed = os.environ.get("FAKE_SLURM_KILL")  # a state such as OUT_OF_MEMORY: srun's task was killed
    (state / f"{name}.state").write_text("COMPLETED" if code == 0 else (killed or "FAILED"))
"""
SRUN = r"""
import os, subprocess, sys
args, files = sys.argv[1:], {}
while args and args[0].startswith("--"):
    flag = args.pop(0)
    if flag in ("--output", "--error"):
        files[flag] = args.pop(0)
ntasks = int(os.environ["SLURM_NTASKS_PER_NODE"]) * int(os.environ["SLURM_NNODES"])


def log_path(pattern, rank):
    env = os.environ
    return (pattern.replace("%A", env.get("SLURM_ARRAY_JOB_ID", "")).replace("%a", env.get("SLURM_ARRAY_TASK_ID", ""))
            .replace("%j", env["SLURM_JOB_ID"]).replace("%t", str(rank)))


if os.environ.get("FAKE_SLURM_KILL"):
    with open(log_path(files["--error"], 0), "a") as stderr:
        stderr.write("slurmstepd: error: Detected 1 oom_kill event in StepId=42.0. Some of the step tasks have been "
                     "OOM Killed.\n")
    sys.exit(137)
tasks = []
for rank in range(ntasks):  # one node: global rank = local rank
    env = dict(os.environ, SLURM_NTASKS=str(ntasks), SLURM_STEP_NUM_TASKS=str(ntasks), SLURM_PROCID=str(rank),
               SLURM_LOCALID=str(rank), SLURM_NODEID="0", SLURM_STEP_ID="0")
    with open(log_path(files["--output"], rank), "a") as stdout, open(log_path(files["--error"], rank), "a") as err:
        tasks.append(subprocess.Popen(args, env=env, stdout=stdout, stderr=err))
sys.exit(max(task.wait() for task in tasks))
"""
SACCT = r"""
import os
from pathlib import Path
print("JobID|State|NodeList")
for state in sorted(Path(os.environ["FAKE_SLURM_DIR"]).glob("*.state")):
    print(f"{state.stem}|{state.read_text()}|localhost")
"""


def stand_in_slurm(tmp_path: Path) -> dict[str, str]:
    bin_dir, state = tmp_path / "fake-bin", tmp_path / "fake-slurm"
    bin_dir.mkdir()
    state.mkdir()
    for name, source in {"sbatch": SBATCH, "srun": SRUN, "sacct": SACCT}.items():
        (bin_dir / name).write_text(f"#!{sys.executable}\n{source}")
        (bin_dir / name).chmod(0o755)
    (state / "run_array.py").write_text(RUN_ARRAY)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_SLURM_DIR": str(state)}


def wait_for_the_runner(state: Path) -> dict[str, str]:
    """The stand-in's job states, once its runner has recorded the last one (just after the job ended)."""
    deadline = time.monotonic() + 30
    while any(s.read_text() == "RUNNING" for s in state.glob("*.state")) and time.monotonic() < deadline:
        time.sleep(0.2)
    return {s.stem: s.read_text() for s in state.glob("*.state")}


def test_slurm_cpu_sweep_through_sbatch_and_srun(tmp_path):
    env = stand_in_slurm(tmp_path)
    state = Path(env["FAKE_SLURM_DIR"])
    result = run_cli("-m", "hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=1", "model=rnn,gru", *TINY,
                     cwd=tmp_path, env={**env, "RNNLAB_SLURM_PARTITION": "fakepart"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert wait_for_the_runner(state) == {"4200_0": "COMPLETED", "4200_1": "COMPLETED"}

    script = (state / "4200.sh").read_text()  # one job array for the whole sweep
    for flag in ("--array=0-1%2", "--partition=fakepart", "--job-name=rnnlab", "--time=120", "--mem=8GB",
                 "--cpus-per-task=1", "--ntasks-per-node=1", "--nodes=1"):  # fmt: skip
        assert f"#SBATCH {flag}\n" in script, script
    assert "gpus" not in script
    assert "--account" not in script
    assert "\nexport OMP_NUM_THREADS=1\n" in script
    assert re.search(r"^srun .*-m submitit\.core\._submit ", script, re.MULTILINE)

    sweep = sweep_dir(tmp_path)
    assert f"Submitit 'slurm' sweep output dir : {sweep}" in result.stdout
    for index, (job, cell) in enumerate(zip(job_dirs(sweep), ["rnn", "gru"], strict=True)):
        assert_complete(job, cell)
        assert hydra_job_id(job) == f"4200_{index}"  # SLURM's array id and index
        logs = sweep / ".submitit" / f"4200_{index}"
        assert "Job completed successfully" in (logs / f"4200_{index}_0_log.out").read_text()
        assert (logs / f"4200_{index}_0_result.pkl").is_file()


def test_a_job_that_slurm_kills_ends_the_sweep_in_one_line(tmp_path):
    env = stand_in_slurm(tmp_path)
    result = run_cli("-m", "hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=1", "model=rnn,gru", *TINY,
                     cwd=tmp_path, env={**env, "FAKE_SLURM_KILL": "OUT_OF_MEMORY"})  # fmt: skip
    assert result.returncode == 1
    assert wait_for_the_runner(Path(env["FAKE_SLURM_DIR"])) == {"4200_0": "OUT_OF_MEMORY", "4200_1": "OUT_OF_MEMORY"}
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("rnnlab: error:")]
    assert len(errors) == 1, result.stderr
    log = sweep_dir(tmp_path) / ".submitit" / "4200_0" / "4200_0_0_log.err"
    state = "state OUT_OF_MEMORY"
    assert errors[0] == f"rnnlab: error: job 4200_0 (task 0) ended without a result ({state}); its log: {log}"
    assert "oom_kill" in log.read_text()


def test_one_job_over_two_srun_tasks_trains_with_ddp(tmp_path):
    env = stand_in_slurm(tmp_path)  # trainer=ddp reads its device count from SLURM_NTASKS_PER_NODE in the job
    launcher = [
        "hydra/launcher=slurm_cpu",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.tasks_per_node=2",
        "trainer=ddp",
        "trainer.accelerator=cpu",
    ]
    result = run_cli("-m", *launcher, "model=gru", *TINY, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    state = Path(env["FAKE_SLURM_DIR"])
    assert wait_for_the_runner(state) == {"4200": "COMPLETED"}  # one job: no array
    assert "#SBATCH --ntasks-per-node=2\n" in (state / "4200.sh").read_text()
    (job,) = job_dirs(sweep_dir(tmp_path))
    summary = json.loads((job / "summary.json").read_text())
    assert (summary["status"], summary["world_size"], summary["global_step"]) == ("completed", 2, 3)
    trainer = yaml.safe_load((job / "config_resolved.yaml").read_text())["trainer"]
    assert (trainer["strategy"], trainer["devices"], trainer["num_nodes"]) == ("ddp", 2, 1)
    logs = sweep_dir(tmp_path) / ".submitit" / "4200"
    for rank in (0, 1):  # each srun task is one DDP process, with its own submitit log
        assert f"Initializing distributed: GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in (
            logs / f"4200_{rank}_log.out").read_text()  # fmt: skip
