"""Lightning DDP on the torch backend: real 2-process runs (gloo on the CPU; Lightning's own launcher and torchrun)
against one process, the loaders' shards, the cross-process metric reductions, which process writes what, the
refusal of ddp_spawn with commands that work, and the NumPy backend's refusal."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
import yaml

from rnnlab.config import validate
from rnnlab.data.datamodules import CharStreams
from rnnlab.data.sampling import EpochSeededSampler, ShardedSampler
from rnnlab.errors import ConfigError
from rnnlab.runtime import distributed
from rnnlab.tasks.seq2seq import BleuStats, corpus_bleu
from rnnlab.tasks.tag import entity_counts, entity_scores, scores_from_counts

BIN = Path(sys.executable).parent
RNNLAB_TRAIN = BIN / "rnnlab-train"

pytestmark = pytest.mark.unit
# float64, no dropout: one process with batches of 32 and two with 16 each compute the same gradients up to the
# order of a few float64 additions (DDP averages the two half-batch means), so every metric agrees to ~1e-13
TINY = ("task=classify", "data=synthetic_text", "data.num_samples=400", "data.min_len=5", "data.max_len=12",
        "model=gru", "model.hidden_size=16", "model.embed_dim=8", "trainer.precision=64", "trainer.max_steps=4",
        "trainer.val_check_interval=2", "trainer.num_sanity_val_steps=0", "trainer.log_every_n_steps=1",
        "trainer.accelerator=cpu", "seed=7")  # fmt: skip
DDP2 = ("trainer.strategy=ddp", "trainer.devices=2")  # Lightning's subprocess launcher starts the second process
LAUNCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_WORLD_SIZE", "TORCHELASTIC_RUN_ID",
              "SLURM_PROCID", "SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS_PER_NODE",
              "SLURM_NNODES", "JSM_NAMESPACE_RANK")  # fmt: skip


@pytest.fixture(autouse=True)
def _no_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are not themselves inside a torchrun or SLURM launch (the machine might be)."""
    for key in LAUNCH_ENV:
        monkeypatch.delenv(key, raising=False)


