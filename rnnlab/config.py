"""Typed schemas behind the YAML files in ``conf/``, and the checks Hydra cannot express.

The schemas of the root config, the model, the optimizers, the trainer and the paths live here; each task's and
each dataset's schema lives next to its code, in its declaration module (``rnnlab/tasks/specs/``,
``rnnlab/data/specs/``), registered in ``rnnlab.registry``. :func:`register_configs` stores all of them in Hydra's
ConfigStore (``schema/<group>/<name>``, which the YAML options extend: ``defaults: [/schema/<group>/<name>@_here_,
_self_]``), so an unknown key or a value of the wrong type fails while the config is composed. Range checks (a
positive hidden size, a dropout in [0, 1), a task that fits the data) live in :func:`validate`, which ``train``
runs before it imports torch; it runs the chosen task's and dataset's own ``check``. This module must stay light:
``rnnlab-train --cfg job`` imports it.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from rnnlab import specs
from rnnlab.errors import ConfigError
from rnnlab.registry import CELLS, DATASETS, TASKS, Entry, RegistryError, import_plugins
from rnnlab.runtime.distributed import check_launcher, launch_devices, launch_nodes, run_stamp
from rnnlab.runtime.search import search_seed
from rnnlab.specs import fraction as _fraction
from rnnlab.specs import positive as _positive


class _Choice(StrEnum):
    """A string choice; prints as its value, so ``${model.backend}`` interpolates to "torch"."""


class Backend(_Choice):
    torch = "torch"
    numpy = "numpy"


class Nonlinearity(_Choice):
    tanh = "tanh"
    relu = "relu"


class Attention(_Choice):
    """task=seq2seq: how the decoder looks at the encoder outputs (rnnlab/models/numpy/attention.py)."""

    none = "none"
    additive = "additive"  # Bahdanau: v^T tanh(W_s s + W_h h_j)
    dot = "dot"  # Luong: s^T h_j (s^T W h_j when the sizes differ)


class OptimizerName(_Choice):
    sgd = "sgd"
    adam = "adam"
    adagrad = "adagrad"
    rmsprop = "rmsprop"


class SchedulerName(_Choice):
    none = "none"
    step = "step"
    cosine = "cosine"
    plateau = "plateau"


class ThresholdMode(_Choice):
    rel = "rel"
    abs = "abs"


# --------------------------------------------------------------------------------------------- model
@dataclass
class ModelConfig:
    cell: str = MISSING  # a registered cell (rnnlab.registry.CELLS): rnn, lstm, gru, or a plug-in's
    backend: Backend = Backend.torch
    variant: str = "standard"  # a form of the cell (rnnlab.registry.CELLS.variants(cell))
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0  # between stacked layers, as nn.LSTM(dropout=...)
    embed_dim: int = 64  # 0 feeds one-hot vectors instead of an embedding
    nonlinearity: Nonlinearity = Nonlinearity.tanh  # cell=rnn only
    attention: Attention = Attention.none  # task=seq2seq only
    init: str = "default"  # default (torch's) | orthogonal (each gate's W_hh block) | identity (IRNN: plain RNN only)
    forget_bias: float = 0.0  # added to the LSTM forget-gate block of bias_ih (Jozefowicz et al. 2015 use 1)
    # inside the recurrence, identical masks on both backends (docs/cells.md, rnnlab/models/regularisers.py)
    input_dropout: float = 0.0  # variational dropout: one mask per sequence on each layer's input
    recurrent_dropout: float = 0.0  # one mask per sequence on h_{t-1} where the cell reads it (Gal & Ghahramani)
    output_dropout: float = 0.0  # one mask per sequence on each layer's output
    zoneout: float = 0.0  # probability that a unit of h keeps its previous value at a step (Krueger et al. 2017)
    zoneout_c: float | None = None  # the same for the LSTM's cell state c; null: model.zoneout
    weight_noise: float = 0.0  # std of Gaussian noise on every parameter for each training step (Graves 2011)


# ----------------------------------------------------------------------------------------- optimizer
@dataclass
class OptimizerConfig:
    name: OptimizerName = MISSING
    lr: float = MISSING
    weight_decay: float = 0.0


@dataclass
class SGDConfig(OptimizerConfig):
    name: OptimizerName = OptimizerName.sgd
    lr: float = 0.1
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False


@dataclass
class AdamConfig(OptimizerConfig):
    name: OptimizerName = OptimizerName.adam
    lr: float = 2e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    amsgrad: bool = False


@dataclass
class AdagradConfig(OptimizerConfig):
    name: OptimizerName = OptimizerName.adagrad
    lr: float = 0.05
    lr_decay: float = 0.0
    initial_accumulator_value: float = 0.0
    eps: float = 1e-10


@dataclass
class RMSpropConfig(OptimizerConfig):
    name: OptimizerName = OptimizerName.rmsprop
    lr: float = 1e-2
    alpha: float = 0.99  # smoothing constant of the running average of g²
    eps: float = 1e-8
    momentum: float = 0.0
    centered: bool = False  # divide by the running estimate of the variance of g instead of its second moment


# ----------------------------------------------------------------------------------------- scheduler
# The learning-rate schedules (docs/configuration.md#learning-rate-schedules): torch.optim.lr_scheduler on the torch
# backend, rnnlab/models/numpy/schedules.py (the same formulas, from scratch) on the NumPy backend.
@dataclass
class SchedulerConfig:
    name: SchedulerName = MISSING


@dataclass
class NoSchedulerConfig(SchedulerConfig):
    """scheduler=none: optimizer.lr throughout."""

    name: SchedulerName = SchedulerName.none


@dataclass
class StepSchedulerConfig(SchedulerConfig):
    """scheduler=step: torch's StepLR, per optimizer step: lr * gamma ** (step // step_size)."""

    name: SchedulerName = SchedulerName.step
    step_size: int = 1000  # optimizer steps between two decays
    gamma: float = 0.1  # the factor of each decay


