"""Shared fixtures: an isolated environment (cache, outputs, cwd) and a ``compose`` helper for in-process runs."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import rnnlab.cli

# Tiny models are fastest on one thread, and two OpenMP threads that spin-wait on a busy 2-core machine can make a
# step a hundred times slower. The CLI tests pass the same setting to their subprocesses.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def rnnlab_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Point the corpus cache and the default output directory at session temp dirs (never the user's)."""
    dirs = {"cache": tmp_path_factory.mktemp("rnnlab-cache"), "outputs": tmp_path_factory.mktemp("rnnlab-outputs")}
    saved = {k: os.environ.get(k) for k in ("RNNLAB_CACHE_DIR", "RNNLAB_OUTPUT_DIR")}
    os.environ["RNNLAB_CACHE_DIR"] = str(dirs["cache"])
    os.environ["RNNLAB_OUTPUT_DIR"] = str(dirs["outputs"])
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    yield dirs
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _run_in_tmp_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Anything written relative to the working directory (Lightning's fallbacks) lands in the test's tmp dir."""
    monkeypatch.chdir(tmp_path)


def compose_raw(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """``hydra.compose`` of conf/train.yaml exactly as the CLI composes it (hydra node included)."""
    with initialize_config_dir(config_dir=rnnlab.cli.config_dir(), version_base="1.3"):
        return hydra_compose("train", overrides=list(overrides), return_hydra_config=True)


def compose_for_run(overrides: list[str] | tuple[str, ...], run_dir: Path) -> DictConfig:
    """A config ``rnnlab.train.train`` can run outside a Hydra app: run_dir and output_dir point into tmp,
    no progress bar and no model summary."""
    with initialize_config_dir(config_dir=rnnlab.cli.config_dir(), version_base="1.3"):
        cfg = hydra_compose("train", overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    cfg.paths.output_dir = str(run_dir.parent / "outputs")
    cfg.paths.run_dir = str(run_dir)
    cfg.trainer.enable_progress_bar = False
    cfg.trainer.enable_model_summary = False
    if cfg.callbacks and "progress_bar" in cfg.callbacks:
        cfg.callbacks.progress_bar = None  # a TQDMProgressBar callback contradicts enable_progress_bar=false
    return cfg


@pytest.fixture(scope="session")
def compose_factory() -> Callable[[list[str] | tuple[str, ...], Path], DictConfig]:
    """``compose_factory(overrides, run_dir)`` for fixtures wider than one test."""
    return compose_for_run


@pytest.fixture
def raw_compose() -> Callable[..., DictConfig]:
    """``raw_compose(*overrides)``: the composed config, hydra node included, untouched (for compose-time errors)."""
    return lambda *overrides: compose_raw(overrides)


@pytest.fixture
def compose(tmp_path: Path) -> Callable[..., DictConfig]:
    """``compose(*overrides, run_dir=None)``: a runnable config whose run directory is ``tmp_path/run``."""

    def _compose(*overrides: str, run_dir: Path | None = None) -> DictConfig:
        return compose_for_run(overrides, run_dir or tmp_path / "run")

    return _compose


@pytest.fixture(scope="session")
def shakespeare(rnnlab_env: dict[str, Path]) -> str:
    """The converted corpus, built once into the session cache (the data module reads the same cache file)."""
    from rnnlab.data.corpus import shakespeare_text

    return shakespeare_text(rnnlab_env["cache"])


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Records what ``rnnlab.train.train`` builds: per run, the data module, the task module, its seed and initial
    state, the parameters Lightning trains (at ``on_train_start``, after any dtype conversion), the trainer and
    the fit and test metrics that train() reports."""
    import rnnlab.train as train_module

    rec = SimpleNamespace(runs=[])
    build_task, report = train_module.build_task, train_module.report

    def recording_build_task(cfg: DictConfig, datamodule: Any, seed: int) -> Any:
        model = build_task(cfg, datamodule, seed)
        run = SimpleNamespace(
            datamodule=datamodule,
            model=model,
            seed=seed,
            initial={k: v.detach().clone() for k, v in model.state_dict().items()},
            train_start=None,
            trainer=None,
            metrics=None,
            test_metrics=None,
        )

        def on_train_start() -> None:
            run.train_start = {k: v.detach().clone() for k, v in model.named_parameters()}

        model.on_train_start = on_train_start
        rec.runs.append(run)
        return model

    def recording_report(cfg: DictConfig, model: Any, trainer: Any, run_dir: Path, seed: int, metrics: dict,
                         test_metrics: dict) -> None:  # fmt: skip
        run = rec.runs[-1]
        run.trainer, run.metrics, run.test_metrics = trainer, metrics, test_metrics
        report(cfg, model, trainer, run_dir, seed, metrics, test_metrics)

    monkeypatch.setattr(train_module, "build_task", recording_build_task)
    monkeypatch.setattr(train_module, "report", recording_report)
    return rec
