"""Training parity over 20 steps: every registered cell and variant, float64, with SGD, Adam, Adagrad and RMSprop.

For each (cell, variant) x optimizer, a classification task is built on each backend as rnnlab.build builds it
(``backend.finish_build``: the torch network in float64 from the float64 draws, so both start from the same
weights) and trained for 20 steps on the same batches (token ids with padding and lengths from 1 to T, so torch
packs and NumPy masks), each backend with its own optimizer from the same config: the NumPy backend's
``loss_and_backward`` and rnnlab.models.numpy.optim (``configure_optimizers``), the torch backend's loss, autograd
and torch.optim. The per-step losses and the final parameters agree to 1e-8 relative.

That bound is meaningful only where torch agrees with itself to it, which a companion test asserts in the same
settings: each optimizer with its shape, on a cell torch runs fused (nn.LSTM) and on one its reference module runs
(gru/mgu), the torch run repeated with 2 threads instead of 1 (torch.set_num_threads) agrees with it to the same
1e-8 over the same 20 steps (a sample: 2 threads spin on a busy machine). The shapes rotate over the optimizers
(1 layer; 2 bidirectional layers; 2 layers; 1 bidirectional layer), so every cell trains 1 and 2 layers and
bidirectional stacks of both; the Elman RNN also runs with relu. With ``-s`` the module prints each case and the
worst relative differences per optimizer.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import torch

from rnnlab.models.init import init_parameters
from rnnlab.models.spec import NetSpec
from rnnlab.registry import CELLS
from rnnlab.tasks.classify import ClassifyTask

pytestmark = pytest.mark.unit

STEPS = 20
RTOL = 1e-8
B, T, VOCAB, CLASSES, SEED = 4, 7, 9, 3, 11
# each optimizer with the parts of its formula switched on (momentum, weight decay, lr decay, accumulator, ...)
OPTIMIZERS: dict[str, dict[str, Any]] = {
    "sgd": {"name": "sgd", "lr": 0.2, "momentum": 0.9, "dampening": 0.0, "nesterov": True, "weight_decay": 1e-3},
    "adam": {"name": "adam", "lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 1e-3, "amsgrad": False},
    "adagrad": {"name": "adagrad", "lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1, "eps": 1e-10,
                "weight_decay": 0.0},
    "rmsprop": {"name": "rmsprop", "lr": 0.01, "alpha": 0.9, "eps": 1e-6, "weight_decay": 1e-3, "momentum": 0.5,
                "centered": True},
}  # fmt: skip
SHAPES = {"sgd": (1, False), "adam": (2, True), "adagrad": (2, False), "rmsprop": (1, True)}  # (layers, bidirectional)
VARIANTS = [(e.name, e.variant, "tanh") for e in CELLS.entries()] + [("rnn", "standard", "relu")]
WORST: dict[str, dict[str, float]] = {}  # optimizer -> the worst relative differences seen, for the summary


def build(backend: str, cell: str, variant: str, nonlinearity: str, optimizer: str) -> ClassifyTask:
    layers, bidirectional = SHAPES[optimizer]
    spec = NetSpec(cell, vocab_size=VOCAB, embed_dim=5, hidden_size=6, num_layers=layers, bidirectional=bidirectional,
                   num_outputs=CLASSES, nonlinearity=nonlinearity, padding_idx=0, variant=variant)  # fmt: skip
    task = ClassifyTask(spec=spec.to_dict(), optimizer=OPTIMIZERS[optimizer], task={"name": "classify"},
                        vocab=[f"t{i}" for i in range(VOCAB)], seed=SEED, backend=backend, dtype="float64")  # fmt: skip
    task.backend.finish_build(task, True, lambda: init_parameters(spec, SEED))
    return task


def batches() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """STEPS batches of token ids (padding 0 past each length; one sequence of every batch is T long), lengths and
    labels."""
    rng = np.random.default_rng(3)
    out = []
    for _ in range(STEPS):
        lengths = rng.integers(1, T + 1, B)
        lengths[rng.integers(B)] = T
        x = rng.integers(1, VOCAB, (B, T))
        x[np.arange(T)[None, :] >= lengths[:, None]] = 0
        out.append((torch.as_tensor(x), torch.as_tensor(lengths), torch.as_tensor(rng.integers(0, CLASSES, B))))
    return out


def train_numpy(task: ClassifyTask, data: list[Any]) -> tuple[list[float], dict[str, np.ndarray]]:
    backend = task.backend
    optimizer = backend.configure_optimizers(task)  # rnnlab.models.numpy.optim, presented as a torch optimizer
    losses = []
    for batch in data:
        optimizer.zero_grad()
        loss, _, _ = backend.loss_and_backward(task, batch)
        optimizer.step()
        losses.append(float(loss))
    return losses, backend.weights(task.net)


def train_torch(task: ClassifyTask, data: list[Any], threads: int) -> tuple[list[float], dict[str, np.ndarray]]:
    backend = task.backend
    optimizer = backend.configure_optimizers(task)  # torch.optim
    losses = []
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    assert torch.get_num_threads() == threads
    try:
        for i, batch in enumerate(data):
            optimizer.zero_grad()
            loss, _, _ = backend.training_step(task, batch, i)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    finally:
        torch.set_num_threads(before)
    return losses, backend.weights(task.net)


def differences(a: tuple[list[float], dict[str, np.ndarray]], b: tuple[list[float], dict[str, np.ndarray]]):
    """(worst relative difference of the per-step losses, of the final parameters: max |a - b| / max |b| per
    parameter)."""
    la, lb = np.array(a[0]), np.array(b[0])
    losses = float(np.max(np.abs(la - lb) / np.abs(lb)))
    assert a[1].keys() == b[1].keys()
    params = max(float(np.max(np.abs(a[1][k] - b[1][k])) / np.max(np.abs(b[1][k]))) for k in b[1])
    return losses, params


@pytest.fixture(scope="module", autouse=True)
def summary():
    """With -s: the worst relative differences per optimizer, once the module's tests have run."""
    started = time.perf_counter()
    yield
    print(f"\n20-step training parity, float64, rtol {RTOL:g} ({time.perf_counter() - started:.1f} s)")
    for name in sorted(WORST):
        found = ", ".join(f"{key} {value:.2e}" for key, value in WORST[name].items())
        print(f"  {name:8s} {found}")


