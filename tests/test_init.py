"""rnnlab.models.init: names, shapes and distributions of the shared initial weights, checked against torch."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from rnnlab.models.init import init_parameters
from rnnlab.models.spec import NetSpec
from rnnlab.models.torch.recurrent import TorchRecurrentNet

pytestmark = pytest.mark.unit

TORCH_CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
LAYOUTS = list(itertools.product(["rnn", "lstm", "gru"], [1, 2, 3], [False, True]))


def make_spec(cell="lstm", num_layers=1, bidirectional=False, **kw) -> NetSpec:
    args = dict(
        cell=cell,
        vocab_size=11,
        embed_dim=5,
        hidden_size=7,
        num_layers=num_layers,
        bidirectional=bidirectional,
        num_outputs=3,
    )
    args.update(kw)
    return NetSpec(**args)


def torch_reference(spec: NetSpec) -> dict[str, nn.Module]:
    """The same network from torch's own modules (not TorchRecurrentNet)."""
    extra = {"nonlinearity": spec.nonlinearity} if spec.cell == "rnn" else {}
    rnn = TORCH_CELLS[spec.cell](
        input_size=spec.embed_dim or spec.vocab_size,
        hidden_size=spec.hidden_size,
        num_layers=spec.num_layers,
        bidirectional=spec.bidirectional,
        batch_first=True,
        **extra,
    )
    modules = {"rnn": rnn, "head": nn.Linear(spec.hidden_size * (2 if spec.bidirectional else 1), spec.num_outputs)}
    if spec.embed_dim:
        modules["embedding"] = nn.Embedding(spec.vocab_size, spec.embed_dim)
    return modules


def reference_names_and_shapes(spec: NetSpec) -> list[tuple[str, tuple[int, ...]]]:
    out = []
    for prefix, module in torch_reference(spec).items():
        out += [(f"{prefix}.{n}", tuple(p.shape)) for n, p in module.named_parameters()]
    return out


@pytest.mark.parametrize(("cell", "num_layers", "bidirectional"), LAYOUTS)
def test_names_and_shapes_match_torch(cell, num_layers, bidirectional):
    spec = make_spec(cell, num_layers, bidirectional)
    arrays = init_parameters(spec, seed=0)
    ours = [(name, a.shape) for name, a in arrays.items() if name.startswith("rnn.")]
    theirs = [(n, s) for n, s in reference_names_and_shapes(spec) if n.startswith("rnn.")]
    assert ours == theirs  # same names, same shapes, same order as nn.{RNN,LSTM,GRU}.named_parameters()
    assert sorted((n, a.shape) for n, a in arrays.items()) == sorted(reference_names_and_shapes(spec))
    assert all(a.dtype == np.float64 for a in arrays.values())


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_one_hot_input_has_no_embedding(cell):
    spec = make_spec(cell, 2, True, embed_dim=0)
    arrays = init_parameters(spec, seed=0)
    assert "embedding.weight" not in arrays
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    assert arrays["rnn.weight_ih_l0"].shape == (gates * 7, 11)  # input size = vocab size
    assert arrays["rnn.weight_ih_l1_reverse"].shape == (gates * 7, 14)  # both directions of layer 0
    assert sorted((n, a.shape) for n, a in arrays.items()) == sorted(reference_names_and_shapes(spec))


def test_same_seed_same_arrays_other_seed_other_arrays():
    spec = make_spec("gru", 2, True)
    a, b, c = init_parameters(spec, 7), init_parameters(spec, 7), init_parameters(spec, 8)
    assert a.keys() == b.keys() == c.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        assert not np.any(a[name] == c[name]), name  # continuous draws: no element coincides


def test_seed_zero_is_a_seed():
    spec = make_spec()
    zero, one = init_parameters(spec, 0), init_parameters(spec, 1)
    assert not np.array_equal(zero["rnn.weight_hh_l0"], one["rnn.weight_hh_l0"])
    np.testing.assert_array_equal(zero["rnn.weight_hh_l0"], init_parameters(spec, 0)["rnn.weight_hh_l0"])


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_uniform_bounds_and_spread(cell):
    hidden = 64
    spec = make_spec(cell, 2, True, hidden_size=hidden, embed_dim=32, num_outputs=10)
    arrays = init_parameters(spec, seed=3)
    bound = 1 / math.sqrt(hidden)
    recurrent = np.concatenate([a.ravel() for n, a in arrays.items() if n.startswith("rnn.")])
    assert recurrent.size > 10_000
    assert np.all(np.abs(recurrent) <= bound)
    assert recurrent.min() < -0.99 * bound
    assert recurrent.max() > 0.99 * bound
    assert recurrent.std() == pytest.approx(bound / math.sqrt(3), rel=0.03)  # std of U(-b, b)
    assert abs(recurrent.mean()) < 0.02 * bound
    # equal mass in each tenth of the interval, as a uniform distribution has
    counts, _ = np.histogram(recurrent, bins=10, range=(-bound, bound))
    assert counts.min() > 0.9 * recurrent.size / 10
    assert counts.max() < 1.1 * recurrent.size / 10

    head_bound = 1 / math.sqrt(2 * hidden)  # F = H * num_directions
    head = np.concatenate([arrays["head.weight"].ravel(), arrays["head.bias"]])
    assert np.all(np.abs(head) <= head_bound)
    assert head.std() == pytest.approx(head_bound / math.sqrt(3), rel=0.1)

    emb = arrays["embedding.weight"]
    assert emb.std() == pytest.approx(1.0, rel=0.1)  # N(0, 1)
    assert np.abs(emb).max() > bound * 10  # not a uniform draw


