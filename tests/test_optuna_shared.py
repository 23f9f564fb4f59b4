"""Optuna searches shared by several workers through one RDB (sqlite) storage: each worker's sampler seed is the base
seed plus its worker index, two real ``rnnlab-train -m`` workers started at the same instant complete their trials
in one study without proposing the same trial twice, each in its own sweep directory; a storage that cannot be
opened, a bad worker index, a study of another direction end in one line (rnnlab.runtime.search)."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import job_dirs

from rnnlab.errors import ConfigError
from rnnlab.runtime import search

pytestmark = pytest.mark.cli

RNNLAB_TRAIN = Path(sys.executable).parent / "rnnlab-train"
PRESET = Path(__file__).resolve().parents[1] / "conf" / "hparams_search" / "classify_optuna.yaml"
# a tiny classifier: 200 samples, 2 steps, one validation and one test batch (tests/test_sweeps.py); hidden_size
# fixed here leaves optimizer.lr, model.cell and model.bidirectional to the search
TINY = ["data.num_samples=200", "model.hidden_size=4", "model.embed_dim=4", "trainer.max_steps=2",
        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false"]  # fmt: skip
SEARCH = ["-m", "hparams_search=classify_optuna", *TINY]


def environment(cwd: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", *search.WORKER_VARIABLES)}
    env.update(RNNLAB_OUTPUT_DIR=str(cwd / "out"), OMP_NUM_THREADS="1", **extra)
    return env


def start(*args: str, cwd: Path, **extra: str) -> subprocess.Popen:
    return subprocess.Popen([str(RNNLAB_TRAIN), *args], cwd=cwd, env=environment(cwd, **extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def run_cli(*args: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(RNNLAB_TRAIN), *args], cwd=cwd, env=environment(cwd, **extra), capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def load_study(url: str, name: str = "classify_optuna"):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=url)


def as_set(params: dict) -> tuple[str, ...]:
    """Parameters as the sweeper passes them (``key=value``, str() of the value), sorted by key."""
    return tuple(sorted(f"{name}={value}" for name, value in params.items()))


def first_proposals(seed: int, n: int) -> list[tuple[str, ...]]:
    """The first ``n`` trials (as the sweeper's override strings, in its order) that classify_optuna's sampler
    proposes with ``seed`` and TINY's overrides: its first 10 are random draws of the seed alone, whatever the
    study holds, so these are the trials a worker with this seed runs in a shared study of fewer than 10 trials."""
    import optuna
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    sweeper = yaml.safe_load(PRESET.read_text())["hydra"]["sweeper"]
    assert sweeper["sampler"]["n_startup_trials"] >= 6
    fixed_keys = {o.partition("=")[0] for o in TINY}
    space, _ = create_params_from_overrides([f"{k}={v}" for k, v in sweeper["params"].items() if k not in fixed_keys])
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=10)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    out = []
    for _ in range(n):
        trial = study.ask()
        for name, distribution in space.items():
            trial._suggest(name, distribution)
        out.append(as_set(trial.params))
        study.tell(trial, 0.5)
    return out


def searched(job: Path) -> tuple[str, ...]:
    """A job's searched parameters as the sweeper passed them, sorted by key (:func:`as_set`)."""
    overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
    keys = {"optimizer.lr", "model.cell", "model.bidirectional"}
    return tuple(sorted(o for o in overrides if o.partition("=")[0] in keys))


# --------------------------------------------------------------------------------------------------- unit
@pytest.mark.unit
def test_the_worker_index_and_the_seed(monkeypatch):
    for name in search.WORKER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert search.worker_index() == (0, None)
    assert search.search_seed(1234) == 1234  # a search run alone: the preset's seed itself
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
    assert search.worker_index() == (5, "SLURM_ARRAY_TASK_ID")
    monkeypatch.setenv("RNNLAB_SEARCH_WORKER", "2")  # wins over the SLURM array
    assert search.worker_index() == (2, "RNNLAB_SEARCH_WORKER")
    assert search.search_seed(1234) == 1236
    assert search.search_seed(None) is None  # null: a seed from the operating system in every worker
    monkeypatch.setenv("RNNLAB_SEARCH_WORKER", "")  # empty is unset
    assert search.worker_index() == (5, "SLURM_ARRAY_TASK_ID")
    for bad in ("x", "-1", "1.5", "+1", "0x2", "\u0663"):
        for name in search.WORKER_VARIABLES:
            for other in search.WORKER_VARIABLES:
                monkeypatch.delenv(other, raising=False)
            monkeypatch.setenv(name, bad)
            with pytest.raises(ConfigError) as err:
                search.worker_index()
            assert str(err.value).startswith(f"{name}={bad!r}: the worker index"), str(err.value)
            assert "\n" not in str(err.value)
    for base in ("1234", 1.5, True):
        with pytest.raises(ConfigError, match=r"^hydra.sweeper.sampler.seed: "):
            search.search_seed(base)


@pytest.mark.unit
@pytest.mark.parametrize("preset", ["classify_optuna", "char_lm_optuna"])
def test_the_presets_seed_is_the_base_seed_plus_the_worker_index(raw_compose, monkeypatch, preset):
    for name in search.WORKER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    cfg = raw_compose(f"hparams_search={preset}")
    assert cfg.hydra.sweeper.sampler.seed == 1234
    assert cfg.hydra.sweeper.storage is None  # in memory unless asked
    assert "optuna_worker" in cfg.hydra.callbacks
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert cfg.hydra.sweeper.sampler.seed == 1237
    monkeypatch.setenv("RNNLAB_SEARCH_WORKER", "1")
    assert cfg.hydra.sweeper.sampler.seed == 1235
    shared = raw_compose(f"hparams_search={preset}", "hydra.sweeper.storage=sqlite:///s.db",
                         "hydra.sweeper.study_name=mine")  # fmt: skip
    assert (shared.hydra.sweeper.storage, shared.hydra.sweeper.study_name) == ("sqlite:///s.db", "mine")
    record = search.worker_record(shared)
    assert (record["worker"], record["worker_from"], record["seed"], record["base_seed"]) == (
        1, "RNNLAB_SEARCH_WORKER", 1235, 1234)  # fmt: skip
    other_base = raw_compose(f"hparams_search={preset}", "hydra.sweeper.sampler.seed=${rnnlab_search_seed:42}")
    assert other_base.hydra.sweeper.sampler.seed == 43
    fixed = search.worker_record(raw_compose(f"hparams_search={preset}", "hydra.sweeper.sampler.seed=42",
                                             "hydra.sweeper.storage=sqlite:///s.db"))  # fmt: skip
    assert (fixed["seed"], fixed["seed_plus_worker"]) == (42, False)  # as set: the same in every worker
    monkeypatch.setenv("RNNLAB_SEARCH_WORKER", "one")
    from omegaconf.errors import InterpolationResolutionError

    with pytest.raises(InterpolationResolutionError) as err:
        _ = cfg.hydra.sweeper.sampler.seed
    from rnnlab.errorlines import one_line_error

    assert one_line_error(err.value).startswith("RNNLAB_SEARCH_WORKER='one': the worker index")


@pytest.mark.unit
def test_storage_urls_are_shown_without_their_password():
    assert search.shown_url("postgresql://ann:s3cr:et@db.example:5432/optuna") == (
        "postgresql://ann:***@db.example:5432/optuna"
    )
    assert search.shown_url("postgresql://ann@db/optuna") == "postgresql://ann@db/optuna"
    assert search.shown_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


@pytest.mark.unit
def test_a_database_error_during_the_search_is_one_line():
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from rnnlab.errorlines import one_line_error

    try:
        try:
            raise OperationalError("UPDATE trials", {}, sqlite3.OperationalError("database is locked"))
        except OperationalError as inner:
            raise RuntimeError("the sweeper gave up") from inner
    except RuntimeError as ex:
        line = one_line_error(ex)
    assert line is not None
    assert line.startswith("hydra.sweeper.storage: the Optuna storage failed during the search: ")
    assert "database is locked" in line
    assert "PostgreSQL" in line  # what to do about it
    assert "\n" not in line


@pytest.mark.unit
def test_open_study_creates_loads_and_checks_the_study(tmp_path):
    """The storage as a URL or as an RDBStorage config (engine_kwargs: sqlite's busy timeout); the study created
    once, then loaded with what it holds; another direction refused, naming hydra.sweeper.direction."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    as_config = {"_target_": "optuna.storages.RDBStorage", "url": url,
                 "engine_kwargs": {"connect_args": {"timeout": 60}}}  # fmt: skip
    assert search.open_study(as_config, "s", ["MAXIMIZE"]) == {"created": True, "trials": {}}
    study = load_study(url, "s")
    study.tell(study.ask(), 0.5)
    study.ask()  # a trial left running, as by a worker that was killed
    assert search.open_study(url, "s", ["maximize"]) == {"created": False, "trials": {"COMPLETE": 1, "RUNNING": 1}}
    with pytest.raises(ConfigError) as err:
        search.open_study(url, "s", ["minimize"])
    assert str(err.value) == (f"hydra.sweeper.direction=minimize: study 's' in {url} was created to maximize; a "
                              "study keeps its direction: choose another hydra.sweeper.study_name")  # fmt: skip
    bad = {**as_config, "url": "postgresql://ann:secret@localhost/optuna"}
    with pytest.raises(ConfigError) as err:
        search.open_study(bad, "s", ["maximize"])
    assert str(err.value).startswith("hydra.sweeper.storage=postgresql://ann:***@localhost/optuna: cannot open ")
    assert "secret" not in str(err.value)


def _open_at_once(url: str, barrier, results) -> None:
    barrier.wait()
    try:
        results.put(json.dumps(search.open_study(url, "race", ["maximize"])))
    except Exception as ex:
        results.put(f"{type(ex).__name__}: {ex}")


@pytest.mark.unit
def test_workers_that_create_a_new_database_at_the_same_instant(tmp_path):
    """Four processes open one new sqlite file and create one study in it at the same instant, three times over:
    every one succeeds (optuna 2.10 alone: 'table trials already exists' or a UNIQUE constraint for the losers)."""
    import optuna

    context = multiprocessing.get_context("fork")
    for attempt in range(3):
        url = f"sqlite:///{tmp_path / f'race{attempt}.db'}"
        barrier, results = context.Barrier(4), context.Queue()
        procs = [context.Process(target=_open_at_once, args=(url, barrier, results)) for _ in range(4)]
        for proc in procs:
            proc.start()
        outcomes = [results.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join(timeout=60)
        assert all(o.startswith("{") for o in outcomes), outcomes
        assert sum(json.loads(o)["created"] for o in outcomes) >= 1
        summaries = optuna.get_all_study_summaries(url)
        assert [(s.study_name, s.direction.name) for s in summaries] == [("race", "MAXIMIZE")]


# ---------------------------------------------------------------------------------------------------- cli
def test_two_workers_share_one_sqlite_study(tmp_path):
    """Two real workers, started at the same instant with the same command but their worker index, share one
    sqlite study: 2 x 3 trials, all complete, no parameter set twice, each worker's trials the first proposals of
    its own seed (1234 + index), each in its own sweep directory numbered from 0."""
    url = f"sqlite:///{tmp_path / 'search.db'}"
    # pruner=none: the trials report to the shared study but none is pruned (the preset's median pruner could prune
    # the sixth trial against the first five), so all 6 complete (pruning: tests/test_pruning.py)
    procs = [start(*SEARCH, f"hydra.sweeper.storage={url}", "hydra.sweeper.n_trials=3", "hydra/sweeper/pruner=none",
                   cwd=tmp_path, RNNLAB_SEARCH_WORKER=str(index)) for index in (0, 1)]  # fmt: skip
    outs = [p.communicate(timeout=600) for p in procs]
    for proc, (_, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err[-3000:]
        assert "Traceback" not in err

    sweeps = {}
    for sweep in (tmp_path / "out" / "multiruns").iterdir():
        record = json.loads((sweep / search.RECORD).read_text())
        sweeps[record["worker"]] = (sweep, record)
    assert sorted(sweeps) == [0, 1]  # two sweep directories, one per worker
    study = load_study(url)
    trials = study.get_trials()
    assert len(trials) == 6
    assert {t.state.name for t in trials} == {"COMPLETE"}
    in_storage = {as_set(t.params): t.value for t in trials}
    assert len(in_storage) == 6  # no parameter set proposed twice

    run = []
    for index, (proc, (out, _)) in enumerate(zip(procs, outs, strict=True)):
        sweep, record = sweeps[index]
        owner = json.loads((sweep / ".rnnlab-owner.json").read_text())
        assert (owner["kind"], owner["pid"]) == ("sweep", proc.pid)  # the worker's own sweep directory
        assert (record["seed"], record["base_seed"], record["seed_plus_worker"]) == (1234 + index, 1234, True)
        assert (record["worker_from"], record["storage"], record["study_name"]) == (
            "RNNLAB_SEARCH_WORKER", url, "classify_optuna")  # fmt: skip
        assert f"Optuna worker {index} (RNNLAB_SEARCH_WORKER): sampler seed {1234 + index} (1234 + worker" in out
        jobs = job_dirs(sweep)
        assert [j.name.split("_", 1)[0] for j in jobs] == ["0", "1", "2"]  # job numbers count this worker's jobs
        mine = [searched(job) for job in jobs]
        assert mine == first_proposals(1234 + index, 3)  # the trials of this worker's seed
        values = [json.loads((job / "summary.json").read_text())["optimized_value"] for job in jobs]
        assert [in_storage[p] for p in mine] == pytest.approx(values)
        run += mine

        results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
        best = as_set(results["best_params"])
        assert in_storage[best] == pytest.approx(results["best_value"])  # a trial of the study
        assert results["best_value"] >= max(values)  # it saw its own trials (maximize) ...
        assert results["best_value"] <= study.best_value  # ... and those of the other worker done by then
    assert sorted(run) == sorted(in_storage)
    finals = [yaml.safe_load((sweeps[i][0] / "optimization_results.yaml").read_text()) for i in (0, 1)]
    assert max(r["best_value"] for r in finals) == pytest.approx(study.best_value)  # the last one saw all six


def test_workers_whose_sweep_directories_collide(tmp_path):
    """Two workers started at the same instant whose sweep directories are the same (the stamp to the microsecond,
    here forced): one claims it and runs its trial; the other ends in one line before it touches the study."""
    url = f"sqlite:///{tmp_path / 'search.db'}"
    sweep = tmp_path / "sweep"
    procs = [start(*SEARCH, f"hydra.sweeper.storage={url}", "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={sweep}",
                   cwd=tmp_path, RNNLAB_SEARCH_WORKER=str(index)) for index in (0, 1)]  # fmt: skip
    outs = [p.communicate(timeout=600) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 1], outs
    loser = outs[codes.index(1)][1]
    lines = [line for line in loser.splitlines() if line.strip()]
    assert len(lines) == 1, loser
    assert lines[0].startswith(f"rnnlab: error: hydra.sweep.dir={sweep} belongs to a sweep"), loser
    record = json.loads((sweep / search.RECORD).read_text())
    assert record["worker"] == codes.index(0)
    assert len(load_study(url).get_trials()) == 1


def test_storage_errors_and_bad_workers_are_one_line(tmp_path):
    missing = tmp_path / "no" / "such" / "dir"
    for storage, reason in (
        (f"sqlite:///{missing}/search.db", "unable to open database file"),
        ("nosuchdialect://host/db", "Can't load plugin: sqlalchemy.dialects:nosuchdialect"),
        ("not-a-url", "Could not parse"),
    ):
        line = one_error_line(run_cli(*SEARCH, f"hydra.sweeper.storage={storage}", cwd=tmp_path))
        assert line.startswith(f"rnnlab: error: hydra.sweeper.storage={storage}: cannot open the Optuna storage: ")
        assert reason in line
    assert not missing.parent.parent.exists()

    import optuna

    optuna.create_study(study_name="classify_optuna", storage=f"sqlite:///{tmp_path / 'min.db'}", direction="minimize")
    line = one_error_line(run_cli(*SEARCH, f"hydra.sweeper.storage=sqlite:///{tmp_path / 'min.db'}", cwd=tmp_path))
    assert line.startswith("rnnlab: error: hydra.sweeper.direction=maximize: study 'classify_optuna' in ")
    assert "was created to minimize" in line

    url = f"sqlite:///{tmp_path / 'ok.db'}"
    line = one_error_line(run_cli(*SEARCH, f"hydra.sweeper.storage={url}", cwd=tmp_path, RNNLAB_SEARCH_WORKER="w1"))
    assert line == ("rnnlab: error: RNNLAB_SEARCH_WORKER='w1': the worker index of a shared Optuna search must be a "
                    "non-negative integer (0, 1, 2, ...)")  # fmt: skip
    line = one_error_line(run_cli(*SEARCH, f"hydra.sweeper.storage={url}", cwd=tmp_path, SLURM_ARRAY_TASK_ID="-3"))
    assert line.startswith("rnnlab: error: SLURM_ARRAY_TASK_ID='-3': the worker index")
    line = one_error_line(run_cli(*SEARCH, cwd=tmp_path, RNNLAB_SEARCH_WORKER="1"))  # the storage forgotten
    assert line.startswith("rnnlab: error: RNNLAB_SEARCH_WORKER=1: a worker of a shared search needs ")
    line = one_error_line(run_cli(*SEARCH, f"hydra.sweeper.storage={url}", "hydra.sweeper.study_name=null",
                                  cwd=tmp_path))  # fmt: skip
    assert line.startswith("rnnlab: error: hydra.sweeper.study_name: a study in a storage")
    assert not (tmp_path / "out" / "multiruns").exists() or not any((tmp_path / "out" / "multiruns").iterdir())