@dataclass
class CosineSchedulerConfig(SchedulerConfig):
    """scheduler=cosine: torch's CosineAnnealingLR, per optimizer step, after an optional linear warm-up
    (LinearLR, then the cosine: SequentialLR)."""

    name: SchedulerName = SchedulerName.cosine
    total_steps: int | None = None  # the horizon, warm-up included; null: the run's optimizer steps
    eta_min: float = 0.0  # the rate the cosine ends at, after total_steps
    warmup_steps: int = 0  # optimizer steps of linear warm-up from warmup_start_factor * lr to lr
    warmup_start_factor: float = 1e-3  # in (0, 1]


@dataclass
class PlateauSchedulerConfig(SchedulerConfig):
    """scheduler=plateau: torch's ReduceLROnPlateau on task.monitor (task.mode), after each validation."""

    name: SchedulerName = SchedulerName.plateau
    factor: float = 0.5  # the rate is multiplied by this, in (0, 1)
    patience: int = 2  # validations without improvement before a reduction
    threshold: float = 1e-4  # what counts as an improvement (relative or absolute: threshold_mode)
    threshold_mode: ThresholdMode = ThresholdMode.rel
    cooldown: int = 0  # validations after a reduction before counting again
    min_lr: float = 0.0  # the rate never goes below this
    eps: float = 1e-8  # a reduction smaller than this is skipped


SCHEDULERS: dict[str, type[SchedulerConfig]] = {
    "none": NoSchedulerConfig,
    "step": StepSchedulerConfig,
    "cosine": CosineSchedulerConfig,
    "plateau": PlateauSchedulerConfig,
}


