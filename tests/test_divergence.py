"""A NaN or Inf in the loss or the gradients stops the run with one line, keeps the last good checkpoint and exits
non-zero; in a sweep the other jobs finish and the failures are listed at the end and by rnnlab-report."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import rnnlab.cli
from rnnlab.backends.numpy import NumpyBackend
from rnnlab.errors import DivergenceError, RnnlabError
from rnnlab.tasks.classify import ClassifyTask
from rnnlab.train import train

pytestmark = pytest.mark.compose

RNNLAB_TRAIN = Path(sys.executable).parent / "rnnlab-train"
BAD_STEP = 3  # the injected NaN/Inf appears at this global step, after the validation at step 2
# a tiny classifier: 144 training samples (9 batches an epoch), a validation (and checkpoints) every 2 steps
TINY = ("task=classify", "data=synthetic_text", "data.num_samples=200", "data.batch_size=16", "model=gru",
        "model.hidden_size=8", "model.embed_dim=8", "trainer.max_steps=6", "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "logger=csv")  # fmt: skip
LINE = re.compile(
    r"^divergence: (?P<what>train/loss|gradient norm) is (?P<value>nan|inf|-inf) at step (?P<step>\d+) "
    r"\(epoch (?P<epoch>\d+), batch (?P<batch>\d+)\); last good checkpoint: (?P<ckpt>.+)$"
)


def checkpoint_arrays(path: Path) -> tuple[int, list[np.ndarray]]:
    """(global_step, every weight array) of a checkpoint of either backend."""
    saved = torch.load(path, map_location="cpu", weights_only=False)
    arrays = [t.numpy() for t in saved["state_dict"].values() if t.is_floating_point()]

    def walk(node):
        if isinstance(node, dict):
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, torch.Tensor) and node.is_floating_point():
            yield node.numpy()

    arrays += list(walk(saved.get("numpy_backend", {}).get("params", saved.get("numpy_backend", {}))))
    return int(saved["global_step"]), arrays


def all_finite(arrays: list[np.ndarray]) -> bool:
    return bool(arrays) and all(np.isfinite(a).all() for a in arrays)


# ------------------------------------------------------------------------------------- injected, in-process
def _inject(monkeypatch: pytest.MonkeyPatch, backend: str, kind: str) -> None:
    """Make step BAD_STEP's loss NaN or one of its gradients Inf (loss finite), on the given backend."""
    if backend == "torch" and kind == "loss":
        step = ClassifyTask.training_step

        def training_step(self, batch, batch_idx):
            loss = step(self, batch, batch_idx)
            return loss * float("nan") if self.global_step == BAD_STEP else loss

        monkeypatch.setattr(ClassifyTask, "training_step", training_step)
    elif backend == "torch":

        def on_after_backward(self):
            if self.global_step == BAD_STEP:
                next(self.parameters()).grad.view(-1)[0] = float("inf")

        monkeypatch.setattr(ClassifyTask, "on_after_backward", on_after_backward, raising=False)
    else:
        backward = NumpyBackend.loss_and_backward

        def loss_and_backward(self, task, batch, scale=1.0, state=None):
            loss, logits, final = backward(self, task, batch, scale, state)
            if task.global_step == BAD_STEP:
                if kind == "loss":
                    return float("nan"), logits, final
                next(iter(task.net.grads.values())).flat[0] = np.inf
            return loss, logits, final

        monkeypatch.setattr(NumpyBackend, "loss_and_backward", loss_and_backward)


