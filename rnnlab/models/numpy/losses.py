"""Losses, each returning (loss, gradient of the loss with respect to its input).

Softmax cross-entropy, as ``F.cross_entropy(logits, y, reduction="mean", ignore_index=...)``:

    log p[n, c] = z[n, c] - log sum_k exp(z[n, k])            (log-sum-exp, shifted by the row maximum)
    loss        = -(1 / |V|) sum_{n in V} log p[n, y[n]]        V = {n : y[n] != ignore_index}
    dloss/dz    = (softmax(z)[n] - one_hot(y[n])) / |V|         for n in V, 0 for ignored rows

Mean squared error, as ``F.mse_loss(pred, target)``:

    loss = (1 / N) sum (pred - target)^2,    dloss/dpred = 2 (pred - target) / N

Bernoulli negative log-likelihood of independent binary outputs, as ``F.binary_cross_entropy_with_logits(z[S],
y[S], reduction="sum") / |S|`` with S the scored rows (targets >= 0; padding rows carry -1):

    loss        = (1 / |S|) sum_{n in S} sum_k [ max(z, 0) - z y + log(1 + exp(-|z|)) ]   (= softplus(z) - z y)
    dloss/dz    = (sigmoid(z) - y) / |S|        for n in S, 0 for the other rows

Everything is computed in the input's dtype. With every target ignored, the loss is NaN and the gradient zero,
as torch gives.
"""

from __future__ import annotations

import numpy as np

from rnnlab.models.numpy import memory

IGNORE_INDEX = -100  # torch's default


def cross_entropy(
    logits: np.ndarray, targets: np.ndarray, ignore_index: int = IGNORE_INDEX
) -> tuple[float, np.ndarray]:
    """logits [..., C] (classes on the last axis), targets [...] ints -> (mean loss, dlogits [..., C])."""
    num_classes = logits.shape[-1]
    z = logits.reshape(-1, num_classes)
    y = np.asarray(targets).reshape(-1)
    if y.shape[0] != z.shape[0]:
        raise ValueError(f"{z.shape[0]} rows of logits but {y.shape[0]} targets")
    valid = y != ignore_index
    count = int(valid.sum())
    safe_y = np.where(valid, y, 0)
    rows = np.arange(z.shape[0])

    shifted = np.subtract(z, z.max(axis=1, keepdims=True), out=memory.empty(z.shape, z.dtype))
    p = np.exp(shifted, out=memory.empty(z.shape, z.dtype))
    sum_exp = p.sum(axis=1, keepdims=True)
    log_p_target = shifted[rows, safe_y] - np.log(sum_exp[:, 0])
    loss = -float(log_p_target[valid].sum(dtype=z.dtype)) / count if count else float("nan")

    p /= sum_exp  # softmax
    p[rows, safe_y] -= 1
    p[~valid] = 0
    if count:
        p *= np.asarray(1.0 / count, dtype=z.dtype)
    return loss, p.reshape(logits.shape)


def mse(pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean squared error over every element -> (loss, dpred)."""
    diff = pred - np.asarray(target, dtype=pred.dtype)
    loss = float(np.mean(diff * diff))
    diff *= np.asarray(2.0 / diff.size, dtype=pred.dtype)
    return loss, diff


def bernoulli_nll(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """logits [..., K] and 0/1 targets of the same shape, rows of -1 unscored -> (NLL summed over K and averaged
    over the scored rows, dlogits [..., K])."""
    k = logits.shape[-1]
    z = logits.reshape(-1, k)
    y = np.asarray(targets).reshape(-1, k)
    if y.shape != z.shape:
        raise ValueError(f"logits {logits.shape} and targets {np.shape(targets)} differ")
    scored = y[:, 0] >= 0
    count = int(scored.sum())
    y = y.astype(z.dtype, copy=False)
    # softplus(z) - z y = max(z, 0) - z y + log1p(exp(-|z|)): no overflow for large |z|
    elementwise = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    loss = float(elementwise[scored].sum(dtype=z.dtype)) / count if count else float("nan")
    grad = np.empty_like(z)
    np.negative(z, out=grad)
    with np.errstate(over="ignore"):  # exp(-z) = inf for z < -709 (float64): sigmoid(z) = 1 / inf = 0, exactly
        np.exp(grad, out=grad)
    grad += 1
    np.reciprocal(grad, out=grad)  # sigmoid(z)
    grad -= y
    grad[~scored] = 0
    if count:
        grad *= np.asarray(1.0 / count, dtype=z.dtype)
    return loss, grad.reshape(logits.shape)
