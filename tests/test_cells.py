"""Every registered cell (rnnlab.registry.CELLS, built-in or not) against its oracles, through the cell protocol.

* The NumPy network (the cell's hand-written forward and backward inside the stack) equals torch autograd on the
  cell's torch counterpart in float64 to 1e-10: outputs, final states, every parameter's gradient, the embedding's
  and the initial state's, for 1-3 layers, one or two directions, variable lengths and T = 1.
* Its backward agrees with central finite differences of its own forward.
* A cell's reference torch step (``torch_step`` in ``ReferenceRecurrent``) equals torch's fused module where one
  exists, so the oracle of a cell without a fused module is itself checked against torch.
* The batch-1 generation ``step`` equals a forward pass over the same tokens.
* Adding a cell changes no existing run's numbers: a cell's extra parameters draw from their own keyed
  generators, so the shared parameters are the standard cell's draws.
* The cells register without importing torch, and no module outside rnnlab/cells/ branches on a cell's name.
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import central_difference

import rnnlab
from rnnlab.cells.protocol import cell_class
from rnnlab.models.init import init_parameters
from rnnlab.models.numpy.net import NumpyRecurrentNet
from rnnlab.models.spec import NetSpec
from rnnlab.models.torch.recurrent import TorchRecurrentNet
from rnnlab.models.torch.reference import ReferenceRecurrent
from rnnlab.registry import CELLS

pytestmark = pytest.mark.unit

CELL_KEYS = [(e.name, e.variant) for e in CELLS.entries()]
IDS = [f"{n}-{v}" for n, v in CELL_KEYS]
LAYOUTS = [(1, False), (2, True), (3, False)]
TOL = 1e-10


def make_spec(cell: str, variant: str, num_layers: int = 1, bidirectional: bool = False, **kw) -> NetSpec:
    defaults = dict(vocab_size=7, embed_dim=5, hidden_size=6, num_outputs=3)
    defaults.update(kw)
    return NetSpec(cell, num_layers=num_layers, bidirectional=bidirectional, variant=variant, **defaults)


def pair(spec: NetSpec, seed: int = 3) -> tuple[NumpyRecurrentNet, TorchRecurrentNet]:
    numpy_net = NumpyRecurrentNet(spec, seed, dtype=np.float64)
    torch_net = TorchRecurrentNet(spec, seed).double()
    torch_net.load_arrays(init_parameters(spec, seed))
    return numpy_net, torch_net


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize(("cell", "variant"), CELL_KEYS, ids=IDS)
@pytest.mark.parametrize(("num_layers", "bidirectional"), LAYOUTS)
@pytest.mark.parametrize("T", [1, 6])
def test_numpy_equals_torch_autograd(cell, variant, num_layers, bidirectional, T):
    spec = make_spec(cell, variant, num_layers, bidirectional)
    numpy_net, torch_net = pair(spec)
    rng = np.random.default_rng(T * 10 + num_layers)
    B, D, H = 4, spec.num_directions, spec.hidden_size
    x = rng.integers(0, spec.vocab_size, (B, T))
    lengths = np.array([T, max(T - 3, 1), T, 1])  # unsorted, with padding unless T == 1
    n_states = len(cell_class(cell, variant).states)
    state0 = tuple(rng.standard_normal((num_layers * D, B, H)) for _ in range(n_states))
    out, final, cache = numpy_net.forward(x, lengths, state=state0 if n_states > 1 else state0[0])
    d_out = rng.standard_normal(out.shape)
    d_final = tuple(rng.standard_normal(s.shape) for s in as_tuple(final))
    numpy_net.zero_grad()
    d_state0 = as_tuple(numpy_net.backward(d_out, d_final if n_states > 1 else d_final[0], cache))

    t_state0 = tuple(torch.tensor(s, requires_grad=True) for s in state0)
    t_out, t_final = torch_net(torch.tensor(x), torch.tensor(lengths), t_state0 if n_states > 1 else t_state0[0])
    loss = (t_out * torch.tensor(d_out)).sum()
    for f, g in zip(as_tuple(t_final), d_final, strict=True):
        loss = loss + (f * torch.tensor(g)).sum()
    loss.backward()

    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=0, atol=TOL)
    for a, b in zip(as_tuple(final), as_tuple(t_final), strict=True):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=0, atol=TOL)
    grads = dict(torch_net.named_parameters())
    for name, g in numpy_net.grads.items():
        if name.startswith("head."):
            continue
        np.testing.assert_allclose(g, grads[name].grad.numpy(), rtol=0, atol=TOL, err_msg=name)
    for a, b in zip(d_state0, t_state0, strict=True):
        np.testing.assert_allclose(a, b.grad.numpy(), rtol=0, atol=TOL)


@pytest.mark.parametrize(("cell", "variant"), CELL_KEYS, ids=IDS)
def test_backward_agrees_with_finite_differences(cell, variant):
    """dL/dθ of L = sum(out * G) + sum(final * G') from the NumPy backward vs central differences of forward."""
    spec = make_spec(cell, variant, 2, True, vocab_size=4, embed_dim=3, hidden_size=3)
    net = NumpyRecurrentNet(spec, 5, dtype=np.float64)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 4, (2, 4))
    lengths = np.array([4, 2])
    out, final, cache = net.forward(x, lengths)
    G = rng.standard_normal(out.shape)
    Gf = tuple(rng.standard_normal(s.shape) for s in as_tuple(final))

    def loss() -> float:
        o, f, _ = net.forward(x, lengths)
        return float(np.vdot(o, G) + sum(np.vdot(a, b) for a, b in zip(as_tuple(f), Gf, strict=True)))

    net.zero_grad()
    net.backward(G, Gf if isinstance(final, tuple) else Gf[0], cache)
    eps = 1e-6
    for name, p in net.params.items():
        if name.startswith("head."):
            continue
        for idx in itertools.islice(np.ndindex(p.shape), 0, None, max(1, p.size // 6)):
            numeric = central_difference(p, idx, loss, eps)
            assert abs(net.grads[name][idx] - numeric) < 1e-7 * max(1.0, abs(numeric)), (name, idx)


FUSED = [k for k in CELL_KEYS if not isinstance(cell_class(*k)(4).torch_module(3, 1, False, 0.0), ReferenceRecurrent)]


@pytest.mark.parametrize(("cell", "variant"), FUSED, ids=[f"{c}-{v}" for c, v in FUSED])
def test_reference_torch_step_equals_the_fused_module(cell, variant):
    """The reference module running the cell's torch_step, against torch's fused module of the cells that have one:
    same outputs and gradients (so the reference module, the oracle of every other cell, is itself held to torch)."""
    spec = make_spec(cell, variant, 2, True)
    _, torch_net = pair(spec)
    fused = torch_net.rnn
    cell_obj = cell_class(cell, variant).from_spec(spec)
    reference = ReferenceRecurrent(cell_obj, spec.input_size, 2, True).double()
    reference.load_state_dict(fused.state_dict())
    rng = np.random.default_rng(2)
    x = torch.tensor(rng.standard_normal((3, 5, spec.input_size)), requires_grad=True)
    outs = []
    for module in (fused, reference):
        module.zero_grad()
        out, final = module(x)
        (out.sum() + sum(f.square().sum() for f in as_tuple(final))).backward()
        outs.append((out.detach(), {k: p.grad.clone() for k, p in module.named_parameters()}))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=0, atol=TOL)
    for k, g in outs[0][1].items():
        torch.testing.assert_close(g, outs[1][1][k], rtol=0, atol=TOL, msg=k)


@pytest.mark.parametrize(("cell", "variant"), CELL_KEYS, ids=IDS)
def test_generation_step_equals_forward(cell, variant):
    spec = make_spec(cell, variant, 2, False)
    net = NumpyRecurrentNet(spec, 4, dtype=np.float64)
    ids = [1, 5, 2, 6, 0]
    logits, state = net.forward_logits_last(ids[:2])
    for token in ids[2:]:
        logits, state = net.step(token, state)
    expected, expected_state = net.forward_logits_last(ids)
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-12)
    for a, b in zip(as_tuple(state), as_tuple(expected_state), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("cell", "variant"), CELL_KEYS, ids=IDS)