# ------------------------------------------------------------------------------------------- trainer
@dataclass
class TrainerConfig:
    """Passed as keyword arguments to ``lightning.Trainer``; the fields mirror its signature.

    Unions (``devices``, ``precision``, ``limit_*_batches``, ...) are typed ``Any`` because OmegaConf
    cannot check them; Lightning checks them when the Trainer is built.
    """

    accelerator: str = "auto"
    strategy: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    precision: Any = "32-true"
    fast_dev_run: Any = False
    max_epochs: int | None = None
    min_epochs: int | None = None
    max_steps: int = -1
    min_steps: int | None = None
    max_time: str | None = None
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    limit_predict_batches: Any = None
    overfit_batches: Any = 0.0
    val_check_interval: Any = None
    check_val_every_n_epoch: int | None = 1
    num_sanity_val_steps: int | None = None
    log_every_n_steps: int | None = None
    enable_checkpointing: bool | None = None
    enable_progress_bar: bool | None = None
    enable_model_summary: bool | None = None
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str | None = None
    deterministic: Any = None
    benchmark: bool | None = None
    inference_mode: bool = True
    use_distributed_sampler: bool = True
    profiler: str | None = None
    detect_anomaly: bool = False
    barebones: bool = False
    sync_batchnorm: bool = False
    reload_dataloaders_every_n_epochs: int = 0
    default_root_dir: str | None = None


@dataclass
class PathsConfig:
    root_dir: str = "."
    output_dir: str = "outputs"  # every run and sweep goes below this directory
    cache_dir: str | None = None  # converted corpora; None: the user's cache dir (platformdirs)
    run_dir: str = "${hydra:runtime.output_dir}"


@dataclass
class TrainConfig:
    """The root config; each group's own schema checks its keys."""

    data: Any = MISSING
    model: ModelConfig = MISSING
    task: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = None  # conf/scheduler/*.yaml; null: none
    trainer: TrainerConfig = MISSING
    logger: Any = None
    callbacks: Any = None
    paths: PathsConfig = MISSING
    seed: int | None = 42
    threads: int | None = None  # CPU threads of torch and NumPy's BLAS (None: the libraries' defaults)
    ckpt_path: str | None = None
    resume_sweep: str | None = None  # with -m: the directory of the sweep to resume (rnnlab.runtime.sweep_resume)
    optimized_metric: str | None = "${task.monitor}"
    run_test: bool = True  # after fit, evaluate the best checkpoint on the test split
    print_sample: bool = True  # language models: print a generated sample at the end
    tags: list[str] = field(default_factory=list)
    # modules imported before the config is validated (and, on the command line, before it is composed), so that
    # the cells, tasks and datasets they register can be chosen: plugins=[my_cells,my_pkg.tasks]
    plugins: list[str] = field(default_factory=list)


def _conf_dir() -> Any:
    return specs.find_conf()


def _node(entry: Entry, base: type, **values: Any) -> Any:
    """The ConfigStore node of a registered task or dataset: its schema with the registered facts filled in."""
    schema = entry.schema or base
    names = {f.name for f in dataclasses.fields(schema)}
    return schema(**{key: value for key, value in values.items() if key in names})


