"""Bad input fails at start with one line that names the culprit, and never touches another run's directory.

Most cases run in-process: the composed config through ``rnnlab.config.validate``, ``rnnlab.train.train`` or
``rnnlab.generate``, each error turned into its line by ``rnnlab.errorlines.one_line_error``. A handful go through the
real command line (marked ``cli``), one per code path: a Hydra override error, a schema error, a validate error
(before torch is imported), a data error, a checkpoint error, a trainer error, an rnnlab-generate error, and a run
pointed at another run's directory.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import probe
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import HydraException

import rnnlab.data.datamodules as datamodules
from rnnlab.checks import check_checkpoint_file
from rnnlab.cli import config_dir
from rnnlab.config import validate
from rnnlab.errorlines import one_line_error
from rnnlab.errors import ConfigError, DataError
from rnnlab.generate import UsageError, generate, parse
from rnnlab.registry import DATASETS, TASKS
from rnnlab.runtime.rundir import check_new_dir, run_files_in, sweep_files_in
from rnnlab.train import train

pytestmark = pytest.mark.compose

BIN = Path(sys.executable).parent
CONF = Path(config_dir())
TINY = ("model.hidden_size=4", "model.embed_dim=4", "trainer.max_steps=1", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "logger=csv")  # fmt: skip
CLASSIFY = ("task=classify", "data=synthetic_text", "data.num_samples=200", "data.batch_size=16")
FORECAST = ("task=forecast", "data=airline")


def line_of(err: BaseException) -> str:
    line = one_line_error(err)
    assert line is not None, f"{type(err).__name__} is treated as a bug: {err}"
    assert "\n" not in line
    return line


def assert_names(line: str, fragments: list[str]) -> None:
    for fragment in fragments:
        assert fragment in line, (fragment, line)


# -------------------------------------------------------------------------- errors while composing
COMPOSE_ERRORS = [
    (["model=lstmm"], ["model/lstmm", "gru, lstm, rnn"]),
    (["data=nope"], ["data/nope", "shakespeare"]),
    (["optimizer=adamw"], ["optimizer/adamw", "adagrad, adam, rmsprop, sgd"]),
    (["experiment=nope"], ["experiment/nope"]),
    (["model.hiden_size=3"], ["model.hiden_size", "did you mean hidden_size?"]),
    (["trainer.nonexistent=1"], ["trainer.nonexistent", "valid keys: accelerator"]),
    (["data.seq_lenn=3"], ["data.seq_lenn", "did you mean seq_len?"]),
    (["+model.hidden_size=3"], ["model.hidden_size", "++model.hidden_size=3"]),
    (["model.hidden_size=abc"], ["model.hidden_size", "abc"]),
    (["model.hidden_size=1.5"], ["model.hidden_size", "1.5"]),
    (["optimizer.lr=x"], ["optimizer.lr", "'x'"]),
    (["optimizer=rmsprop", "optimizer.centered=maybe"], ["optimizer.centered", "maybe"]),
    (["optimizer=rmsprop", "optimizer.amsgrad=true"], ["optimizer.amsgrad"]),  # an Adam key: rmsprop has none
    (["model.dropout=abc"], ["model.dropout", "abc"]),
    (["seed=abc"], ["seed", "abc"]),
    (["model.backend=nump"], ["model.backend", "nump", "torch", "numpy"]),
    (["trainer.max_epochs=many"], ["trainer.max_epochs", "many"]),
    (["model.hidden_size"], ["model.hidden_size", "missing EQUAL"]),  # no "=": Hydra's override grammar
    (["task.sample_prompt=\u00e9"], ["cannot parse the override", "'\u00e9' is not allowed", "task.sample_prompt='"]),
]


@pytest.mark.unit
@pytest.mark.parametrize(("overrides", "fragments"), COMPOSE_ERRORS, ids=[" ".join(c[0]) for c in COMPOSE_ERRORS])
def test_compose_errors_are_one_line(raw_compose, overrides, fragments):
    with pytest.raises(HydraException) as info:
        raw_compose(*overrides)
    assert_names(line_of(info.value), fragments)


# ---------------------------------------------------------------------- errors of rnnlab.config.validate
VALIDATE_ERRORS = [
    # unknown keys added with "+" (Hydra adds them; nothing would read them)
    (["+foo=1"], ["foo", "TrainConfig", "nothing would read it"]),
    (["+model.foo=1"], ["model.foo", "ModelConfig", "valid keys: cell, backend"]),
    (["+model.hiden_size=3"], ["model.hiden_size", "did you mean model.hidden_size?"]),
    (["+data.foo=1"], ["data.foo", "CharCorpusConfig"]),
    (["++optimizer.momentum=0.9"], ["optimizer.momentum", "AdamConfig"]),  # adam has none
    (["+task.beam_size=3"], ["task.beam_size", "LanguageModelTaskConfig"]),  # a seq2seq key
    # sizes, rates, fractions
    (["model.hidden_size=0"], ["model.hidden_size must be > 0, got 0"]),
    (["model.hidden_size=-1"], ["model.hidden_size", "-1"]),
    (["model.num_layers=0"], ["model.num_layers", "got 0"]),
    (["model.embed_dim=-1"], ["model.embed_dim", ">= 0"]),
    (["optimizer.lr=0"], ["optimizer.lr", "> 0"]),
    (["optimizer.lr=-1"], ["optimizer.lr", "-1"]),
    (["optimizer.lr=nan"], ["optimizer.lr", "nan"]),
    (["optimizer.lr=inf"], ["optimizer.lr", "inf"]),
    (["optimizer.weight_decay=nan"], ["optimizer.weight_decay", "nan"]),
    (["optimizer.weight_decay=inf"], ["optimizer.weight_decay", "inf"]),
    (["optimizer.betas=[0.9]"], ["optimizer.betas", "two numbers"]),
    (["optimizer.betas=[0.9,1.0]"], ["optimizer.betas", "[0, 1)"]),
    (["optimizer.eps=-1"], ["optimizer.eps", ">= 0"]),
    (["optimizer=adagrad", "optimizer.lr_decay=-0.1"], ["optimizer.lr_decay"]),
    (["optimizer=rmsprop", "optimizer.alpha=-0.1"], ["optimizer.alpha", ">= 0", "-0.1"]),
    (["optimizer=rmsprop", "optimizer.eps=-1e-8"], ["optimizer.eps", ">= 0"]),
    (["optimizer=rmsprop", "optimizer.momentum=-0.9"], ["optimizer.momentum", ">= 0", "-0.9"]),
    (["optimizer=rmsprop", "optimizer.weight_decay=-0.01"], ["optimizer.weight_decay", ">= 0"]),
    (["optimizer=rmsprop", "optimizer.alpha=nan"], ["optimizer.alpha", "nan"]),
    (["optimizer=sgd", "optimizer.momentum=nan"], ["optimizer.momentum", "nan"]),
    (["model.dropout=-0.1"], ["model.dropout", "[0, 1)"]),
    (["model.dropout=1.0"], ["model.dropout", "[0, 1)"]),
    (["model.dropout=1.5"], ["model.dropout", "1.5"]),
    (["model.dropout=nan"], ["model.dropout", "nan"]),
    (["data.batch_size=0"], ["data.batch_size", "got 0"]),
    (["data.num_workers=-1"], ["data.num_workers"]),
    (["data.seq_len=0"], ["data.seq_len", "got 0"]),
    (["task.temperature=nan"], ["task.temperature", "nan"]),
    (["task.temperature=-1"], ["task.temperature"]),
    (["task.sample_length=-1"], ["task.sample_length"]),
    (["seed=-1"], ["seed", "-1"]),
    (["seed=4294967296"], ["seed", "4294967296"]),
    ([*FORECAST, "data.horizon=0"], ["data.horizon", "got 0"]),
    ([*FORECAST, "data.window=0"], ["data.window", "got 0"]),
    ([*FORECAST, "data.stride=-1"], ["data.stride"]),
    ([*FORECAST, "data.val_fraction=0.6", "data.test_fraction=0.4"], ["data.val_fraction + data.test_fraction"]),
    # the loop limits Lightning would refuse only after import
    (["trainer.max_epochs=-5"], ["trainer.max_epochs", "-1: no limit", "-5"]),
    (["trainer.max_steps=-2"], ["trainer.max_steps", "-2"]),
    (["trainer.min_epochs=-1"], ["trainer.min_epochs"]),
    (["trainer.check_val_every_n_epoch=0"], ["trainer.check_val_every_n_epoch"]),
    (["trainer.val_check_interval=0"], ["trainer.val_check_interval", "got 0"]),  # Lightning: ZeroDivisionError
    (["trainer.val_check_interval=0.0"], ["trainer.val_check_interval", "(0, 1]"]),
    (["trainer.val_check_interval=1.5"], ["trainer.val_check_interval", "1.5"]),
    (["trainer.gradient_clip_val=-1"], ["trainer.gradient_clip_val", "-1"]),
    (["trainer.gradient_clip_val=nan"], ["trainer.gradient_clip_val", "nan"]),
    (["trainer.gradient_clip_algorithm=foo"], ["trainer.gradient_clip_algorithm", "foo"]),
    (["trainer.accumulate_grad_batches=0"], ["trainer.accumulate_grad_batches"]),
    # required values
    (["data=text_file"], ["data.path is required", "data=text_file"]),
    (["data=text_file", "data.path=null"], ["data.path is required"]),
    # task x data
    (["task=language_model", "data=synthetic_text"], ["task=language_model", "data=synthetic_text"]),
    (["task=classify"], ["task=classify", "data=shakespeare"]),
    (["task=forecast", "data=copy"], ["task=forecast", "data=copy", "tagging"]),
    (["model.attention=dot"], ["model.attention=dot", "task=seq2seq"]),
    (["model.bidirectional=true"], ["model.bidirectional", "task=language_model"]),
    # Lightning's spawn launcher runs only trainer.fit in its processes: the same run with ddp, or under torchrun
    (
        ["trainer.strategy=ddp_spawn", "trainer.devices=2"],
        [
            "trainer.strategy=ddp_spawn:",
            "trainer.strategy=ddp trainer.devices=2, or with torchrun: torchrun",
            "torchrun --standalone --nproc-per-node=2 -m rnnlab ",
        ],
    ),
    # the NumPy backend: one CPU process
    (["model.backend=numpy", "trainer.accelerator=gpu"], ["model.backend=numpy", "trainer.accelerator=gpu"]),
    (["model.backend=numpy", "trainer=gpu"], ["model.backend=numpy", "trainer.accelerator"]),
    (["model.backend=numpy", "trainer.devices=2"], ["model.backend=numpy", "trainer.devices=1"]),
    (["model.backend=numpy", "trainer.devices=[0,1]"], ["model.backend=numpy", "trainer.devices"]),
    (["model.backend=numpy", "trainer.strategy=ddp"], ["model.backend=numpy", "trainer.strategy=ddp"]),
    (["model.backend=numpy", "trainer.num_nodes=2"], ["model.backend=numpy", "trainer.num_nodes"]),
    (["model.backend=numpy", "trainer.precision=16-mixed"], ["model.backend=numpy", "trainer.precision"]),
]


@pytest.mark.unit
@pytest.mark.parametrize(("overrides", "fragments"), VALIDATE_ERRORS, ids=[" ".join(c[0]) for c in VALIDATE_ERRORS])
def test_validate_errors_are_one_line(raw_compose, overrides, fragments):
    cfg = raw_compose(*overrides)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    line = line_of(info.value)
    assert line == str(info.value)
    assert_names(line, fragments)


@pytest.mark.unit
@pytest.mark.parametrize(
    "overrides",
    [
        ("trainer.max_epochs=-1", "trainer.max_steps=-1"),  # Lightning's "no limit"
        ("trainer.max_epochs=0", "trainer.min_epochs=0", "trainer.min_steps=0"),
        ("trainer.gradient_clip_val=0", "trainer.gradient_clip_val=null", "trainer.check_val_every_n_epoch=null"),
        ("trainer.val_check_interval=0.25",),
        ("trainer.val_check_interval=1.0",),
        ("trainer.val_check_interval=5", "trainer.check_val_every_n_epoch=null"),
        ("seed=0",),
        ("seed=4294967295",),
        ("seed=null",),
        ("optimizer.betas=[0.0,0.0]", "optimizer.eps=0", "optimizer.weight_decay=0"),
        ("optimizer=adagrad", "optimizer.lr_decay=0", "optimizer.initial_accumulator_value=0.1"),
        ("optimizer=rmsprop", "optimizer.alpha=0", "optimizer.eps=0", "optimizer.momentum=0"),
        ("data=text_file", "data.path=/some/file.txt"),  # the file is read later, by check_inputs
        ("+callbacks.extra={_target_:lightning.pytorch.callbacks.RichModelSummary}",),  # adding a callback is fine
        ("+trainer.plugins=null",),  # trainer keys go to lightning.Trainer, which checks them
    ],
)
def test_validate_accepts_the_edges(raw_compose, overrides):
    validate(raw_compose(*overrides))


@pytest.mark.unit
def test_every_task_refuses_every_other_kind_of_data():
    """Each data option with its own task validates; with any other task's node swapped in it is refused."""
    tasks = sorted(TASKS.names())
    datas = sorted(DATASETS.names())
    tasks_of_kind: dict[str, list[str]] = {}
    for entry in TASKS.entries():
        tasks_of_kind.setdefault(entry.meta["accepts"], []).append(entry.name)
    seen: set[str] = set()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        task_nodes = {task: hydra_compose("train", overrides=[f"task={task}"]).task for task in tasks}
        for data in datas:
            extra = ["data.path=/x.txt"] if data in ("text_file", "anomaly_csv") else []  # the sources that need a file
            kind = hydra_compose("train", overrides=[f"data={data}", *extra]).data.kind
            seen.add(kind)
            own = tasks_of_kind[kind]
            cfg = hydra_compose("train", overrides=[f"task={own[0]}", f"data={data}", *extra])
            validate(cfg)  # the right task
            for task in tasks:
                if task in own:
                    continue
                other = copy.deepcopy(cfg)
                other.task = task_nodes[task]
                with pytest.raises(ConfigError) as info:
                    validate(other)
                assert_names(line_of(info.value), [f"task={task} cannot train on data={data}", kind])
    assert set(tasks_of_kind) <= seen  # every task has data of its kind


