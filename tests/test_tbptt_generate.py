"""Stateful truncated BPTT (data.tbptt=true), rnnlab-generate on its checkpoints, the next-character picture.

Stream layout against hand-written windows; the carried state against a hand-written torch loop (detach, reset
per epoch, evaluation carrying its own state); torch/NumPy parity over 22 float64 steps; exact resume on the
NumPy backend mid-epoch and at an epoch boundary; the command line on checkpoints of both backends.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from rnnlab.data.datamodules import CharCorpusDataModule, CharStreams, StreamLoader
from rnnlab.errors import DataError
from rnnlab.generate import main as generate_main
from rnnlab.tasks.language_model import LanguageModelTask, next_char_probs, next_char_probs_figure
from rnnlab.train import train

pytestmark = pytest.mark.compose

GENERATE = Path(sys.executable).parent / "rnnlab-generate"
TBPTT = ("task=language_model", "data=shakespeare", "data.tbptt=true", "data.seq_len=10", "data.batch_size=4",
         "model.hidden_size=8", "model.embed_dim=5", "logger=csv", "trainer.limit_val_batches=3",
         "trainer.limit_test_batches=2", "task.sample_length=24", "seed=7")  # fmt: skip


class Record(L.Callback):
    """Per training step: the loss (float64) and whether the carried state is free of autograd history; per
    validation (not the sanity check): val/loss."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.detached: list[bool] = []
        self.val_losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss.detach().double()))
        state = pl_module.train_state
        parts = state if isinstance(state, tuple) else (state,)
        self.detached.append(all(not isinstance(p, torch.Tensor) or p.grad_fn is None for p in parts))

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.val_losses.append(float(trainer.callback_metrics["val/loss"]))


def run(compose, overrides: tuple[str, ...], run_dir: Path, monkeypatch) -> tuple[Record, Any]:
    """train(cfg) with a Record callback; returns it and the trained task module."""
    record = Record()
    result = train(compose(*overrides, run_dir=run_dir), callbacks=[record])
    task = result.objects["model"]
    task.recorded_datamodule = result.objects["datamodule"]
    return record, task


# ------------------------------------------------------------------------------------------- stream layout
@pytest.mark.unit
def test_stream_windows_by_hand():
    """23 tokens, 3 streams of m = 22 // 3 = 7 inputs, windows of 2: 3 batches; row b of batch i+1 continues
    row b of batch i, targets are the next tokens."""
    ds = CharStreams(np.arange(23, dtype=np.int32), batch_size=3, seq_len=2)
    assert len(ds) == 3
    expected_x = [[[0, 1], [7, 8], [14, 15]], [[2, 3], [9, 10], [16, 17]], [[4, 5], [11, 12], [18, 19]]]
    for i, want in enumerate(expected_x):
        x, y = ds[i]
        assert x.dtype == torch.long
        assert x.tolist() == want
        assert y.tolist() == (torch.tensor(want) + 1).tolist()
    with pytest.raises(IndexError):
        ds[3]