def register_configs() -> None:
    """Store every schema in Hydra's ConfigStore. Idempotent: run again once plug-ins have registered more.

    ``schema/<group>/<name>``: the typed node a YAML option extends (``defaults: [/schema/task/classify@_here_]``;
    kept out of the user-facing groups, so that ``model=`` lists the options users choose). A registered task,
    dataset or cell without a YAML file in ``conf/<group>/`` is also stored as the option ``<group>/<name>``
    itself, so that ``task=NAME``, ``data=NAME`` or ``model=NAME`` selects a plug-in without any YAML."""
    cs = ConfigStore.instance()
    conf = _conf_dir()
    cs.store(group="schema", name="train", node=TrainConfig)
    for group, name, node in (
        ("model", "model", ModelConfig),
        ("optimizer", "sgd", SGDConfig),
        ("optimizer", "adam", AdamConfig),
        ("optimizer", "adagrad", AdagradConfig),
        ("optimizer", "rmsprop", RMSpropConfig),
        *(("scheduler", name, node) for name, node in SCHEDULERS.items()),
        ("trainer", "trainer", TrainerConfig),
        ("paths", "paths", PathsConfig),
    ):
        cs.store(group=f"schema/{group}", name=name, node=node)
    from rnnlab.data.specs import DataConfig
    from rnnlab.tasks.specs import TaskConfig

    for group, registry, make in (
        ("task", TASKS, lambda e: _node(e, TaskConfig, name=e.name)),
        ("data", DATASETS, lambda e: _node(e, DataConfig, name=e.name, kind=specs.data_kind(e))),
    ):
        for entry in registry.entries():
            if entry.variant != "standard":
                continue
            node = make(entry)
            cs.store(group=f"schema/{group}", name=entry.name, node=node)
            if not (conf / group / f"{entry.name}.yaml").is_file():
                cs.store(group=group, name=entry.name, node=node)
    for name in CELLS.names():
        if not (conf / "model" / f"{name}.yaml").is_file():
            cs.store(group="model", name=name, node=ModelConfig(cell=name))
    cs.store(group="hydra/sweeper", name="optuna_pruning", node=optuna_pruning_schema(), provider="rnnlab")


def optuna_pruning_schema() -> type:
    """``hydra/sweeper=optuna_pruning``: the Optuna sweeper's schema with a ``pruner`` (rnnlab.runtime.pruning), an
    ``optuna.pruners`` config from the ``hydra/sweeper/pruner`` group (conf/hydra/sweeper/pruner/); null: none."""
    global _OPTUNA_PRUNING
    if _OPTUNA_PRUNING is None:
        from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf

        from rnnlab.runtime.pruning import TARGET

        @dataclass
        class OptunaPruningConf(OptunaSweeperConf):
            _target_: str = TARGET
            defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, "_self_", {"pruner": None}])
            pruner: Any = None

        _OPTUNA_PRUNING = OptunaPruningConf
    return _OPTUNA_PRUNING


_OPTUNA_PRUNING: type | None = None


def load_plugins(modules: Any) -> list[str]:
    """Import the plug-in modules (``plugins=[...]``) and store what they registered in the ConfigStore."""
    if not modules:
        return []
    specs.discover_builtins()
    names = import_plugins(modules)
    if names:
        register_configs()
    return names


register_configs()


def job_dirname(overrides: str, limit: int = 120) -> str:
    """A sweep job's directory name from its overrides: no slashes, and never longer than ``limit``."""
    name = overrides.replace("/", "_")
    if len(name) > limit:
        name = f"{name[: limit - 11]}~{hashlib.sha1(overrides.encode()).hexdigest()[:10]}"
    return name


OmegaConf.register_new_resolver("rnnlab_job_dirname", job_dirname, replace=True)


def sweep_dir(resume: str | None, new: str) -> str:
    """``hydra.sweep.dir``: the directory of the sweep being resumed (``resume_sweep``), else ``new``."""
    return str(resume) if resume not in (None, "") else new


OmegaConf.register_new_resolver("rnnlab_sweep_dir", sweep_dir, replace=True)


def env_dir(name: str, default: str | None = None) -> str | None:
    """conf/paths/default.yaml: a directory from environment variable ``name`` with ``~`` expanded; ``default`` when
    the variable is unset or empty (an empty RNNLAB_OUTPUT_DIR would otherwise put runs under /runs)."""
    import os

    value = os.environ.get(name, "")
    return os.path.expanduser(value) if value.strip() else default


