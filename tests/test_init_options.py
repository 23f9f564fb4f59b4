"""model.init (default, orthogonal, identity) and model.forget_bias: what the one initializer draws, that both
backends start from it, and the one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab.config import validate
from rnnlab.errors import ConfigError
from rnnlab.models.init import init_parameters
from rnnlab.models.numpy.net import NumpyRecurrentNet
from rnnlab.models.spec import NetSpec
from rnnlab.models.torch.recurrent import TorchRecurrentNet

pytestmark = pytest.mark.unit

H = 6


def spec(cell: str = "lstm", **kw) -> NetSpec:
    return NetSpec(cell, 7, 4, H, 2, True, 3, **kw)


@pytest.mark.parametrize(("cell", "variant"), [("lstm", "standard"), ("gru", "standard"), ("lstm", "peephole"),
                                               ("gru", "mgu"), ("rnn", "standard"), ("lstm", "fgr")])  # fmt: skip
def test_orthogonal_makes_every_gate_block_of_w_hh_orthogonal_and_changes_nothing_else(cell, variant):
    default = init_parameters(spec(cell, variant=variant), 3)
    ortho = init_parameters(spec(cell, variant=variant, init="orthogonal"), 3)
    for name, value in ortho.items():
        if "weight_hh" in name:
            for g in range(value.shape[0] // H):
                block = value[g * H : (g + 1) * H]
                np.testing.assert_allclose(block @ block.T, np.eye(H), atol=1e-12, err_msg=f"{name} block {g}")
            assert not np.allclose(value, default[name])
        else:
            np.testing.assert_array_equal(value, default[name], err_msg=name)  # the same draws for the rest


def test_identity_is_the_irnn():
    drawn = init_parameters(spec("rnn", nonlinearity="relu", init="identity"), 3)
    for name, value in drawn.items():
        if "weight_hh" in name:
            np.testing.assert_array_equal(value, np.eye(H))
        elif "bias_ih" in name or "bias_hh" in name:
            np.testing.assert_array_equal(value, 0.0)
        elif "weight_ih" in name:
            assert 0.5e-3 < value.std() < 2e-3
            assert abs(value.mean()) < 1e-3


def test_forget_bias_shifts_the_forget_block_of_bias_ih_only():
    default = init_parameters(spec("lstm"), 3)
    shifted = init_parameters(spec("lstm", forget_bias=1.0), 3)
    for name, value in shifted.items():
        delta = value - default[name]
        if "bias_ih" in name:  # gate order i, f, g, o: the second block
            np.testing.assert_allclose(delta, np.r_[np.zeros(H), np.ones(H), np.zeros(2 * H)], atol=1e-15)
        else:
            np.testing.assert_array_equal(delta, 0.0, err_msg=name)
    fgr = init_parameters(spec("lstm", variant="fgr", forget_bias=1.0), 3)  # i, f, g, o: the gate recurrence
    fgr_default = init_parameters(spec("lstm", variant="fgr"), 3)  # (weight_gg) and peepholes are left alone
    for name, value in fgr.items():
        delta = value - fgr_default[name]
        expected = np.r_[np.zeros(H), np.ones(H), np.zeros(2 * H)] if "bias_ih" in name else 0.0
        np.testing.assert_allclose(delta, np.broadcast_to(expected, delta.shape), atol=1e-15, err_msg=name)
    nig = init_parameters(spec("lstm", variant="nig", forget_bias=2.0), 3)  # gates f, g, o: the first block
    base = init_parameters(spec("lstm", variant="nig"), 3)
    np.testing.assert_allclose((nig["rnn.bias_ih_l0"] - base["rnn.bias_ih_l0"])[:H], 2.0)


@pytest.mark.parametrize("kw", [dict(init="orthogonal", forget_bias=1.0), dict(init="default", forget_bias=0.5)])
def test_both_backends_start_from_the_same_weights(kw):
    s = spec("lstm", **kw)
    numpy_net = NumpyRecurrentNet(s, 5, dtype=np.float64)
    torch_net = TorchRecurrentNet(s, 5).double()
    torch_net.load_arrays(init_parameters(s, 5))
    for name, p in torch_net.named_parameters():
        np.testing.assert_array_equal(numpy_net.params[name], p.detach().numpy(), err_msg=name)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=lstm", "model.init=identity"], "model.init=identity (the IRNN: W_hh = I, biases 0) is defined for "
                                                "one-gate cells such as model=rnn, not model=lstm (4 gate blocks)"),
        (["model=gru", "model.forget_bias=1"], "model.forget_bias=1.0 needs a cell with a forget gate, not model=gru"),
        (["model=lstm", "model.variant=cifg", "model.forget_bias=1"],
         "model.forget_bias=1.0 needs a cell with a forget gate, not model=lstm model.variant=cifg"),
        (["model.init=xavier"], "model.init=xavier: choose one of default, orthogonal, identity"),
    ],
)  # fmt: skip
def test_refusals_are_one_line(raw_compose, overrides, message):
    with pytest.raises(ConfigError) as info:
        validate(raw_compose(*overrides))
    assert str(info.value) == message


def test_accepted(raw_compose):
    validate(raw_compose("model=rnn", "model.nonlinearity=relu", "model.init=identity"))
    validate(raw_compose("model=lstm", "model.variant=nig", "model.init=orthogonal", "model.forget_bias=1"))
