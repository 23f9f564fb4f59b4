"""Elman RNN, the reference version: one layer, one direction, written to be read against the equations.

torch.nn.RNN, for t = 1 .. T (weights as torch stores them, so ``W x`` is ``x @ W.T`` on a batch of rows):

    a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
    h_t = tanh(a_t)                              (relu(a_t) with nonlinearity="relu")

Backpropagation through time, for t = T .. 1. h_t feeds the output (gradient dhs[t]) and the next step
(gradient dh_next, which starts as the final state's gradient dh_n):

    dh_t  = dhs[t] + dh_next
    da_t  = dh_t ⊙ (1 - h_t²)                    (relu: dh_t ⊙ [a_t > 0])
    dW_ih += da_t^T x_t        db_ih += Σ_batch da_t        dx_t    = da_t W_ih
    dW_hh += da_t^T h_{t-1}    db_hh += Σ_batch da_t        dh_next = da_t W_hh   (becomes dh_{t-1})

Shapes: x [T, B, I], h0 [B, H]; params under torch's names: weight_ih [H, I], weight_hh [H, H], bias_ih [H],
bias_hh [H]. The optimised version is rnnlab/cells/rnn.py; docs/cells.md explains the difference.
"""

import numpy as np


def forward(x, h0, params, nonlinearity="tanh"):
    """x [T, B, I], h0 [B, H] -> hs [T, B, H] (every h_t), h_n [B, H], cache."""
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    W_ih, W_hh = params["weight_ih"], params["weight_hh"]
    b_ih, b_hh = params["bias_ih"], params["bias_hh"]
    steps = []  # what backward needs from each step, in time order
    h_prev = h0
    for x_t in x:
        a = x_t @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh
        h = np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0)
        steps.append({"x": x_t, "h_prev": h_prev, "h": h})
        h_prev = h
    hs = np.stack([step["h"] for step in steps])
    cache = {"params": params, "nonlinearity": nonlinearity, "steps": steps}
    return hs, h_prev, cache


def backward(dhs, dh_n, cache):
    """dhs [T, B, H] (gradient of every h_t), dh_n [B, H] (of the final state) -> grads, dx [T, B, I], dh0 [B, H].

    grads holds weight_ih, weight_hh, bias_ih, bias_hh, shaped as the parameters."""
    params, steps = cache["params"], cache["steps"]
    W_ih, W_hh = params["weight_ih"], params["weight_hh"]
    grads = {name: np.zeros_like(params[name]) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    dx = [None] * len(steps)
    dh_next = dh_n
    for t in reversed(range(len(steps))):
        x_t, h_prev, h = steps[t]["x"], steps[t]["h_prev"], steps[t]["h"]
        dh = dhs[t] + dh_next  # h_t goes to the output and to step t + 1
        # through the nonlinearity: tanh'(a) = 1 - tanh(a)², relu'(a) = [a > 0] (and h > 0 exactly where a > 0)
        da = dh * (1 - h * h if cache["nonlinearity"] == "tanh" else h > 0)
        grads["weight_ih"] += da.T @ x_t
        grads["weight_hh"] += da.T @ h_prev
        grads["bias_ih"] += da.sum(axis=0)
        grads["bias_hh"] += da.sum(axis=0)
        dx[t] = da @ W_ih
        dh_next = da @ W_hh  # the gradient of h_{t-1}
    return grads, np.stack(dx), dh_next