OmegaConf.register_new_resolver("rnnlab_env_dir", env_dir, replace=True)
# conf/hydra/default.yaml's run directory stamp: one per run, the same in every process of a torchrun or srun launch
OmegaConf.register_new_resolver("rnnlab_run_stamp", run_stamp, use_cache=True, replace=True)
# conf/trainer/ddp.yaml: devices and num_nodes as torchrun or srun started the processes
OmegaConf.register_new_resolver("rnnlab_launch_devices", launch_devices, replace=True)
OmegaConf.register_new_resolver("rnnlab_launch_nodes", launch_nodes, replace=True)
# conf/hparams_search/*.yaml: the sampler seed of one worker of a shared search, the base seed + the worker index
OmegaConf.register_new_resolver("rnnlab_search_seed", search_seed, replace=True)


def tag_monitor(data_name: str) -> str:
    """task=tag's default ``task.monitor``: the data's own choice (span F1 for entity data: ``monitors`` of its
    registration), token accuracy (recalled symbols) otherwise."""
    return specs.monitor_for("tag", str(data_name)) or "val/acc"


OmegaConf.register_new_resolver("rnnlab_tag_monitor", tag_monitor, replace=True)


def help_options(group: str) -> str:
    """conf/hydra/default.yaml's help template: the options of a config group, from the registries (model, task,
    data) or conf/ (rnnlab.cli.app_help fills the same placeholders without OmegaConf)."""
    return specs.group_options(str(group), _conf_dir())


OmegaConf.register_new_resolver("rnnlab_options", help_options, replace=True)

# ------------------------------------------------------------------------------------------ checks
NUMPY_PRECISIONS = ("32", "32-true", "64", "64-true")


def _check_numpy_trainer(trainer: DictConfig) -> None:
    """The NumPy backend runs on one CPU process, in float32 or float64."""
    accelerator = str(trainer.accelerator).lower()
    if accelerator not in ("auto", "cpu"):
        raise ConfigError(
            f"model.backend=numpy runs on the CPU only; trainer.accelerator={accelerator} needs model.backend=torch"
        )
    strategy = str(trainer.strategy).lower()
    if any(name in strategy for name in ("ddp", "fsdp", "deepspeed", "spawn")):
        raise ConfigError(
            f"model.backend=numpy runs in one process; trainer.strategy={strategy} needs model.backend=torch"
        )
    devices = trainer.devices
    count = len(devices) if isinstance(devices, list | tuple) else (1 if str(devices) == "auto" else devices)
    try:
        count = int(count)
    except (TypeError, ValueError):
        count = 2  # a device string such as "0,1"
    if count > 1 or count < 0:  # -1: every device
        raise ConfigError(f"model.backend=numpy runs in one process; use trainer.devices=1 (got {devices})")
    if trainer.num_nodes != 1:
        raise ConfigError(f"model.backend=numpy runs in one process: trainer.num_nodes={trainer.num_nodes} must be 1")
    if str(trainer.precision) not in NUMPY_PRECISIONS:
        raise ConfigError(
            f"model.backend=numpy computes in float32 or float64: trainer.precision must be 32 or 64, "
            f"got {trainer.precision}"
        )


def _check_trainer(trainer: DictConfig) -> None:
    """The loop limits and the gradient settings, before Lightning is imported (Lightning checks the rest when the
    Trainer is built, which train() does before it loads any data)."""
    for key, low in (("max_epochs", -1), ("max_steps", -1), ("min_epochs", 0), ("min_steps", 0)):
        value = trainer[key]
        if value is not None and value < low:
            no_limit = " (-1: no limit)" if low == -1 else ""
            raise ConfigError(f"trainer.{key} must be >= {low}{no_limit}, got {value}")
    interval = trainer.val_check_interval  # Lightning accepts 0 and then divides by it in the first step
    if not isinstance(interval, bool) and (
        (isinstance(interval, int) and interval < 1) or (isinstance(interval, float) and not 0 < interval <= 1)
    ):
        raise ConfigError(
            f"trainer.val_check_interval must be a number of batches >= 1 or a fraction of the epoch in (0, 1], "
            f"got {interval}"
        )
    every = trainer.check_val_every_n_epoch
    if every is not None and every < 1:
        raise ConfigError(f"trainer.check_val_every_n_epoch must be >= 1 or null, got {every}")
    clip = trainer.gradient_clip_val
    if clip is not None and not (clip >= 0 and math.isfinite(clip)):
        raise ConfigError(f"trainer.gradient_clip_val must be >= 0 or null, got {clip}")
    if trainer.gradient_clip_algorithm not in (None, "norm", "value"):
        raise ConfigError(
            f"trainer.gradient_clip_algorithm must be norm or value, got {trainer.gradient_clip_algorithm}"
        )
    if trainer.accumulate_grad_batches < 1:
        raise ConfigError(f"trainer.accumulate_grad_batches must be >= 1, got {trainer.accumulate_grad_batches}")


