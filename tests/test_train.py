"""rnnlab.train.train in-process: fast_dev_run over every model x task x variant, float64, a short real run and
its files, learning, resuming, seeds."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch.nn import functional as F

from rnnlab.errors import ConfigError
from rnnlab.models.init import init_parameters
from rnnlab.train import build_task as _UNPATCHED_BUILD_TASK
from rnnlab.train import train

pytestmark = pytest.mark.compose

LN2 = math.log(2.0)
CLASSIFY = ("task=classify", "data=synthetic_text", "data.num_samples=400", "data.batch_size=32")
LANGUAGE_MODEL = ("task=language_model", "data=shakespeare", "data.seq_len=20", "data.batch_size=16",
                  "task.sample_length=20")  # fmt: skip
TASKS = {"classify": CLASSIFY, "language_model": LANGUAGE_MODEL}
VARIANTS = {
    "1-layer": ("model.num_layers=1",),
    "2-layer-dropout": ("model.num_layers=2", "model.dropout=0.2"),
    "2-layer-bidirectional": ("model.num_layers=2", "model.bidirectional=true"),
}
MATRIX = [
    (cell, task, variant)
    for cell in ("rnn", "lstm", "gru")
    for task in TASKS
    for variant in VARIANTS
    if not (task == "language_model" and variant == "2-layer-bidirectional")
]
TRAIN_KEYS = {"time/step_ms", "throughput/samples_per_s", "throughput/tokens_per_s", "time/epoch_s"}
EXPECTED = {
    "classify": ({"train/loss", "train/acc", "val/loss", "val/acc", "val/f1", "val/auroc"},
                 {"test/loss", "test/acc", "test/f1", "test/auroc"}),  # two classes: ROC AUC too
    "language_model": ({"train/loss", "train/bpc", "val/loss", "val/bpc", "val/ppl"},
                       {"test/loss", "test/bpc", "test/ppl"}),
}  # fmt: skip


# ---------------------------------------------------------------------------------------- references
@torch.no_grad()
def evaluate_batch(model, batch, task: str) -> dict[str, float]:
    """Loss (and accuracy) of one batch, computed here with F.cross_entropy, in eval mode."""
    model.eval()
    if task == "classify":
        x, lengths, y = batch
        logits = model(x, lengths)
        return {"loss": float(F.cross_entropy(logits, y)), "acc": float((logits.argmax(-1) == y).double().mean())}
    x, y = batch
    logits, _ = model(x)
    return {"loss": float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)))}


def first_batch(datamodule, split: str):
    loader = getattr(datamodule, f"{split}_dataloader")()
    loader.sampler.set_epoch(0)
    return next(iter(loader))


def assert_split_metrics(metrics: dict[str, float], reference: dict[str, float], split: str, task: str) -> None:
    assert metrics[f"{split}/loss"] == pytest.approx(reference["loss"], rel=1e-5)
    if task == "classify":
        assert metrics[f"{split}/acc"] == pytest.approx(reference["acc"], abs=1e-6)
    else:
        assert metrics[f"{split}/bpc"] == pytest.approx(reference["loss"] / LN2, rel=1e-5)
        assert metrics[f"{split}/ppl"] == pytest.approx(math.exp(reference["loss"]), rel=1e-5)


# ------------------------------------------------------------------------------------------ fast_dev_run
@pytest.mark.parametrize(("cell", "task", "variant"), MATRIX)
def test_fast_dev_run(compose, recorder, cell, task, variant):
    cfg = compose(
        f"model={cell}", "model.hidden_size=16", *TASKS[task], *VARIANTS[variant], "trainer.fast_dev_run=true"
    )
    outcome = train(cfg)
    result = outcome.value
    (run,) = recorder.runs
    # train() returns the run's metrics and objects, lightning-hydra-template style
    assert outcome.objects["model"] is run.model
    assert outcome.objects["trainer"] is run.trainer
    assert (outcome.metrics, outcome.test_metrics, outcome.seed) == (run.metrics, run.test_metrics, run.seed)
    fit_keys, test_keys = EXPECTED[task]
    assert fit_keys | TRAIN_KEYS <= set(run.metrics)
    assert set(run.test_metrics) == test_keys
    assert all(math.isfinite(v) for v in [*run.metrics.values(), *run.test_metrics.values()])
    assert result == run.metrics[cfg.task.monitor]  # train() returns the monitored metric
    assert run.trainer.global_step == 1

    # the network is the one asked for
    net = run.model.net
    assert type(net.rnn).__name__ == {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[cell]
    assert net.rnn.num_layers == cfg.model.num_layers
    assert net.rnn.bidirectional == cfg.model.bidirectional
    assert net.rnn.dropout == cfg.model.dropout
    assert net.rnn.hidden_size == 16

    # one optimizer step happened
    changed = [k for k, v in run.model.state_dict().items() if k in run.initial and not torch.equal(v, run.initial[k])]
    assert changed

    # the logged evaluation metrics are those of the final weights on the first val / test batch
    dm = run.datamodule
    assert_split_metrics(run.metrics, evaluate_batch(run.model, first_batch(dm, "val"), task), "val", task)
    assert_split_metrics(run.test_metrics, evaluate_batch(run.model, first_batch(dm, "test"), task), "test", task)

    # train/loss is the loss of the initial weights on the first shuffled training batch (dropout aside)
    if cfg.model.dropout == 0:
        initial = copy.deepcopy(run.model)
        initial.load_state_dict(run.initial)
        reference = evaluate_batch(initial, first_batch(dm, "train"), task)
        assert run.metrics["train/loss"] == pytest.approx(reference["loss"], rel=1e-5)


@pytest.mark.parametrize("task", ["classify", "language_model"])
def test_precision_64(compose, recorder, task):
    cell = "gru" if task == "classify" else "lstm"
    bidi = "model.bidirectional=true" if task == "classify" else "model.num_layers=2"
    cfg = compose(f"model={cell}", bidi, "model.hidden_size=8", *TASKS[task], "trainer.fast_dev_run=true",
                  "trainer.precision=64")  # fmt: skip
    result = train(cfg).value
    (run,) = recorder.runs
    assert run.train_start is not None
    assert all(p.dtype == torch.float64 for p in run.train_start.values())
    assert all(p.dtype == torch.float64 for p in run.model.parameters())
    assert math.isfinite(result)
    assert math.isfinite(run.metrics["train/loss"])
    reference = evaluate_batch(run.model, first_batch(run.datamodule, "val"), task)
    assert run.metrics["val/loss"] == pytest.approx(reference["loss"], rel=1e-6)


def test_precision_64_starts_from_the_exact_float64_draws(compose, recorder):
    cfg = compose("model=gru", "model.hidden_size=8", *CLASSIFY, "trainer.fast_dev_run=true", "trainer.precision=64")
    train(cfg)
    (run,) = recorder.runs
    arrays = init_parameters(run.model.spec, run.seed)
    for name, p in run.train_start.items():
        np.testing.assert_array_equal(p.numpy(), arrays[name.removeprefix("net.")], err_msg=name)


def test_text_file_language_model(compose, recorder, tmp_path):
    text = "".join(f"{i % 7} little pigs went to market, {i} times.\n" for i in range(300))
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    cfg = compose("data=text_file", f"data.path={path}", "data.seq_len=16", "model.hidden_size=8",
                  "task.sample_length=5", "trainer.fast_dev_run=true")  # fmt: skip
    result = train(cfg).value
    (run,) = recorder.runs
    assert run.model.vocab.itos == sorted(set(text))
    assert run.model.spec.vocab_size == run.model.spec.num_outputs == len(set(text))
    assert math.isfinite(result)
    reference = evaluate_batch(run.model, first_batch(run.datamodule, "val"), "language_model")
    assert result == pytest.approx(reference["loss"] / LN2, rel=1e-5)


def test_text_file_without_newlines(compose, tmp_path):
    path = tmp_path / "one-line.txt"
    path.write_text("the quick brown fox jumps over the lazy dog " * 60, encoding="utf-8")
    cfg = compose("data=text_file", f"data.path={path}", "data.seq_len=16", "model.hidden_size=8",
                  "task.sample_length=5", "trainer.fast_dev_run=true")  # fmt: skip
    assert math.isfinite(train(cfg).value)


def test_sample_prompt_outside_the_vocabulary_is_a_config_error(compose, recorder):
    cfg = compose(*LANGUAGE_MODEL, "model.hidden_size=8", "task.sample_prompt='ROMEO@'", "trainer.fast_dev_run=true")
    with pytest.raises(ConfigError, match=r"task\.sample_prompt"):
        train(cfg)
    assert recorder.runs == [] or recorder.runs[0].train_start is None  # refused before any training


# ------------------------------------------------------------------------------------------ a real short run
def _event_files(directory: Path) -> list[Path]:
    return sorted(directory.rglob("events.out.tfevents.*"))


def _read_events(directory: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[tuple[int, float]]] = {}
    texts: dict[str, list[tuple[int, str]]] = {}
    for path in _event_files(directory):
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
        for tag in acc.Tags()["tensors"]:  # add_text stores "<tag>/text_summary" string tensors
            for e in acc.Tensors(tag):
                if e.tensor_proto.string_val:
                    name = tag.removesuffix("/text_summary")
                    texts.setdefault(name, []).append((e.step, e.tensor_proto.string_val[0].decode("utf-8")))
    return scalars, texts


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, compose_factory):
    """One real language-model run: 6 steps, validation every 3, both loggers, checkpoints."""
    import rnnlab.train as train_module

    run_dir = tmp_path_factory.mktemp("short") / "run"
    captured = {}

    def build_task(cfg, datamodule, seed):
        captured["model"] = _UNPATCHED_BUILD_TASK(cfg, datamodule, seed)
        captured["datamodule"] = datamodule
        return captured["model"]

    cfg = compose_factory(
        ["model.hidden_size=16", "model.embed_dim=8", *LANGUAGE_MODEL, "task.sample_length=40", "trainer.max_steps=6",
         "trainer.val_check_interval=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
         "trainer.log_every_n_steps=1", "logger=default", "callbacks=default"],
        run_dir,
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_module, "build_task", build_task)
        result = train(cfg).value
    return {"run_dir": run_dir, "result": result, "cfg": cfg, **captured}


def test_short_run_returns_the_last_validation(short_run):
    scalars, _ = _read_events(short_run["run_dir"] / "tensorboard")
    last_val_bpc = max(scalars["val/bpc"])[1]
    assert short_run["result"] == pytest.approx(last_val_bpc, rel=1e-6)


def test_short_run_tensorboard(short_run):
    run_dir = short_run["run_dir"]
    assert _event_files(run_dir / "tensorboard")
    scalars, texts = _read_events(run_dir / "tensorboard")
    for tag in ("train/loss", "train/bpc", "val/loss", "val/bpc", "val/ppl", "test/bpc", "time/step_ms",
                "throughput/samples_per_s", "throughput/tokens_per_s"):  # fmt: skip
        assert tag in scalars, tag
    lr_tags = [t for t in scalars if t.startswith("lr-")]
    assert lr_tags == ["lr-Adam"]
    assert [v for _, v in scalars["lr-Adam"]] == pytest.approx([0.002] * len(scalars["lr-Adam"]))
    assert sorted(step for step, _ in scalars["train/loss"]) == [0, 1, 2, 3, 4, 5]  # log_every_n_steps=1
    val = dict(scalars["val/loss"])
    assert len(val) == 2  # val_check_interval=3 in 6 steps (sanity-check values are not logged)
    for step, loss in val.items():
        assert dict(scalars["val/bpc"])[step] == pytest.approx(loss / LN2, rel=1e-5)
        assert dict(scalars["val/ppl"])[step] == pytest.approx(math.exp(loss), rel=1e-5)
    for step, bpc in scalars["train/bpc"]:
        assert bpc == pytest.approx(dict(scalars["train/loss"])[step] / LN2, rel=1e-5)
    assert all(v > 0 for _, v in scalars["time/step_ms"])
    samples = texts["samples/generated"]
    assert sorted(step for step, _ in samples) == [3, 6]  # logged at the global step of each validation
    assert all(body.startswith("    ") for _, body in samples)  # indented so TensorBoard keeps line breaks


def test_short_run_csv(short_run):
    metrics = pd.read_csv(short_run["run_dir"] / "csv" / "metrics.csv")
    for column in ("train/loss", "val/loss", "val/bpc", "val/ppl", "test/loss", "test/bpc", "test/ppl",
                   "time/step_ms", "throughput/samples_per_s", "lr-Adam", "step"):  # fmt: skip
        assert column in metrics.columns, column
    scalars, _ = _read_events(short_run["run_dir"] / "tensorboard")
    csv_val = metrics.dropna(subset=["val/bpc"]).set_index("step")["val/bpc"].to_dict()
    assert csv_val == pytest.approx(dict(scalars["val/bpc"]), rel=1e-6)  # same steps, same values
    assert metrics["test/bpc"].notna().sum() == 1


def test_short_run_files(short_run):
    run_dir = short_run["run_dir"]
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts
    assert [c for c in ckpts if re.fullmatch(r"best-step\d+\.ckpt", c)]
    text = (run_dir / "config_resolved.yaml").read_text()
    assert text.startswith("# seed used: 42\n")
    resolved = yaml.safe_load(text)
    assert resolved["model"]["hidden_size"] == 16
    assert resolved["model"]["cell"] == "lstm"
    assert resolved["paths"]["run_dir"] == str(run_dir)
    assert resolved["callbacks"]["model_checkpoint"]["dirpath"] == str(run_dir / "checkpoints")


def test_checkpoint_carries_vocab_and_spec(short_run, shakespeare):
    ckpt = torch.load(short_run["run_dir"] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    hp = ckpt["hyper_parameters"]
    vocab = sorted(set(shakespeare))
    assert hp["vocab"] == vocab
    assert hp["spec"] == {
        "cell": "lstm",
        "vocab_size": len(vocab),
        "embed_dim": 8,
        "hidden_size": 16,
        "num_layers": 1,
        "bidirectional": False,
        "num_outputs": len(vocab),
        "dropout": 0.0,
        "nonlinearity": "tanh",
        "padding_idx": None,
        "input_features": 0,
        "variant": "standard",
        "init": "default",
        "forget_bias": 0.0,
        "input_dropout": 0.0,  # the recurrent regularisers (rnnlab.models.regularisers): off by default
        "recurrent_dropout": 0.0,
        "output_dropout": 0.0,
        "zoneout": 0.0,
        "zoneout_c": None,
    }
    assert hp["optimizer"]["name"] == "adam"
    assert hp["seed"] == 42
    assert ckpt["global_step"] == 6


def test_load_from_checkpoint_generates_the_same_text(short_run):
    from rnnlab.tasks.language_model import LanguageModelTask

    run_dir = short_run["run_dir"]
    trained = short_run["model"]  # after train() it holds the best checkpoint's weights (the test used them)
    (best,) = (run_dir / "checkpoints").glob("best-*.ckpt")
    loaded = LanguageModelTask.load_from_checkpoint(best, map_location="cpu")
    for name, value in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    for seed in (0, 7):
        a = trained.generate("ROMEO:\n", 60, temperature=0.8, seed=seed)
        b = loaded.generate("ROMEO:\n", 60, temperature=0.8, seed=seed)
        assert a == b
        assert a.startswith("ROMEO:\n")
        assert len(a) == len("ROMEO:\n") + 60
    assert trained.generate("", 60, seed=0) != trained.generate("", 60, seed=1)

    # the sample logged at the last validation is the one the last checkpoint generates
    last = LanguageModelTask.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", map_location="cpu")
    _, texts = _read_events(run_dir / "tensorboard")
    logged = dict(texts["samples/generated"])[6]
    assert logged == "    " + last.generate("", 40, 0.8, None).replace("\n", "\n    ")


def test_top_k_one_is_greedy(short_run):
    model = short_run["model"]
    text = model.generate("The ", 30, temperature=0.5, top_k=1, seed=0)
    assert text == model.generate("The ", 30, temperature=2.0, top_k=1, seed=123)  # no randomness left
    # and it is the argmax path, computed step by step here
    ids = list(model.vocab.encode("The "))
    model.eval()
    with torch.no_grad():
        for _ in range(30):
            logits, _ = model(torch.tensor([ids]))
            ids.append(int(logits[0, -1].argmax()))
    assert text == model.vocab.decode(ids)


# ------------------------------------------------------------------------------------------------ learning
def test_gru_learns_synthetic_text(compose, recorder):
    """Counting the majority letter: chance is ~0.5; a small GRU gets above 0.96 val accuracy in 4 epochs (seeds
    0-4 checked; 0.9 leaves a margin)."""
    cfg = compose("model=gru", "model.hidden_size=32", "task=classify", "data=synthetic_text",
                  "data.num_samples=2000", "optimizer=adam", "trainer.max_epochs=4", "trainer.max_steps=-1",
                  "trainer.val_check_interval=null", "trainer.check_val_every_n_epoch=1", "logger=csv",
                  "seed=0")  # fmt: skip
    val_acc = train(cfg).value
    (run,) = recorder.runs
    labels = run.datamodule.splits["test"].labels
    majority = max(labels.float().mean().item(), 1 - labels.float().mean().item())
    assert val_acc >= 0.9
    assert run.test_metrics["test/acc"] >= 0.9
    assert run.test_metrics["test/acc"] > majority + 0.3
    assert run.trainer.current_epoch == 4


# -------------------------------------------------------------------------------------------------- resume
RESUME = ("model=gru", "model.hidden_size=8", "model.num_layers=2", "task=classify", "data=synthetic_text",
          "data.num_samples=600", "optimizer=adam", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
          "trainer.limit_test_batches=1", "trainer.max_steps=-1", "trainer.val_check_interval=null",
          "trainer.check_val_every_n_epoch=1", "logger=csv", "seed=5")  # fmt: skip


def _final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return ckpt["state_dict"], ckpt


@pytest.mark.parametrize("precision", ["32-true", "64"])
def test_resume_equals_uninterrupted(compose, tmp_path, precision):
    """2 epochs in one go == 1 epoch, then resume from last.ckpt to 2 epochs: same data order (the sampler is
    seeded by (seed, epoch)), same optimizer state, same parameters."""
    settings = (*RESUME, f"trainer.precision={precision}")
    train(compose(*settings, "trainer.max_epochs=2", run_dir=tmp_path / "whole"))
    train(compose(*settings, "trainer.max_epochs=1", run_dir=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    train(compose(*settings, "trainer.max_epochs=2", f"ckpt_path={last}", run_dir=tmp_path / "resumed"))

    whole, whole_ckpt = _final_state(tmp_path / "whole")
    resumed, resumed_ckpt = _final_state(tmp_path / "resumed")
    first, _ = _final_state(tmp_path / "first")
    assert whole_ckpt["global_step"] == resumed_ckpt["global_step"] == 6
    assert whole.keys() == resumed.keys()
    params = [k for k in whole if k.startswith("net.")]
    for name in params:
        assert whole[name].dtype == (torch.float64 if precision == "64" else torch.float32)
        torch.testing.assert_close(resumed[name], whole[name], rtol=0, atol=1e-12)
    assert any(not torch.equal(first[k], whole[k]) for k in params)  # the second epoch did train


# ---------------------------------------------------------------------------------------------------- seeds
class _Stop(Exception):
    pass


def _initial_weights(compose, monkeypatch, tmp_path, seed_override: str):
    import rnnlab.train as train_module

    build = _UNPATCHED_BUILD_TASK
    seen = {}

    def build_task(cfg, datamodule, seed):
        model = build(cfg, datamodule, seed)
        seen.update(seed=seed, state={k: v.clone() for k, v in model.state_dict().items()}, spec=model.spec)
        raise _Stop

    monkeypatch.setattr(train_module, "build_task", build_task)
    with pytest.raises(_Stop):
        train(compose("model=lstm", "model.hidden_size=8", *CLASSIFY, seed_override, run_dir=tmp_path / "r"))
    return seen


def test_seed_zero_is_honoured(compose, monkeypatch, tmp_path):
    a = _initial_weights(compose, monkeypatch, tmp_path, "seed=0")
    b = _initial_weights(compose, monkeypatch, tmp_path, "seed=0")
    c = _initial_weights(compose, monkeypatch, tmp_path, "seed=1")
    assert a["seed"] == b["seed"] == 0
    assert c["seed"] == 1
    for name in a["state"]:
        assert torch.equal(a["state"][name], b["state"][name]), name
    assert not torch.equal(a["state"]["net.rnn.weight_hh_l0"], c["state"]["net.rnn.weight_hh_l0"])
    arrays = init_parameters(a["spec"], 0)
    torch.testing.assert_close(a["state"]["net.rnn.weight_hh_l0"], torch.from_numpy(arrays["rnn.weight_hh_l0"]).float())


def test_seed_null_draws_a_fresh_seed(compose, monkeypatch, tmp_path):
    a = _initial_weights(compose, monkeypatch, tmp_path, "seed=null")
    b = _initial_weights(compose, monkeypatch, tmp_path, "seed=null")
    assert a["seed"] != b["seed"]
    assert not torch.equal(a["state"]["net.rnn.weight_hh_l0"], b["state"]["net.rnn.weight_hh_l0"])


def test_seed_null_is_recorded(compose, tmp_path):
    cfg = compose("model=rnn", "model.hidden_size=4", *CLASSIFY, "seed=null", "trainer.fast_dev_run=true",
                  "callbacks=none", "logger=csv")  # fmt: skip
    train(cfg)
    first_line = (tmp_path / "run" / "config_resolved.yaml").read_text().splitlines()[0]
    assert re.fullmatch(r"# seed used: \d+", first_line)


# ---------------------------------------------------------------------------------------- other options
def test_progress_bar_off_with_default_callbacks(compose, recorder):
    cfg = compose("model=rnn", "model.hidden_size=4", *CLASSIFY, "trainer.fast_dev_run=true")
    cfg.callbacks.progress_bar = {"_target_": "lightning.pytorch.callbacks.TQDMProgressBar", "refresh_rate": 20}
    assert cfg.trainer.enable_progress_bar is False
    assert math.isfinite(train(cfg).value)
    assert recorder.runs[0].trainer.progress_bar_callback is None


def test_callbacks_none_has_no_timing_or_checkpoint_callback(compose, recorder, tmp_path):
    from lightning.pytorch.callbacks import LearningRateMonitor

    from rnnlab.callbacks import Timing

    cfg = compose("model=rnn", "model.hidden_size=4", *CLASSIFY, "callbacks=none", "logger=csv",
                  "trainer.max_steps=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
                  "trainer.val_check_interval=null")  # fmt: skip
    train(cfg)
    callbacks = recorder.runs[0].trainer.callbacks
    assert not [c for c in callbacks if isinstance(c, Timing | LearningRateMonitor)]
    assert "time/step_ms" not in recorder.runs[0].metrics


def test_callbacks_none_writes_no_checkpoint(compose, tmp_path):
    cfg = compose("model=rnn", "model.hidden_size=4", *CLASSIFY, "callbacks=none", "logger=csv",
                  "trainer.max_steps=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
                  "trainer.val_check_interval=null")  # fmt: skip
    train(cfg)
    assert sorted(tmp_path.rglob("*.ckpt")) == []


def test_last_checkpoint_holds_the_final_state(compose, tmp_path):
    # 400 samples: 288 for training, 9 batches of 32 per epoch; 12 steps end 3 steps into the second epoch
    cfg = compose("model=rnn", "model.hidden_size=4", *CLASSIFY, "trainer.max_steps=12", "trainer.max_epochs=5",
                  "trainer.val_check_interval=null", "trainer.check_val_every_n_epoch=1",
                  "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "logger=csv")  # fmt: skip
    train(cfg)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 12


def test_trainer_error_is_a_config_error(compose):
    cfg = compose("model=rnn", "model.hidden_size=4", *CLASSIFY, "trainer=gpu")  # no GPU on the test machines
    if torch.cuda.is_available():  # pragma: no cover
        pytest.skip("a GPU is available")
    with pytest.raises(ConfigError, match=r"^trainer: "):
        train(cfg)


def test_missing_checkpoint_is_a_config_error(compose, tmp_path):
    cfg = compose(*CLASSIFY, f"ckpt_path={tmp_path}/nope.ckpt")
    with pytest.raises(ConfigError, match="ckpt_path") as info:
        train(cfg)
    assert str(tmp_path / "nope.ckpt") in str(info.value)
    assert not (tmp_path / "run").exists()  # nothing written for a refused run


def test_bad_callback_target_names_the_key(compose):
    cfg = compose("model=rnn", "model.hidden_size=4", *CLASSIFY)
    cfg.callbacks.timing._target_ = "rnnlab.callbacks.NoSuchCallback"
    with pytest.raises(ConfigError, match=r"^callbacks\.timing: "):
        train(cfg)
