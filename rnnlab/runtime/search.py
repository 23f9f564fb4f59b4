"""Optuna searches shared by several workers: one study in an RDB storage, a sampler seed per worker.

A worker is a process started with the same command as the others, e.g.
``RNNLAB_SEARCH_WORKER=1 rnnlab-train -m hparams_search=classify_optuna hydra.sweeper.storage=sqlite:///search.db``.
Every worker asks the shared study for its trials and tells it their values (hydra-optuna-sweeper does the asking
and telling; ``create_study(..., load_if_exists=True)``), so the sampler of each worker sees the trials of all.

* :func:`worker_index`: the worker's index, from ``RNNLAB_SEARCH_WORKER``, else ``SLURM_ARRAY_TASK_ID`` (the
  task of a SLURM array of workers), else 0. Anything but a non-negative integer is one line naming the variable.
* :func:`search_seed`, the resolver ``${rnnlab_search_seed:1234}`` of the presets' ``hydra.sweeper.sampler.seed``:
  the base seed plus the worker index, so that workers do not propose the same trials. Worker 0 (no variable set)
  gets the base seed itself: a search run alone is the one it always was.
* :func:`job_callbacks`: a sweep job's Lightning callbacks; a job of a pruning search (rnnlab.runtime.pruning) gets
  the one that reports to its trial, found in the sweep's ``optuna_trials.json`` and reached in the sweeper's process
  (a study in memory) or through the storage.
* :class:`OptunaWorker`, a Hydra callback (conf/hydra/default.yaml) of the process that runs an Optuna sweep: at
  ``on_multirun_start``, once the sweep directory is claimed, it checks the storage (it opens it and creates or
  loads the study, with the sweep's directions; a storage that cannot be opened, a study of another direction, a
  shared storage without a study name are one line naming the key, and the sweep directory is given back) and
  records the worker: a log line, and ``<sweep dir>/optuna_worker.json`` (:data:`RECORD`).

This module imports no optuna at import time: rnnlab.config registers the resolver, and Hydra instantiates the
callback before every run.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rnnlab.errors import ConfigError

log = logging.getLogger(__name__)

WORKER_VARIABLES = ("RNNLAB_SEARCH_WORKER", "SLURM_ARRAY_TASK_ID")
RECORD = "optuna_worker.json"  # in the worker's sweep directory
SEED_RESOLVER = "rnnlab_search_seed"
_OPEN_ATTEMPTS = 6  # workers that create a new database at the same instant race on its tables: try again


# ------------------------------------------------------------------------------------------- worker, seed
def worker_index() -> tuple[int, str | None]:
    """(this worker's index, the variable it was read from; None when none is set: worker 0)."""
    for name in WORKER_VARIABLES:
        value = os.environ.get(name, "").strip()
        if not value:
            continue
        if not value.isdecimal() or not value.isascii():
            raise ConfigError(
                f"{name}={os.environ[name]!r}: the worker index of a shared Optuna search must be a non-negative "
                "integer (0, 1, 2, ...)"
            )
        return int(value), name
    return 0, None


def search_seed(base: Any) -> int | None:
    """``${rnnlab_search_seed:1234}``: the sampler seed of this worker, ``base`` + :func:`worker_index`; null
    stays null (a seed from the operating system in every worker)."""
    if base is None:
        return None
    if isinstance(base, bool) or not isinstance(base, int):
        raise ConfigError(
            f"hydra.sweeper.sampler.seed: ${{{SEED_RESOLVER}:{base}}} needs an integer base seed (or null)"
        )
    return base + worker_index()[0]


def shown_url(url: str) -> str:
    """A storage URL with its password replaced by ``***`` (for logs and records)."""
    return re.sub(r"^([\w+.-]+://[^:/@]*:)[^@]*@", r"\1***@", url)


# ------------------------------------------------------------------------------------------------ storage
def _storage_url(storage: Any) -> str:
    if isinstance(storage, str):
        return storage
    url = storage.get("url") if isinstance(storage, (dict, DictConfig)) else None
    return str(url) if url is not None else str(storage)


def _make_storage(storage: Any) -> Any:
    """An optuna storage from ``hydra.sweeper.storage``: a URL, or a config with a ``_target_`` (e.g.
    optuna.storages.RDBStorage with engine_kwargs), instantiated as the sweeper will."""
    import optuna

    if isinstance(storage, str):
        return optuna.storages.get_storage(storage)
    from hydra.utils import instantiate

    return instantiate(storage)


def _root_cause(ex: BaseException) -> BaseException:
    while True:
        inner = ex.__cause__ or (ex.__context__ if not ex.__suppress_context__ else None)
        if inner is None or inner is ex:
            return ex
        ex = inner


def _reason(ex: BaseException) -> str:
    """The first line of what went wrong opening the storage, without SQLAlchemy's wrapping."""
    cause = _root_cause(ex)
    if isinstance(cause, ModuleNotFoundError) and cause.name:
        return f"the database driver {cause.name} is not installed (pip install {_driver_package(cause.name)})"
    text = str(cause).strip() or type(cause).__name__
    text = text.splitlines()[0]
    if cause is not ex and type(cause).__module__.split(".")[0] in ("sqlite3", "psycopg2", "pymysql", "MySQLdb"):
        return text
    return re.sub(r"^\([\w.]+\)\s*", "", text)


def _driver_package(module: str) -> str:
    return {"psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient"}.get(module, module)


def _concurrent_setup(ex: BaseException) -> bool:
    """An error of a worker that created the database's tables at the same instant as another one."""
    text = " ".join(str(e) for e in (ex, _root_cause(ex))).lower()
    return any(mark in text for mark in ("already exists", "unique constraint", "duplicate key", "database is locked"))


def open_study(storage: Any, study_name: str, directions: list[str]) -> dict[str, Any]:
    """Open ``storage`` and create the study ``study_name`` in it, or load it (with its directions checked), as
    the sweeper is about to; ConfigError (one line naming the key) when that fails. Workers that set up a new
    database at the same instant race on its tables: the loser tries again. Returns what the storage holds of the
    study: ``{"created": bool, "trials": {state: count}}``."""
    import optuna

    url = shown_url(_storage_url(storage))
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweeper reports the study itself
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            return _open_once(storage, study_name, [d.lower() for d in directions], url)
        except ConfigError:
            raise
        except Exception as ex:
            if attempt + 1 < _OPEN_ATTEMPTS and _concurrent_setup(ex):
                time.sleep(0.1 * (attempt + 1) + 0.1 * random.random())
                continue
            raise ConfigError(f"hydra.sweeper.storage={url}: cannot open the Optuna storage: {_reason(ex)}") from ex
    raise AssertionError("unreachable")


def _open_once(storage: Any, study_name: str, wanted: list[str], url: str) -> dict[str, Any]:
    import optuna

    opened = _make_storage(storage)
    try:
        try:
            have = [d.name.lower() for d in opened.get_study_directions(opened.get_study_id_from_name(study_name))]
        except KeyError:
            have = None  # no such study yet: create_study makes it
        if have is not None and "not_set" not in have and have != wanted:
            raise ConfigError(
                f"hydra.sweeper.direction={','.join(wanted)}: study {study_name!r} in {url} was created to "
                f"{','.join(have)}; a study keeps its direction: choose another hydra.sweeper.study_name"
            )
        study = optuna.create_study(storage=opened, study_name=study_name, directions=wanted, load_if_exists=True)
        counts: dict[str, int] = {}
        for trial in study.get_trials(deepcopy=False):
            counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
        return {"created": have is None, "trials": counts}
    finally:
        engine = getattr(getattr(opened, "_backend", opened), "engine", None)
        if engine is not None:
            engine.dispose()


# --------------------------------------------------------------------------------------------- the callback
def _directions_of(sweeper: DictConfig) -> list[str]:
    direction = sweeper.get("direction")
    values = list(direction) if OmegaConf.is_list(direction) or isinstance(direction, list) else [direction]
    return [getattr(d, "name", str(d)).lower() for d in values]


def _seed(config: DictConfig) -> tuple[Any, bool]:
    """(the sampler's seed, whether it comes from ``${rnnlab_search_seed:...}``: base seed + worker index)."""
    sampler = OmegaConf.select(config, "hydra.sweeper.sampler")
    if not isinstance(sampler, DictConfig) or "seed" not in sampler:
        return None, False
    raw = OmegaConf.to_container(sampler, resolve=False).get("seed")
    offset = isinstance(raw, str) and f"${{{SEED_RESOLVER}:" in raw
    try:
        return sampler.seed, offset
    except Exception as ex:  # the resolver's own line (a bad worker index), else OmegaConf's
        from rnnlab.errorlines import one_line_error

        raise ConfigError(one_line_error(ex) or f"hydra.sweeper.sampler.seed: {ex}") from ex


def worker_record(config: DictConfig) -> dict[str, Any]:
    """What a worker of an Optuna sweep records about itself (before it opens the storage); ConfigError for a
    bad worker index, a worker of a study in memory, or a shared study without a name."""
    sweeper = config.hydra.sweeper
    index, variable = worker_index()
    seed, offset = _seed(config)
    storage = sweeper.get("storage")
    study_name = sweeper.get("study_name")
    if storage is None and variable == "RNNLAB_SEARCH_WORKER":
        raise ConfigError(
            f"RNNLAB_SEARCH_WORKER={index}: a worker of a shared search needs the shared study's storage: set "
            "hydra.sweeper.storage (e.g. sqlite:///search.db), or unset RNNLAB_SEARCH_WORKER for a search of its own"
        )
    if storage is not None and not study_name:
        raise ConfigError(
            f"hydra.sweeper.study_name: a study in a storage ({shown_url(_storage_url(storage))}) needs a name, "
            "which every worker of the search gives alike; with none each worker would create a study of its own"
        )
    from rnnlab.runtime.rundir import slurm_job

    target = OmegaConf.select(config, "hydra.sweeper.sampler._target_", default=None)
    return {
        "worker": index,
        "worker_from": variable,
        "sampler": target,
        "seed": seed,
        "base_seed": seed - index if offset and isinstance(seed, int) else seed,
        "seed_plus_worker": offset,
        "storage": shown_url(_storage_url(storage)) if storage is not None else None,
        "study_name": study_name,
        "directions": _directions_of(sweeper),
        "n_trials": sweeper.get("n_trials"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job": slurm_job(),
    }


class OptunaWorker(Callback):
    """Checks an Optuna sweep's storage and records the worker (its index and sampler seed) in its sweep directory.
    Listed after RunDirGuard in ``hydra.callbacks``: the sweep directory is claimed when this runs."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from rnnlab.runtime import rundir

        if not rundir.is_optuna(config):
            return
        sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        try:
            record = worker_record(config)
            from rnnlab.runtime.pruning import check as check_pruning

            check_pruning(config)
            if config.hydra.sweeper.get("storage") is not None:
                record["study_at_start"] = open_study(
                    config.hydra.sweeper.storage, str(record["study_name"]), record["directions"]
                )
        except ConfigError as err:
            claim = rundir.held(sweep_dir)
            if claim is not None:
                claim.release()  # nothing ran: the sweep directory is given back
            sys.stderr.write(f"rnnlab: error: {str(err).splitlines()[0]}\n")
            sys.exit(1)  # Hydra turns a callback's exceptions into warnings and goes on
        from datetime import datetime

        from rnnlab.atomic import write_json

        record["started"] = datetime.now().astimezone().isoformat(timespec="seconds")
        if sweep_dir.is_dir():
            write_json(sweep_dir / RECORD, record)
        where = f"study {record['study_name']!r} in {record['storage']}" if record["storage"] else "study in memory"
        if record["seed"] is None:
            seed = "no sampler seed (one from the operating system)"
        elif record["seed_plus_worker"]:
            seed = f"sampler seed {record['seed']} ({record['base_seed']} + worker {record['worker']})"
        else:
            seed = f"sampler seed {record['seed']} (as set, without the worker index)"
        log.info(f"Optuna worker {record['worker']} ({record['worker_from'] or 'no worker variable set'}): {seed}; "
                 f"{where}")  # fmt: skip


# ------------------------------------------------------------------------------------ a trial's job (pruning)
def job_callbacks(cfg: DictConfig, hydra_cfg: Any) -> list[Any]:
    """The Lightning callbacks of a sweep job: for a job of a pruning search (rnnlab.runtime.pruning), the callback
    that reports to its trial, which it finds in the sweep's optuna_trials.json; else none."""
    from rnnlab.runtime.pruning import STUDIES, TRIALS, pruner_config, pruner_name, sweep_key, trial_pruning

    pruner = pruner_config(hydra_cfg)
    if pruner is None:
        return []
    sweep_dir = sweep_key(hydra_cfg.sweep.dir)
    num = int(hydra_cfg.job.num)
    try:
        record = json.loads((Path(sweep_dir) / TRIALS).read_text())
        entry = record["jobs"][str(num)]
    except (OSError, ValueError, KeyError) as ex:
        raise ConfigError(
            f"hydra.sweeper.pruner: job {num} finds no trial in {Path(sweep_dir) / TRIALS} ({type(ex).__name__}): "
            "a job of a pruning search is started by its sweeper"
        ) from None
    study = STUDIES.get(sweep_dir)
    if study is None:  # another process than the sweeper's: through the storage
        study = _load_study(hydra_cfg.sweeper, pruner)
    import optuna

    trial = optuna.trial.Trial(study, int(entry["trial_id"]))
    return [trial_pruning(trial, str(cfg.optimized_metric), pruner_name(pruner))]


def _load_study(sweeper: DictConfig, pruner: Any) -> Any:
    import optuna

    from rnnlab.runtime.pruning import make_pruner

    storage = sweeper.get("storage")
    if storage is None:
        raise ConfigError(
            "hydra.sweeper.storage: this job runs in another process than its sweeper and its study is in memory: "
            "set hydra.sweeper.storage=sqlite:///search.db"
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=sweeper.study_name, storage=_make_storage(storage),
                                 pruner=make_pruner(pruner))  # fmt: skip
    except ConfigError:
        raise
    except Exception as ex:
        url = shown_url(_storage_url(storage))
        raise ConfigError(f"hydra.sweeper.storage={url}: a trial's job cannot open its study: {_reason(ex)}") from ex