def test_padding_row_is_zero():
    spec = make_spec(padding_idx=0)
    emb = init_parameters(spec, seed=0)["embedding.weight"]
    assert np.all(emb[0] == 0.0)
    assert np.all(emb[1:] != 0.0)
    without = init_parameters(make_spec(), seed=0)["embedding.weight"]
    np.testing.assert_array_equal(emb[1:], without[1:])  # only that row is touched


@pytest.mark.parametrize(("cell", "num_layers", "bidirectional"), LAYOUTS)
def test_torch_net_holds_exactly_those_values(cell, num_layers, bidirectional):
    spec = make_spec(cell, num_layers, bidirectional, padding_idx=0)
    arrays = init_parameters(spec, seed=5)
    net = TorchRecurrentNet(spec, seed=5)
    params = dict(net.named_parameters())
    assert params.keys() == arrays.keys()
    for name, p in params.items():
        assert p.dtype == torch.float32
        # float32 rounds the float64 draws, and nothing else happens to them
        expected = torch.from_numpy(arrays[name]).float().double()
        assert torch.equal(p.detach().double(), expected), name
        np.testing.assert_allclose(p.detach().double().numpy(), arrays[name], rtol=1e-7, atol=1e-8)


def test_load_arrays_rejects_missing_and_unexpected_names():
    spec = make_spec()
    net = TorchRecurrentNet(spec, seed=0)
    arrays = init_parameters(spec, seed=1)
    with pytest.raises(KeyError, match=r"missing \['head.bias'\]"):
        net.load_arrays({k: v for k, v in arrays.items() if k != "head.bias"})
    with pytest.raises(KeyError, match="unexpected"):
        net.load_arrays({**arrays, "rnn.extra": np.zeros(3)})


def _reference_forward(spec: NetSpec, arrays: dict[str, np.ndarray], x: torch.Tensor):
    ref = torch_reference(spec)
    with torch.no_grad():
        for prefix, module in ref.items():
            module.double()
            for name, p in module.named_parameters():
                p.copy_(torch.from_numpy(arrays[f"{prefix}.{name}"]))
        inputs = ref["embedding"](x) if "embedding" in ref else torch.eye(spec.vocab_size, dtype=torch.float64)[x]
        out, final = ref["rnn"](inputs)
        return out, final, ref["head"](out)


@pytest.mark.parametrize(
    ("cell", "nonlinearity", "embed_dim"),
    [("rnn", "tanh", 5), ("rnn", "relu", 0), ("lstm", "tanh", 5), ("lstm", "tanh", 0), ("gru", "tanh", 5)],
)
@pytest.mark.parametrize(("num_layers", "bidirectional"), [(1, False), (2, True)])
def test_output_equals_torch_modules_loaded_with_the_same_arrays(
    cell, nonlinearity, embed_dim, num_layers, bidirectional
):
    spec = make_spec(cell, num_layers, bidirectional, nonlinearity=nonlinearity, embed_dim=embed_dim)
    arrays = init_parameters(spec, seed=11)
    net = TorchRecurrentNet(spec, seed=11).double()
    net.load_arrays(arrays)  # exact float64 values
    x = torch.randint(0, spec.vocab_size, (4, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out, final = net(x)
        logits = net.head(out)
    ref_out, ref_final, ref_logits = _reference_forward(spec, arrays, x)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-12)
    if cell == "lstm":
        torch.testing.assert_close(final[0], ref_final[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(final[1], ref_final[1], rtol=0, atol=1e-12)
    else:
        torch.testing.assert_close(final, ref_final, rtol=0, atol=1e-12)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_elman_rnn_by_hand(nonlinearity):
    """h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), written out in NumPy from the arrays init.py drew."""
    spec = make_spec("rnn", nonlinearity=nonlinearity, embed_dim=0, vocab_size=6, hidden_size=4, num_outputs=2)
    arrays = init_parameters(spec, seed=2)
    net = TorchRecurrentNet(spec, seed=2).double()
    net.load_arrays(arrays)
    tokens = [3, 0, 5, 5, 1]
    f = np.tanh if nonlinearity == "tanh" else (lambda v: np.maximum(v, 0.0))
    h = np.zeros(4)
    outputs = []
    for t in tokens:
        x = np.eye(6)[t]
        h = f(arrays["rnn.weight_ih_l0"] @ x + arrays["rnn.bias_ih_l0"] + arrays["rnn.weight_hh_l0"] @ h
              + arrays["rnn.bias_hh_l0"])  # fmt: skip
        outputs.append(h)
    logits = arrays["head.weight"] @ h + arrays["head.bias"]
    with torch.no_grad():
        out, final = net(torch.tensor([tokens]))
        got_logits = net.head(net.last_hidden(final))
    np.testing.assert_allclose(out[0].numpy(), np.stack(outputs), rtol=0, atol=1e-13)
    np.testing.assert_allclose(got_logits[0].numpy(), logits, rtol=0, atol=1e-13)
