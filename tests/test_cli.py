"""The real command line, in subprocesses: help, one-line errors, real runs, a sweep."""

from __future__ import annotations

import hashlib
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from helpers import probe

from rnnlab.cli import config_dir
from rnnlab.registry import CELLS, DATASETS, TASKS

pytestmark = pytest.mark.cli

BIN = Path(sys.executable).parent
RNNLAB_TRAIN = BIN / "rnnlab-train"
HEAVY = ("torch", "lightning", "pytorch_lightning", "torchmetrics", "tensorboard")


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    environment = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    environment.update(env or {})
    return subprocess.run(
        [str(RNNLAB_TRAIN), *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout
    )


def nonempty_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def printed_run_dir(stdout: str, cwd: Path) -> Path:
    match = re.search(r"^Run directory: (.+)$", stdout, re.MULTILINE)
    assert match, stdout
    return (cwd / match.group(1)).resolve()


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------------------------------- help
def test_help_lists_every_group_and_option(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("rnnlab-train: train a recurrent network")
    conf = Path(config_dir())
    groups = ["model", "task", "data", "optimizer", "trainer", "logger", "callbacks", "experiment", "setting",
              "hparams_search", "debug"]  # fmt: skip
    for group in groups:
        line = re.search(rf"^{group}:\s+(.*)$", out, re.MULTILINE)
        assert line, group
        listed = set(re.findall(r"[a-z0-9_]+", re.sub(r"\([^)]*\)", "", line.group(1))))  # asides in parentheses
        registered = {"model": CELLS.names(), "task": TASKS.names(), "data": DATASETS.names()}.get(group, [])
        assert listed == {p.stem for p in (conf / group).glob("*.yaml")} | set(registered), group  # conf/, registries
    assert "HYDRA_FULL_ERROR=1" in out
    assert not list(tmp_path.iterdir())  # --help writes nothing


def test_help_is_the_template_as_hydra_renders_it_without_starting_hydra(tmp_path):
    """--help renders conf/hydra/default.yaml's help template itself; Hydra renders the same text (here it answers
    because of --config-dir), and a template that asks for the composed config goes to Hydra."""
    code = ("import sys; from rnnlab.cli import train_main; train_main(); "
            "print('@@' + ','.join(m for m in ('hydra', 'omegaconf') if m in sys.modules))")  # fmt: skip
    fast = subprocess.run([sys.executable, "-c", code, "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert fast.returncode == 0, fast.stderr
    text, _, loaded = fast.stdout.rpartition("@@")
    assert loaded.strip() == ""  # neither Hydra nor OmegaConf was imported
    (tmp_path / "extra").mkdir()
    by_hydra = run_cli("--help", "--config-dir", str(tmp_path / "extra"), cwd=tmp_path)
    assert by_hydra.returncode == 0, by_hydra.stderr
    assert text == by_hydra.stdout
    assert text.startswith("rnnlab-train: train a recurrent network")
    assert "rnnlab-train --cfg job [overrides] prints the composed config" in text
    config = run_cli("--help", "hydra.help.template=$CONFIG", "model=gru", cwd=tmp_path)
    assert config.returncode == 0, config.stderr
    assert yaml.safe_load(config.stdout)["model"]["cell"] == "gru"


def test_errors_reach_train_main_and_user_errors_are_one_line(monkeypatch, capsys):
    """Hydra re-raises while it runs (HYDRA_FULL_ERROR=1, set for the process and restored after): a user error
    ends in one line and exit 1, a bug in its own traceback; HYDRA_FULL_ERROR=1 from the user re-raises both."""
    import rnnlab.cli
    from rnnlab.errors import ConfigError

    seen = {}

    def failing(error):
        def app():
            seen["env"] = (os.environ.get("HYDRA_FULL_ERROR"), rnnlab.cli.full_error_wanted())
            raise error

        return app

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv(rnnlab.cli.REPORTING_ENV, raising=False)
    monkeypatch.setattr(sys, "argv", ["rnnlab-train"])
    monkeypatch.setattr(rnnlab.cli, "_hydra_train", failing(ConfigError("model.hidden_size must be > 0, got 0")))
    with pytest.raises(SystemExit) as exited:
        rnnlab.cli.train_main()
    assert exited.value.code == 1
    assert capsys.readouterr().err == "rnnlab: error: model.hidden_size must be > 0, got 0\n"
    assert seen["env"] == ("1", False)  # Hydra raised; rnnlab reported
    assert "HYDRA_FULL_ERROR" not in os.environ
    assert rnnlab.cli.REPORTING_ENV not in os.environ
    monkeypatch.setattr(rnnlab.cli, "_hydra_train", failing(ZeroDivisionError("a bug")))
    with pytest.raises(ZeroDivisionError, match="a bug"):  # the interpreter prints its whole traceback
        rnnlab.cli.train_main()
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.setattr(rnnlab.cli, "_hydra_train", failing(ConfigError("model.hidden_size must be > 0, got 0")))
    with pytest.raises(ConfigError):
        rnnlab.cli.train_main()
    assert seen["env"] == ("1", True)


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job", "model=gru"], ["--info", "defaults"]])
def test_help_and_cfg_do_not_import_torch_or_lightning(tmp_path, args):
    result, data = probe(args, tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout.rpartition("@@PROBE@@")[0]
    assert data["code"] == 0
    assert data["heavy"] == []
    if args[0] == "--cfg":
        composed = yaml.safe_load(out)
        assert composed["model"]["cell"] == "gru"
        assert "hydra" not in composed
    if args[0] == "--help":
        assert "== Config groups" in out


# ------------------------------------------------------------------------------------------------ bad input
def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], list[str]]]:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    missing = tmp_path / "missing.txt"
    return {
        "unknown-option": (["model=foo"], ["model/foo", "gru, lstm, rnn"]),
        "unknown-key": (["model.hiden_size=3"], ["model.hiden_size"]),
        "wrong-type": (["model.hidden_size=abc"], ["model.hidden_size", "abc"]),
        "out-of-range": (["model.hidden_size=0"], ["model.hidden_size"]),
        "negative-lr": (["optimizer.lr=-1"], ["optimizer.lr"]),
        "missing-file": (["data=text_file", f"data.path={missing}"], ["data.path", str(missing)]),
        "empty-file": (["data=text_file", f"data.path={empty}"], ["data.path", str(empty)]),
        "no-path": (["data=text_file"], ["data.path"]),
        "missing-checkpoint": ([f"ckpt_path={tmp_path}/nope.ckpt"], ["ckpt_path", f"{tmp_path}/nope.ckpt"]),
        "task-data-mismatch": (["task=classify"], ["task=classify", "data=shakespeare"]),
        "numpy-backend": (["model.backend=numpy", "trainer.accelerator=gpu"], ["model.backend=numpy", "gpu"]),
        "bad-enum": (["model.backend=nump"], ["model.backend", "nump"]),
        "bidirectional-lm": (["model.bidirectional=true"], ["model.bidirectional"]),
    }


BAD_IDS = ["unknown-option", "unknown-key", "wrong-type", "out-of-range", "negative-lr", "missing-file",
           "empty-file", "no-path", "missing-checkpoint", "task-data-mismatch", "numpy-backend", "bad-enum",
           "bidirectional-lm"]  # fmt: skip


@pytest.mark.parametrize("case", BAD_IDS)
def test_bad_input_is_one_line(tmp_path, case):
    args, fragments = _bad_inputs(tmp_path)[case]
    result = run_cli(*args, f"paths.output_dir={tmp_path}/out", cwd=tmp_path)
    assert result.returncode == 1
    lines = nonempty_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rnnlab: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not list((tmp_path / "out").rglob("config_resolved.yaml"))  # refused before anything was set up


@pytest.mark.parametrize("args", [["model.hidden_size=0"], ["model.hiden_size=3"]])
def test_full_error_shows_the_traceback(tmp_path, args):
    result = run_cli(*args, f"paths.output_dir={tmp_path}/out", cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert args[0].split("=")[0] in result.stderr
    assert "rnnlab: error:" not in result.stderr


# ----------------------------------------------------------------------------------------------- real runs
ISSUE_EXAMPLE = ["model=gru", "model.bidirectional=true", "model.num_layers=2", "task=classify", "data=synthetic_text",
                 "optimizer=sgd", "optimizer.lr=0.05", "trainer.max_epochs=20", "seed=3"]  # fmt: skip
SHRINK = ["data.num_samples=300", "trainer.max_steps=5", "model.hidden_size=8", "trainer.limit_val_batches=1",
          "trainer.limit_test_batches=1"]  # fmt: skip


def test_issue_example(tmp_path):
    result = run_cli(*ISSUE_EXAMPLE, *SHRINK, f"paths.output_dir={tmp_path}/out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "== rnnlab: classify | gru (torch) | data=synthetic_text | seed=3 ==" in result.stdout
    run_dir = printed_run_dir(result.stdout, tmp_path)
    assert run_dir.parent == (tmp_path / "out" / "runs").resolve()
    assert run_dir.name.endswith("_classify_gru_torch")
    text = (run_dir / "config_resolved.yaml").read_text()
    assert text.startswith("# seed used: 3\n")
    resolved = yaml.safe_load(text)
    model = resolved["model"]
    assert (model["cell"], model["hidden_size"], model["bidirectional"], model["num_layers"]) == ("gru", 8, True, 2)
    assert (resolved["optimizer"]["name"], resolved["optimizer"]["lr"]) == ("sgd", 0.05)
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["hyper_parameters"]["spec"]["bidirectional"] is True
    assert ckpt["hyper_parameters"]["seed"] == 3
    assert (run_dir / "cli.log").is_file()
    assert "val/acc=" in result.stdout or "test/acc=" in result.stdout


def test_issue_example_on_the_numpy_backend(tmp_path):
    """The same command with model.backend=numpy: the same loop, logs, timing and checkpoints as torch."""
    result = run_cli(*ISSUE_EXAMPLE, *SHRINK, "model.backend=numpy", "trainer.log_every_n_steps=1",
                     f"paths.output_dir={tmp_path}/out", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "== rnnlab: classify | gru (numpy) | data=synthetic_text | seed=3 ==" in result.stdout
    run_dir = printed_run_dir(result.stdout, tmp_path)
    assert run_dir.name.endswith("_classify_gru_numpy")
    metrics = pd.read_csv(run_dir / "csv" / "metrics.csv")
    assert metrics["train/loss"].notna().sum() == 5  # one per step (log_every_n_steps=1)
    assert (metrics["time/step_ms"].dropna() > 0).all()
    assert metrics["time/step_ms"].notna().sum() == 5
    assert metrics["test/acc"].notna().sum() == 1
    assert "lr-SGD" in metrics.columns
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 5
    assert ckpt["hyper_parameters"]["backend"] == "numpy"
    params = ckpt["numpy_backend"]["params"]
    assert params["rnn.weight_hh_l1_reverse"].shape == (3 * 8, 8)
    assert ckpt["optimizer_states"][0]["numpy"]["optimizer"] == "SGD"


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("lm-cli")
    args = ["model.hidden_size=16", "trainer.max_steps=4", "trainer.val_check_interval=2",
            "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "task.sample_length=50",
            f"paths.output_dir={cwd}/out"]  # fmt: skip
    result = run_cli(*args, cwd=cwd)
    return {"cwd": cwd, "result": result}


def test_language_model_run(lm_run):
    result, cwd = lm_run["result"], lm_run["cwd"]
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    bpc = re.search(r"^  test bits per character: ([0-9.]+)$", out, re.MULTILINE)
    assert bpc
    sample = re.search(r"^-- generated sample \(temperature 0\.8\) --\n(.*)\n-- end of sample --$", out,
                       re.MULTILINE | re.DOTALL)  # fmt: skip
    assert sample
    assert len(sample.group(1)) == 50  # task.sample_length characters after an empty prompt
    run_dir = printed_run_dir(out, cwd)
    metrics = pd.read_csv(run_dir / "csv" / "metrics.csv")
    test_bpc = metrics["test/bpc"].dropna()
    assert len(test_bpc) == 1
    assert float(bpc.group(1)) == pytest.approx(float(test_bpc.iloc[0]), abs=1e-4)
    assert math.isfinite(float(bpc.group(1)))
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "Traceback" not in result.stderr


def test_failed_runs_leave_earlier_runs_alone(lm_run):
    cwd = lm_run["cwd"]
    assert lm_run["result"].returncode == 0
    out = cwd / "out"
    (earlier,) = (out / "runs").iterdir()
    before = snapshot(earlier)
    assert "checkpoints/last.ckpt" in before
    last = earlier / "checkpoints" / "last.ckpt"
    bad = run_cli("model.hidden_size=0", f"paths.output_dir={out}", cwd=cwd)
    assert bad.returncode == 1
    # resuming the earlier run with a different network fails while loading its checkpoint
    mismatch = run_cli(f"ckpt_path={last}", "model.hidden_size=8", "trainer.max_steps=6",
                       "trainer.limit_val_batches=1", f"paths.output_dir={out}", cwd=cwd)  # fmt: skip
    assert mismatch.returncode != 0
    assert snapshot(earlier) == before
    # each failed run claimed a directory of its own, and gave it back since it never trained
    assert list((out / "runs").iterdir()) == [earlier]


def test_resume_with_another_network_is_one_line(lm_run, tmp_path):
    assert lm_run["result"].returncode == 0
    (last,) = (lm_run["cwd"] / "out" / "runs").glob("*/checkpoints/last.ckpt")
    result = run_cli(f"ckpt_path={last}", "model.hidden_size=8", "trainer.max_steps=6", "trainer.limit_val_batches=1",
                     f"paths.output_dir={tmp_path}/out", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = nonempty_lines(result.stderr)
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("rnnlab: error: ckpt_path")
    assert "hidden_size" in lines[0]


def test_text_file_run(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"Line {i}: all the world's a stage.\n" for i in range(400)), encoding="utf-8")
    result = run_cli("data=text_file", f"data.path={corpus}", "data.seq_len=32", "model=gru", "model.hidden_size=8",
                     "trainer.max_steps=3", "trainer.val_check_interval=3", "trainer.limit_val_batches=1",
                     "trainer.limit_test_batches=1", "task.sample_length=20", f"paths.output_dir={tmp_path}/out",
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data=text_file" in result.stdout
    assert re.search(r"test bits per character: [0-9.]+", result.stdout)
    run_dir = printed_run_dir(result.stdout, tmp_path)
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["hyper_parameters"]["vocab"] == sorted(set(corpus.read_text(encoding="utf-8")))


# ---------------------------------------------------------------------------------------------------- sweeps
SWEEP = ["-m", "model=rnn,gru", "task=classify", "data=synthetic_text", "data.num_samples=200", "model.hidden_size=4",
         "trainer.fast_dev_run=true"]  # fmt: skip


def _job_dirs(output_dir: Path) -> list[Path]:
    (sweep,) = (output_dir / "multiruns").iterdir()
    return sorted(p for p in sweep.iterdir() if p.is_dir())


def test_multirun_makes_one_directory_per_job(tmp_path):
    out = tmp_path / "out"
    result = run_cli(*SWEEP, cwd=tmp_path, env={"RNNLAB_OUTPUT_DIR": str(out)})
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = _job_dirs(out)
    assert [p.name.split("_", 1)[0] for p in jobs] == ["0", "1"]
    for job, cell in zip(jobs, ["rnn", "gru"], strict=True):
        assert f"model={cell}" in job.name
        assert "fast_dev_run" not in job.name  # excluded from the directory name
        resolved = yaml.safe_load((job / "config_resolved.yaml").read_text())
        assert resolved["model"]["cell"] == cell
        assert resolved["paths"]["run_dir"] == str(job)
    assert not (out / "runs").exists()


def test_multirun_with_output_dir_override(tmp_path):
    out = tmp_path / "out"
    result = run_cli(*SWEEP, f"paths.output_dir={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = _job_dirs(out)
    for job in jobs:  # a job directory holds the run itself, not a path fragment of the next level
        if not (job / "config_resolved.yaml").is_file():
            raise ValueError(f"not a job directory: {job.name}")
    assert len(jobs) == 2


def test_multirun_with_many_overrides(tmp_path):
    out = tmp_path / "out"
    many = [a for a in ISSUE_EXAMPLE if not a.startswith(("model=", "task=", "data="))]
    result = run_cli(*SWEEP, *many, "trainer.limit_val_batches=1",
                     "trainer.limit_test_batches=1", "trainer.log_every_n_steps=1", "trainer.gradient_clip_val=1.0",
                     cwd=tmp_path, env={"RNNLAB_OUTPUT_DIR": str(out)})  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(_job_dirs(out)) == 2
