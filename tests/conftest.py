"""Shared fixtures (an isolated environment: cache, outputs, cwd; a ``compose`` helper for in-process runs) and the
test tiers.

Tiers: every test belongs to exactly one, a pytest marker. ``unit``: no Lightning Trainer and no run of the command
line: pure functions, NumPy-vs-torch parity, finite-difference gradient checks, configs composed with Hydra and
checked by ``rnnlab.config.validate``. ``compose``: ``rnnlab.train.train`` in this process on a composed config,
fast_dev_run or a few steps. ``cli``: the real command line (rnnlab-train, rnnlab-generate, the scripts,
TensorBoard) in a subprocess. A module names its tier with ``pytestmark = pytest.mark.<tier>``; a test of another
tier carries its own mark, which wins over the module's. A test without a tier, or with two at one level, is a
collection error; a unit test that builds a Trainer, or a unit or compose test that starts an ``rnnlab-*``
command, fails. ``bash scripts/test.sh`` runs all tiers in parallel (pytest-xdist, a worker per core, a thread per
worker); ``bash scripts/test.sh -m unit``, ``-m "unit or compose"`` or ``-m cli`` runs some of them.
"""

from __future__ import annotations

import contextlib
import os
import sys
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

TIERS = ("unit", "compose", "cli")


# ------------------------------------------------------------------------------------------------ the tiers
@pytest.hookimpl(tryfirst=True)  # before -m deselects by the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give each test exactly one tier, the closest (the test's own mark wins over its module's), and keep only that
    one on it so that ``-m`` selects by it; a test without a tier or with two at one level stops the collection."""
    tiers, errors = {}, []
    for item in items:
        for node in reversed(item.listchain()):  # the test itself first, then its class and module
            found = {mark.name for mark in node.own_markers if mark.name in TIERS}
            if found:
                break
        if len(found) != 1:
            errors.append(f"{item.nodeid}: " + (f"two tiers ({', '.join(sorted(found))})" if found else "no tier"))
        else:
            tiers[item] = found.pop()
    if errors:
        raise pytest.UsageError(
            f"every test needs exactly one tier mark ({', '.join(TIERS)}; see tests/conftest.py):\n  "
            + "\n  ".join(errors)
        )
    for item, tier in tiers.items():
        for node in item.listchain()[:-1]:  # a module's mark now lives on its tests
            node.own_markers[:] = [mark for mark in node.own_markers if mark.name not in TIERS]
        if item.get_closest_marker(tier) is None:
            item.add_marker(tier)


_running: dict[str, str | None] = {"tier": None}


def _no_command_line_outside_cli(event: str, args: tuple[Any, ...]) -> None:
    """An audit hook: a unit or compose test that starts an ``rnnlab-*`` command fails (that makes it ``cli``)."""
    if event != "subprocess.Popen" or _running["tier"] not in ("unit", "compose"):
        return
    executable, argv = args[0], args[1]
    if isinstance(argv, str | bytes):  # a command line for the shell
        argv = os.fsdecode(argv).split()
    program = executable or next(iter(argv), "")
    name = os.path.basename(os.fsdecode(program))
    if name.startswith("rnnlab-"):
        pytest.fail(f"a {_running['tier']} test runs {name} in a subprocess: mark it cli", pytrace=False)


sys.addaudithook(_no_command_line_outside_cli)


@contextlib.contextmanager
def _tier_checks(item: pytest.Item) -> Iterator[None]:
    tier = next((t for t in TIERS if item.get_closest_marker(t)), None)
    _running["tier"] = tier
    try:
        pl = sys.modules.get("lightning.pytorch")  # not imported here (seconds): a whole run has it from collection
        if tier != "unit" or pl is None:
            yield
            return

        def refuse(*args: Any, **kwargs: Any) -> None:
            pytest.fail("a unit test builds a lightning Trainer: mark it compose", pytrace=False)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(pl.Trainer, "__init__", refuse)
            yield
    finally:
        _running["tier"] = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with _tier_checks(item):  # module-scoped fixtures are built here: a unit test cannot lean on a trained run
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with _tier_checks(item):
        return (yield)


# --------------------------------------------------------------------------------------------- fixtures


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
    state, the parameters Lightning trains (at ``on_train_start``, after any dtype conversion), the trainer, the
    fit and test metrics that train() reports and how early stopping ended the fit (``stopped_early``)."""
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
                         test_metrics: dict, early: dict | None = None) -> None:  # fmt: skip
        run = rec.runs[-1]
        run.trainer, run.metrics, run.test_metrics, run.stopped_early = trainer, metrics, test_metrics, early
        report(cfg, model, trainer, run_dir, seed, metrics, test_metrics, early)

    monkeypatch.setattr(train_module, "build_task", recording_build_task)
    monkeypatch.setattr(train_module, "report", recording_report)
    return rec