# ---------------------------------------------------------------------------------- data files
@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    made = {
        "empty": tmp_path / "empty.txt",
        "blank": tmp_path / "blank.txt",
        "binary": tmp_path / "binary.bin",
        "latin1": tmp_path / "latin1.txt",
        "tiny": tmp_path / "tiny.txt",
        "directory": tmp_path / "adir",
        "corpus": tmp_path / "corpus.txt",
    }
    made["empty"].write_text("")
    made["blank"].write_text("  \n\n\t\n")
    made["binary"].write_bytes(bytes(range(256)) * 8)
    made["latin1"].write_bytes("caf\xe9 cr\xe8me br\xfbl\xe9e\n".encode("latin-1") * 20)
    made["tiny"].write_text("to be or not\n")
    made["directory"].mkdir()
    made["corpus"].write_text("".join(f"Line {i}: all the world's a stage.\n" for i in range(300)))
    made["missing"] = tmp_path / "missing.txt"
    return made


DATA_FILE_ERRORS = [
    ("missing", DataError, ["data.path: file not found", "missing.txt"]),
    ("empty", DataError, ["data.path: file is empty", "empty.txt"]),
    ("blank", DataError, ["data.path: file is empty", "blank.txt"]),
    ("binary", DataError, ["data.path", "binary", "binary.bin"]),
    ("latin1", DataError, ["data.path: not valid UTF-8 at byte 3", "latin1.txt"]),
    ("directory", DataError, ["data.path: not a regular file", "adir"]),
]