@pytest.mark.unit
def test_datamodule_streams_continue_in_order(tmp_path):
    text = "".join(chr(ord("a") + (i * 7) % 26) for i in range(400))
    path = tmp_path / "tiny.txt"
    path.write_text(text)
    dm = CharCorpusDataModule("text_file", str(path), seq_len=5, val_fraction=0.2, test_fraction=0.2, batch_size=4,
                              tbptt=True)  # fmt: skip
    dm.setup("fit")
    ids = torch.as_tensor(dm.vocab.encode(text))
    starts = {"train": 0, "val": 240, "test": 320}  # 400 - 80 - 80 train characters, then val, then test
    for split, loader in (("train", dm.train_dataloader()), ("val", dm.val_dataloader()),
                          ("test", dm.test_dataloader())):  # fmt: skip
        assert isinstance(loader, StreamLoader)
        size = {"train": 240, "val": 80, "test": 80}[split]
        m = (size - 1) // 4
        batches = list(loader)
        assert len(batches) == len(loader) == m // 5
        assert batches[0][0].tolist() == next(iter(loader))[0].tolist()  # no shuffling: every epoch the same
        xs = torch.cat([b[0] for b in batches], dim=1)  # [4, windows * 5]: each row must be one stream
        ys = torch.cat([b[1] for b in batches], dim=1)
        for row in range(4):
            first = starts[split] + row * m
            assert xs[row].tolist() == ids[first : first + xs.shape[1]].tolist()
            assert ys[row].tolist() == ids[first + 1 : first + 1 + xs.shape[1]].tolist()
    # the default layout is unchanged: shuffled, independent windows
    plain = CharCorpusDataModule("text_file", str(path), seq_len=5, val_fraction=0.2, test_fraction=0.2,
                                 batch_size=4)  # fmt: skip
    plain.setup("fit")
    assert not isinstance(plain.train_dataloader(), StreamLoader)


