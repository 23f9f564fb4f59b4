"""The NumPy backend's layers against torch: nn.RNN/LSTM/GRU (values and autograd gradients), packed sequences,
dropout between layers, losses, embeddings and one-hot inputs, the generation step, float32 and the buffer pool.

Everything runs in float64 with small sizes; "equal" means within 1e-10 (1e-12 where no GEMM order differs).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import central_difference
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.models.init import init_parameters
from rnnlab.models.numpy import memory
from rnnlab.models.numpy.layers import scatter_add_rows
from rnnlab.models.numpy.losses import cross_entropy, mse
from rnnlab.models.numpy.net import NumpyRecurrentNet
from rnnlab.models.spec import NetSpec
from rnnlab.models.torch.recurrent import TorchRecurrentNet

pytestmark = pytest.mark.unit

TOL = 1e-10
B, T, IN, H = 3, 5, 3, 4  # batch, steps, input features, hidden units
CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]
CELL_IDS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]


def make_spec(cell: str, nonlinearity: str = "tanh", num_layers: int = 1, bidirectional: bool = False, **kw) -> NetSpec:
    args = dict(
        cell=cell,
        vocab_size=7,
        embed_dim=IN,
        hidden_size=H,
        num_layers=num_layers,
        bidirectional=bidirectional,
        num_outputs=3,
        nonlinearity=nonlinearity,
    )
    args.update(kw)
    return NetSpec(**args)


def torch_module(spec: NetSpec, params: dict[str, np.ndarray], layer: int | None = None) -> nn.RNNBase:
    """nn.RNN/LSTM/GRU (float64) holding ``params``: the whole stack, or one ``layer`` as a 1-layer module."""
    cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[spec.cell]
    kw = {"nonlinearity": spec.nonlinearity} if spec.cell == "rnn" else {}
    if layer is None:
        module = cls(spec.input_size, H, spec.num_layers, batch_first=True, bidirectional=spec.bidirectional, **kw)
    else:
        in_size = spec.input_size if layer == 0 else spec.features
        module = cls(in_size, H, 1, batch_first=True, bidirectional=spec.bidirectional, **kw)
    module = module.double()
    with torch.no_grad():
        for name, p in module.named_parameters():
            ours = name if layer is None else name.replace("_l0", f"_l{layer}")
            p.copy_(torch.from_numpy(params["rnn." + ours]))
    return module


def torch_grads(module: nn.RNNBase, layer: int | None = None) -> dict[str, np.ndarray]:
    out = {}
    for name, p in module.named_parameters():
        ours = name if layer is None else name.replace("_l0", f"_l{layer}")
        out["rnn." + ours] = p.grad.numpy()
    return out


def random_problem(spec: NetSpec, seed: int = 0):
    """Inputs, initial state and upstream gradients for loss = sum(out G1) + sum(h_n G2) (+ sum(c_n G3))."""
    rng = np.random.default_rng(seed)
    LD = spec.num_layers * spec.num_directions
    x = rng.standard_normal((B, T, spec.input_size))
    h0 = 0.5 * rng.standard_normal((LD, B, H))
    c0 = 0.5 * rng.standard_normal((LD, B, H))
    G1 = rng.standard_normal((B, T, spec.features))
    G2 = rng.standard_normal((LD, B, H))
    G3 = rng.standard_normal((LD, B, H))
    return x, h0, c0, G1, G2, G3


def close(actual: np.ndarray, expected: np.ndarray, tol: float = TOL) -> None:
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


def check_against_torch(spec: NetSpec, lengths: np.ndarray | None = None, seed: int = 0) -> None:
    net = NumpyRecurrentNet(spec, seed=seed, dtype=np.float64)
    x, h0, c0, G1, G2, G3 = random_problem(spec, seed)
    is_lstm = spec.cell == "lstm"

    module = torch_module(spec, net.params)
    xt = torch.tensor(x, requires_grad=True)
    h0t, c0t = torch.tensor(h0, requires_grad=True), torch.tensor(c0, requires_grad=True)
    inputs = xt
    if lengths is not None:
        inputs = pack_padded_sequence(xt, torch.as_tensor(lengths), batch_first=True, enforce_sorted=False)
    out_t, final_t = module(inputs, (h0t, c0t) if is_lstm else h0t)
    if lengths is not None:
        out_t, _ = pad_packed_sequence(out_t, batch_first=True, total_length=T)
    h_n_t = final_t[0] if is_lstm else final_t
    loss = (out_t * torch.from_numpy(G1)).sum() + (h_n_t * torch.from_numpy(G2)).sum()
    if is_lstm:
        loss = loss + (final_t[1] * torch.from_numpy(G3)).sum()
    loss.backward()

    out, final, cache = net.forward_features(x, lengths, state=(h0, c0) if is_lstm else h0)
    dx, d_state0 = net.backward_features(G1, (G2, G3) if is_lstm else G2, cache)

    close(out, out_t.detach().numpy())
    close(final[0] if is_lstm else final, h_n_t.detach().numpy())
    close(dx, xt.grad.numpy())
    close(d_state0[0] if is_lstm else d_state0, h0t.grad.numpy())
    if is_lstm:
        close(final[1], final_t[1].detach().numpy())
        close(d_state0[1], c0t.grad.numpy())
    expected = torch_grads(module)
    assert set(expected) == {k for k in net.grads if k.startswith("rnn.")}
    for name, g in expected.items():
        close(net.grads[name], g)


# ------------------------------------------------------------------------------------------ parity with torch
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize(("cell", "nonlinearity"), CELLS, ids=CELL_IDS)
def test_stack_equals_torch(cell, nonlinearity, num_layers, bidirectional):
    """Outputs, h_n (c_n) and the gradients of every parameter, of the inputs and of h0 (c0)."""
    check_against_torch(make_spec(cell, nonlinearity, num_layers, bidirectional))


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize(("cell", "nonlinearity"), CELLS, ids=CELL_IDS)
def test_variable_lengths_equal_packed_sequences(cell, nonlinearity, bidirectional):
    """pack_padded_sequence(enforce_sorted=False), 2 layers, unsorted lengths, a nonzero h0."""
    check_against_torch(make_spec(cell, nonlinearity, 2, bidirectional), lengths=np.array([3, 5, 1]))


def test_lengths_all_full_and_sorted_take_the_plain_path():
    spec = make_spec("lstm", num_layers=2, bidirectional=True)
    check_against_torch(spec, lengths=np.array([T, T, T]))
    check_against_torch(spec, lengths=np.array([5, 4, 2]), seed=1)


def test_padding_never_enters_the_recurrence():
    """Garbage past each length changes nothing, and the outputs there are zero."""
    spec = make_spec("gru", num_layers=2, bidirectional=True)
    net = NumpyRecurrentNet(spec, seed=1, dtype=np.float64)
    x, *_ = random_problem(spec)
    lengths = np.array([2, 5, 4])
    y = x.copy()
    for b, n in enumerate(lengths):
        y[b, n:] = 100.0
    out_x, h_x, _ = net.forward_features(x, lengths)
    out_y, h_y, _ = net.forward_features(y, lengths)
    np.testing.assert_array_equal(out_x, out_y)
    np.testing.assert_array_equal(h_x, h_y)
    for b, n in enumerate(lengths):
        assert np.all(out_x[b, n:] == 0)


# ---------------------------------------------------------------------------------------------------- dropout
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_dropout_between_layers_equals_layerwise_torch_reference(cell, bidirectional):
    """With the masks the stack drew, torch single-layer modules with the same masks in between agree."""
    spec = make_spec(cell, num_layers=3, bidirectional=bidirectional, dropout=0.4)
    net = NumpyRecurrentNet(spec, seed=2, dtype=np.float64)
    x, h0, c0, G1, G2, G3 = random_problem(spec, seed=2)
    is_lstm = cell == "lstm"
    D = spec.num_directions

    out, final, cache = net.forward_features(x, state=(h0, c0) if is_lstm else h0, train=True)
    masks = [layer.mask for layer in cache.stack.layers]
    assert masks[-1] is None  # no dropout after the last layer
    for m in masks[:-1]:
        assert set(np.unique(m)) == {0.0, 1.0 / 0.6}
    dx, d_state0 = net.backward_features(G1, (G2, G3) if is_lstm else G2, cache)

    xt = torch.tensor(x, requires_grad=True)
    h0t, c0t = torch.tensor(h0, requires_grad=True), torch.tensor(c0, requires_grad=True)
    inp, modules, h_ns, c_ns = xt, [], [], []
    for layer in range(spec.num_layers):
        module = torch_module(spec, net.params, layer)
        sl = slice(layer * D, (layer + 1) * D)
        inp, fin = module(inp, (h0t[sl], c0t[sl]) if is_lstm else h0t[sl])
        h_ns.append(fin[0] if is_lstm else fin)
        if is_lstm:
            c_ns.append(fin[1])
        if masks[layer] is not None:
            inp = inp * torch.from_numpy(masks[layer].transpose(1, 0, 2))
        modules.append(module)
    loss = (inp * torch.from_numpy(G1)).sum() + (torch.cat(h_ns) * torch.from_numpy(G2)).sum()
    if is_lstm:
        loss = loss + (torch.cat(c_ns) * torch.from_numpy(G3)).sum()
    loss.backward()

    close(out, inp.detach().numpy())
    close(final[0] if is_lstm else final, torch.cat(h_ns).detach().numpy())
    close(dx, xt.grad.numpy())
    close(d_state0[0] if is_lstm else d_state0, h0t.grad.numpy())
    if is_lstm:
        close(d_state0[1], c0t.grad.numpy())
    for layer, module in enumerate(modules):
        for name, g in torch_grads(module, layer).items():
            close(net.grads[name], g)


def test_dropout_only_in_training_and_reproducible_from_state_dict():
    spec = make_spec("lstm", num_layers=2, dropout=0.5)
    net = NumpyRecurrentNet(spec, seed=3, dtype=np.float64)
    x, *_ = random_problem(spec)
    plain = NumpyRecurrentNet(make_spec("lstm", num_layers=2), seed=3, dtype=np.float64)
    out_eval, _, cache = net.forward_features(x)
    assert all(layer.mask is None for layer in cache.stack.layers)
    np.testing.assert_array_equal(out_eval, plain.forward_features(x)[0])
    saved = net.state_dict()
    first, _, _ = net.forward_features(x, train=True)
    assert not np.allclose(first, out_eval)
    second, _, _ = net.forward_features(x, train=True)
    assert not np.array_equal(first, second)  # a fresh mask per call
    net.load_state_dict(saved)
    again, _, _ = net.forward_features(x, train=True)
    np.testing.assert_array_equal(again, first)


# ------------------------------------------------------------------------------------ finite differences
def finite_difference_check(loss_fn, pairs, rng, eps=1e-5, samples=12, tol=1e-6) -> None:
    """Central differences on ``samples`` random entries of each array (perturbed in place) against the
    analytic gradient; relative error ||num - ana|| / (||num|| + ||ana||) below ``tol``."""
    for name, array, grad in pairs:
        flat = array.reshape(-1)
        picks = rng.choice(flat.size, size=min(samples, flat.size), replace=False)
        numeric = []
        for k in picks:
            numeric.append(central_difference(flat, (int(k),), loss_fn, eps))
        numeric, analytic = np.array(numeric), grad.reshape(-1)[picks]
        denominator = np.linalg.norm(numeric) + np.linalg.norm(analytic)
        assert denominator > 0, name
        error = np.linalg.norm(numeric - analytic) / denominator
        assert error < tol, f"{name}: relative error {error:.2e}"


@pytest.mark.parametrize(("cell", "nonlinearity"), CELLS, ids=CELL_IDS)
def test_cells_finite_differences(cell, nonlinearity):
    spec = make_spec(cell, nonlinearity, num_layers=2, bidirectional=True)
    net = NumpyRecurrentNet(spec, seed=4, dtype=np.float64)
    x, h0, c0, G1, G2, G3 = random_problem(spec, seed=4)
    lengths = np.array([5, 2, 4])
    is_lstm = cell == "lstm"
    state = (h0, c0) if is_lstm else h0

    def loss():
        out, final, _ = net.forward_features(x, lengths, state=state)
        h_n = final[0] if is_lstm else final
        value = np.sum(out * G1) + np.sum(h_n * G2)
        return value + (np.sum(final[1] * G3) if is_lstm else 0.0)

    _, _, cache = net.forward_features(x, lengths, state=state)
    dx, d_state0 = net.backward_features(G1, (G2, G3) if is_lstm else G2, cache)
    pairs = [(n, p, net.grads[n]) for n, p in net.params.items() if n.startswith("rnn.")]
    pairs += [("x", x, dx), ("h0", h0, d_state0[0] if is_lstm else d_state0)]
    if is_lstm:
        pairs.append(("c0", c0, d_state0[1]))
    finite_difference_check(loss, pairs, np.random.default_rng(0))


def test_embedding_and_head_finite_differences():
    spec = make_spec("gru", num_layers=1, embed_dim=3, padding_idx=0)
    net = NumpyRecurrentNet(spec, seed=5, dtype=np.float64)
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 7, size=(B, T))
    G = rng.standard_normal((B, T, 3))

    def loss():
        out, _, _ = net.forward(ids)
        logits, _ = net.head_forward(out)
        return float(np.sum(logits * G))

    out, _, cache = net.forward(ids)
    _logits, head_cache = net.head_forward(out)
    d_out = net.head_backward(G, head_cache)
    net.backward(d_out, None, cache)
    # row padding_idx is left out: torch (and we) give it no gradient, whatever the true derivative
    pairs = [("embedding.weight[1:]", net.params["embedding.weight"][1:], net.grads["embedding.weight"][1:])]
    pairs += [(n, net.params[n], net.grads[n]) for n in ("head.weight", "head.bias")]
    finite_difference_check(loss, pairs, rng, samples=15)
    assert np.all(net.grads["embedding.weight"][0] == 0)
    assert np.any(ids == 0)

    h = rng.standard_normal((4, spec.features))
    _, head_cache = net.head_forward(h)
    dh = net.head_backward(G[0, :4], head_cache)
    finite_difference_check(lambda: float(np.sum(net.head_forward(h)[0] * G[0, :4])), [("h", h, dh)], rng)


def test_losses_finite_differences():
    rng = np.random.default_rng(6)
    logits = rng.standard_normal((7, 5))
    y = rng.integers(0, 5, size=7)
    y[[1, 4]] = -100
    _, dlogits = cross_entropy(logits, y)
    finite_difference_check(lambda: cross_entropy(logits, y)[0], [("logits", logits, dlogits)], rng, samples=35)
    pred, target = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    _, dpred = mse(pred, target)
    finite_difference_check(lambda: mse(pred, target)[0], [("pred", pred, dpred)], rng)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_full_net_finite_differences_classify_and_language_model(cell):
    rng = np.random.default_rng(7)
    # classify: padded batch, top layer's final state (both directions) -> head -> cross-entropy
    spec = make_spec(cell, num_layers=2, bidirectional=True, embed_dim=3, padding_idx=0)
    net = NumpyRecurrentNet(spec, seed=7, dtype=np.float64)
    lengths = np.array([4, 5, 2])
    ids = rng.integers(1, 7, size=(B, T))
    for b, n in enumerate(lengths):
        ids[b, n:] = 0
    y = rng.integers(0, 3, size=B)

    def classify_loss():
        _, final, _ = net.forward(ids, lengths)
        return cross_entropy(net.head_forward(net.last_hidden(final))[0], y)[0]

    _, final, cache = net.forward(ids, lengths)
    logits, head_cache = net.head_forward(net.last_hidden(final))
    _, dlogits = cross_entropy(logits, y)
    net.backward(None, net.last_hidden_backward(net.head_backward(dlogits, head_cache)), cache)
    pairs = [(n, p, net.grads[n]) for n, p in net.params.items()]
    finite_difference_check(classify_loss, pairs, rng, samples=6)
    assert np.all(net.grads["embedding.weight"][0] == 0)

    # language model: one-hot inputs, every output -> head -> cross-entropy with ignored targets
    spec = make_spec(cell, num_layers=2, embed_dim=0)
    net = NumpyRecurrentNet(spec, seed=8, dtype=np.float64)
    ids = rng.integers(0, 7, size=(B, T))
    targets = rng.integers(0, 3, size=(B, T))
    targets[0, 1] = -100

    def lm_loss():
        out, _, _ = net.forward(ids)
        return cross_entropy(net.head_forward(out)[0], targets)[0]

    out, _, cache = net.forward(ids)
    logits, head_cache = net.head_forward(out)
    _, dlogits = cross_entropy(logits, targets)
    net.backward(net.head_backward(dlogits, head_cache), None, cache)
    pairs = [(n, p, net.grads[n]) for n, p in net.params.items()]
    finite_difference_check(lm_loss, pairs, rng, samples=6)


# ------------------------------------------------------------------------------------------------- losses
def test_cross_entropy_equals_torch_with_ignore_index():
    rng = np.random.default_rng(9)
    logits = rng.standard_normal((11, 6)) * 5
    y = rng.integers(0, 6, size=11)
    y[[0, 3, 7]] = -100
    loss, dlogits = cross_entropy(logits, y)
    zt = torch.tensor(logits, requires_grad=True)
    lt = F.cross_entropy(zt, torch.from_numpy(y), ignore_index=-100)
    lt.backward()
    assert abs(loss - lt.item()) < 1e-12
    close(dlogits, zt.grad.numpy(), 1e-12)
    # another ignore_index, class-last [..., C] logits, and extreme logits (log-sum-exp)
    y2 = np.where(y == -100, 2, y)
    big = logits.reshape(1, 11, 6) * 200
    loss2, d2 = cross_entropy(big, y2.reshape(1, 11), ignore_index=2)
    zt2 = torch.tensor(big.reshape(11, 6), requires_grad=True)
    lt2 = F.cross_entropy(zt2, torch.from_numpy(y2), ignore_index=2)
    lt2.backward()
    assert np.isfinite(loss2)
    assert abs(loss2 - lt2.item()) < 1e-9
    close(d2.reshape(11, 6), zt2.grad.numpy(), 1e-12)
    # every target ignored: NaN loss and zero gradient, as torch
    loss3, d3 = cross_entropy(logits, np.full(11, -100))
    assert np.isnan(loss3)
    assert np.all(d3 == 0)


def test_mse_equals_torch():
    rng = np.random.default_rng(10)
    pred, target = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    loss, dpred = mse(pred, target)
    pt = torch.tensor(pred, requires_grad=True)
    lt = F.mse_loss(pt, torch.from_numpy(target))
    lt.backward()
    assert abs(loss - lt.item()) < 1e-12
    close(dpred, pt.grad.numpy(), 1e-12)


# ---------------------------------------------------------------------------------------- inputs and heads
def torch_twin(spec: NetSpec, net: NumpyRecurrentNet) -> TorchRecurrentNet:
    twin = TorchRecurrentNet(spec, seed=0).double()
    twin.load_arrays(net.params)
    return twin


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_embedding_gradient_and_padding_row_match_torch(cell):
    """Language-model style (no lengths): the padding token appears, torch gives its row no gradient."""
    spec = make_spec(cell, num_layers=2, embed_dim=3, padding_idx=0)
    net = NumpyRecurrentNet(spec, seed=11, dtype=np.float64)
    twin = torch_twin(spec, net)
    rng = np.random.default_rng(11)
    ids = rng.integers(0, 7, size=(B, T))
    ids[:, 0] = 0
    G = rng.standard_normal((B, T, spec.features))
    out_t, _ = twin(torch.from_numpy(ids))
    (out_t * torch.from_numpy(G)).sum().backward()
    out, _, cache = net.forward(ids)
    net.backward(G, None, cache)
    close(out, out_t.detach().numpy())
    assert np.all(net.grads["embedding.weight"][0] == 0)
    present = np.setdiff1d(np.unique(ids), [0])
    assert present.size >= 4
    assert np.all(np.abs(net.grads["embedding.weight"][present]).sum(axis=1) > 0)
    for name, p in twin.named_parameters():
        if name.startswith(("embedding", "rnn")):
            close(net.grads[name], p.grad.numpy())


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_one_hot_inputs_equal_torch_on_one_hot_vectors(bidirectional):
    spec = make_spec("lstm", num_layers=2, bidirectional=bidirectional, embed_dim=0)
    net = NumpyRecurrentNet(spec, seed=12, dtype=np.float64)
    module = torch_module(spec, net.params)
    rng = np.random.default_rng(12)
    ids = rng.integers(0, 7, size=(B, T))
    G = rng.standard_normal((B, T, spec.features))
    one_hot = F.one_hot(torch.from_numpy(ids), 7).double().requires_grad_(True)
    out_t, _ = module(one_hot)
    (out_t * torch.from_numpy(G)).sum().backward()
    out, _, cache = net.forward(ids)
    net.backward(G, None, cache)
    close(out, out_t.detach().numpy())
    for name, g in torch_grads(module).items():
        close(net.grads[name], g)
    # and the same network fed the one-hot vectors as features
    out_f, _, _ = net.forward_features(one_hot.detach().numpy())
    close(out_f, out)


def test_classify_path_equals_torch_net():
    """TorchRecurrentNet's classify path: packed batch, last_hidden, head; all gradients."""
    spec = make_spec("lstm", num_layers=2, bidirectional=True, embed_dim=3, padding_idx=0)
    net = NumpyRecurrentNet(spec, seed=13, dtype=np.float64)
    twin = torch_twin(spec, net)
    rng = np.random.default_rng(13)
    lengths = np.array([2, 5, 3])
    ids = rng.integers(1, 7, size=(B, T))
    for b, n in enumerate(lengths):
        ids[b, n:] = 0
    y = rng.integers(0, 3, size=B)
    _, final_t = twin(torch.from_numpy(ids), torch.from_numpy(lengths))
    logits_t = twin.head(twin.last_hidden(final_t))
    F.cross_entropy(logits_t, torch.from_numpy(y)).backward()

    _, final, cache = net.forward(ids, lengths)
    logits, head_cache = net.head_forward(net.last_hidden(final))
    _loss, dlogits = cross_entropy(logits, y)
    net.backward(None, net.last_hidden_backward(net.head_backward(dlogits, head_cache)), cache)
    close(logits, logits_t.detach().numpy())
    for name, p in twin.named_parameters():
        close(net.grads[name], p.grad.numpy())