@pytest.mark.parametrize(("name", "error", "fragments"), DATA_FILE_ERRORS, ids=[c[0] for c in DATA_FILE_ERRORS])
def test_bad_text_file_fails_before_lightning_builds_anything(compose, files, monkeypatch, name, error, fragments):
    monkeypatch.setattr(datamodules, "build_datamodule", _must_not_be_called)
    cfg = compose("data=text_file", f"data.path={files[name]}", *TINY)
    with pytest.raises(error) as info:
        train(cfg)
    assert_names(line_of(info.value), fragments)


def _must_not_be_called(*args, **kwargs):
    raise AssertionError("the data was loaded although the input was refused before")


def test_seq_len_longer_than_the_corpus(compose, files, tmp_path):
    with pytest.raises(DataError) as info:
        train(compose("data=text_file", f"data.path={files['tiny']}", "data.seq_len=50", *TINY))
    assert_names(line_of(info.value), ["data.seq_len=50", "tiny.txt", "shorter data.seq_len"])
    assert not (tmp_path / "run").exists()


def test_sample_prompt_outside_the_corpus(compose, files):
    with pytest.raises(ConfigError) as info:
        train(compose("data=text_file", f"data.path={files['corpus']}", "data.seq_len=16", "task.sample_prompt=Z",
                      *TINY))  # fmt: skip
    assert_names(line_of(info.value), ["task.sample_prompt", "'Z'", "data=text_file"])


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (("data.window=200",), ["data.window=200", "data.horizon=6", "data=airline"]),
        (("data.horizon=100",), ["data.horizon=100", "split of data=airline"]),
        (("data.features=[passengers,foo]",), ["data.features=foo", "data=airline offers passengers"]),
        (("data.target=foo",), ["data.target=foo"]),
    ],
)
def test_forecast_data_that_does_not_fit(compose, overrides, fragments):
    with pytest.raises(DataError) as info:
        train(compose(*FORECAST, *TINY, *overrides))
    assert_names(line_of(info.value), fragments)