@pytest.mark.parametrize(
    ("backend", "kind", "extra"),
    [
        ("torch", "loss", ("+callbacks.model_checkpoint.save_on_exception=true",)),  # the guard turns it off
        ("torch", "grad", ()),  # clipping by norm (the default) would have turned the Inf into NaN weights
        ("numpy", "loss", ()),
        ("numpy", "grad", ("trainer.gradient_clip_algorithm=value",)),  # value clipping would clamp the Inf away
    ],
)
def test_injected_divergence_stops_before_the_step_and_keeps_the_good_checkpoints(
    compose, recorder, monkeypatch, tmp_path, backend, kind, extra
):
    _inject(monkeypatch, backend, kind)
    run_dir = tmp_path / "run"
    with pytest.raises(DivergenceError) as caught:
        train(compose(*TINY, f"model.backend={backend}", *extra, run_dir=run_dir))
    err = caught.value
    message = str(err)
    match = LINE.match(message)
    assert match, message
    what = "train/loss" if kind == "loss" else "gradient norm"
    value = "nan" if kind == "loss" else "inf"
    assert (match["what"], match["value"], match["step"], match["epoch"], match["batch"]) == (
        what, value, str(BAD_STEP), "0", str(BAD_STEP))  # fmt: skip
    last = run_dir / "checkpoints" / "last.ckpt"
    assert match["ckpt"] == os.path.relpath(last)
    assert (err.step, err.batch, err.checkpoint) == (BAD_STEP, BAD_STEP, str(last))

    # only the checkpoints of the validation at step 2: nothing was written at or after the divergence
    assert sorted(p.name for p in last.parent.iterdir()) == ["best-step2.ckpt", "last.ckpt"]
    step, arrays = checkpoint_arrays(last)
    assert step == 2
    assert all_finite(arrays)
    model = recorder.runs[-1].model  # the guard raised before the optimizer step: the weights in memory are finite
    weights = (
        [p.detach().numpy() for p in model.parameters()] if backend == "torch" else list(model.net.params.values())
    )
    assert all_finite(weights)

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"] == message
    assert summary["divergence"]["step"] == BAD_STEP
    assert summary["divergence"]["what"] == what
    assert summary["global_step"] == BAD_STEP
    assert summary["backend"] == backend
    clone = pickle.loads(pickle.dumps(err))  # a joblib worker hands it back to the sweep
    assert (clone.args, clone.step, clone.checkpoint) == (err.args, err.step, err.checkpoint)


def test_callbacks_divergence_null_switches_the_guard_off(compose, monkeypatch, tmp_path):
    _inject(monkeypatch, "torch", "loss")
    run_dir = tmp_path / "run"
    train(compose(*TINY, "model.backend=torch", "callbacks.divergence=null", run_dir=run_dir))
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    step, arrays = checkpoint_arrays(run_dir / "checkpoints" / "last.ckpt")
    assert step == 6
    assert not all_finite(arrays)