def record(optimizer: str, **found: float) -> None:
    worst = WORST.setdefault(optimizer, {})
    for key, value in found.items():
        worst[key] = max(worst.get(key, 0.0), value)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize(("cell", "variant", "nonlinearity"), VARIANTS,
                         ids=[f"{c}-{v}" + ("-relu" if n == "relu" else "") for c, v, n in VARIANTS])  # fmt: skip
def test_twenty_steps_agree_on_both_backends(cell, variant, nonlinearity, optimizer):
    data = batches()
    numpy_task = build("numpy", cell, variant, nonlinearity, optimizer)
    initial = numpy_task.backend.weights(numpy_task.net)
    numpy_run = train_numpy(numpy_task, data)
    torch_run = train_torch(build("torch", cell, variant, nonlinearity, optimizer), data, threads=1)
    moved = max(float(np.max(np.abs(numpy_run[1][k] - w)) / np.max(np.abs(w))) for k, w in initial.items())
    assert moved > 1e-2  # it trains: the comparison is not of a network standing still
    losses, params = differences(numpy_run, torch_run)
    record(optimizer, **{"numpy vs torch, losses": losses, "parameters": params})
    label = f"{cell}/{variant} ({nonlinearity}) {optimizer} {SHAPES[optimizer]}"
    print(f"{label}: numpy vs torch {losses:.2e} (losses) {params:.2e} (final parameters)")
    assert losses <= RTOL, f"{label}: the losses differ by {losses:.2e} (relative)"
    assert params <= RTOL, f"{label}: the final parameters differ by {params:.2e} (relative)"


# torch's two code paths in these settings: a fused module (nn.LSTM) and the reference module that runs a variant's
# torch_step. A torch run with 2 threads is slow on a busy machine (OpenMP threads spin), hence a sample.
FLOOR_CELLS = [("lstm", "standard"), ("gru", "mgu")]


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize(("cell", "variant"), FLOOR_CELLS, ids=[f"{c}-{v}" for c, v in FLOOR_CELLS])
def test_torch_agrees_with_itself_across_thread_counts(cell, variant, optimizer):
    """The floor under the bound above: torch with 1 and with 2 threads agrees to RTOL over the same 20 steps."""
    data = batches()
    one = train_torch(build("torch", cell, variant, "tanh", optimizer), data, threads=1)
    two = train_torch(build("torch", cell, variant, "tanh", optimizer), data, threads=2)
    losses, params = differences(two, one)
    record(optimizer, **{"torch 1 vs 2 threads, losses": losses, "parameters (threads)": params})
    label = f"{cell}/{variant} {optimizer} {SHAPES[optimizer]}"
    print(f"{label}: torch with 1 vs 2 threads {losses:.2e} (losses) {params:.2e} (final parameters)")
    assert losses <= RTOL, f"{label}: torch with 1 and 2 threads differ by {losses:.2e} in the losses"
    assert params <= RTOL, f"{label}: torch with 1 and 2 threads differ by {params:.2e} in the parameters"