def test_stocks_ticker(compose):
    with pytest.raises(DataError) as info:
        train(compose("task=forecast", "data=stocks", "data.ticker=XYZ", *TINY))
    assert_names(line_of(info.value), ["data.ticker=XYZ", "AAPL, AMZN, GOOG, IBM, MSFT"])


@pytest.mark.unit
def test_csv_with_missing_values(tmp_path):
    """No data option reads a CSV the user names, but the packaged airline CSV goes through the same reader and
    check: a gap in the series is one line, not NaN losses."""
    from rnnlab.data.timeseries import AIRLINE_CSV, ForecastDataModule, load_airline

    rows = AIRLINE_CSV.read_text().splitlines()
    month = rows[50].split(",")[0]
    rows[50] = f"{month},"  # an empty passengers cell
    gappy = tmp_path / "airline.csv"
    gappy.write_text("\n".join(rows) + "\n")
    module = ForecastDataModule("airline", lambda: load_airline(gappy), ["passengers"], ["passengers"], window=12,
                                horizon=6, stride=1, val_fraction=0.2, test_fraction=0.2, batch_size=8)  # fmt: skip
    with pytest.raises(DataError) as info:
        module.setup("fit")
    assert_names(line_of(info.value), ["data=airline", "missing or infinite values"])
    with pytest.raises(DataError, match="file not found"):
        load_airline(tmp_path / "nope.csv")


# -------------------------------------------------------------------------------- trainer arguments
@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (("trainer.accelerator=banana",), ["trainer: ", "banana"]),
        (("trainer.precision=15",), ["trainer: ", "15"]),
        (("trainer.limit_val_batches=-1",), ["trainer: ", "limit_val_batches"]),
        (("+trainer.foo=1",), ["trainer: ", "foo"]),
    ],
)
def test_trainer_errors_come_before_the_data(compose, monkeypatch, overrides, fragments):
    monkeypatch.setattr(datamodules, "build_datamodule", _must_not_be_called)
    with pytest.raises(ConfigError) as info:
        train(compose(*CLASSIFY, *TINY, *overrides))
    assert_names(line_of(info.value), fragments)


# ------------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def lm_checkpoint(tmp_path_factory, compose_factory) -> Path:
    """A tiny language model's last.ckpt (torch backend, adam, hidden_size=4) on a small text file."""
    root = tmp_path_factory.mktemp("bad-input-ckpt")
    corpus = root / "corpus.txt"
    corpus.write_text("".join(f"Line {i}: all the world's a stage.\n" for i in range(300)))
    train(compose_factory(["data=text_file", f"data.path={corpus}", "data.seq_len=16", *TINY], root / "run"))
    ckpt = root / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    return ckpt


@pytest.fixture
def junk(tmp_path: Path) -> dict[str, Path]:
    import torch

    made = {name: tmp_path / f"{name}.ckpt" for name in ("empty", "text", "random", "truncated", "plain")}
    made["empty"].write_bytes(b"")
    made["text"].write_text("epoch=3 step=100\n")
    made["random"].write_bytes(bytes((i * 97 + 13) % 256 for i in range(4096)))
    made["truncated"].write_bytes(b"PK\x03\x04" + b"\x00" * 100)  # a zip header and nothing after it
    torch.save({"weights": torch.zeros(2)}, made["plain"])  # a torch file, but not Lightning's
    made["directory"] = tmp_path / "checkpoints"
    made["directory"].mkdir()
    made["missing"] = tmp_path / "nope.ckpt"
    return made


CHECKPOINT_FILE_ERRORS = [
    ("missing", "ckpt_path: no such checkpoint file"),
    ("directory", "ckpt_path: a directory, not a checkpoint file"),
    ("empty", "ckpt_path: the file is empty"),
    ("text", "ckpt_path: not a checkpoint"),
    ("random", "ckpt_path: not a checkpoint"),
    ("truncated", "ckpt_path: not a checkpoint (RuntimeError)"),
    ("plain", "ckpt_path: not a Lightning checkpoint"),
]


@pytest.mark.parametrize(("name", "fragment"), CHECKPOINT_FILE_ERRORS, ids=[c[0] for c in CHECKPOINT_FILE_ERRORS])
def test_not_a_checkpoint(compose, junk, monkeypatch, tmp_path, name, fragment):
    monkeypatch.setattr(datamodules, "build_datamodule", _must_not_be_called)
    with pytest.raises(ConfigError) as info:
        train(compose(*CLASSIFY, *TINY, f"ckpt_path={junk[name]}"))
    line = line_of(info.value)
    assert line.startswith(fragment), line
    assert line.endswith(str(junk[name]))
    assert not (tmp_path / "run").exists()


