"""task=polyphonic's pieces without a Trainer: the Bernoulli NLL of both backends against torch autograd and finite
differences, the frame-level accuracy counts, the sampler and the piano-roll picture."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import central_difference

from rnnlab.models.numpy.losses import bernoulli_nll
from rnnlab.tasks.objectives import BernoulliNLL

pytestmark = pytest.mark.unit


def _batch(rng: np.random.Generator, b: int = 3, t: int = 5, k: int = 88, scale: float = 3.0):
    """Logits [B, T, K], 0/1 targets with the padding rows (past each length) at -1, and the lengths."""
    logits = rng.normal(0.0, scale, size=(b, t, k))
    y = (rng.random((b, t, k)) < 0.1).astype(np.float64)
    lengths = np.array([t, 2, 4][:b])
    y[np.arange(t)[None, :] >= lengths[:, None]] = -1.0
    return logits, y, lengths


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numpy_bernoulli_nll_equals_torch_autograd(dtype: type) -> None:
    """The NumPy loss and gradient equal the torch objective's loss and autograd gradient, padding rows unscored."""
    logits, y, _ = _batch(np.random.default_rng(0))
    logits = logits.astype(dtype)
    loss, grad = bernoulli_nll(logits, y)
    z = torch.tensor(logits, requires_grad=True)
    ref = BernoulliNLL().torch(z, torch.tensor(y))
    ref.backward()
    ref = ref.detach()
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert loss == pytest.approx(float(ref), rel=tol)
    assert grad.dtype == dtype
    np.testing.assert_allclose(grad, z.grad.numpy(), rtol=tol, atol=tol * 1e-3)
    assert not grad[1, 2:].any()  # padding: no gradient
    assert not grad[2, 4:].any()


def test_bernoulli_nll_definition() -> None:
    """Nats per predicted step, summed over the keys: one hand-computed case, -log of the product of the
    probabilities of what happened, averaged over the two scored steps (the third is padding)."""
    z = np.array([[[0.0, 2.0]], [[-1.0, 0.5]], [[9.0, 9.0]]]).reshape(3, 2)
    y = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    expected = -(np.log(sig(0.0)) + np.log(1 - sig(2.0)) + np.log(1 - sig(-1.0)) + np.log(sig(0.5))) / 2
    loss, _ = bernoulli_nll(z, y)
    assert loss == pytest.approx(expected, rel=1e-14)
    assert float(BernoulliNLL().torch(torch.tensor(z), torch.tensor(y))) == pytest.approx(expected, rel=1e-14)


def test_bernoulli_nll_gradient_matches_finite_differences() -> None:
    logits, y, _ = _batch(np.random.default_rng(1), k=7)
    _, grad = bernoulli_nll(logits, y)
    rng = np.random.default_rng(2)
    for _ in range(25):
        idx = tuple(int(rng.integers(0, n)) for n in logits.shape)
        fd = central_difference(logits, idx, lambda: bernoulli_nll(logits, y)[0])
        assert fd == pytest.approx(grad[idx], rel=1e-6, abs=1e-9)


def test_bernoulli_nll_is_finite_for_extreme_logits() -> None:
    """|z| of 800 (exp overflows float64 past 709): the loss stays finite and equal to torch's, no overflow."""
    z = np.array([[800.0, -800.0, 800.0, -800.0]])
    y = np.array([[1.0, 0.0, 0.0, 1.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, grad = bernoulli_nll(z, y)
    assert loss == pytest.approx(1600.0)
    np.testing.assert_array_equal(grad, [[0.0, 0.0, 1.0, -1.0]])
    assert float(BernoulliNLL().torch(torch.tensor(z), torch.tensor(y))) == pytest.approx(loss)


def test_frame_counts() -> None:
    """TP, FP and FN over the masked steps only: 2 TP, 1 FP, 1 FN on the first sequence; its padding step and the
    second sequence's padding step hold notes that must not count."""
    from rnnlab.tasks.polyphonic import frame_counts

    logits = torch.tensor([[[3.0, 2.0, -1.0, 4.0], [1.0, -2.0, -3.0, -1.0], [5.0, 5.0, 5.0, 5.0]],
                           [[-1.0, -1.0, -1.0, -1.0], [5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0]]])  # fmt: skip
    y = torch.tensor([[[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]],
                      [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])  # fmt: skip
    mask = torch.tensor([[True, True, False], [True, False, False]])
    # sequence 0, step 0: predicted {0, 1, 3}, true {0, 3} -> TP 2, FP 1; step 1: predicted {0}, true {2} -> FP 1,
    # FN 1; sequence 1, step 0: nothing predicted, nothing true
    assert frame_counts(logits, y, mask) == (2, 2, 1)


def test_sample_step_draws_with_the_sigmoid_probabilities() -> None:
    from rnnlab.tasks.polyphonic import sample_step

    z = np.array([-2.0, 0.0, 1.5, 40.0, -40.0])
    rng = np.random.default_rng(0)
    draws = np.stack([sample_step(z, 1.0, rng)[0] for _ in range(20000)])
    np.testing.assert_allclose(draws.mean(axis=0), 1 / (1 + np.exp(-z)), atol=0.012)
    _, p_hot = sample_step(z, 2.0, rng)
    np.testing.assert_allclose(p_hot, 1 / (1 + np.exp(-z / 2)), rtol=1e-12)
    a = sample_step(z, 1.0, np.random.default_rng(5))[0]
    b = sample_step(z, 1.0, np.random.default_rng(5))[0]
    np.testing.assert_array_equal(a, b)


def test_key_names() -> None:
    from rnnlab.tasks.polyphonic import key_name

    assert [key_name(0), key_name(3), key_name(39), key_name(87)] == ["A0", "C1", "C4", "C8"]  # MIDI 21, 24, 60, 108