@pytest.mark.unit
def test_split_too_short_for_the_streams(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("abcdefghij" * 20)  # val and test: 20 characters
    dm = CharCorpusDataModule("text_file", str(path), seq_len=5, val_fraction=0.1, test_fraction=0.1, batch_size=4,
                              tbptt=True)  # fmt: skip
    with pytest.raises(DataError, match=r"data.tbptt=true: the val split .* data.batch_size \* data.seq_len \+ 1 = 21"):
        dm.setup("fit")


@pytest.mark.unit
def test_tbptt_is_a_data_option(raw_compose):
    assert raw_compose("data=shakespeare").data.tbptt is False
    assert raw_compose("data=text_file", "data.path=x.txt", "data.tbptt=true").data.tbptt is True


# ------------------------------------------------------------------------------------------- carried state
def reference_losses(task: LanguageModelTask, batches: list, epochs: int, lr: float, val_batches: list,
                     carry: bool = True, reset: bool = True) -> tuple[list[float], list[float]]:  # fmt: skip
    """The scheme by hand on a fresh float64 torch network: per epoch, SGD over ``batches`` carrying the detached
    final state (zeros at the start of the epoch if ``reset``); after every second step the mean loss over
    ``val_batches``, carrying the evaluation's own state from zeros (the training state is left alone)."""
    from rnnlab.models.init import init_parameters
    from rnnlab.models.torch.recurrent import TorchRecurrentNet

    net = TorchRecurrentNet(task.spec, task.hparams.seed).double()
    net.load_arrays(init_parameters(task.spec, task.hparams.seed))
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    losses, val = [], []
    state = None
    for _ in range(epochs):
        if reset:
            state = None
        for x, y in batches:
            out, final = net(x, state=state if carry else None)
            loss = F.cross_entropy(net.head(out).reshape(-1, net.spec.num_outputs), y.reshape(-1))
            opt.zero_grad()
            loss.backward()  # a state kept with its graph would fail here on the second batch
            opt.step()
            state = tuple(s.detach() for s in final) if isinstance(final, tuple) else final.detach()
            losses.append(loss.item())
            if len(losses) % 2 == 0:
                with torch.no_grad():
                    eval_state, total = None, 0.0
                    for xv, yv in val_batches:
                        out, eval_state = net(xv, state=eval_state)
                        logits = net.head(out).reshape(-1, net.spec.num_outputs)
                        total += float(F.cross_entropy(logits, yv.reshape(-1)))
                    val.append(total / len(val_batches))
    return losses, val


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_torch_state_is_carried_detached_and_reset(compose, tmp_path, monkeypatch, cell):
    """2 epochs of 4 batches with a validation every 2 steps: every step's loss and the 4 val/loss values equal
    the hand-written loop (so a mid-epoch validation leaves the training state alone); they differ from the
    loop without carrying and from the one without the reset."""
    overrides = (*TBPTT, f"model={cell}", "model.backend=torch", "trainer.precision=64", "optimizer=sgd",
                 "optimizer.lr=0.5", "trainer.max_epochs=2", "trainer.limit_train_batches=4",
                 "trainer.gradient_clip_val=null", "trainer.val_check_interval=2")  # fmt: skip
    record, task = run(compose, overrides, tmp_path / "run", monkeypatch)
    dm = task.recorded_datamodule
    batches = [b for _, b in zip(range(4), dm.train_dataloader(), strict=False)]
    val_batches = [b for _, b in zip(range(3), dm.val_dataloader(), strict=False)]
    want, want_val = reference_losses(task, batches, 2, 0.5, val_batches)
    assert len(record.losses) == 8
    assert len(record.val_losses) == 4
    np.testing.assert_allclose(record.losses, want, rtol=1e-10)
    np.testing.assert_allclose(record.val_losses, want_val, rtol=1e-6)  # val/loss is logged in float32
    assert all(record.detached)
    no_carry, _ = reference_losses(task, batches, 2, 0.5, val_batches, carry=False)
    no_reset, _ = reference_losses(task, batches, 2, 0.5, val_batches, reset=False)
    assert abs(no_carry[1] - want[1]) > 1e-6  # batch 1 starts from batch 0's state
    assert no_reset[:4] == want[:4]
    assert abs(no_reset[4] - want[4]) > 1e-6  # epoch 2 starts from zeros


@pytest.fixture(scope="module")
def parity_runs(tmp_path_factory, compose_factory) -> dict[str, tuple[Record, Any, Path]]:
    """Both backends, float64, 2-layer LSTM, Adam, clipping, 22 steps with a validation every 11 (the train state
    must survive a mid-epoch evaluation); the checkpoints serve the generation tests."""
    root = tmp_path_factory.mktemp("tbptt")
    common = (*TBPTT, "model=lstm", "model.num_layers=2", "optimizer=adam", "optimizer.lr=0.02",
              "trainer.precision=64", "trainer.max_steps=22", "trainer.max_epochs=null",
              "trainer.gradient_clip_val=0.5", "trainer.val_check_interval=11",
              "trainer.check_val_every_n_epoch=null")  # fmt: skip
    mp = pytest.MonkeyPatch()
    mp.chdir(root)  # anything written relative to the working directory stays in the temp dir
    out = {}
    try:
        for backend in ("torch", "numpy"):
            record, task = run(lambda *o, run_dir: compose_factory(o, run_dir),
                               (*common, f"model.backend={backend}"), root / backend, mp)  # fmt: skip
            out[backend] = (record, task, root / backend)
    finally:
        mp.undo()
    return out


def test_training_parity_with_tbptt(parity_runs):
    losses = {backend: run[0].losses for backend, run in parity_runs.items()}
    assert len(losses["torch"]) == len(losses["numpy"]) == 22
    np.testing.assert_allclose(losses["numpy"], losses["torch"], rtol=1e-8, atol=0)
    assert losses["torch"][-1] < losses["torch"][0]
    np.testing.assert_allclose(parity_runs["numpy"][0].val_losses, parity_runs["torch"][0].val_losses, rtol=1e-6)
    torch_task, numpy_task = parity_runs["torch"][1], parity_runs["numpy"][1]
    for name, p in torch_task.net.named_parameters():
        np.testing.assert_allclose(numpy_task.net.params[name], p.detach().numpy(), rtol=1e-7, atol=1e-9)
    # the carried state itself: the NumPy arrays equal torch's detached tensors
    for a, t in zip(numpy_task.train_state, torch_task.train_state, strict=True):
        assert isinstance(a, np.ndarray)
        assert t.grad_fn is None
        np.testing.assert_allclose(a, t.numpy(), rtol=1e-7, atol=1e-10)
    assert all(parity_runs["torch"][0].detached)


# -------------------------------------------------------------------------------------------------- resume
RESUME = (*TBPTT, "model=lstm", "model.num_layers=2", "model.dropout=0.3", "model.backend=numpy",
          "optimizer=adam", "trainer.precision=64", "trainer.max_epochs=null", "trainer.limit_train_batches=6",
          "trainer.limit_val_batches=2", "trainer.val_check_interval=1.0", "task.sample_length=0")  # fmt: skip


def checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def test_numpy_resume_is_exact(compose, tmp_path, monkeypatch):
    """10 steps in one go (epochs of 6: a reset at step 6) == 3 steps + resume (mid-epoch) == 6 steps + resume
    (epoch boundary): the same losses after the break and bit-identical parameters, state and dropout RNG.
    Without the saved state the mid-epoch resume differs."""
    whole, _ = run(compose, (*RESUME, "trainer.max_steps=10"), tmp_path / "whole", monkeypatch)
    full = checkpoint(tmp_path / "whole")
    for stop in (3, 6):
        run(compose, (*RESUME, f"trainer.max_steps={stop}"), tmp_path / f"first{stop}", monkeypatch)
        assert "tbptt_state" in checkpoint(tmp_path / f"first{stop}")
        last = tmp_path / f"first{stop}" / "checkpoints" / "last.ckpt"
        resumed, _ = run(compose, (*RESUME, "trainer.max_steps=10", f"ckpt_path={last}"), tmp_path / f"re{stop}",
                         monkeypatch)  # fmt: skip
        assert resumed.losses == whole.losses[stop:]
        again = checkpoint(tmp_path / f"re{stop}")
        assert again["global_step"] == full["global_step"] == 10
        for name, value in full["numpy_backend"]["params"].items():
            torch.testing.assert_close(again["numpy_backend"]["params"][name], value, rtol=0, atol=0)
        for a, b in zip(again["tbptt_state"], full["tbptt_state"], strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert again["numpy_backend"]["rng"] == full["numpy_backend"]["rng"]
    # teeth: the same mid-epoch checkpoint without its carried state starts step 4 from zeros, and without the
    # loader's position from window 0
    drops = {"stateless": lambda c: c.pop("tbptt_state"),
             "positionless": lambda c: c["loops"]["fit_loop"]["state_dict"].pop("combined_loader")}  # fmt: skip
    for name, drop in drops.items():
        broken = checkpoint(tmp_path / "first3")
        drop(broken)
        torch.save(broken, tmp_path / f"{name}.ckpt")
        other, _ = run(compose, (*RESUME, "trainer.max_steps=4", f"ckpt_path={tmp_path / name}.ckpt"),
                       tmp_path / name, monkeypatch)  # fmt: skip
        assert abs(other.losses[0] - whole.losses[3]) > 1e-6, name


# ------------------------------------------------------------------------------------ next-char picture
@pytest.mark.unit
def test_next_char_probs_by_hand():
    logits = np.array([1.0, 3.0, 2.0, -1.0])
    p = next_char_probs(logits, temperature=0.5, top_k=None)
    e = np.exp(logits / 0.5)
    np.testing.assert_allclose(p, e / e.sum(), rtol=1e-14)
    p2 = next_char_probs(logits, temperature=1.0, top_k=2)
    np.testing.assert_allclose(p2, [0, np.e**3 / (np.e**3 + np.e**2), np.e**2 / (np.e**3 + np.e**2), 0], rtol=1e-14)


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_recording_keeps_the_sample_and_matches_the_draws(parity_runs, backend):
    task = parity_runs[backend][1]
    plain = task.generate("ROMEO:", 30, temperature=0.9, top_k=None, seed=2)
    probs: list[np.ndarray] = []
    assert task.generate("ROMEO:", 30, temperature=0.9, top_k=None, seed=2, record=probs) == plain
    assert len(probs) == 30
    np.testing.assert_allclose(np.sum(probs, axis=1), 1.0, rtol=1e-12)
    # step 0's distribution is the softmax of the prompt's last logits at temperature 0.9
    with torch.no_grad():
        logits = task(torch.as_tensor(task.vocab.encode("ROMEO:"))[None])[0][0, -1].double().numpy()
    e = np.exp((logits - logits.max()) / 0.9)
    np.testing.assert_allclose(probs[0], e / e.sum(), rtol=1e-9)
    assert (np.stack(probs)[np.arange(30), task.vocab.encode(plain[6:])] > 0).all()  # every drawn char had p > 0


def test_picture_is_written_after_each_validation(parity_runs):
    for backend, (_, task, run_dir) in parity_runs.items():
        pngs = sorted((run_dir / "figures" / "samples_next_char_probs").glob("step_*.png"))
        assert [p.name for p in pngs] == ["step_0000011.png", "step_0000022.png"], backend
        assert pngs[-1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert task.last_probs_figure == pngs[-1]


@pytest.mark.unit
def test_picture_rows_and_marks():
    itos = ["\n", " ", "$", "a", "b", "c"]
    probs = np.array([[0.05, 0.05, 0.0, 0.7, 0.1, 0.1], [0.0, 0.6, 0.0, 0.1, 0.2, 0.1]])
    fig = next_char_probs_figure(probs, np.array([3, 1]), itos, 0.8, None, step=5)
    ax = fig.axes[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert rows[:2] == ["a", "␣"]  # ranked by summed probability: a 0.8, space 0.65
    assert "\\$" not in rows  # "$" never reached the top 5 of any step
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "␣"]
    image = ax.get_images()[0].get_array()
    np.testing.assert_allclose(image[0], [0.7, 0.1])  # row "a" over the two steps


# ---------------------------------------------------------------------------------------------- generation
def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(GENERATE), *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.cli
@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_generate_command_on_tbptt_checkpoints(parity_runs, backend):
    ckpt = parity_runs[backend][2] / "checkpoints" / "last.ckpt"
    result = cli(f"ckpt_path={ckpt}", "prompt=ROMEO:", "length=40", "temperature=0.7", "seed=3")
    assert result.returncode == 0, result.stderr
    task = LanguageModelTask.load_from_checkpoint(ckpt, map_location="cpu")
    assert result.stdout == task.generate("ROMEO:", 40, temperature=0.7, top_k=None, seed=3) + "\n"


def generate_in_process(capsys, *args: str) -> tuple[int, str, str]:
    try:
        generate_main(list(args))
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_generate_seed_temperature_and_top_k(parity_runs, capsys):
    ckpt = parity_runs["numpy"][2] / "checkpoints" / "last.ckpt"
    base = (f"ckpt_path={ckpt}", "length=60")
    same = [generate_in_process(capsys, *base, "seed=5")[1] for _ in range(2)]
    assert same[0] == same[1]
    assert len(same[0]) == 60 + 1  # "" prompt: the sample alone (its context is a newline), printed with "\n"
    assert generate_in_process(capsys, *base, "seed=6")[1] != same[0]
    greedy = {generate_in_process(capsys, *base, "top_k=1", f"seed={s}")[1] for s in (1, 2)}
    assert len(greedy) == 1  # top_k=1 draws the most likely character whatever the seed
    cold = generate_in_process(capsys, *base, "temperature=1e-4", "seed=9")[1]
    assert cold in greedy  # a temperature near 0 is greedy too
    hot = generate_in_process(capsys, *base, "temperature=50", "seed=9")[1]
    assert hot != cold


@pytest.mark.cli
def test_generate_errors_are_one_line(parity_runs, capsys, compose, tmp_path):
    ckpt = parity_runs["torch"][2] / "checkpoints" / "last.ckpt"
    junk = tmp_path / "junk.ckpt"
    junk.write_text("hello")
    train(compose("task=classify", "data=synthetic_text", "data.num_samples=200", "data.batch_size=16",
                  "data.min_len=3", "data.max_len=6", "model.hidden_size=4", "model.embed_dim=3", "trainer.max_steps=1",
                  "trainer.max_epochs=null", "run_test=false", "logger=csv", run_dir=tmp_path / "cls"))  # fmt: skip
    classify = tmp_path / "cls" / "checkpoints" / "last.ckpt"
    capsys.readouterr()  # the training run's report
    cases = {
        (f"ckpt_path={tmp_path / 'nope.ckpt'}",): "ckpt_path: file not found",
        (f"ckpt_path={junk}",): "ckpt_path: not a checkpoint",
        (f"ckpt_path={classify}",): "a task=classify checkpoint; rnnlab-generate needs task=language_model",
        (f"ckpt_path={ckpt}", "prompt=ROMEO\u00a7"): "prompt: character '\u00a7' is not in this model's vocabulary",
        (f"ckpt_path={ckpt}", "temperature=-1"): "temperature must be a finite number > 0",
        (f"ckpt_path={ckpt}", "length=0"): "length must be in [1, 1000000]",
        (f"ckpt_path={ckpt}", "length=ten"): "length must be an integer",
    }
    for args, message in cases.items():
        code, out, err = generate_in_process(capsys, *args)
        assert code == 1, args
        assert out == ""
        assert err.count("\n") == 1, err
        assert err.startswith("rnnlab-generate: error: "), err
        assert message in err, err
    result = cli(f"ckpt_path={classify}")  # and through the installed command
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "needs task=language_model" in result.stderr


def test_fgr_carries_its_five_states_through_tbptt_and_generation(compose, tmp_path, monkeypatch, capsys):
    """model=lstm model.variant=fgr with data.tbptt=true: the carried state is the cell's five states (h, c and the
    previous step's gates i, f, o), equal on both backends after the last step (every step's loss agrees as the
    LSTM's do, with a validation in between), detached on torch and saved in the checkpoint; rnnlab-generate samples
    from either backend's checkpoint as the task itself does."""
    common = (*TBPTT, "model=lstm", "model.variant=fgr", "model.num_layers=2", "optimizer=adam", "optimizer.lr=0.02",
              "trainer.precision=64", "trainer.max_steps=8", "trainer.max_epochs=null", "trainer.val_check_interval=4",
              "trainer.check_val_every_n_epoch=null", "task.sample_length=0")  # fmt: skip
    runs = {b: run(compose, (*common, f"model.backend={b}"), tmp_path / b, monkeypatch) for b in ("torch", "numpy")}
    capsys.readouterr()  # the training runs' reports
    np.testing.assert_allclose(runs["numpy"][0].losses, runs["torch"][0].losses, rtol=1e-8, atol=0)
    np.testing.assert_allclose(runs["numpy"][0].val_losses, runs["torch"][0].val_losses, rtol=1e-6)
    assert len(runs["torch"][0].losses) == 8
    assert all(runs["torch"][0].detached)
    numpy_state, torch_state = runs["numpy"][1].train_state, runs["torch"][1].train_state
    assert len(numpy_state) == len(torch_state) == 5
    for a, t in zip(numpy_state, torch_state, strict=True):
        assert t.grad_fn is None
        np.testing.assert_allclose(a, t.numpy(), rtol=1e-7, atol=1e-10)
        assert np.abs(a).max() > 0
    for backend in ("torch", "numpy"):
        ckpt = tmp_path / backend / "checkpoints" / "last.ckpt"
        assert len(checkpoint(tmp_path / backend)["tbptt_state"]) == 5
        code, out, err = generate_in_process(capsys, f"ckpt_path={ckpt}", "prompt=ROMEO:", "length=30",
                                             "temperature=0.7", "seed=3")  # fmt: skip
        assert code == 0, err
        task = LanguageModelTask.load_from_checkpoint(ckpt, map_location="cpu")
        assert out == task.generate("ROMEO:", 30, temperature=0.7, top_k=None, seed=3) + "\n"
