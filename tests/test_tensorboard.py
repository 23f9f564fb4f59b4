"""A real run's summary.json, and what a real TensorBoard server serves from its logs (scalars, HPARAMS)."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch

from rnnlab.train import train

pytestmark = pytest.mark.compose

TENSORBOARD = Path(sys.executable).parent / "tensorboard"
# 300 samples: 4 training batches an epoch, so the fit validates once, after step 4
TINY = ["task=classify", "data=synthetic_text", "data.num_samples=300", "model.hidden_size=8", "model.embed_dim=8",
        "trainer.max_steps=6", "trainer.log_every_n_steps=1", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1"]  # fmt: skip
SUMMARY_KEYS = {"status", "seed", "hparams", "fit_metrics", "test_metrics", "optimized_metric", "optimized_value",
                "num_params", "step_ms_median", "samples_per_s", "peak_rss_mb", "peak_rss_delta_mb", "wall_s",
                "global_step", "epochs", "stopped_early", "optuna_trial", "backend", "cell", "task", "data",
                "finished_at", "world_size", "threads", "data_sha256", "data_sources", "environment"}  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, compose_factory: Any) -> dict[str, dict[str, Any]]:
    """One tiny classify run per backend: its directory and what train() returned."""
    out: dict[str, dict[str, Any]] = {}
    cwd = os.getcwd()
    for backend, cell in (("torch", "gru"), ("numpy", "lstm")):
        run_dir = tmp_path_factory.mktemp(f"tb-{backend}") / "run"
        os.chdir(run_dir.parent)  # Lightning's relative fallbacks stay in tmp
        try:
            value = train(compose_factory([*TINY, f"model={cell}", f"model.backend={backend}"], run_dir)).value
        finally:
            os.chdir(cwd)
        out[backend] = {"dir": run_dir, "value": value}
    return out


# ------------------------------------------------------------------------------------------ summary.json
@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_summary_json(runs, backend):
    run = runs[backend]
    files = {p.name for p in run["dir"].iterdir()}
    assert "summary.json" in files
    assert not [f for f in files if f.endswith(".tmp")]  # written atomically, nothing left behind
    summary = json.loads((run["dir"] / "summary.json").read_text())
    assert set(summary) == SUMMARY_KEYS
    assert summary["world_size"] == 1
    assert summary["status"] == "completed"
    assert summary["optuna_trial"] is None  # no trial of a pruning Optuna search (tests/test_pruning.py)
    # provenance: synthetic data is identified by its generator's settings, the machine by its libraries
    assert len(summary["data_sha256"]) == 64
    assert "generator" in summary["data_sources"]
    env = summary["environment"]
    assert env["torch"]["version"] == __import__("torch").__version__
    assert env["numpy"] == __import__("numpy").__version__
    assert (summary["backend"], summary["task"], summary["data"]) == (backend, "classify", "synthetic_text")
    assert summary["cell"] == ("gru" if backend == "torch" else "lstm")
    assert summary["seed"] == 42 == summary["hparams"]["seed"]
    assert summary["hparams"]["model/backend"] == backend
    assert summary["global_step"] == 6
    assert summary["optimized_metric"] == "val/acc"
    assert summary["optimized_value"] == pytest.approx(run["value"])
    assert 0 <= summary["optimized_value"] <= 1
    assert {"train/loss", "val/loss", "val/acc"} <= set(summary["fit_metrics"])
    assert {"test/loss", "test/acc"} <= set(summary["test_metrics"])
    assert summary["step_ms_median"] > 0
    assert summary["samples_per_s"] > 0
    assert summary["peak_rss_mb"] > 0
    assert 0 <= summary["peak_rss_delta_mb"] <= summary["peak_rss_mb"]
    assert summary["wall_s"] > summary["step_ms_median"] * 6 / 1e3
    assert summary["finished_at"][:4].isdigit()

    ckpt = torch.load(run["dir"] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    if backend == "torch":
        from rnnlab.tasks import task_class

        model = task_class("classify").load_from_checkpoint(run["dir"] / "checkpoints" / "last.ckpt")
        expected = sum(p.numel() for p in model.parameters())
    else:
        expected = sum(a.numel() for a in ckpt["numpy_backend"]["params"].values())  # saved as tensors
    assert summary["num_params"] == expected > 0


@pytest.mark.unit
def test_summary_step_statistics_skip_warm_up():
    from rnnlab.summary import step_statistics

    times = [1.0] * 5 + [0.01] * 10  # five slow warm-up steps are dropped when there are more than 10
    median_ms, rate = step_statistics(times, [4] * 15)
    assert median_ms == pytest.approx(10.0)
    assert rate == pytest.approx(400.0)
    median_ms, _ = step_statistics([0.02, 0.04, 0.03], [1, 1, 1])  # too few steps: all count
    assert median_ms == pytest.approx(30.0)
    assert step_statistics([], []) == (None, None)


def test_memory_is_logged_once(runs):
    import pandas as pd

    metrics = pd.read_csv(runs["torch"]["dir"] / "csv" / "metrics.csv")
    peak = metrics["memory/peak_rss_mb"].dropna()
    assert len(peak) == 1
    summary = json.loads((runs["torch"]["dir"] / "summary.json").read_text())
    assert peak.iloc[0] == pytest.approx(summary["peak_rss_mb"])


# ----------------------------------------------------------------------------------------------- TensorBoard
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, body: dict | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data else {}
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=10) as response:
        return json.loads(response.read())


def _poll(fetch: Any, ready: Any, deadline: float) -> Any:
    """``fetch()`` until ``ready(result)`` or the deadline; the last result (or error) is in the failure."""
    last: Any = None
    for _ in range(120):  # bounded: 120 tries at 0.5 s
        try:
            last = fetch()
            if ready(last):
                return last
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            last = err
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    raise AssertionError(f"TensorBoard did not serve it in time; last answer: {last!r}")


@pytest.fixture(scope="module")
def tensorboard_url(runs) -> Any:
    port = _free_port()
    log = runs["torch"]["dir"].parent / "tensorboard-server.log"
    with open(log, "wb") as sink:
        server = subprocess.Popen(
            [str(TENSORBOARD), "--logdir", str(runs["torch"]["dir"]), "--host", "127.0.0.1", "--port", str(port),
             "--load_fast", "false", "--reload_interval", "1"],
            stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}", server, log
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)


HPARAM_NAMES = {"seed", "model/cell", "model/backend", "model/hidden_size", "model/num_layers", "model/bidirectional",
                "model/dropout", "task/name", "data/name", "optimizer/name", "optimizer/lr",
                "trainer/max_steps"}  # fmt: skip
METRIC_TAGS = {"hparams/val_loss", "hparams/val_acc", "hparams/test_acc", "hparams/test_loss"}


@pytest.mark.cli
def test_tensorboard_serves_scalars_and_hparams(tensorboard_url):
    url, server, log = tensorboard_url
    deadline = time.monotonic() + 60
    wanted = {"train/loss", "val/loss", "val/acc", "time/step_ms"}

    def scalars_ready(tags: dict) -> bool:
        assert server.poll() is None, log.read_text()[-2000:]
        return wanted <= set(tags.get("tensorboard", {}))

    tags = _poll(lambda: _get(f"{url}/data/plugin/scalars/tags"), scalars_ready, deadline)
    assert set(tags["tensorboard"]) >= METRIC_TAGS  # the HPARAMS metrics are scalars of the run too

    def experiment_ready(exp: dict) -> bool:
        return bool(exp.get("metricInfos"))

    exp = _poll(lambda: _get(f"{url}/data/plugin/hparams/experiment", {"experimentName": ""}), experiment_ready,
                deadline)  # fmt: skip
    served = {info["name"]: info for info in exp["hparamInfos"]}
    assert set(served) >= HPARAM_NAMES, sorted(served)
    assert {m["name"]["tag"] for m in exp["metricInfos"]} >= METRIC_TAGS

    request = {
        "experimentName": "",
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [],
        "startIndex": 0,
        "sliceSize": 100,
    }
    groups = _get(f"{url}/data/plugin/hparams/session_groups", request)["sessionGroups"]
    assert len(groups) == 1
    (group,) = groups
    hparams = group["hparams"]
    assert (hparams["model/cell"], hparams["model/backend"], hparams["task/name"]) == ("gru", "torch", "classify")
    assert (hparams["model/hidden_size"], hparams["seed"], hparams["model/bidirectional"]) == (8, 42, False)
    values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
    assert set(values) >= METRIC_TAGS
    summary = json.loads((Path(log).parent / "run" / "summary.json").read_text())
    assert values["hparams/val_acc"] == pytest.approx(summary["optimized_value"])
    assert values["hparams/test_acc"] == pytest.approx(summary["test_metrics"]["test/acc"])
    assert all(math.isfinite(v) for v in values.values())


@pytest.mark.parametrize(("start", "hwm", "peak", "delta"), [(100.0, 99.8, 100.0, 0.0), (100.0, 130.5, 130.5, 30.5)])
def test_peak_memory_is_never_below_the_start(monkeypatch, start, hwm, peak, delta):
    """The kernel's RSS counters are approximate: a high-water mark read at the end can come out below the RSS
    read at the start (CI saw -0.19 MiB). The peak is then the start, and the delta 0, never negative."""
    from types import SimpleNamespace

    from rnnlab import callbacks

    memory = callbacks.PeakMemory()
    memory.rss_start_mb = start
    monkeypatch.setattr(callbacks, "_proc_status_mb", lambda field: {"VmHWM": hwm}[field])
    module = SimpleNamespace(device=torch.device("cpu"))
    memory.on_train_end(SimpleNamespace(is_global_zero=True, loggers=[]), module)
    assert (memory.peak_rss_mb, memory.peak_rss_delta_mb) == (peak, delta)