def _check_added_keys(cfg: DictConfig) -> None:
    """A key added with ``+`` to a typed group (``+model.hiden_size=3``, ``+foo=1``) would be read by nothing and
    silently ignored: refuse it. ``trainer`` is left out (extra keys go to lightning.Trainer, which checks them),
    and so are ``logger`` and ``callbacks`` (``+callbacks.name={_target_: ...}`` adds a callback)."""
    for group in ("", "model", "task", "data", "optimizer", "scheduler", "paths"):
        node = cfg[group] if group else cfg
        schema = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
        if not (schema is not None and dataclasses.is_dataclass(schema)):
            continue
        known = [f.name for f in dataclasses.fields(schema)]
        extra = [str(k) for k in node if k not in known and not (k == "hydra" and not group)]
        if not extra:
            continue
        prefix = f"{group}." if group else ""
        close = difflib.get_close_matches(extra[0], known, n=1)
        hint = f"did you mean {prefix}{close[0]}?" if close else f"valid keys: {', '.join(known)}"
        raise ConfigError(f"{prefix}{extra[0]}: not a key of {schema.__name__}, so nothing would read it; {hint}")


def _entry(registry: Any, key: str, name: Any, variant: str = "standard") -> Entry:
    """The registered entry ``name`` names, or one line naming the key and the registered choices."""
    try:
        return registry.get(str(name), str(variant))
    except RegistryError as err:
        raise ConfigError(f"{key}={name}: {err}") from None


def _check_schema(group: str, entry: Entry, node: DictConfig) -> None:
    """The group's node was composed from the schema its name is registered with (``data.name=imdb`` on the node
    of data=shakespeare would hand the builder keys it cannot read)."""
    schema = OmegaConf.get_type(node)
    if entry.schema is not None and not (isinstance(schema, type) and issubclass(schema, entry.schema)):
        found = getattr(schema, "__name__", "an untyped node")
        raise ConfigError(
            f"{group}.name={entry.name}: the {group} config is a {found}, but {group}={entry.name} is registered "
            f"with {entry.schema.__name__}: choose it with {group}={entry.name}"
        )