@pytest.mark.unit
def test_checkpoint_file_check_needs_no_torch(junk):
    """The cheap checks (4 bytes read) catch most non-checkpoints before torch is imported."""
    for name in ("missing", "directory", "empty", "text", "random"):
        with pytest.raises(ConfigError, match=r"^ckpt_path: "):
            check_checkpoint_file(str(junk[name]))
    check_checkpoint_file(str(junk["plain"]))  # a zip archive: torch.load decides


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (("model.backend=numpy",), ["model.backend=torch", "this run uses model.backend=numpy"]),
        (("optimizer=sgd",), ["optimizer=adam", "this run uses optimizer=sgd"]),  # torch.optim would fail mid-fit
        (CLASSIFY, ["task=language_model", "this run uses task=classify"]),
    ],
)
def test_checkpoint_of_another_run_kind_fails_before_the_data(compose, lm_checkpoint, monkeypatch, overrides,
                                                             fragments):  # fmt: skip
    monkeypatch.setattr(datamodules, "build_datamodule", _must_not_be_called)
    corpus = lm_checkpoint.parents[2] / "corpus.txt"
    data = () if "task=classify" in overrides else ("data=text_file", f"data.path={corpus}", "data.seq_len=16")
    cfg = compose(*data, *TINY, *overrides, f"ckpt_path={lm_checkpoint}")
    with pytest.raises(ConfigError) as info:
        train(cfg)
    line = line_of(info.value)
    assert line.startswith("ckpt_path: the checkpoint was written by ")
    assert_names(line, [*fragments, str(lm_checkpoint)])


@pytest.mark.parametrize(
    ("overrides", "fragments", "old_style"),
    [
        (
            ("model.hidden_size=8",),
            ["changes model.hidden_size (4 -> 8)"],
            ["hidden_size=4 in the checkpoint but 8 here"],
        ),
        (("model=gru",), ["changes model.cell (lstm -> gru)"], ["cell=lstm in the checkpoint but gru here"]),
        (("model.num_layers=2",), ["changes model.num_layers (1 -> 2)"], ["num_layers=1 in the checkpoint but 2 here"]),
        # another text: another vocabulary
        (("other corpus",), ["changes data.path (the file's content differs"], ["vocab_size=", "but 4 here"]),
    ],
)
@pytest.mark.parametrize("record", [True, False], ids=["record", "older-checkpoint"])
def test_checkpoint_of_another_network_says_what_differs(compose, lm_checkpoint, tmp_path, overrides, fragments,
                                                         old_style, record):  # fmt: skip
    """The run's record in the checkpoint names every key a resume may not change; a checkpoint without one (from
    before the record) is still compared network by network."""
    import torch

    corpus = lm_checkpoint.parents[2] / "corpus.txt"
    if overrides == ("other corpus",):
        corpus, overrides = tmp_path / "abc.txt", ()
        corpus.write_text("abcabcabca\n" * 100)  # four characters: a, b, c and the newline
    checkpoint = lm_checkpoint
    if not record:
        saved = torch.load(lm_checkpoint, map_location="cpu", weights_only=False)
        del saved["rnnlab"]
        checkpoint = tmp_path / "older.ckpt"
        torch.save(saved, checkpoint)
    cfg = compose("data=text_file", f"data.path={corpus}", "data.seq_len=16", *TINY, *overrides,
                  f"ckpt_path={checkpoint}")  # fmt: skip
    with pytest.raises(ConfigError) as info:
        train(cfg)
    line = line_of(info.value)
    if record:
        assert line.startswith("ckpt_path: a resumed run keeps what shapes the model, the data and the arithmetic")
        assert_names(line, [*fragments, str(checkpoint)])
    else:
        assert line.startswith("ckpt_path: the checkpoint holds another network (")
        assert_names(line, old_style)


# ------------------------------------------------------------------------------------ rnnlab-generate
def test_generate_errors(lm_checkpoint, junk):
    import torch

    cases = [
        ([], "ckpt_path is required"),
        ([f"ckpt_path={lm_checkpoint}", "lenght=5"], "unknown argument 'lenght'"),
        ([f"ckpt_path={lm_checkpoint}", "length=abc"], "length must be an integer, got 'abc'"),
        ([f"ckpt_path={lm_checkpoint}", "length=0"], "length must be in [1, 1000000], got 0"),
        ([f"ckpt_path={lm_checkpoint}", "length=1000001"], "length must be in [1, 1000000], got 1000001"),
        ([f"ckpt_path={lm_checkpoint}", "temperature=nan"], "temperature must be a finite number > 0"),
        ([f"ckpt_path={lm_checkpoint}", "temperature=inf"], "temperature must be a finite number > 0, got inf"),
        ([f"ckpt_path={lm_checkpoint}", "seed=-1"], "seed must be in [0, 2**32), got -1"),
        ([f"ckpt_path={lm_checkpoint}", "seed=4294967296"], "seed must be in [0, 2**32), got 4294967296"),
        ([f"ckpt_path={lm_checkpoint}", "top_k=0"], "top_k must be >= 1"),
        ([f"ckpt_path={lm_checkpoint}", "hello"], "'hello' is not key=value"),
        ([f"ckpt_path={lm_checkpoint}", "prompt=\u00e9"], "prompt: character '\u00e9'"),
        ([f"ckpt_path={lm_checkpoint}", "device=banana"], "device: not a torch device: 'banana'"),
        ([f"ckpt_path={junk['missing']}"], "ckpt_path: file not found"),
        ([f"ckpt_path={junk['directory']}"], "ckpt_path: a directory, not a checkpoint file"),
        ([f"ckpt_path={junk['empty']}"], "ckpt_path: the file is empty"),
        ([f"ckpt_path={junk['text']}"], "ckpt_path: not a checkpoint"),
        ([f"ckpt_path={junk['random']}"], "ckpt_path: not a checkpoint"),
        ([f"ckpt_path={junk['plain']}"], "ckpt_path: not a Lightning checkpoint"),
    ]
    if not torch.cuda.is_available():
        cases.append(([f"ckpt_path={lm_checkpoint}", "device=cuda"], "device=cuda: CUDA is not available"))
    for argv, start in cases:
        with pytest.raises(UsageError) as info:
            generate(parse(argv))
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(start), (argv, message)


