"""Composition of every config group option, compose-time schema errors, and rnnlab.config.validate."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue, ValidationError

from rnnlab.cli import config_dir
from rnnlab.config import validate
from rnnlab.errorlines import one_line_error
from rnnlab.errors import ConfigError, DataError

pytestmark = pytest.mark.unit

CLASSIFY = ("task=classify", "data=synthetic_text")


# ----------------------------------------------------------------------------------- every group option
CONF = Path(config_dir())
OPTIONS = [(path.parent.name, path.stem) for path in sorted(CONF.glob("*/*.yaml")) if path.parent.name != "hydra"]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes(raw_compose, group, option):
    """Every file in conf/<group>/ composes against the schema: a misspelt key or a mistyped value in it fails here."""
    raw_compose(f"{group}={option}")


@pytest.mark.parametrize(
    ("override", "check"),
    [
        ("model=rnn", lambda c: c.model.cell == "rnn"),
        ("model=lstm", lambda c: c.model.cell == "lstm"),
        ("model=gru", lambda c: c.model.cell == "gru"),
        ("task=classify", lambda c: (c.task.name, c.task.monitor, c.task.mode) == ("classify", "val/acc", "max")),
        ("task=language_model", lambda c: (c.task.name, c.task.monitor) == ("language_model", "val/bpc")),
        ("data=synthetic_text", lambda c: (c.data.name, c.data.kind) == ("synthetic_text", "classification")),
        ("data=shakespeare", lambda c: (c.data.name, c.data.kind, c.data.path) == ("shakespeare", "char_corpus", None)),
        ("data=text_file", lambda c: (c.data.name, c.data.kind) == ("text_file", "char_corpus")),
        ("optimizer=sgd", lambda c: c.optimizer.name == "sgd" and "momentum" in c.optimizer),
        ("optimizer=adam", lambda c: c.optimizer.name == "adam" and list(c.optimizer.betas) == [0.9, 0.999]),
        ("optimizer=adagrad", lambda c: c.optimizer.name == "adagrad" and "lr_decay" in c.optimizer),
        ("optimizer=rmsprop", lambda c: c.optimizer.name == "rmsprop" and c.optimizer.alpha == 0.99),
        ("trainer=cpu", lambda c: (c.trainer.accelerator, c.trainer.devices) == ("cpu", 1)),
        ("trainer=gpu", lambda c: (c.trainer.accelerator, c.trainer.devices) == ("gpu", 1)),
        ("trainer=default", lambda c: c.trainer.accelerator == "auto"),
        ("logger=csv", lambda c: set(c.logger) == {"csv"}),
        ("logger=tensorboard", lambda c: set(c.logger) == {"tensorboard"}),
        ("logger=default", lambda c: set(c.logger) == {"tensorboard", "csv"}),
        ("callbacks=none", lambda c: not c.callbacks),
        ("callbacks=default", lambda c: {"model_checkpoint", "timing"} <= set(c.callbacks)),
        ("experiment=classify_synthetic", lambda c: (c.task.name, c.data.name, c.model.cell, c.model.embed_dim)
         == ("classify", "synthetic_text", "rnn", 0)),
        ("experiment=char_lm_small", lambda c: (c.task.name, c.data.name) == ("language_model", "shakespeare")),
        ("debug=fast_dev_run", lambda c: c.trainer.fast_dev_run is True),
        ("debug=limit", lambda c: c.trainer.limit_train_batches == 5),
        ("debug=overfit", lambda c: c.trainer.overfit_batches == 4),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)  # fmt: skip
def test_chosen_option_is_the_one_composed(raw_compose, override, check):
    assert check(raw_compose(override))


def test_defaults_of_train_yaml(raw_compose):
    cfg = raw_compose()
    assert (cfg.model.cell, cfg.task.name, cfg.data.name, cfg.optimizer.name) == (
        "lstm",
        "language_model",
        "shakespeare",
        "adam",
    )
    assert (cfg.seed, cfg.ckpt_path, cfg.run_test, cfg.print_sample) == (42, None, True, True)
    assert cfg.optimized_metric == cfg.task.monitor == "val/bpc"


def test_text_file_with_path(raw_compose, tmp_path):
    d = raw_compose("data=text_file", f"data.path={tmp_path}/corpus.txt").data
    assert (d.name, d.path) == ("text_file", f"{tmp_path}/corpus.txt")


def test_text_file_requires_a_path(raw_compose):
    cfg = raw_compose("data=text_file")
    with pytest.raises(MissingMandatoryValue) as info:
        _ = cfg.data.path
    assert one_line_error(info.value) == "data.path: Missing mandatory value: data.path"


def test_experiment_then_overrides(raw_compose):
    cfg = raw_compose("experiment=classify_synthetic", "model.hidden_size=7", "model=gru")
    assert (cfg.model.cell, cfg.model.hidden_size, cfg.model.embed_dim) == ("gru", 7, 0)


def test_interpolations_follow_task_and_run_dir(compose, tmp_path):
    cfg = compose(*CLASSIFY)
    ckpt = cfg.callbacks.model_checkpoint
    assert ckpt.dirpath == str(tmp_path / "run" / "checkpoints")
    assert (ckpt.monitor, ckpt.mode) == ("val/acc", "max")
    for entry in cfg.logger.values():
        assert entry.save_dir == str(tmp_path / "run")
    assert cfg.optimized_metric == "val/acc"


def test_run_and_sweep_dirs_are_named_after_the_run(raw_compose):
    cfg = raw_compose("model=gru", *CLASSIFY)
    out = Path(os.environ["RNNLAB_OUTPUT_DIR"])
    run_dir = Path(cfg.hydra.run.dir)
    assert run_dir.parent == out / "runs"
    assert run_dir.name.endswith("_classify_gru_torch")  # enums interpolate as their values
    assert Path(cfg.hydra.sweep.dir).parent == out / "multiruns"


def test_cache_dir_follows_the_environment(raw_compose, rnnlab_env):
    assert raw_compose().paths.cache_dir == str(rnnlab_env["cache"])


@pytest.mark.parametrize(
    ("cell", "task_data", "optimizer"),
    [
        (cell, task_data, optimizer)
        for (cell, task_data), optimizer in zip(
            itertools.product(["rnn", "lstm", "gru"], [CLASSIFY, ("task=language_model",)]),
            itertools.cycle(["sgd", "adam", "adagrad", "rmsprop"]),
        )
    ],
)
def test_every_combination_validates(raw_compose, cell, task_data, optimizer):
    cfg = raw_compose(f"model={cell}", *task_data, f"optimizer={optimizer}")
    validate(cfg)
    assert (cfg.model.cell, cfg.optimizer.name) == (cell, optimizer)


# -------------------------------------------------------------------------------- compose-time errors
@pytest.mark.parametrize(
    ("override", "cause", "key"),
    [
        ("model.hiden_size=3", (ConfigAttributeError, ConfigKeyError), "model.hiden_size"),
        ("model.hidden_size=abc", ValidationError, "model.hidden_size"),
        ("seed=abc", ValidationError, "seed"),
        ("model.backend=nump", ValidationError, "model.backend"),
        ("model.bidirectional=maybe", ValidationError, "model.bidirectional"),
        ("trainer.max_steps=1.5", ValidationError, "trainer.max_steps"),
        ("optimizer.momentum=0.9", (ConfigAttributeError, ConfigKeyError), "optimizer.momentum"),  # adam has none
    ],
)
def test_schema_errors_at_compose_time(raw_compose, override, cause, key):
    with pytest.raises(ConfigCompositionException) as info:
        raw_compose(override)
    assert isinstance(info.value.__cause__, cause)
    line = one_line_error(info.value)
    assert line is not None
    assert "\n" not in line
    assert line.startswith(f"{key}: ")


def test_bad_enum_lists_the_choices(raw_compose):
    with pytest.raises(ConfigCompositionException) as info:
        raw_compose("model.backend=nump")
    line = one_line_error(info.value)
    assert "nump" in line
    assert "torch" in line
    assert "numpy" in line


def test_unknown_key_hint(raw_compose):
    with pytest.raises(ConfigCompositionException) as info:
        raw_compose("model.hiden_size=3")
    assert one_line_error(info.value).endswith("(did you mean hidden_size?)")


def test_unknown_key_without_close_match_lists_the_valid_keys(raw_compose):
    with pytest.raises(ConfigCompositionException) as info:
        raw_compose("optimizer.zzz=3")
    line = one_line_error(info.value)
    assert line.startswith("optimizer.zzz:")
    assert "valid keys: name, lr, weight_decay, betas, eps, amsgrad" in line


@pytest.mark.parametrize("group", ["model", "data", "optimizer"])
def test_unknown_group_option(raw_compose, group):
    from rnnlab.registry import CELLS, DATASETS

    registered = {"model": CELLS.names(), "data": DATASETS.names()}.get(group, [])  # options without a YAML file
    options = ", ".join(sorted({p.stem for p in (CONF / group).glob("*.yaml")} | set(registered)))
    with pytest.raises(MissingConfigException) as info:
        raw_compose(f"{group}=foo")
    line = one_line_error(info.value)
    assert "\n" not in line
    assert f"'{group}/foo'" in line
    assert line.endswith(f"Available options in '{group}': {options}")
    assert "schema" not in line  # the schema nodes stay out of the user-facing listing


# ------------------------------------------------------------------------------------------- validate
@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (("model.hidden_size=0",), ["model.hidden_size", "> 0"]),
        (("model.hidden_size=-1",), ["model.hidden_size", "-1"]),
        (("model.num_layers=0",), ["model.num_layers"]),
        (("model.dropout=1.0",), ["model.dropout", "[0, 1)"]),
        (("model.dropout=-0.1",), ["model.dropout"]),
        (("model.embed_dim=-1",), ["model.embed_dim"]),
        (("optimizer.lr=0",), ["optimizer.lr"]),
        (("optimizer.lr=-1",), ["optimizer.lr", "-1"]),
        (("optimizer.lr=nan",), ["optimizer.lr"]),
        (("optimizer.lr=inf",), ["optimizer.lr"]),
        (("optimizer.weight_decay=-0.1",), ["optimizer.weight_decay"]),
        (("optimizer.betas=[0.9,1.0]",), ["optimizer.betas"]),
        (("data.batch_size=0",), ["data.batch_size"]),
        (("data.seq_len=0",), ["data.seq_len"]),
        (("data.val_fraction=0",), ["data.val_fraction"]),
        (("data.val_fraction=0.5", "data.test_fraction=0.5"), ["data.val_fraction + data.test_fraction"]),
        (("task.temperature=0",), ["task.temperature"]),
        (("task.top_k=0",), ["task.top_k"]),
        (("task=classify",), ["task=classify", "data=shakespeare"]),
        (("task=language_model", "data=synthetic_text"), ["task=language_model", "data=synthetic_text"]),
        (("model.backend=numpy", "trainer.accelerator=gpu"), ["model.backend=numpy", "trainer.accelerator=gpu"]),
        (
            ("model.backend=numpy", "trainer.strategy=ddp", "trainer.devices=2"),
            ["model.backend=numpy", "trainer.strategy=ddp needs"],
        ),
        (("model.backend=numpy", "trainer.devices=2"), ["model.backend=numpy", "trainer.devices"]),
        (("model.backend=numpy", "trainer.precision=16-mixed"), ["model.backend=numpy", "trainer.precision"]),
        (("model.bidirectional=true",), ["model.bidirectional", "task=language_model"]),
        (("model=lstm", "model.nonlinearity=relu"), ["model.nonlinearity", "model=lstm"]),
        (("model=gru", "model.nonlinearity=relu"), ["model.nonlinearity", "model=gru"]),
        (("optimizer=sgd", "optimizer.nesterov=true"), ["optimizer.nesterov", "optimizer.momentum"]),
        (("optimizer=sgd", "optimizer.momentum=-0.5"), ["optimizer.momentum"]),
        ((*CLASSIFY, "data.num_samples=0"), ["data.num_samples"]),
        ((*CLASSIFY, "data.min_len=50"), ["data.min_len", "data.max_len"]),
        ((*CLASSIFY, "data.num_classes=9"), ["data.num_classes"]),
        ((*CLASSIFY, "data.num_classes=1"), ["data.num_classes"]),
        ((*CLASSIFY, "data.test_fraction=1.0"), ["data.test_fraction"]),
        (("task.mode=maximum",), ["task.mode"]),
    ],
)
def test_validate_names_the_key(raw_compose, overrides, fragments):
    cfg = raw_compose(*overrides)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    assert one_line_error(info.value) == message
    assert isinstance(info.value, ValueError)  # ConfigError is also a ValueError


@pytest.mark.parametrize(
    "overrides",
    [
        ("model.hidden_size=1", "model.num_layers=1", "data.batch_size=1", "data.seq_len=1"),
        ("model.dropout=0.99", "model.embed_dim=0", "optimizer.lr=1e-12"),
        ("optimizer=sgd", "optimizer.nesterov=true", "optimizer.momentum=0.9"),
        ("model=rnn", "model.nonlinearity=relu"),
        ("model.bidirectional=true", *CLASSIFY),
        ("task.sample_length=0", "task.top_k=1"),
        (*CLASSIFY, "data.min_len=5", "data.max_len=5", "data.num_classes=8"),
        ("model.backend=numpy", "trainer.precision=64", "trainer.devices=1", "trainer.accelerator=cpu"),
        ("model.backend=numpy", "trainer.gradient_clip_algorithm=value", "trainer.accumulate_grad_batches=3"),
    ],
)
def test_validate_accepts_boundary_values(raw_compose, overrides):
    """The checks reject exactly the bad values: the smallest allowed ones pass (validate raises otherwise)."""
    validate(raw_compose(*overrides))


# ------------------------------------------------------------------------------------------ one_line_error
def test_one_line_error_unwraps_a_cause_chain():
    outer = RuntimeError("wrapped by a framework")
    outer.__cause__ = DataError("data.path: file is empty: /x.txt\nsecond line")
    assert one_line_error(outer) == "data.path: file is empty: /x.txt"


def test_one_line_error_leaves_bugs_alone():
    assert one_line_error(RuntimeError("index out of range")) is None
    assert one_line_error(KeyError("x")) is None