def _check_model(cfg: DictConfig, task: Entry) -> None:
    """model.cell and model.variant are registered; the keys only some cells or tasks read keep their defaults
    elsewhere (model.nonlinearity: the cells whose ``options`` name it; model.attention: the tasks whose
    ``model_keys`` name it)."""
    if str(cfg.model.cell) not in CELLS:
        _entry(CELLS, "model.cell", cfg.model.cell)  # one line listing the registered cells
    try:
        cell = CELLS.get(str(cfg.model.cell), str(cfg.model.variant))
    except RegistryError as err:
        raise ConfigError(f"model.variant={cfg.model.variant}: {err}") from None
    from rnnlab.models.init import INITS

    if cfg.model.get("init", "default") not in INITS:
        raise ConfigError(f"model.init={cfg.model.init}: choose one of {', '.join(INITS)}")
    label = cell.name if cell.variant == "standard" else f"{cell.name} model.variant={cell.variant}"
    forget_bias = cfg.model.get("forget_bias", 0.0)
    needs_cell = cfg.model.get("init") == "identity" or forget_bias != 0
    instance = cell.load()(int(cfg.model.hidden_size)) if needs_cell else None
    if cfg.model.get("init") == "identity" and instance.gates != 1:
        raise ConfigError(
            f"model.init=identity (the IRNN: W_hh = I, biases 0) is defined for one-gate cells such as model=rnn, "
            f"not model={label} ({instance.gates} gate blocks)"
        )
    if not math.isfinite(forget_bias):
        raise ConfigError(f"model.forget_bias must be a finite number, got {forget_bias}")
    if forget_bias != 0 and instance.forget_gate is None:
        raise ConfigError(f"model.forget_bias={forget_bias} needs a cell with a forget gate, not model={label}")
    defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    readers: dict[str, list[str]] = {}
    for name in CELLS.names():
        for key in specs.cell_options(CELLS.get(name)):
            readers.setdefault(key, []).append(name)
    for key, cells in readers.items():
        if key in cfg.model and cfg.model[key] != defaults.get(key) and cell.name not in cells:
            raise ConfigError(f"model.{key} applies to model={', '.join(cells)} only, not model={cell.name}")
    owners: dict[str, list[str]] = {}
    for entry in TASKS.entries():
        for key in entry.meta.get("model_keys", ()):
            owners.setdefault(key, []).append(entry.name)
    for key, tasks in owners.items():
        value = cfg.model.get(key, defaults.get(key))
        if value != defaults.get(key) and task.name not in tasks:
            raise ConfigError(f"model.{key}={value} applies to task={', '.join(tasks)} only, not task={task.name}")


def scheduler_name(cfg: Any) -> str:
    """The chosen learning-rate schedule (``scheduler.name``; none when the config has no scheduler group)."""
    node = cfg.get("scheduler") if hasattr(cfg, "get") else None
    return "none" if node is None else str(node.get("name", "none"))


def _check_scheduler(cfg: DictConfig) -> None:
    """The schedule's keys (its node is the schema its name is registered with), and a warm-up shorter than an
    explicit horizon (or than trainer.max_steps); the horizon the trainer gives is checked when the run starts."""
    node = cfg.get("scheduler")
    if node is None:
        return
    name = scheduler_name(cfg)
    schema = OmegaConf.get_type(node)
    wanted = SCHEDULERS.get(name)
    if wanted is not None and schema is not wanted:
        found = getattr(schema, "__name__", "an untyped node")
        raise ConfigError(f"scheduler.name={name}: the scheduler config is a {found}; choose it with scheduler={name}")
    if name == "step":
        _positive(cfg, "scheduler.step_size")
        _positive(cfg, "scheduler.gamma")
    elif name == "cosine":
        _positive(cfg, "scheduler.total_steps")
        _positive(cfg, "scheduler.eta_min", allow_zero=True)
        _positive(cfg, "scheduler.warmup_steps", allow_zero=True)
        start = node.warmup_start_factor
        if not 0 < start <= 1:  # torch's LinearLR refuses the rest
            raise ConfigError(f"scheduler.warmup_start_factor must be in (0, 1], got {start}")
        total, warmup, max_steps = node.total_steps, node.warmup_steps, cfg.trainer.max_steps
        if total is not None and warmup >= total:
            raise ConfigError(
                f"scheduler.warmup_steps={warmup} must be less than scheduler.total_steps={total} (the horizon, "
                f"warm-up included)"
            )
        if total is None and warmup > 0 and 0 < max_steps <= warmup:
            raise ConfigError(
                f"scheduler.warmup_steps={warmup} must be less than the run's {max_steps} steps "
                f"(trainer.max_steps), the cosine's horizon"
            )
    elif name == "plateau":
        _fraction(cfg, "scheduler.factor", low_open=True)
        for key in ("patience", "threshold", "cooldown", "min_lr", "eps"):
            _positive(cfg, f"scheduler.{key}", allow_zero=True)