def test_generate_refuses_a_checkpoint_of_another_task(lm_checkpoint, tmp_path):
    import torch

    saved = torch.load(lm_checkpoint, map_location="cpu", weights_only=False)
    saved["hyper_parameters"]["task"]["name"] = "classify"
    other = tmp_path / "classify.ckpt"
    torch.save(saved, other)
    with pytest.raises(UsageError, match=r"^ckpt_path: a task=classify checkpoint; rnnlab-generate needs "):
        generate(parse([f"ckpt_path={other}"]))


# --------------------------------------------------------------------------------- run directories
@pytest.mark.unit
def test_run_dir_guard_names_what_it_protects(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "cli.log").write_text("log")
    (run / "notes.txt").write_text("mine")
    assert run_files_in(run, "cli") == [".hydra", "checkpoints", "cli.log"]
    with pytest.raises(ConfigError) as info:
        check_new_dir(run, "hydra.run.dir", run_files_in(run, "cli"))
    assert_names(line_of(info.value), [f"hydra.run.dir={run} already holds a run (.hydra, checkpoints, cli.log)",
                                       "choose a new hydra.run.dir"])  # fmt: skip

    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    (unrelated / "notes.txt").write_text("mine")
    check_new_dir(unrelated, "hydra.run.dir", run_files_in(unrelated, "cli"))  # no run there: allowed
    check_new_dir(tmp_path / "new" / "deeper", "hydra.run.dir", [])  # a new directory: allowed
    assert not (tmp_path / "new").exists()  # the check creates nothing (Hydra does)

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match=r"is a file, not a directory$"):
        check_new_dir(a_file, "hydra.run.dir", [])
    with pytest.raises(ConfigError, match=r"^hydra.run.dir: cannot create .*file.txt is a file"):
        check_new_dir(a_file / "sub", "hydra.run.dir", [])

    sweep = tmp_path / "sweep"
    (sweep / "0_model=rnn" / ".hydra").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("x")
    assert sweep_files_in(sweep) == ["0_model=rnn", "multirun.yaml"]
    assert sweep_files_in(unrelated) == []


# ------------------------------------------------------------------------------- the real command line
def run_cli(program: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    environment.update({"OMP_NUM_THREADS": "1", **(env or {})})
    return subprocess.run([str(BIN / program), *args], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def assert_one_line(result: subprocess.CompletedProcess, prefix: str, fragments: list[str]) -> str:
    assert result.returncode == 1, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(prefix), lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert_names(lines[0], fragments)
    return lines[0]


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.mark.cli
@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["data=nope"], ["Could not find 'data/nope'", "shakespeare"]),  # Hydra's override error
        (["model.hidden_size=abc"], ["model.hidden_size", "abc"]),  # the schema
        (["trainer.accelerator=banana"], ["trainer: ", "banana"]),  # Lightning's check, before the data
    ],
    ids=["hydra", "schema", "trainer"],
)
def test_cli_one_line(tmp_path, args, fragments):
    result = run_cli("rnnlab-train", *args, f"paths.output_dir={tmp_path}/out", cwd=tmp_path)
    assert_one_line(result, "rnnlab: error: ", fragments)
    assert not list(tmp_path.glob("out/runs/*/config_resolved.yaml"))