def test_guard_message_without_a_checkpoint_names_the_run_directory(compose, monkeypatch, tmp_path):
    _inject(monkeypatch, "numpy", "loss")
    with pytest.raises(DivergenceError, match=r"at step 3 \(epoch 0, batch 3\); last good checkpoint: none \(nothing "
                       r"was saved before step 3; run directory: run\)$"):  # fmt: skip
        train(compose(*TINY, "model.backend=numpy", "trainer.val_check_interval=null", run_dir=tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())


# ------------------------------------------------------------------------------------- sweep bookkeeping
@pytest.mark.unit
def test_failed_jobs_callback_records_a_crash_and_train_main_lists_the_failures(tmp_path, monkeypatch, capsys):
    """The path of a sweeper that does not raise (Optuna with max_failure_rate): train_main lists and exits 1."""
    from hydra.core.utils import JobReturn, JobStatus

    from rnnlab.runtime import rundir
    from rnnlab.runtime.rundir import DirectoryTaken
    from rnnlab.runtime.sweeps import FailedJobs

    sweep = tmp_path / "out" / "multiruns" / "stamp"
    callback = FailedJobs()

    def fake_sweep() -> None:
        sweep_cfg = SimpleNamespace(dir=str(sweep))
        callback.on_multirun_start(SimpleNamespace(hydra=SimpleNamespace(sweep=sweep_cfg)))
        outcomes = {"0_a": None, "1_b": ZeroDivisionError("division by zero"), "2_c": None, "10_d": RnnlabError("x"),
                    "0_a ": DirectoryTaken("hydra.sweep.subdir=... belongs to a run")}  # fmt: skip
        for num, (name, error) in enumerate(outcomes.items()):
            job = sweep / name.strip()
            if not isinstance(error, DirectoryTaken):  # what a job does first: claim its directory
                rundir.claim(job, "run", "hydra.sweep.subdir").finish("running")
                (job / ".hydra").mkdir(parents=True)
                (job / ".hydra" / "overrides.yaml").write_text("[]\n")
            ret = JobReturn()
            if error is None:
                (job / "summary.json").write_text(json.dumps({"status": "completed"}))
                ret.status, ret.return_value = JobStatus.COMPLETED, 0.5
            else:
                ret.status, ret.return_value = JobStatus.FAILED, error
            config = SimpleNamespace(hydra=SimpleNamespace(runtime=SimpleNamespace(output_dir=str(job)),
                                                           sweep=sweep_cfg, job={"num": num}))  # fmt: skip
            callback.on_job_end(config, ret)

    monkeypatch.setattr(rnnlab.cli, "_hydra_train", fake_sweep)
    with pytest.raises(SystemExit) as exited:
        rnnlab.cli.train_main()
    assert exited.value.code == 1
    assert json.loads((sweep / "1_b" / "summary.json").read_text())["error"] == "ZeroDivisionError: division by zero"
    assert json.loads((sweep / "0_a" / "summary.json").read_text())["status"] == "completed"  # not the refused job's
    assert capsys.readouterr().err.splitlines() == [
        "rnnlab: error: 3 of 5 jobs failed:",
        f"  {os.path.relpath(sweep / '1_b')}: ZeroDivisionError: division by zero",
        f"  {os.path.relpath(sweep / '10_d')}: x",
        f"  {os.path.relpath(sweep / '0_a')}: hydra.sweep.subdir=... belongs to a run",
    ]
    monkeypatch.setattr(rnnlab.cli, "_hydra_train", lambda: None)
    rnnlab.cli.train_main()  # the sweep is forgotten: no second listing, exit 0


# ------------------------------------------------------------------------------------- real divergence, CLI
def run_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(RNNLAB_OUTPUT_DIR=str(cwd / "out"), OMP_NUM_THREADS="1")
    return subprocess.run([str(RNNLAB_TRAIN), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# A real divergence: a ReLU RNN trained by SGD at lr 30 without clipping overflows at step 3, after the first
# validation (step 2) has written last.ckpt
CLI_TINY = [o for o in TINY if not o.startswith(("trainer.max_steps", "model="))] + [
    "model=rnn", "model.nonlinearity=relu", "optimizer=sgd", "trainer.gradient_clip_val=null",
    "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]  # fmt: skip


@pytest.mark.cli
@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_a_huge_learning_rate_diverges_and_exits_with_one_line(tmp_path, backend):
    result = run_cli(*CLI_TINY, f"model.backend={backend}", "optimizer.lr=30", "trainer.max_steps=20", cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("rnnlab: error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert errors[0] == result.stderr.splitlines()[-1], result.stderr[-3000:]
    match = LINE.match(errors[0].removeprefix("rnnlab: error: "))
    assert match, errors[0]
    step = int(match["step"])
    assert 2 < step <= 6  # it really diverges within a few steps, after the first validation

    (run_dir,) = (tmp_path / "out" / "runs").iterdir()
    last = run_dir / "checkpoints" / "last.ckpt"
    assert (tmp_path / match["ckpt"]).resolve() == last.resolve()
    saved_step, arrays = checkpoint_arrays(last)
    # a validation every 2 steps; Lightning refreshes last.ckpt when the monitored val/acc improves
    assert 2 <= saved_step <= step
    assert all_finite(arrays)
    for ckpt in last.parent.glob("*.ckpt"):
        assert all_finite(checkpoint_arrays(ckpt)[1]), ckpt
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["error"]) == ("failed", errors[0].removeprefix("rnnlab: error: "))
    assert summary["divergence"]["step"] == step


@pytest.mark.cli
def test_a_sweep_finishes_the_other_jobs_and_lists_the_diverged_one(tmp_path, capsys):
    result = run_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *CLI_TINY, "trainer.max_steps=6",
                     "optimizer.lr=0.1,30,0.2", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    (sweep,) = (tmp_path / "out" / "multiruns").iterdir()
    jobs = sorted((p for p in sweep.iterdir() if (p / ".hydra").is_dir()), key=lambda p: int(p.name.split("_")[0]))
    assert [p.name.split("_")[0] for p in jobs] == ["0", "1", "2"]
    summaries = [json.loads((job / "summary.json").read_text()) for job in jobs]
    assert [s["hparams"]["optimizer/lr"] for s in summaries] == [0.1, 30, 0.2]
    assert [s["status"] for s in summaries] == ["completed", "failed", "completed"]
    assert summaries[0]["global_step"] == summaries[2]["global_step"] == 6
    line = summaries[1]["error"]
    assert LINE.match(line), line

    lines = result.stderr.splitlines()
    assert "rnnlab: error: 1 of 3 jobs failed:" in lines, result.stderr[-3000:]
    assert lines[-1] == f"  {os.path.relpath(jobs[1], tmp_path)}: {line}"
    assert "Traceback" not in result.stderr

    from rnnlab.report.cli import main as report_main

    assert report_main([str(sweep), f"out={tmp_path / 'report'}"]) == 0
    assert "(3 runs, 1 incomplete or failed)" in capsys.readouterr().out
    readme = (tmp_path / "report" / "README.md").read_text()
    listed = [ln for ln in readme.splitlines() if f"`{jobs[1].name}`: failed;" in ln]
    assert len(listed) == 1, readme
    assert listed[0].endswith(f"error: {line}"), readme
