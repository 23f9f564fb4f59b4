"""Networks of float features (``NetSpec.input_features``): time series and synthetic sequences feed [B, T, F]
floats straight into the recurrent stack, on both backends, with the same weights and no embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnlab.models.init import init_parameters
from rnnlab.models.numpy.net import NumpyRecurrentNet
from rnnlab.models.spec import NetSpec
from rnnlab.models.torch.recurrent import TorchRecurrentNet

pytestmark = pytest.mark.unit

B, T, F, H = 3, 6, 2, 5


def spec(cell: str, bidirectional: bool = False, num_layers: int = 1) -> NetSpec:
    return NetSpec(cell, vocab_size=0, embed_dim=64, hidden_size=H, num_layers=num_layers,
                   bidirectional=bidirectional, num_outputs=1, input_features=F)  # fmt: skip


def test_no_embedding_and_the_input_width_is_the_feature_count():
    s = spec("lstm")
    params = init_parameters(s, seed=0)
    assert "embedding.weight" not in params
    assert params["rnn.weight_ih_l0"].shape == (4 * H, F)
    assert TorchRecurrentNet(s, seed=0).embedding is None


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_features_forward_and_gradients_equal_torch(cell, bidirectional):
    s = spec(cell, bidirectional, num_layers=2)
    torch_net = TorchRecurrentNet(s, seed=3).double()
    torch_net.load_arrays(init_parameters(s, seed=3))
    numpy_net = NumpyRecurrentNet(s, seed=3, dtype=np.float64)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, F))
    lengths = np.array([T, 2, 4])
    g = rng.standard_normal((B, s.num_outputs))

    xt = torch.tensor(x)
    out_t, final_t = torch_net(xt, torch.as_tensor(lengths))
    pred_t = torch_net.head(torch_net.last_hidden(final_t))
    (pred_t * torch.from_numpy(g)).sum().backward()

    out, final, cache = numpy_net.forward(x, lengths, train=True)  # forward() dispatches to the features path
    feat = numpy_net.last_hidden(final)
    pred, head_cache = numpy_net.head_forward(feat)
    d_state = numpy_net.last_hidden_backward(numpy_net.head_backward(g, head_cache))
    numpy_net.backward(None, d_state, cache)

    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(pred, pred_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    for name, p in torch_net.named_parameters():
        np.testing.assert_allclose(numpy_net.grads[name], p.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_step_is_refused_for_features():
    net = NumpyRecurrentNet(spec("gru"), seed=0)
    with pytest.raises(ValueError, match="float features"):
        net.step(0)