@pytest.mark.cli
def test_cli_refuses_before_importing_torch(tmp_path, files):
    """A validate error (an added key) and a data-file error (not UTF-8) end before torch or Lightning load."""
    for args, fragments in (
        (["+model.hiden_size=3"], ["rnnlab: error: model.hiden_size: not a key of ModelConfig", "hidden_size?"]),
        (["data=text_file", f"data.path={files['latin1']}"], ["rnnlab: error: data.path: not valid UTF-8"]),
    ):
        result, report = probe([*args, f"paths.output_dir={tmp_path}/out"], tmp_path,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
        assert report["code"] == 1, result.stderr
        assert report["heavy"] == []
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert_names(lines[0], fragments)


@pytest.mark.cli
def test_cli_checkpoint_and_generate_errors(tmp_path, junk):
    result = run_cli("rnnlab-train", f"ckpt_path={junk['random']}", f"paths.output_dir={tmp_path}/out", cwd=tmp_path)
    assert_one_line(result, "rnnlab: error: ckpt_path: not a checkpoint", [str(junk["random"])])
    result = run_cli("rnnlab-generate", f"ckpt_path={junk['plain']}", cwd=tmp_path)
    assert_one_line(result, "rnnlab-generate: error: ckpt_path: not a Lightning checkpoint", [str(junk["plain"])])


@pytest.mark.cli
def test_cli_never_writes_into_another_runs_directory(tmp_path, lm_checkpoint):
    """A bad run and a good one pointed at an earlier run's directory both leave it byte for byte as it was."""
    earlier = lm_checkpoint.parents[1]
    (earlier / ".hydra").mkdir(exist_ok=True)  # what the CLI writes besides the run's own files
    (earlier / ".hydra" / "config.yaml").write_text("model:\n  hidden_size: 4\n")
    (earlier / "cli.log").write_text("[00:00:00][INFO] the earlier run\n")
    before = snapshot(earlier)
    assert {"checkpoints/last.ckpt", "config_resolved.yaml", "summary.json", "cli.log"} <= set(before)
    corpus = lm_checkpoint.parents[2] / "corpus.txt"
    good = ["data=text_file", f"data.path={corpus}", "data.seq_len=16", *TINY]
    for args in (["model.hidden_size=0"], good):
        result = run_cli("rnnlab-train", *args, f"hydra.run.dir={earlier}", cwd=tmp_path)
        assert_one_line(result, f"rnnlab: error: hydra.run.dir={earlier} already holds a run (", ["checkpoints"])
        assert snapshot(earlier) == before


@pytest.mark.unit
def test_run_dir_guard_callback_exits_with_one_line(tmp_path, monkeypatch, capsys):
    """Hydra turns a callback's exceptions into warnings, so the guard itself prints the line and exits 1."""
    from omegaconf import OmegaConf

    from rnnlab.runtime.rundir import RunDirGuard

    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "WORLD_SIZE", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(name, raising=False)
    run, sweep = tmp_path / "run", tmp_path / "sweep"
    (run / "checkpoints").mkdir(parents=True)
    (sweep / "multirun.yaml").parent.mkdir()
    (sweep / "multirun.yaml").write_text("x")
    config = OmegaConf.create(
        {"hydra": {"run": {"dir": str(run)}, "sweep": {"dir": str(sweep)}, "job": {"name": "cli"}}}
    )
    guard = RunDirGuard()
    for start, key in ((guard.on_run_start, "hydra.run.dir"), (guard.on_multirun_start, "hydra.sweep.dir")):
        with pytest.raises(SystemExit) as info:
            start(config=config)
        assert info.value.code == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert err.startswith(f"rnnlab: error: {key}=")
        assert "already holds a run" in err
    monkeypatch.setenv("WORLD_SIZE", "2")  # rank 0 of a torchrun launch owns the directory: it is checked
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SystemExit):
        guard.on_run_start(config=config)
    capsys.readouterr()
    monkeypatch.setenv("RANK", "1")  # its peers share rank 0's directory: they claim nothing
    guard.on_run_start(config=config)
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("LOCAL_RANK", "1")  # a process Lightning started for DDP
    guard.on_run_start(config=config)
    monkeypatch.delenv("LOCAL_RANK")
    fresh = OmegaConf.create({"hydra": {"run": {"dir": str(tmp_path / "new")}, "job": {"name": "cli"}}})
    guard.on_run_start(config=fresh)  # a new directory: nothing to say
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------- checked before training (issue 12, 8)
CLASSIFY_TINY = (*CLASSIFY, "model.hidden_size=4", "model.embed_dim=4", "logger=csv", "trainer.limit_val_batches=1",
                 "trainer.limit_test_batches=1")  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "start"),
    [
        (
            (*CLASSIFY_TINY, "trainer.val_check_interval=1000"),
            "trainer.val_check_interval=1000 is more than the 9 training batches of an epoch of data=synthetic_text",
        ),
        (
            ("task=forecast", "data=stocks", "trainer.max_steps=8", "trainer.val_check_interval=8", "logger=csv"),
            "trainer.val_check_interval=8 is more than the 5 training batches of an epoch of data=stocks",
        ),
        (
            (*CLASSIFY_TINY, "task.monitor=val/accuracy"),
            "task.monitor=val/accuracy: task=classify with data=synthetic_text never logs it during training; it logs "
            "val/acc, val/auroc, val/f1, val/loss",
        ),
        ((*CLASSIFY_TINY, "task.monitor=test/acc"), "task.monitor=test/acc: task=classify"),
    ],
    ids=["val_check_interval", "val_check_interval-stocks", "monitor", "monitor-test"],
)
def test_checked_before_training(compose, tmp_path, overrides, start):
    with pytest.raises(ConfigError) as info:
        train(compose(*overrides, run_dir=tmp_path / "run"))
    assert line_of(info.value).startswith(start), line_of(info.value)
    assert not (tmp_path / "run").exists()  # refused before the first step: nothing kept


def test_a_loss_that_grows_a_millionfold_is_a_divergence(compose, tmp_path):
    """SGD at lr 1e30 with clipping on: the loss climbs to 1e30 and stays finite; the guard stops the run."""
    from rnnlab.errors import DivergenceError

    for backend in ("torch", "numpy"):
        run = tmp_path / backend
        with pytest.raises(DivergenceError) as info:
            train(compose(*CLASSIFY_TINY, f"model.backend={backend}", "optimizer=sgd", "optimizer.lr=1e30",
                          "trainer.max_steps=20", run_dir=run))  # fmt: skip
        assert "more than callbacks.divergence.max_loss_factor=1e+06 times the run's first loss" in line_of(info.value)
        assert json.loads((run / "summary.json").read_text())["status"] == "failed"
    train(compose(*CLASSIFY_TINY, "optimizer=sgd", "optimizer.lr=1e30", "trainer.max_steps=20",
                  "callbacks.divergence.max_loss_factor=null", run_dir=tmp_path / "off"))  # fmt: skip
    assert json.loads((tmp_path / "off" / "summary.json").read_text())["status"] == "completed"


def test_summary_json_is_valid_json_whatever_the_numbers(compose, tmp_path):
    """A metric that overflowed (val/ppl = inf) is written as null, not as JavaScript's Infinity."""
    from rnnlab.atomic import write_json

    write_json(tmp_path / "x.json", {"a": float("inf"), "b": [float("nan"), 1.5], "c": {"d": -float("inf")}})

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    assert json.loads((tmp_path / "x.json").read_text(), parse_constant=refuse) == {"a": None, "b": [None, 1.5],
                                                                                    "c": {"d": None}}  # fmt: skip
    run = tmp_path / "run"
    train(compose(*CLASSIFY_TINY, "optimizer=sgd", "optimizer.lr=1e30", "trainer.max_steps=6",
                  "trainer.val_check_interval=3", "callbacks.divergence=null", run_dir=run))  # fmt: skip
    text = (run / "summary.json").read_text()
    summary = json.loads(text, parse_constant=refuse)
    assert summary["fit_metrics"]["val/loss"] is None or math.isfinite(summary["fit_metrics"]["val/loss"])


