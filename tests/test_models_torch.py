"""TorchRecurrentNet: packed batches give the same numbers as unpadded per-sequence runs; final states."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from rnnlab.models.spec import NetSpec
from rnnlab.models.torch.recurrent import TorchRecurrentNet

pytestmark = pytest.mark.unit

PAD = 0
LENGTHS = [7, 3, 5, 1, 7, 2]


def make_net(cell: str, bidirectional: bool, embed_dim: int = 6, num_layers: int = 2) -> TorchRecurrentNet:
    spec = NetSpec(
        cell=cell,
        vocab_size=9,
        embed_dim=embed_dim,
        hidden_size=5,
        num_layers=num_layers,
        bidirectional=bidirectional,
        num_outputs=3,
        dropout=0.3,  # eval mode: no effect, but the layers exist as in training
        padding_idx=PAD if embed_dim else None,
    )
    net = TorchRecurrentNet(spec, seed=4).double()
    net.eval()
    return net


def padded_batch(pad_with_garbage: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor(LENGTHS)
    x = torch.randint(1, 9, (len(LENGTHS), max(LENGTHS)), generator=g)
    for i, n in enumerate(LENGTHS):
        if not pad_with_garbage:
            x[i, n:] = PAD
    return x, lengths  # with garbage, positions past the length hold random real tokens


def final_h(final):
    return final[0] if isinstance(final, tuple) else final


CASES = [(cell, bidi) for cell in ("rnn", "lstm", "gru") for bidi in (False, True)]


@pytest.mark.parametrize(("cell", "bidirectional"), CASES)
@pytest.mark.parametrize("pad_with_garbage", [False, True])
def test_packed_batch_equals_per_sequence_runs(cell, bidirectional, pad_with_garbage):
    net = make_net(cell, bidirectional)
    x, lengths = padded_batch(pad_with_garbage)
    with torch.no_grad():
        out, final = net(x, lengths)
        last = net.last_hidden(final)
        assert out.shape == (len(LENGTHS), max(LENGTHS), 5 * (2 if bidirectional else 1))
        for i, n in enumerate(LENGTHS):
            out_i, final_i = net(x[i : i + 1, :n])  # the sequence alone, no padding, no packing
            torch.testing.assert_close(out[i, :n], out_i[0], rtol=0, atol=1e-12)
            assert torch.all(out[i, n:] == 0)  # pad_packed_sequence fills with zeros
            torch.testing.assert_close(last[i], net.last_hidden(final_i)[0], rtol=0, atol=1e-12)
            # every layer and direction of the final state, and the LSTM's cell state
            torch.testing.assert_close(final_h(final)[:, i], final_h(final_i)[:, 0], rtol=0, atol=1e-12)
            if cell == "lstm":
                torch.testing.assert_close(final[1][:, i], final_i[1][:, 0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_without_lengths_padding_would_leak(cell):
    """The control for the test above: unpacked, the padded positions do change the final state."""
    net = make_net(cell, bidirectional=True)
    x, _ = padded_batch(pad_with_garbage=False)
    with torch.no_grad():
        _, final = net(x)
        i = LENGTHS.index(3)
        _, final_i = net(x[i : i + 1, :3])
    assert not torch.allclose(net.last_hidden(final)[i], net.last_hidden(final_i)[0], atol=1e-6)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_bidirectional_last_hidden_is_forward_end_and_backward_start(cell):
    net = make_net(cell, bidirectional=True)
    x, lengths = padded_batch(pad_with_garbage=True)
    h = 5
    with torch.no_grad():
        out, final = net(x, lengths)
        last = net.last_hidden(final)
    assert last.shape == (len(LENGTHS), 2 * h)
    for i, n in enumerate(LENGTHS):
        expected = torch.cat([out[i, n - 1, :h], out[i, 0, h:]])  # forward at its last step, backward at t=0
        torch.testing.assert_close(last[i], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_unidirectional_last_hidden_is_the_top_layer_at_the_last_step(cell):
    net = make_net(cell, bidirectional=False, num_layers=3)
    x, lengths = padded_batch(pad_with_garbage=True)
    with torch.no_grad():
        out, final = net(x, lengths)
        last = net.last_hidden(final)
    assert last.shape == (len(LENGTHS), 5)
    for i, n in enumerate(LENGTHS):
        torch.testing.assert_close(last[i], out[i, n - 1], rtol=0, atol=1e-12)


@pytest.mark.parametrize(("cell", "bidirectional"), CASES)
def test_one_hot_inputs(cell, bidirectional):
    net = make_net(cell, bidirectional, embed_dim=0)
    assert net.embedding is None
    x, lengths = padded_batch(pad_with_garbage=True)
    embedded = net.embed(x)
    assert embedded.dtype == torch.float64
    torch.testing.assert_close(embedded, torch.eye(9, dtype=torch.float64)[x], rtol=0, atol=0)
    with torch.no_grad():
        out, final = net(x, lengths)
        for i, n in enumerate(LENGTHS):
            out_i, final_i = net(x[i : i + 1, :n])
            torch.testing.assert_close(out[i, :n], out_i[0], rtol=0, atol=1e-12)
            torch.testing.assert_close(net.last_hidden(final)[i], net.last_hidden(final_i)[0], rtol=0, atol=1e-12)


def test_one_hot_follows_the_model_dtype():
    net = make_net("gru", False, embed_dim=0).float()
    assert net.embed(torch.tensor([[1, 2]])).dtype == torch.float32


def test_state_carries_over_between_chunks():
    """Feeding a sequence in two chunks with the returned state equals feeding it whole (used by generate)."""
    net = make_net("lstm", bidirectional=False)
    x = torch.randint(1, 9, (2, 10), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole, _ = net(x)
        first, state = net(x[:, :6])
        second, _ = net(x[:, 6:], state=state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, rtol=0, atol=1e-12)


def test_padding_embedding_gets_no_gradient():
    net = make_net("gru", bidirectional=False).train()
    x, lengths = padded_batch(pad_with_garbage=False)
    _, final = net(x, lengths)
    loss = F.cross_entropy(net.head(net.last_hidden(final)), torch.tensor([0, 1, 2, 0, 1, 2]))
    loss.backward()
    grad = net.embedding.weight.grad
    assert torch.all(grad[PAD] == 0)
    assert grad[1:].abs().sum() > 0
