"""The reference cells (rnnlab/cells/reference/) compute what torch's nn.RNN/LSTM/GRU compute (values and autograd
gradients), what the optimised NumPy network computes (through its public API, NumpyRecurrentNet; the gate
activations and cell states too, the cells' ``internals``), and their backward agrees with central finite
differences of their own forward.

Everything runs in float64 with small sizes; "equal" means within 1e-10.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import central_difference
from torch import nn

from rnnlab.cells.protocol import cell_class
from rnnlab.cells.reference import gru, lstm, rnn
from rnnlab.models.numpy.net import NumpyRecurrentNet
from rnnlab.models.spec import NetSpec

pytestmark = pytest.mark.unit

TOL = 1e-10
IN, H = 3, 4  # input features, hidden units
NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]
CELL_IDS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
SHAPES = [(1, 1), (1, 3), (5, 1), (5, 3)]  # (T, B)
SHAPE_IDS = [f"T{t}B{b}" for t, b in SHAPES]
REFERENCE = Path(rnn.__file__).resolve().parent


# ------------------------------------------------------------------------------------------------------- helpers
def random_params(rng: np.random.Generator, cell: str, in_size: int = IN, hidden: int = H) -> dict[str, np.ndarray]:
    g = cell_class(cell).gates
    shapes = {"weight_ih": (g * hidden, in_size), "weight_hh": (g * hidden, hidden), "bias_ih": (g * hidden,)}
    shapes["bias_hh"] = (g * hidden,)
    return {name: rng.uniform(-0.7, 0.7, size=shape) for name, shape in shapes.items()}


def random_states(rng: np.random.Generator, cell: str, B: int, hidden: int = H) -> tuple[np.ndarray, ...]:
    """(h0,) or (h0, c0) for the LSTM: non-zero, [B, H]."""
    return tuple(rng.normal(size=(B, hidden)) for _ in range(2 if cell == "lstm" else 1))


def ref_forward(cell: str, nonlinearity: str, x: np.ndarray, states: tuple, params: dict) -> tuple:
    """(hs, final states as a tuple, cache) from the reference module of ``cell``."""
    if cell == "lstm":
        hs, h_n, c_n, cache = lstm.forward(x, *states, params)
        return hs, (h_n, c_n), cache
    if cell == "gru":
        hs, h_n, cache = gru.forward(x, *states, params)
    else:
        hs, h_n, cache = rnn.forward(x, *states, params, nonlinearity=nonlinearity)
    return hs, (h_n,), cache


def ref_backward(cell: str, dhs: np.ndarray, d_finals: tuple, cache: dict) -> tuple:
    """(grads, dx, d initial states as a tuple) from the reference module of ``cell``."""
    grads, dx, *d_states = {"rnn": rnn, "lstm": lstm, "gru": gru}[cell].backward(dhs, *d_finals, cache)
    return grads, dx, tuple(d_states)


def assert_equal(ours, theirs, what: str) -> None:
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOL, err_msg=what)


# ---------------------------------------------------------------------------------- against torch's autograd
@pytest.mark.parametrize(("T", "B"), SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize(("cell", "nonlinearity"), CELLS, ids=CELL_IDS)
def test_reference_cell_equals_torch(cell, nonlinearity, T, B):
    rng = np.random.default_rng([T, B, len(cell)])
    params = random_params(rng, cell)
    x = rng.normal(size=(T, B, IN))
    states = random_states(rng, cell, B)
    dhs = rng.normal(size=(T, B, H))  # upstream gradients of the outputs and of the final states
    d_finals = tuple(rng.normal(size=(B, H)) for _ in states)

    hs, finals, cache = ref_forward(cell, nonlinearity, x, states, params)
    grads, dx, d_states = ref_backward(cell, dhs, d_finals, cache)

    kw = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
    module = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell](IN, H, **kw).double()  # time-major, as ours
    with torch.no_grad():
        for name in NAMES:
            getattr(module, f"{name}_l0").copy_(torch.from_numpy(params[name]))
    x_t = torch.from_numpy(x).requires_grad_()
    states_t = [torch.from_numpy(s[None]).requires_grad_() for s in states]  # [1, B, H]
    out_t, finals_t = module(x_t, tuple(states_t) if cell == "lstm" else states_t[0])
    finals_t = finals_t if cell == "lstm" else (finals_t,)
    loss = (out_t * torch.from_numpy(dhs)).sum()
    loss = loss + sum((f * torch.from_numpy(d[None])).sum() for f, d in zip(finals_t, d_finals, strict=True))
    loss.backward()

    assert_equal(hs, out_t.detach().numpy(), "outputs")
    for k, (ours, theirs) in enumerate(zip(finals, finals_t, strict=True)):
        assert_equal(ours, theirs.detach().numpy()[0], f"final state {k}")
    for name in NAMES:
        assert_equal(grads[name], getattr(module, f"{name}_l0").grad.numpy(), f"d {name}")
    assert_equal(dx, x_t.grad.numpy(), "dx")
    for k, (ours, theirs) in enumerate(zip(d_states, states_t, strict=True)):
        assert_equal(ours, theirs.grad.numpy()[0], f"d initial state {k}")


# ------------------------------------------------------------------------- against the optimised NumPy network
@pytest.mark.parametrize(("T", "B"), [(1, 1), (5, 3)], ids=["T1B1", "T5B3"])
@pytest.mark.parametrize(("cell", "nonlinearity"), CELLS, ids=CELL_IDS)
def test_reference_cell_equals_optimised(cell, nonlinearity, T, B):
    spec = NetSpec(cell, vocab_size=1, embed_dim=0, hidden_size=H, num_layers=1, bidirectional=False,
                   num_outputs=1, nonlinearity=nonlinearity, input_features=IN)  # fmt: skip
    net = NumpyRecurrentNet(spec, seed=3, dtype=np.float64)
    params = {name: net.params[f"rnn.{name}_l0"].copy() for name in NAMES}
    rng = np.random.default_rng([T, B, len(cell), 1])
    x = rng.normal(size=(T, B, IN))
    states = random_states(rng, cell, B)
    dhs = rng.normal(size=(T, B, H))
    d_finals = tuple(rng.normal(size=(B, H)) for _ in states)

    hs, finals, cache = ref_forward(cell, nonlinearity, x, states, params)
    grads, dx, d_states = ref_backward(cell, dhs, d_finals, cache)

    def as_state(arrays: tuple) -> np.ndarray | tuple[np.ndarray, ...]:  # [B, H] each -> the net's [1, B, H]
        stacked = tuple(a[None].copy() for a in arrays)
        return stacked if cell == "lstm" else stacked[0]

    out, final, net_cache = net.forward_features(x.transpose(1, 0, 2).copy(), state=as_state(states))
    out, final = out.copy(), tuple(np.array(f) for f in (final if cell == "lstm" else (final,)))
    net_internals = net.stack.cell.internals(net_cache.stack.layers[0].cells[0])  # before backward overwrites them
    ref_internals = {"lstm": lstm, "gru": gru}[cell].internals(cache) if cell != "rnn" else {}
    assert set(ref_internals) == set(net_internals)
    for name, value in ref_internals.items():
        assert_equal(value, net_internals[name], f"internals {name}")
    net_dx, net_dstate0 = net.backward_features(dhs.transpose(1, 0, 2).copy(), as_state(d_finals), net_cache)
    net_dstate0 = net_dstate0 if cell == "lstm" else (net_dstate0,)

    assert_equal(hs, out.transpose(1, 0, 2), "outputs")
    for k, (ours, theirs) in enumerate(zip(finals, final, strict=True)):
        assert_equal(ours, theirs[0], f"final state {k}")
    for name in NAMES:
        assert_equal(grads[name], net.grads[f"rnn.{name}_l0"], f"d {name}")
    assert_equal(dx, net_dx.transpose(1, 0, 2), "dx")
    for k, (ours, theirs) in enumerate(zip(d_states, net_dstate0, strict=True)):
        assert_equal(ours, theirs[0], f"d initial state {k}")


# ------------------------------------------------------------------------------------- finite differences
@pytest.mark.parametrize(("cell", "nonlinearity"), CELLS, ids=CELL_IDS)
def test_reference_backward_matches_finite_differences(cell, nonlinearity):
    """Central differences of L = Σ dhs ⊙ hs + Σ d_final ⊙ final against backward, for every parameter entry,
    every input entry and every initial-state entry (T=3, B=2, I=H=2)."""
    T, B, n_in, hidden, eps = 3, 2, 2, 2, 1e-6
    rng = np.random.default_rng([7, len(cell), len(nonlinearity)])
    params = random_params(rng, cell, n_in, hidden)
    x = rng.normal(size=(T, B, n_in))
    states = random_states(rng, cell, B, hidden)
    dhs = rng.normal(size=(T, B, hidden))
    d_finals = tuple(rng.normal(size=(B, hidden)) for _ in states)

    def loss() -> float:
        hs, finals, _ = ref_forward(cell, nonlinearity, x, states, params)
        return float(np.sum(dhs * hs) + sum(np.sum(d * f) for d, f in zip(d_finals, finals, strict=True)))

    _, _, cache = ref_forward(cell, nonlinearity, x, states, params)
    grads, dx, d_states = ref_backward(cell, dhs, d_finals, cache)
    checks = [(params[name], grads[name], name) for name in NAMES] + [(x, dx, "x")]
    checks += [(s, d, f"initial state {k}") for k, (s, d) in enumerate(zip(states, d_states, strict=True))]
    for array, analytic, what in checks:
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):  # the arrays are perturbed in place, then restored
            numeric[index] = central_difference(array, index, loss, eps)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=what)


# ----------------------------------------------------------------------------------------------- the package
def test_reference_modules_import_only_numpy():
    """The reference is for reading: numpy and nothing else (and the package's __init__ imports nothing, so that
    the cell registry's discovery of rnnlab.cells finds nothing to register in it)."""
    for path in sorted(REFERENCE.glob("*.py")):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module or ".")
        assert imported == (set() if path.name == "__init__.py" else {"numpy"}), (path.name, imported)