def test_states_carried_over_chunks_equal_one_long_pass(cell, variant):
    """Truncated BPTT and generation carry every state a cell has (h; h and c; or more, as the FGR LSTM's previous
    gates): two chunks, the second started from the first's final state, give one long forward's outputs and final
    states on both backends; on the NumPy backend, the second chunk's initial-state gradient fed into the first's
    backward gives the long backward's gradients; and both backends' generation paths (the NumPy step, the torch
    backend's step), one token at a time from a prompt's state, give the long pass's logits and states."""
    from rnnlab.backends.numpy import NumpyBackend
    from rnnlab.backends.torch import TorchBackend

    spec = make_spec(cell, variant, 2, False)
    numpy_net, torch_net = pair(spec)
    n_states = len(cell_class(cell, variant).states)
    rng = np.random.default_rng(8)
    x = rng.integers(0, spec.vocab_size, (3, 9))
    out, final, cache = numpy_net.forward(x)
    out1, state1, cache1 = numpy_net.forward(x[:, :5])
    out2, state2, cache2 = numpy_net.forward(x[:, 5:], state=state1)
    np.testing.assert_allclose(np.concatenate([out1, out2], axis=1), out, rtol=0, atol=1e-12)
    assert len(as_tuple(state2)) == n_states
    for a, b in zip(as_tuple(state2), as_tuple(final), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    if n_states > 1:  # every state takes part: a chunk started without the carried c, gates, ... differs
        dropped = (as_tuple(state1)[0], *(np.zeros_like(s) for s in as_tuple(state1)[1:]))
        assert np.abs(numpy_net.forward(x[:, 5:], state=dropped)[0] - out2).max() > 1e-6

    G = rng.standard_normal(out.shape)
    G_final = tuple(rng.standard_normal(s.shape) for s in as_tuple(final))
    G_final = G_final if n_states > 1 else G_final[0]
    numpy_net.zero_grad()
    d_whole = as_tuple(numpy_net.backward(G, G_final, cache))
    whole = {k: v.copy() for k, v in numpy_net.grads.items()}
    numpy_net.zero_grad()
    d_carried = numpy_net.backward(G[:, 5:], G_final, cache2)
    d_chunks = as_tuple(numpy_net.backward(G[:, :5], d_carried, cache1))
    for name, g in whole.items():
        np.testing.assert_allclose(numpy_net.grads[name], g, rtol=0, atol=TOL, err_msg=name)
    for a, b in zip(d_chunks, d_whole, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=TOL)

    with torch.no_grad():
        t_out, t_final = torch_net(torch.tensor(x))
        t_out1, t_state1 = torch_net(torch.tensor(x[:, :5]))
        t_out2, t_state2 = torch_net(torch.tensor(x[:, 5:]), state=t_state1)
    torch.testing.assert_close(torch.cat([t_out1, t_out2], dim=1), t_out, rtol=0, atol=1e-12)
    for a, b in zip(as_tuple(t_state2), as_tuple(t_final), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out, t_out.numpy(), rtol=0, atol=TOL)

    ids = [int(v) for v in x[0]]
    expected, _ = numpy_net.head_forward(out[0])
    for backend, net in ((NumpyBackend(), numpy_net), (TorchBackend(), torch_net)):
        logits, state = backend.prompt(net, ids[:3])
        np.testing.assert_allclose(logits, expected[2], rtol=0, atol=TOL)
        for t in range(3, len(ids)):
            logits, state = backend.step(net, ids[t], state)
            np.testing.assert_allclose(logits, expected[t], rtol=0, atol=TOL, err_msg=f"{type(backend).__name__} {t}")
        assert len(as_tuple(state)) == n_states
        for a, b in zip(as_tuple(state), as_tuple(final), strict=True):
            np.testing.assert_allclose(np.asarray(a)[:, 0], b[:, 0], rtol=0, atol=TOL)


SAME_GATES = [k for k in CELL_KEYS if k[1] != "standard" and cell_class(*k).gates == cell_class(k[0]).gates]


@pytest.mark.parametrize(("cell", "variant"), SAME_GATES, ids=[f"{c}-{v}" for c, v in SAME_GATES])
def test_a_variant_keeps_the_standard_cells_draws(cell, variant):
    """The parameters a variant shares with its standard cell (same gates, so same shapes) are the same draws; its
    own come from keyed generators (so the order of registration, or another cell's extras, changes nothing). A
    variant without some gate has smaller matrices, drawn from the same stream in the same order."""
    spec = make_spec(cell, variant, 2, True)
    standard = init_parameters(make_spec(cell, "standard", 2, True), 7)
    drawn = init_parameters(spec, 7)
    extras = [n for n in drawn if n not in standard]
    assert set(drawn) == set(standard) | set(extras)  # a variant with no parameters of its own draws all the same
    for name, value in standard.items():
        np.testing.assert_array_equal(drawn[name], value, err_msg=name)
    again = init_parameters(make_spec(cell, variant, 1, False), 7)
    for name in (n for n in extras if n.endswith("_l0")):
        np.testing.assert_array_equal(again[name], drawn[name], err_msg=name)


@pytest.mark.parametrize(("cell", "variant"), CELL_KEYS, ids=IDS)
def test_seq2seq_numpy_equals_torch_autograd(cell, variant):
    """The encoder-decoder of every cell (bidirectional encoder and its bridges, additive attention, teacher forcing
    0.5): the loss and every parameter's gradient agree with torch autograd in float64."""
    from torch.nn import functional as F

    from rnnlab.models.numpy.losses import cross_entropy
    from rnnlab.models.numpy.seq2seq import NumpySeq2Seq
    from rnnlab.models.seq2seq_spec import Seq2SeqSpec, init_seq2seq_parameters
    from rnnlab.models.torch.seq2seq import TorchSeq2Seq

    spec = Seq2SeqSpec(cell, 9, 8, embed_dim=4, hidden_size=5, num_layers=2, bidirectional=True,
                       attention="additive", variant=variant)  # fmt: skip
    torch_net = TorchSeq2Seq(spec, 3).double()
    torch_net.load_arrays(init_seq2seq_parameters(spec, 3))
    numpy_net = NumpySeq2Seq(spec, 3, dtype=np.float64)
    rng = np.random.default_rng(0)
    src_len = np.array([6, 2, 4, 3])
    src = rng.integers(4, 9, (4, 6)) * (np.arange(6)[None, :] < src_len[:, None])
    tgt = rng.integers(3, 8, (4, 7))
    tgt[:, 0], tgt[:, -1] = 1, 2
    y = tgt[:, 1:]
    teacher = rng.random((4, 6)) < 0.5
    teacher[:, 0] = True
    logits, cache = numpy_net.forward(src, src_len, tgt[:, :-1], teacher, train=True)
    loss, dlogits = cross_entropy(logits, y)
    numpy_net.backward(dlogits, cache)
    logits_t = torch_net(*(torch.as_tensor(a) for a in (src, src_len, tgt[:, :-1], teacher)))
    loss_t = F.cross_entropy(logits_t.reshape(-1, 8), torch.as_tensor(y).reshape(-1))
    loss_t.backward()
    assert abs(loss - loss_t.item()) <= 1e-10 * abs(loss_t.item())
    params = dict(torch_net.named_parameters())
    assert set(params) == set(numpy_net.grads)
    for name, p in params.items():
        np.testing.assert_allclose(numpy_net.grads[name], p.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_registering_the_cells_imports_no_torch():
    code = (
        "import sys; from rnnlab.registry import CELLS; names = CELLS.names(); "
        "[e.load() for e in CELLS.entries()]; print(len(names), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) >= 3
    assert out[1] == "False"


BUILTIN = {"rnn", "lstm", "gru"}


def cell_name_branches(root: Path) -> list[str]:
    """Comparisons with a built-in cell's name (``x == "lstm"``, ``x in ("rnn", "gru")``) outside rnnlab/cells/."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if "cells" in path.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Compare):
                continue
            for operand in [node.left, *node.comparators]:
                values = operand.elts if isinstance(operand, ast.Tuple | ast.List | ast.Set) else [operand]
                if any(isinstance(v, ast.Constant) and v.value in BUILTIN for v in values):
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno}")
    return found


def test_no_branch_on_a_cells_name_outside_the_cells(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text('def f(c):\n    return c == "lstm" or c in ("gru",)\n')
    assert len(cell_name_branches(tmp_path / "pkg")) == 2  # the check sees both forms
    assert cell_name_branches(Path(rnnlab.__file__).parent) == []


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_fgr_internals_and_forward_against_the_equations(reverse):
    """The FGR LSTM's forward (variable lengths, both directions, non-zero initial states, previous gates included)
    against its equations written out per sequence, and its ``internals``: [T, B, H] per gate (i, f, g, o) and the
    cell state c, in time order and the cache's row order, NaN past each sequence's length."""
    cls = cell_class("lstm", "fgr")
    H, T, B = 3, 5, 4
    cell = cls(H)
    rng = np.random.default_rng(11)
    p = {name: rng.uniform(-0.8, 0.8, shape) for name, shape in cell.parameter_shapes(2)}
    assert p["weight_gg"].shape == (3 * H, 3 * H)
    lengths = np.array([5, 3, 3, 1])  # sorted: the batch's prefix runs at each step
    batch_sizes = np.count_nonzero(lengths[None, :] > np.arange(T)[:, None], axis=1)
    Xp = rng.standard_normal((T, B, 4 * H))
    state0 = tuple(rng.standard_normal((B, H)) for _ in cls.states)
    S, final, cache = cell.forward(Xp.copy(), state0, p, batch_sizes, reverse)
    inside = cell.internals(cache)
    assert set(inside) == {"i", "f", "g", "o", "c"}

    def sigma(a):
        return 1.0 / (1.0 + np.exp(-a))

    R = p["weight_gg"]
    for b in range(B):
        h, c, q = state0[0][b], state0[1][b], np.concatenate([s[b] for s in state0[2:]])
        steps = range(lengths[b] - 1, -1, -1) if reverse else range(lengths[b])
        for t in steps:
            a_i, a_f, a_g, a_o = np.split(Xp[t, b] + p["weight_hh"] @ h, 4)
            r_i, r_f, r_o = np.split(R @ q, 3)  # R_yx y_{t-1} into gate x: block row x, block column y
            i = sigma(a_i + r_i + p["weight_ci"] * c)
            f = sigma(a_f + r_f + p["weight_cf"] * c)
            g = np.tanh(a_g)
            c = f * c + i * g
            o = sigma(a_o + r_o + p["weight_co"] * c)
            h = o * np.tanh(c)
            q = np.concatenate([i, f, o])
            for name, value in (("i", i), ("f", f), ("g", g), ("o", o), ("c", c)):
                np.testing.assert_allclose(inside[name][t, b], value, rtol=0, atol=1e-12, err_msg=f"{name} {t} {b}")
            np.testing.assert_allclose(S[t if reverse else t + 1, b], h, rtol=0, atol=1e-12)
        for name in inside:
            assert inside[name].shape == (T, B, H)
            assert np.all(np.isnan(inside[name][lengths[b] :, b])), name
        for value, expected in zip(final, (h, c, *np.split(q, 3)), strict=True):
            np.testing.assert_allclose(value[b], expected, rtol=0, atol=1e-12)