class Probe(L.Callback):
    """Built in every process of a run (``callbacks.probe``). Records each file or directory the process opens for
    writing, renames or creates under ``root`` (Python audit events) into ``<log_dir>/rank<r>.txt``; at the first
    validation, runs the metric reductions on uneven per-process data in the live process group and saves what
    it got to ``<log_dir>/reduced<r>.npz``."""

    def __init__(self, root: str, log_dir: str):
        self.rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.log_dir = Path(log_dir)
        self._log = open(self.log_dir / f"rank{self.rank}.txt", "a", buffering=1)  # noqa: SIM115 (the process's life)
        (self.log_dir / f"pid{self.rank}.txt").write_text(str(os.getpid()))
        self._root = str(Path(root).resolve())
        self._reduced = False
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path, mode, flags = args
            writes = (mode is not None and any(c in mode for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            )
            paths = [path] if writes else []
        elif event in ("os.rename", "os.mkdir"):
            paths = [args[1] if event == "os.rename" else args[0]]
        else:
            return
        for p in paths:
            full = os.path.abspath(os.fspath(p)) if isinstance(p, str | os.PathLike) else ""
            if full == self._root or full.startswith(self._root + os.sep):
                self._log.write(f"{event} {os.path.relpath(os.fspath(p), self._root)}\n")

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._reduced:
            return
        self._reduced = True
        r = self.rank
        rows = np.arange(6, dtype=np.float64).reshape(3, 2)[: 3 - 2 * r] + 10 * r  # rank 0: 3 rows, rank 1: 1
        np.savez(
            self.log_dir / f"reduced{r}.npz",
            gathered=distributed.gather_rows(rows, pl_module.device),
            empty=distributed.gather_rows(np.zeros((0, 2)) if r == 0 else np.ones((2, 2))),  # none on rank 0
            total=np.asarray(distributed.all_reduce_sum([1.5, 2 + r, 2**51 + r], pl_module.device)),
        )


def _run(tmp_path: Path, name: str, *overrides: str, audit: bool = False) -> dict[str, Any]:
    """``rnnlab-train TINY *overrides`` into ``<tmp_path>/<name>/``; the Probe (``audit``) is imported from this
    file by every process of the run."""
    out = tmp_path / name
    extra = ()
    if audit:
        (tmp_path / f"{name}-audit").mkdir()
        extra = ("+callbacks.probe._target_=test_ddp.Probe", f"+callbacks.probe.root={out}",
                 f"+callbacks.probe.log_dir={tmp_path}/{name}-audit")  # fmt: skip
    result = _cli(*TINY, *overrides, *extra, f"paths.output_dir={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dirs = list((out / "runs").iterdir())
    assert len(run_dirs) == 1, run_dirs  # one run directory for every process
    summary = json.loads((run_dirs[0] / "summary.json").read_text())
    return {"dir": run_dirs[0], "summary": summary, "result": result}


def _files(run_dir: Path) -> list[str]:
    """The run directory's files; TensorBoard event file names carry a time, the host and the pid: one name."""
    names = (re.sub(r"events\.out\.tfevents\..*", "events.out.tfevents.*", str(p.relative_to(run_dir)))
             for p in run_dir.rglob("*") if p.is_file())  # fmt: skip
    return sorted(names)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Through the command line: one process with batches of 32, and two processes with 16 each (the same global
    batch) that Lightning's launcher starts (``trainer.strategy=ddp trainer.devices=2``)."""
    tmp_path = tmp_path_factory.mktemp("ddp")
    single = _run(tmp_path, "single", "data.batch_size=32")
    ddp = _run(tmp_path, "ddp", "data.batch_size=16", *DDP2, audit=True)
    return {"single": single["summary"], "ddp": ddp["summary"], "single_dir": single["dir"], "ddp_dir": ddp["dir"],
            "tmp": tmp_path, "result": ddp["result"]}  # fmt: skip


@pytest.mark.cli
def test_two_processes_match_one_process_with_the_same_global_batch(runs):
    single, ddp = runs["single"], runs["ddp"]
    assert (single["world_size"], ddp["world_size"]) == (1, 2)
    assert single["global_step"] == ddp["global_step"] == 4
    for group in ("fit_metrics", "test_metrics"):
        keys = {k for k in single[group] if k.startswith(("val/", "test/"))}
        assert keys == {k for k in ddp[group] if k.startswith(("val/", "test/"))}
        for key in sorted(keys):
            assert ddp[group][key] == pytest.approx(single[group][key], rel=1e-9, abs=1e-12), key
    assert {"val/loss", "val/acc", "val/f1", "val/auroc"} <= set(ddp["fit_metrics"])
    assert {"test/loss", "test/acc", "test/f1", "test/auroc"} <= set(ddp["test_metrics"])
    assert ddp["optimized_value"] == pytest.approx(single["optimized_value"], rel=1e-12)


@pytest.mark.cli
def test_only_rank_zero_writes_and_the_files_are_those_of_one_process(runs):
    ddp_dir, audit = runs["ddp_dir"], runs["tmp"] / "ddp-audit"
    assert {"rank0.txt", "rank1.txt"} <= {p.name for p in audit.iterdir()}  # the probe ran in both processes
    assert (audit / "rank1.txt").read_text() == ""  # rank 1 opened nothing for writing there, renamed nothing
    written = (audit / "rank0.txt").read_text()
    for name in ("config_resolved.yaml", "summary.json", "csv/metrics.csv", "checkpoints/last.ckpt"):
        assert name in written, name
    # TensorBoard writes its events outside Python's open(): the pid in their names says which process wrote them
    rank0_pid = (audit / "pid0.txt").read_text()
    events = list(ddp_dir.rglob("events.out.tfevents.*"))
    assert events
    assert {re.search(r"\.(\d+)\.\d+$", p.name).group(1) for p in events} == {rank0_pid}
    files = _files(ddp_dir)
    assert files == _files(runs["single_dir"])  # one config_resolved.yaml, one summary.json, one set of events
    assert files.count("config_resolved.yaml") == 1
    assert len(list(ddp_dir.rglob("events.out.tfevents.*"))) == len(list(runs["single_dir"].rglob("events.*")))
    csv = (ddp_dir / "csv" / "metrics.csv").read_text()
    assert "val/acc" in csv.splitlines()[0]
    assert "test/acc" in csv.splitlines()[0]


# ------------------------------------------------------------------------------------------ the CLI
def _cli(*args: str, cwd: Path, exe: tuple[str, ...] = (str(RNNLAB_TRAIN),)) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR" and k not in LAUNCH_ENV}
    here = str(Path(__file__).parent)  # the Probe callback: test_ddp.Probe
    env["PYTHONPATH"] = os.pathsep.join([here, env["PYTHONPATH"]]) if env.get("PYTHONPATH") else here
    return subprocess.run([*exe, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.cli
def test_cli_ddp_on_cpu_through_lightnings_launcher(runs):
    """Rank 0 owns the run directory and writes Hydra's record, the log and the summary, once; rank 1, which
    Lightning's launcher started by re-running the command line, logs warnings only."""
    result, run_dir, tmp_path = runs["result"], runs["ddp_dir"], runs["tmp"]
    summary = runs["ddp"]
    assert (summary["world_size"], summary["global_step"], summary["status"]) == (2, 4, "completed")
    assert "test/acc" in summary["test_metrics"]
    owner = json.loads((run_dir / ".rnnlab-owner.json").read_text())
    assert owner["status"] == "completed"
    assert str(owner["pid"]) == (tmp_path / "ddp-audit" / "pid0.txt").read_text()  # rank 0 owns the directory
    assert sorted(p.name for p in (run_dir / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    assert "trainer.strategy=ddp" in overrides
    assert not any(o.startswith("hydra.") for o in overrides)  # rank 1's command line did not write this record
    assert sorted(p.name for p in run_dir.glob("*.log")) == ["cli.log"]  # Hydra's log: rank 0's lines
    log = (run_dir / "cli.log").read_text()
    assert "Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/2" in log
    assert "GLOBAL_RANK: 1" not in log
    assert result.stdout.count("== rnnlab: classify | gru (torch)") == 1  # rank 0's report only
    assert "GLOBAL_RANK: 0" in result.stdout  # rank 0 logs at INFO, rank 1 warnings only
    assert "GLOBAL_RANK: 1" not in result.stdout + result.stderr
    assert not (tmp_path / "lightning_logs").exists()


@pytest.mark.cli
def test_cli_ddp_spawn_is_one_line_with_commands_that_work(runs):
    """trainer.strategy=ddp_spawn ends in one line that names trainer.strategy and gives the same run under
    Lightning's launcher (the fixture's run, word for word) and under torchrun, which gives bit-identical results."""
    tmp_path = runs["tmp"]
    out = tmp_path / "spawn"
    result = _cli(*TINY, "data.batch_size=16", "trainer.strategy=ddp_spawn", "trainer.devices=2",
                  f"paths.output_dir={out}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("rnnlab: error: trainer.strategy=ddp_spawn: Lightning's spawn launcher runs only ")
    lightning = re.search(r"launcher: (rnnlab-train .*?), or with torchrun: (torchrun .*)$", line)
    assert lightning, line
    fixture_args = [*TINY, "data.batch_size=16", f"paths.output_dir={out}", *DDP2]
    assert shlex.split(lightning.group(1)) == ["rnnlab-train", *fixture_args]  # the fixture's ddp run
    torchrun = shlex.split(lightning.group(2))
    assert torchrun[:5] == ["torchrun", "--standalone", "--nproc-per-node=2", "-m", "rnnlab"]
    assert torchrun[5:] == fixture_args
    assert not out.exists() or not any(out.rglob("*.json"))  # refused before anything was written

    torchrun_out = tmp_path / "torchrun"
    args = [a if not a.startswith("paths.output_dir=") else f"paths.output_dir={torchrun_out}" for a in torchrun[5:]]
    done = _cli(*torchrun[1:5], *args, cwd=tmp_path, exe=(str(BIN / "torchrun"),))
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (torchrun_out / "runs").iterdir()  # both processes in one run directory
    summary = json.loads((run_dir / "summary.json").read_text())
    ddp = runs["ddp"]
    assert (summary["world_size"], summary["global_step"]) == (2, 4)
    assert summary["fit_metrics"]["val/loss"] == ddp["fit_metrics"]["val/loss"]
    assert summary["test_metrics"] == ddp["test_metrics"]
    assert done.stdout.count("== rnnlab: classify | gru (torch)") == 1  # rank 0's report only
    assert sorted(p.name for p in run_dir.glob("*.log")) == ["cli.log"]


@pytest.mark.cli
def test_cli_numpy_backend_refuses_ddp_in_one_line(tmp_path):
    result = _cli("task=classify", "data=synthetic_text", "model.backend=numpy", *DDP2,
                  "trainer.accelerator=cpu", f"paths.output_dir={tmp_path}/out", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "rnnlab: error: model.backend=numpy runs in one process; trainer.strategy=ddp needs model.backend=torch"
    ]


# ------------------------------------------------------------------------------------ config checks
@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (("trainer=ddp",), "trainer.strategy=ddp needs"),
        (("trainer.strategy=ddp",), "trainer.strategy=ddp needs"),
        (("trainer.strategy=ddp_spawn",), "trainer.strategy=ddp_spawn needs"),
        (("trainer.strategy=ddp_fork",), "trainer.strategy=ddp_fork needs"),
        (("trainer.devices=2",), "trainer.devices=1 (got 2)"),
        (("trainer.devices=-1",), "trainer.devices=1 (got -1)"),
        (("trainer.devices=[0,1]",), "trainer.devices=1"),
        (("trainer.num_nodes=2",), "trainer.num_nodes=2 must be 1"),
        (("trainer=gpu",), "trainer.accelerator=gpu needs model.backend=torch"),
    ],
)
def test_numpy_backend_refuses_multi_process_and_gpu_settings(raw_compose, overrides, fragment):
    cfg = raw_compose("task=classify", "data=synthetic_text", "model.backend=numpy", *overrides)
    with pytest.raises(ConfigError, match=re.escape(fragment)) as info:
        validate(cfg)
    assert "\n" not in str(info.value)


def test_spawning_strategies_are_refused_with_the_equivalent_commands(raw_compose):
    """The line for each spawning strategy, device setting and node count (no command-line overrides here)."""
    unused = "_find_unused_parameters_true"
    cases = [
        (("trainer.strategy=ddp_spawn", "trainer.devices=2", "trainer.accelerator=cpu"),
         "trainer.strategy=ddp trainer.devices=2, or with torchrun: torchrun --standalone --nproc-per-node=2 -m "
         "rnnlab trainer.strategy=ddp trainer.devices=2"),
        ((f"trainer.strategy=ddp_fork{unused}", "trainer.devices=[0,1]", "trainer.accelerator=gpu"),
         f"trainer.strategy=ddp{unused} 'trainer.devices=[0, 1]', or with torchrun: torchrun --standalone "
         f"--nproc-per-node=2 -m rnnlab trainer.strategy=ddp{unused} trainer.devices=2"),
        (("trainer.strategy=ddp_notebook", "trainer.accelerator=gpu"),
         "trainer.strategy=ddp trainer.devices=auto, or with torchrun: torchrun --standalone --nproc-per-node=gpu -m "
         "rnnlab trainer.strategy=ddp"),
        (("trainer.strategy=ddp_spawn", "trainer.devices=2", "trainer.num_nodes=2"),
         "for trainer.num_nodes=2 start the processes on every node with torchrun or srun and trainer.strategy=ddp "
         "(conf/trainer/ddp.yaml)"),
    ]  # fmt: skip
    for overrides, ending in cases:
        cfg = raw_compose("task=classify", "data=synthetic_text", *overrides)
        with pytest.raises(ConfigError) as info:
            distributed.check_launcher(cfg.trainer, [])
        line = str(info.value)
        assert "\n" not in line
        assert line.startswith(f"{overrides[0]}: Lightning's spawn launcher runs only trainer.fit in its processes")
        assert line.endswith(ending), line
    with pytest.raises(ConfigError, match=r"^trainer\.strategy=ddp_spawn: "):
        validate(cfg)  # validate() refuses it, before torch is imported
    validate(raw_compose("task=classify", "data=synthetic_text", *DDP2))  # ddp itself is fine
    cfg = raw_compose("task=classify", "data=synthetic_text", "trainer.strategy=ddp_spawn", "trainer.devices=2")
    with pytest.raises(ConfigError, match=r"-m rnnlab model=gru 'data.path=a b' trainer\.strategy=ddp trainer\.devi"):
        distributed.check_launcher(cfg.trainer, ["model=gru", "trainer.strategy=ddp_spawn", "data.path=a b"])


def test_ddp_preset_takes_devices_and_nodes_from_the_launcher(raw_compose, monkeypatch):
    cfg = raw_compose("trainer=ddp")
    assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.num_nodes) == ("ddp", "auto", 1)
    assert cfg.trainer.gradient_clip_val == 5.0  # extends trainer/default.yaml
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setenv("GROUP_WORLD_SIZE", "2")
    cfg = raw_compose("trainer=ddp")
    assert (cfg.trainer.devices, cfg.trainer.num_nodes) == (4, 2)
    for key in ("TORCHELASTIC_RUN_ID", "LOCAL_WORLD_SIZE", "GROUP_WORLD_SIZE"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "8")
    monkeypatch.setenv("SLURM_NNODES", "3")
    cfg = raw_compose("trainer=ddp", "trainer.devices=2")
    assert (cfg.trainer.devices, cfg.trainer.num_nodes) == (2, 3)  # an override wins


# ------------------------------------------------------------------------------------- launchers
def test_run_stamp_is_shared_within_a_launch(raw_compose, monkeypatch):
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{6}", distributed.run_stamp())
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "8")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_STEP_ID", "3")
    assert distributed.run_stamp() == "slurm-4242.3"
    assert "/runs/slurm-4242.3_classify_gru_torch" in raw_compose("task=classify", "data=synthetic_text",
                                                                    "model=gru").hydra.run.dir  # fmt: skip
    monkeypatch.setenv("SLURM_STEP_ID", "batch")  # the batch script itself, not an srun step: its own time
    assert distributed.launch_stamp() is None
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    # one node: the start of the torchrun agent, the parent of every worker; our parent plays it here
    assert distributed.launch_stamp() == distributed._process_start(os.getppid()).strftime(distributed.STAMP_FORMAT)
    monkeypatch.setenv("GROUP_WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-17")
    assert distributed.launch_stamp() == "torchrun-job-17"


def test_processes_other_than_rank_zero_write_no_hydra_files(monkeypatch):
    argv = ["task=classify"]
    assert distributed.quiet_argv(argv) == argv
    monkeypatch.setenv("LOCAL_RANK", "1")  # as Lightning starts its other local processes
    assert distributed.quiet_argv(argv) == [*argv, "hydra.output_subdir=null", "hydra/job_logging=other_ranks"]
    assert distributed.quiet_argv([*argv, "hydra.output_subdir=null"]).count("hydra.output_subdir=null") == 1
    assert distributed.quiet_argv(["-m", *argv]) == ["-m", *argv]
    monkeypatch.setenv("RANK", "0")  # RANK wins over LOCAL_RANK (lightning.fabric's order)
    assert distributed.quiet_argv(argv) == argv


def test_only_ranks_that_lightning_started_wait_for_rank_zero(monkeypatch):
    lightning_child = ["task=classify", 'hydra.run.dir="/x"', "hydra.job.name=train_ddp_process_1"]
    assert not distributed.started_by_lightning(lightning_child)  # rank 0
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.started_by_lightning(lightning_child)
    assert not distributed.started_by_lightning(["task=classify"])  # torchrun's or srun's rank 1: its agent waits


# ------------------------------------------------------------------------------------- the shards
@pytest.mark.parametrize(("n", "world"), [(10, 3), (12, 4), (7, 2), (3, 4)])
def test_training_shards_interleave_the_seed_epoch_order(n, world):
    base = EpochSeededSampler(n, seed=5)
    shards = [ShardedSampler(base, world, r, "stride") for r in range(world)]
    for s in shards:
        s.set_epoch(3)
    order = list(np.random.default_rng((5, 3)).permutation(n))
    parts = [list(s) for s in shards]
    assert len({len(p) for p in parts}) == 1
    assert all(len(p) == len(s) for p, s in zip(parts, shards, strict=True))
    padded = order + [order[i % n] for i in range((-n) % world)]
    # position k*W + r of the epoch's order is shard r's k-th index: step k of W processes = one process's batch
    assert [parts[i % world][i // world] for i in range(len(padded))] == padded
    assert set().union(*map(set, parts)) == set(range(n))  # every sample of the epoch
    assert sum(map(len, parts)) - n == (-n) % world  # repeated only to even the shares out
    assert all(isinstance(s, torch.utils.data.DistributedSampler) for s in shards)  # Lightning will not re-wrap
    shards[1].skip_once(2)  # a mid-epoch resume skips this process's first indices
    resumed = list(shards[1])
    assert resumed == parts[1][2:]
    assert list(shards[1]) == parts[1]  # once only


@pytest.mark.parametrize(("n", "world"), [(32, 2), (80, 3), (5, 4)])
def test_evaluation_shards_are_contiguous_blocks_of_the_split(n, world):
    base = EpochSeededSampler(n, seed=1, shuffle=False)
    parts = [list(ShardedSampler(base, world, r, "block")) for r in range(world)]
    assert [i for p in parts for i in p] == list(range(n))  # each sample once, rank order = the split's order
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_tbptt_stream_shards_are_the_rows_of_a_wider_batch():
    tokens = np.arange(1000, dtype=np.int32)
    streams = CharStreams(tokens, batch_size=3, seq_len=7)
    wide = CharStreams(tokens, batch_size=6, seq_len=7)
    shards = [streams.shard(r, 2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(wide)
    for i in range(len(wide)):
        x, y = wide[i]
        assert torch.equal(torch.cat([shards[0][i][0], shards[1][i][0]]), x)
        assert torch.equal(torch.cat([shards[0][i][1], shards[1][i][1]]), y)
        assert shards[0][i][0].shape == (3, 7)


# ------------------------------------------------------------------------------- metric reductions
def test_span_counts_and_bleu_statistics_add_up_over_processes():
    true = [["B-PER", "I-PER", "O"], ["B-LOC", "O"], ["O", "B-ORG"], ["B-MISC"]]
    pred = [["B-PER", "O", "O"], ["B-LOC", "O"], ["B-ORG", "I-ORG"], ["B-MISC"]]
    halves = [entity_counts(true[:2], pred[:2]), entity_counts(true[2:], pred[2:])]
    assert scores_from_counts(*np.sum(halves, axis=0)) == entity_scores(true, pred)
    refs = [[1, 2, 3, 4, 5], [2, 3, 4, 5, 6, 7], [1, 1, 2, 3, 5, 8], [9, 8, 7, 6, 5]]
    hyps = [[1, 2, 3, 4, 6], [2, 3, 4, 5, 6], [1, 1, 2, 3, 5, 8, 9], [9, 8, 7, 6, 4]]
    parts = []
    for hs, rs in ((hyps[:1], refs[:1]), (hyps[1:], refs[1:])):
        stats = BleuStats()
        for h, r in zip(hs, rs, strict=True):
            stats.add(h, r)
        parts.append(stats.counts())
    merged = BleuStats.from_counts(np.sum(parts, axis=0).tolist())
    assert merged.score() == pytest.approx(corpus_bleu(hyps, refs), rel=1e-15)
    assert merged.score() > 0


@pytest.mark.cli
def test_gather_rows_and_all_reduce_sum_across_the_processes_of_a_run(runs):
    """Uneven rows (3 and 1; 0 and 2) come back in rank order in both processes, and sums of counts stay exact."""
    want = np.concatenate([np.arange(6.0).reshape(3, 2), np.asarray([[10.0, 11.0]])])
    for rank in range(2):
        result = np.load(runs["tmp"] / "ddp-audit" / f"reduced{rank}.npz")
        np.testing.assert_array_equal(result["gathered"], want)
        np.testing.assert_array_equal(result["empty"], np.ones((2, 2)))
        assert result["total"].tolist() == [3.0, 5.0, 2.0**52 + 1]
    assert distributed.gather_rows(want) is want  # one process: the array itself
    assert distributed.all_reduce_sum([2, 3]) == [2.0, 3.0]
