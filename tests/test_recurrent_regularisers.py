"""Variational dropout and zoneout inside the recurrence (rnnlab/models/regularisers.py), on both backends.

Oracles: torch autograd on the cell's torch reference module given the same masks (every registered cell, float64,
train and evaluation, layers, directions, lengths); finite differences of the NumPy forward with its masks fixed;
and a plain loop written here from the equations of Gal & Ghahramani and Krueger et al. that owes nothing to
either backend. Then the same losses step by step when both backends train from the command line.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import central_difference
from test_guard import TASKS as TASK_SETTINGS
from test_guard import train_losses

from rnnlab.errors import ConfigError
from rnnlab.models.init import init_parameters
from rnnlab.models.numpy.net import NumpyRecurrentNet
from rnnlab.models.regularisers import MaskSource, Regularisers
from rnnlab.models.spec import NetSpec
from rnnlab.models.torch.recurrent import TorchRecurrentNet
from rnnlab.registry import CELLS

pytestmark = pytest.mark.unit

ALL = {"input_dropout": 0.3, "recurrent_dropout": 0.4, "output_dropout": 0.2, "zoneout": 0.3, "zoneout_c": 0.5}
CELL_IDS = [(e.name, e.variant) for e in CELLS.entries()]
SHAPES = [(1, False, 0, False), (2, True, 4, True), (3, False, 0, True)]  # layers, bidirectional, embed, lengths
B, T, V, SEED, MASK_SEED = 4, 6, 7, 3, 11


def nets(cell: str, variant: str, layers: int, bi: bool, embed: int, **regs: float):
    spec = NetSpec(cell, vocab_size=V, embed_dim=embed, hidden_size=5, num_layers=layers, bidirectional=bi,
                   num_outputs=3, variant=variant, **regs)  # fmt: skip
    numpy_net = NumpyRecurrentNet(spec, SEED, np.float64)
    torch_net = TorchRecurrentNet(spec, SEED).double()
    torch_net.load_arrays(init_parameters(spec, SEED))
    return numpy_net, torch_net


def inputs(lengths: bool) -> tuple[np.ndarray, np.ndarray | None]:
    rng = np.random.default_rng(0)
    return rng.integers(0, V, (B, T)), (np.array([6, 3, 5, 2]) if lengths else None)


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def relative(a, b) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.mark.parametrize(("cell", "variant"), CELL_IDS, ids=[f"{c}-{v}" for c, v in CELL_IDS])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_numpy_equals_torch_autograd_with_the_same_masks(cell, variant, train):
    for layers, bi, embed, lengths in SHAPES:
        numpy_net, torch_net = nets(cell, variant, layers, bi, embed, **ALL)
        torch_net.train(train)
        x, lens = inputs(lengths)
        numpy_net.masks.reseed(MASK_SEED)
        torch_net.masks.reseed(MASK_SEED)
        out, final, cache = numpy_net.forward(x, lens, train=train)
        t_out, t_final = torch_net(torch.as_tensor(x), None if lens is None else torch.as_tensor(lens))
        rng = np.random.default_rng(1)
        G = rng.normal(size=out.shape)
        Gf = tuple(rng.normal(size=f.shape) for f in as_tuple(final))
        loss = (t_out * torch.as_tensor(G)).sum()
        loss = loss + sum((a * torch.as_tensor(g)).sum() for a, g in zip(as_tuple(t_final), Gf, strict=True))
        loss.backward()
        numpy_net.backward(G, Gf if len(Gf) > 1 else Gf[0], cache)
        where = f"{cell}/{variant} layers={layers} bidirectional={bi} lengths={lengths}"
        assert relative(out, t_out.detach().numpy()) <= 1e-10, where
        for a, b in zip(as_tuple(final), as_tuple(t_final), strict=True):
            assert relative(a, b.detach().numpy()) <= 1e-10, where
        for name, p in torch_net.named_parameters():
            if not name.startswith("head"):
                assert relative(numpy_net.grads[name], p.grad.numpy()) <= 1e-10, f"{where}: {name}"
        # and the masks act: without them the outputs differ
        plain, _ = nets(cell, variant, layers, bi, embed)
        plain_out, _, _ = plain.forward(x, lens, train=train)
        assert np.max(np.abs(plain_out - out)) > 1e-3, where


@pytest.mark.parametrize(("cell", "variant"), [("lstm", "standard"), ("gru", "standard"), ("lstm", "cifg")])
def test_finite_differences_with_the_masks_fixed(cell, variant):
    numpy_net, _ = nets(cell, variant, 2, True, 0, **ALL)
    x, lens = inputs(True)
    G = np.random.default_rng(1).normal(size=(B, T, 10))

    def loss() -> float:
        numpy_net.masks.reseed(MASK_SEED)
        out, _, _ = numpy_net.forward(x, lens, train=True)
        return float(np.vdot(out, G))

    numpy_net.masks.reseed(MASK_SEED)
    _, _, cache = numpy_net.forward(x, lens, train=True)
    numpy_net.backward(G, None, cache)
    rng = np.random.default_rng(2)
    for name in ("rnn.weight_ih_l0", "rnn.weight_hh_l0_reverse", "rnn.bias_hh_l1", "rnn.weight_hh_l1"):
        p = numpy_net.params[name]
        for flat in rng.choice(p.size, 6, replace=False):
            idx = np.unravel_index(flat, p.shape)
            numeric = central_difference(p, idx, loss)
            analytic = numpy_net.grads[name][idx]
            assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), f"{name}{idx}"


def test_the_equations_by_hand():
    """One-layer tanh RNN and LSTM: the masks of the source, applied as the papers write them."""
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    for cell in ("rnn", "lstm"):
        numpy_net, _ = nets(cell, "standard", 1, False, 0, **ALL)
        x, _ = inputs(False)
        numpy_net.masks.reseed(MASK_SEED)
        out, _, _ = numpy_net.forward(x, train=True)
        source = MaskSource(Regularisers(**ALL), 0)
        source.reseed(MASK_SEED)
        states = ("h",) if cell == "rnn" else ("h", "c")
        (m,) = source.draw([V], 1, 5, states, T, B, np.float64)
        p = numpy_net.params
        W, U, b = p["rnn.weight_ih_l0"], p["rnn.weight_hh_l0"], p["rnn.bias_ih_l0"] + p["rnn.bias_hh_l0"]
        h, c = np.zeros((B, 5)), np.zeros((B, 5))
        expected = []
        for t in range(T):
            x_t = np.eye(V)[x[:, t]] * m.input  # one mask per sequence on the input
            a = x_t @ W.T + b + (h * m.directions[0].state) @ U.T  # and on h_{t-1} where the cell reads it
            if cell == "rnn":
                h_new, c_new = np.tanh(a), c
            else:
                i, f, g, o = np.split(a, 4, axis=1)
                c_new = sig(f) * c + sig(i) * np.tanh(g)
                h_new = sig(o) * np.tanh(c_new)
            z = m.directions[0].zone  # zoneout: keep the previous value where z = 1, per step
            h = z[0][t] * h + (1 - z[0][t]) * h_new
            if cell == "lstm":
                c = z[1][t] * c + (1 - z[1][t]) * c_new
            expected.append(h * m.output)  # and one mask per sequence on the output
        np.testing.assert_allclose(out, np.stack(expected, axis=1), rtol=1e-12, atol=1e-14)
        assert 0 < np.mean(m.directions[0].state == 0) < 1  # the state mask drops some units and keeps others


def test_zoneout_in_evaluation_and_generation():
    """Evaluation keeps zoneout's expectation p s_{t-1} + (1 - p) s̃_t; generating token by token equals it."""
    numpy_net, torch_net = nets("lstm", "standard", 2, False, 4, zoneout=0.4, zoneout_c=0.7)
    torch_net.eval()
    x, _ = inputs(False)
    tokens = x[0]
    out, final, _ = numpy_net.forward(tokens[None], train=False)
    logits_full, _ = numpy_net.head_forward(out[:, -1])
    state = None
    for token in tokens:
        logits, state = numpy_net.step(int(token), state)
    np.testing.assert_allclose(logits, logits_full[0], rtol=1e-12)
    for a, b in zip(state, final, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    with torch.no_grad():
        t_out, _ = torch_net(torch.as_tensor(tokens[None]))
    np.testing.assert_allclose(t_out.numpy(), out, rtol=1e-10)
    plain, _ = nets("lstm", "standard", 2, False, 4)
    assert np.max(np.abs(plain.forward(tokens[None])[0] - out)) > 1e-3


@pytest.mark.compose
@pytest.mark.parametrize("model", [("model=lstm", "model.variant=peephole"), ("model=gru",)], ids=["peephole", "gru"])
def test_both_backends_train_alike_from_the_command_line(compose, tmp_path, model):
    """The masks come from (seed, step, rank) on both backends: the same training losses, step by step."""
    from test_cell_training import COMMON

    from rnnlab.train import train

    losses = {}
    for backend in ("numpy", "torch"):
        cfg = compose(*COMMON, *TASK_SETTINGS["classify"], *model, f"model.backend={backend}",
                      "model.recurrent_dropout=0.25", "model.zoneout=0.1", "model.input_dropout=0.1",
                      "model.output_dropout=0.1", run_dir=tmp_path / backend)  # fmt: skip
        train(cfg)
        losses[backend] = train_losses(Path(cfg.paths.run_dir))
        assert all(math.isfinite(v) for v in losses[backend])
    np.testing.assert_allclose(losses["numpy"], losses["torch"], rtol=1e-9)
    plain = compose(*COMMON, *TASK_SETTINGS["classify"], *model, run_dir=tmp_path / "plain")
    train(plain)
    assert not np.allclose(train_losses(Path(plain.paths.run_dir)), losses["torch"], rtol=1e-6)


@pytest.mark.compose
@pytest.mark.parametrize(
    ("overrides", "message"),
    [(("model.recurrent_dropout=1.0",), "model.recurrent_dropout must be in [0, 1)"),
     (("model.zoneout=-0.1",), "model.zoneout must be in [0, 1)"),
     (("task=seq2seq", "data=dates", "model.zoneout=0.1"), "model.zoneout=0.1 applies to the single-stack tasks")],
)  # fmt: skip
def test_bad_values_are_one_line(compose, tmp_path, overrides, message):
    from rnnlab.config import validate

    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
        validate(compose("model=lstm", *overrides, run_dir=tmp_path))