def test_language_model_state_carry_equals_torch_net():
    spec = make_spec("gru", num_layers=2, embed_dim=3)
    net = NumpyRecurrentNet(spec, seed=14, dtype=np.float64)
    twin = torch_twin(spec, net)
    ids = np.random.default_rng(14).integers(0, 7, size=(B, 2 * T))
    out_t1, state_t = twin(torch.from_numpy(ids[:, :T]))
    out_t2, state_t = twin(torch.from_numpy(ids[:, T:]), state=state_t)
    out1, state, _ = net.forward(ids[:, :T])
    out2, state, _ = net.forward(ids[:, T:], state=state)
    close(out1, out_t1.detach().numpy())
    close(out2, out_t2.detach().numpy())
    close(state, state_t.detach().numpy())


# ------------------------------------------------------------------------------------------------- step
@pytest.mark.parametrize("embed_dim", [3, 0], ids=["embedding", "one_hot"])
@pytest.mark.parametrize(("cell", "nonlinearity"), CELLS, ids=CELL_IDS)
def test_step_equals_full_forward(cell, nonlinearity, embed_dim):
    spec = make_spec(cell, nonlinearity, num_layers=2, embed_dim=embed_dim)
    net = NumpyRecurrentNet(spec, seed=15, dtype=np.float64)
    ids = np.random.default_rng(15).integers(0, 7, size=9)
    out, final, _ = net.forward(ids[None])
    logits_all, _ = net.head_forward(out[0])
    logits, state = net.forward_logits_last(ids[:3])
    close(logits, logits_all[2], 1e-12)
    for k in range(3, 9):
        logits, state = net.step(int(ids[k]), state)
        close(logits, logits_all[k], 1e-12)
    for ours, full in zip(state if cell == "lstm" else (state,), final if cell == "lstm" else (final,), strict=True):
        close(ours, full, 1e-12)
    # from an empty state: the same as a forward from zeros
    logits0, _ = net.step(int(ids[0]), None)
    close(logits0, logits_all[0], 1e-12)