# ------------------------------------------------------------------------------- smaller (issue 12, 9)
@pytest.mark.unit
def test_tilde_in_an_override_is_the_home_directory(monkeypatch, tmp_path):
    from rnnlab.cli import expand_home

    monkeypatch.setenv("HOME", str(tmp_path))
    assert expand_home(["data.path=~/corpus.txt", "paths.output_dir=~", "task.sample_prompt=~x", "-m", "x=y"]) == [
        f"data.path={tmp_path}/corpus.txt",
        f"paths.output_dir={tmp_path}",
        "task.sample_prompt=~x",
        "-m",
        "x=y",
    ]
    monkeypatch.setenv("HOME", str(tmp_path / "with space"))
    assert expand_home(["data.path=~/c.txt"]) == [f"data.path='{tmp_path}/with space/c.txt'"]


@pytest.mark.unit
@pytest.mark.parametrize(("value", "expected"), [("~/runs", "{home}/runs"), ("~", "{home}"), ("", "outputs"),
                                                 ("  ", "outputs"), ("rel/out", "rel/out")])  # fmt: skip
def test_output_dir_from_the_environment(raw_compose, monkeypatch, tmp_path, value, expected):
    from omegaconf import OmegaConf

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RNNLAB_OUTPUT_DIR", value)
    cfg = raw_compose()
    assert OmegaConf.select(cfg, "paths.output_dir") == expected.format(home=tmp_path)


def test_the_report_names_only_what_the_run_wrote(compose, tmp_path, capsys):
    train(compose(*CLASSIFY_TINY, "trainer.max_steps=0", run_dir=tmp_path / "run"))
    out = capsys.readouterr().out
    assert "Run directory: " in out
    assert "checkpoints:" not in out  # max_steps=0 writes no checkpoint
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.unit
def test_a_byte_order_mark_is_not_text(tmp_path):
    from rnnlab.data import corpus, token_cache

    text = "".join(f"line {i}: to be or not to be\n" for i in range(100))
    with_bom = tmp_path / "bom.txt"
    with_bom.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert corpus.read_text_file(with_bom) == text
    for chunk_bytes in (2, 3, 7, 64 * 1024):  # the mark cut by a chunk boundary, or alone in the first chunk
        assert "".join(corpus.iter_text_chunks(with_bom, chunk_bytes)) == text
    itos, n = token_cache.scan_vocab(with_bom)
    assert "\ufeff" not in itos
    assert n == len(text)


@pytest.mark.cli
def test_cli_override_errors_name_the_override(tmp_path):
    result = run_cli("rnnlab-train", "data=text_file", "data.path=a=b.txt", cwd=tmp_path)
    assert_one_line(result, "rnnlab: error: cannot parse the override 'data.path=a=b.txt'",
                    ["quote the value, e.g. data.path='a=b.txt'"])  # fmt: skip


@pytest.mark.cli
def test_cli_tilde_paths(tmp_path, files):
    home = tmp_path / "home"
    home.mkdir()
    (home / "corpus.txt").write_text(files["corpus"].read_text())
    result = run_cli("rnnlab-train", "data=text_file", "data.path=~/corpus.txt", "data.seq_len=16", *TINY,
                     "trainer.enable_progress_bar=false", cwd=tmp_path,
                     env={"HOME": str(home), "RNNLAB_OUTPUT_DIR": "~/out"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((home / "out" / "runs").iterdir())  # ~ in RNNLAB_OUTPUT_DIR is the home directory too
    assert not (tmp_path / "~").exists()


@pytest.mark.cli
def test_cli_optuna_search_whose_every_trial_fails(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("rnnlab-train", "-m", "hparams_search=classify_optuna", "hydra.sweeper.n_trials=2",
                     "trainer.max_steps=2", "data.num_samples=200", "model.hidden_size=0",
                     f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith(("rnnlab:", "  "))]
    assert lines[0] == "rnnlab: error: 2 of 2 jobs failed:"
    assert all(line.endswith("model.hidden_size must be > 0, got 0") for line in lines[1:]), lines


def _fsize_limit(limit: int):
    def set_limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return set_limit


@pytest.mark.cli
def test_cli_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(tmp_path, files):
    """Writes fail part-way through a run. As root, the run's outputs go to a small tmpfs (ENOSPC); otherwise a
    file-size limit makes every write beyond 16 KiB fail (EFBIG). One line, exit 1, no traceback, and the
    last.ckpt written before is complete."""
    out = tmp_path / "small"
    out.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(out)],
                                                  capture_output=True).returncode == 0  # fmt: skip
    try:
        args = [*CLASSIFY, "model.hidden_size=48", "model.embed_dim=16", "trainer.max_steps=400",
                "trainer.val_check_interval=4", "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false",
                "callbacks.model_checkpoint.save_top_k=3", "callbacks.model_checkpoint.monitor=step",
                "callbacks.model_checkpoint.mode=max", f"hydra.run.dir={out}/run"]  # fmt: skip
        environment = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
        environment["OMP_NUM_THREADS"] = "1"
        result = subprocess.run([str(BIN / "rnnlab-train"), *args], cwd=tmp_path, env=environment,
                                capture_output=True, text=True, timeout=300,
                                preexec_fn=None if mounted else _fsize_limit(60 * 1024))  # fmt: skip
        assert result.returncode == 1, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        lines = [line for line in result.stderr.splitlines() if line.startswith("rnnlab:")]
        assert len(lines) == 1, result.stderr[-3000:]
        reason = "No space left on device" if mounted else "File too large"
        assert lines[0].startswith("rnnlab: error: cannot write "), lines[0]
        assert reason in lines[0], lines[0]
        last = out / "run" / "checkpoints" / "last.ckpt"
        if last.exists():
            import torch

            assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] > 0  # complete
    finally:
        if mounted:
            subprocess.run(["umount", str(out)], check=False)