def validate(cfg: DictConfig) -> None:
    """Range and consistency checks that a schema cannot express. Raises ConfigError (one line)."""
    load_plugins(cfg.get("plugins"))
    _check_added_keys(cfg)
    if cfg.seed is not None and not 0 <= cfg.seed < 2**32:
        raise ConfigError(f"seed must be in [0, 2**32) or null, got {cfg.seed}")
    if cfg.get("threads") is not None and cfg.threads < 1:
        raise ConfigError(f"threads must be >= 1 or null (the libraries' defaults), got {cfg.threads}")
    for key in ("model.hidden_size", "model.num_layers", "data.batch_size"):
        _positive(cfg, key)
    _positive(cfg, "model.embed_dim", allow_zero=True)
    _positive(cfg, "data.num_workers", allow_zero=True)
    _fraction(cfg, "model.dropout")
    for key in ("input_dropout", "recurrent_dropout", "output_dropout", "zoneout", "zoneout_c"):
        if cfg.model.get(key) is not None:
            _fraction(cfg, f"model.{key}")
    _positive(cfg, "model.weight_noise", allow_zero=True)
    lr = cfg.optimizer.lr
    if not (isinstance(lr, float | int) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"optimizer.lr must be a finite number > 0, got {lr}")
    _positive(cfg, "optimizer.weight_decay", allow_zero=True)
    if cfg.optimizer.name == OptimizerName.adam:
        betas = list(cfg.optimizer.betas)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ConfigError(f"optimizer.betas must be two numbers in [0, 1), got {betas}")
        _positive(cfg, "optimizer.eps", allow_zero=True)
    if cfg.optimizer.name == OptimizerName.adagrad:
        for key in ("optimizer.lr_decay", "optimizer.initial_accumulator_value", "optimizer.eps"):
            _positive(cfg, key, allow_zero=True)
    if cfg.optimizer.name == OptimizerName.rmsprop:  # torch refuses a negative alpha, eps or momentum
        for key in ("optimizer.alpha", "optimizer.eps", "optimizer.momentum"):
            _positive(cfg, key, allow_zero=True)
    if cfg.optimizer.name == OptimizerName.sgd:
        _positive(cfg, "optimizer.momentum", allow_zero=True)
        if cfg.optimizer.nesterov and (cfg.optimizer.momentum <= 0 or cfg.optimizer.dampening != 0):
            raise ConfigError("optimizer.nesterov=true needs optimizer.momentum > 0 and optimizer.dampening=0")

    _check_scheduler(cfg)

    task = _entry(TASKS, "task.name", cfg.task.name)
    data = _entry(DATASETS, "data.name", cfg.data.name)
    _check_model(cfg, task)
    _check_trainer(cfg.trainer)
    if cfg.model.backend == Backend.numpy:
        _check_numpy_trainer(cfg.trainer)
    check_launcher(cfg.trainer)  # trainer.strategy=ddp_spawn: the equivalent ddp and torchrun commands

    _check_schema("task", task, cfg.task)
    _check_schema("data", data, cfg.data)
    kind, wanted = specs.data_kind(data), str(task.meta.get("accepts", ""))
    if str(cfg.data.kind) != kind:
        raise ConfigError(f"data.kind={cfg.data.kind}: data={data.name} yields {kind} batches (leave data.kind as is)")
    if kind != wanted:
        raise ConfigError(
            f"task={task.name} cannot train on data={data.name} (it yields {kind} batches, the task needs {wanted})"
        )
    for entry in (task, data):
        check = entry.meta.get("check")
        if check is not None:
            check(cfg)
    if cfg.task.mode not in ("min", "max"):
        raise ConfigError(f"task.mode must be min or max, got {cfg.task.mode}")