def test_step_sees_parameter_updates_after_backward():
    spec = make_spec("lstm", embed_dim=3)
    net = NumpyRecurrentNet(spec, seed=16, dtype=np.float64)
    _, state = net.forward_logits_last([1, 2])
    before, _ = net.step(3, state)
    out, _, cache = net.forward(np.array([[1, 2]]))
    net.backward(np.ones_like(out), None, cache)
    for name, p in net.params.items():
        p -= 0.1 * net.grads[name]  # an optimizer step, in place
    _, state = net.forward_logits_last([1, 2])
    after, _ = net.step(3, state)
    full, _, _ = net.forward(np.array([[1, 2, 3]]))
    close(after, net.head_forward(full[0, -1])[0], 1e-12)
    assert not np.allclose(before, after)


def test_bidirectional_step_is_refused():
    net = NumpyRecurrentNet(make_spec("gru", bidirectional=True), seed=0)
    with pytest.raises(ValueError, match="bidirectional"):
        net.step(1, None)


# ---------------------------------------------------------------------------------------- dtype and memory
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_float32_is_close_to_float64(cell):
    spec = make_spec(cell, num_layers=2, bidirectional=True, hidden_size=6)
    results = {}
    for dtype in (np.float32, np.float64):
        net = NumpyRecurrentNet(spec, seed=17, dtype=dtype)
        rng = np.random.default_rng(17)
        x = rng.standard_normal((B, T, IN))
        G = rng.standard_normal((B, T, spec.features))
        out, _final, cache = net.forward_features(x, np.array([5, 3, 4]))
        dx, _ = net.backward_features(G, None, cache)
        assert out.dtype == dx.dtype == dtype
        assert all(g.dtype == dtype for g in net.grads.values())
        results[dtype] = (out, dx, *(net.grads[n] for n in sorted(net.grads)))
    for a32, a64 in zip(results[np.float32], results[np.float64], strict=True):
        np.testing.assert_allclose(a32, a64, rtol=0, atol=1e-4 * max(1.0, np.abs(a64).max()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_training_forward_keeps_the_dtype(dtype):
    spec = make_spec("gru", num_layers=2, bidirectional=True, dropout=0.3, embed_dim=0)
    net = NumpyRecurrentNet(spec, seed=22, dtype=dtype)
    ids = np.random.default_rng(22).integers(0, 7, size=(B, T))
    out, final, cache = net.forward(ids, np.array([2, 5, 3]), train=True)
    assert out.dtype == final.dtype == cache.stack.layers[0].mask.dtype == dtype
    net.backward(np.ones(out.shape, dtype=dtype), np.ones(final.shape, dtype=dtype), cache)
    assert all(g.dtype == dtype and np.all(np.isfinite(g)) for g in net.grads.values())


def test_gradients_accumulate_until_zero_grad():
    spec = make_spec("lstm", num_layers=2)
    net = NumpyRecurrentNet(spec, seed=18, dtype=np.float64)
    x, _, _, G1, _, _ = random_problem(spec)
    for _ in range(2):
        _, _, cache = net.forward_features(x)
        net.backward_features(G1, None, cache)
    twice = {n: g.copy() for n, g in net.grads.items()}
    net.zero_grad()
    assert all(np.all(g == 0) for g in net.grads.values())
    _, _, cache = net.forward_features(x)
    net.backward_features(G1, None, cache)
    for n, g in net.grads.items():
        close(twice[n], 2 * g)


def test_interleaved_caches_do_not_share_pooled_buffers():
    """Big work arrays come from a pool; a buffer is reused only once nothing refers to it."""
    spec = make_spec("lstm", hidden_size=64)
    rng = np.random.default_rng(19)
    x1, x2 = rng.standard_normal((2, 16, 50, IN))
    G = rng.standard_normal((16, 50, 64))
    net = NumpyRecurrentNet(spec, seed=19, dtype=np.float64)
    expected = []
    for x in (x1, x2):
        _, _, cache = net.forward_features(x)
        expected.append(net.backward_features(G, None, cache)[0])
    _, _, cache1 = net.forward_features(x1)
    _, _, cache2 = net.forward_features(x2)
    dx2, _ = net.backward_features(G, None, cache2)
    dx1, _ = net.backward_features(G, None, cache1)
    np.testing.assert_array_equal(dx1, expected[0])
    np.testing.assert_array_equal(dx2, expected[1])
    with pytest.raises(RuntimeError, match="already"):
        net.backward_features(G, None, cache1)
    a = memory.empty((300, 1000), np.float64)
    address = a.ctypes.data
    view = a[10:20]
    del a
    assert memory.empty((300, 1000), np.float64).ctypes.data != address  # `view` still holds it
    del view
    assert memory.empty((300, 1000), np.float64).ctypes.data == address
    assert memory.empty((300, 1000), np.float32).ctypes.data % memory.ALIGNMENT == 0


def test_scatter_add_rows_equals_add_at_for_small_and_large_tables():
    rng = np.random.default_rng(20)
    for rows in (5, 600):
        index = rng.integers(0, rows, size=1000)
        values = rng.standard_normal((1000, 3))
        expected = np.zeros((rows, 3))
        np.add.at(expected, index, values)
        actual = np.zeros((rows, 3))
        scatter_add_rows(actual, index, values)
        close(actual, expected, 1e-12)


def test_parameters_follow_init_and_load_arrays_checks_names():
    spec = make_spec("gru", num_layers=2, bidirectional=True)
    net = NumpyRecurrentNet(spec, seed=21, dtype=np.float32)
    arrays = init_parameters(spec, 21)
    assert set(net.params) == set(arrays) == set(net.grads)
    for name, value in arrays.items():
        assert net.params[name].dtype == np.float32
        assert net.params[name].shape == value.shape
        np.testing.assert_array_equal(net.params[name], value.astype(np.float32))
    assert net.dtype == np.float32
    with pytest.raises(KeyError, match="missing"):
        net.load_arrays({k: v for k, v in arrays.items() if k != "head.bias"})
    net.load_arrays({k: 2 * v for k, v in arrays.items()})
    np.testing.assert_array_equal(net.params["head.bias"], (2 * arrays["head.bias"]).astype(np.float32))


def test_release_idle_drops_only_buffers_nothing_refers_to():
    held = memory.empty((400, 1000), np.float64)  # 3.2 MB: pooled
    freed = memory.empty((500, 1000), np.float64)
    del freed
    released = memory.release_idle()
    assert released >= 500 * 1000 * 8  # at least the freed buffer went
    assert memory._pool_bytes >= held.nbytes  # the held array's buffer stays pooled
    assert memory.release_idle() == 0  # nothing else is idle
    again = memory.empty((500, 1000), np.float64)
    del again
    assert memory.release_idle() >= 500 * 1000 * 8  # `again` is idle now
