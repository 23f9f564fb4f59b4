"""Gated recurrent unit, the reference version: one layer, one direction, written to be read against the equations.

torch.nn.GRU, for t = 1 .. T (σ(a) = 1 / (1 + exp(-a)); ⊙ is the elementwise product):

    r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)                reset gate
    z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)                update gate
    n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))     candidate state
    h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}

torch stacks the gate blocks along the first axis in the order r, z, n: weight_ih = [W_ir; W_iz; W_in] [3H, I],
weight_hh = [W_hr; W_hz; W_hn] [3H, H], bias_ih = [b_ir; b_iz; b_in] [3H], bias_hh likewise. Unlike the LSTM's,
b_hn is not simply added to b_in: r_t multiplies it, so the two biases get different gradients.

Backpropagation through time, for t = T .. 1 (dh_next starts as the final state's gradient dh_n):

    dh_t  = dhs[t] + dh_next
    dn_t  = dh_t ⊙ (1 - z_t)      dz_t = dh_t ⊙ (h_{t-1} - n_t)
    da_n  = dn_t ⊙ (1 - n_t²)     dr_t = da_n ⊙ (W_hn h_{t-1} + b_hn)      dhn = r_t ⊙ da_n
    da_r  = dr_t ⊙ r_t(1 - r_t)   da_z = dz_t ⊙ z_t(1 - z_t)
    input side  (W_ih x_t + b_ih):    dxi = [da_r; da_z; da_n]    dW_ih += dxi^T x_t       db_ih += Σ_batch dxi
    hidden side (W_hh h_{t-1} + b_hh): dhh = [da_r; da_z; dhn]     dW_hh += dhh^T h_{t-1}   db_hh += Σ_batch dhh
    dx_t = dxi W_ih               dh_next = dh_t ⊙ z_t + dhh W_hh

Shapes: x [T, B, I], h0 [B, H]. The optimised version is rnnlab/cells/gru.py; docs/cells.md explains the difference.
"""

import numpy as np


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def forward(x, h0, params):
    """x [T, B, I], h0 [B, H] -> hs [T, B, H] (every h_t), h_n [B, H], cache."""
    W_ir, W_iz, W_in = np.split(params["weight_ih"], 3)
    W_hr, W_hz, W_hn = np.split(params["weight_hh"], 3)
    b_ir, b_iz, b_in = np.split(params["bias_ih"], 3)
    b_hr, b_hz, b_hn = np.split(params["bias_hh"], 3)
    steps = []  # what backward needs from each step, in time order
    h_prev = h0
    for x_t in x:
        r = sigmoid(x_t @ W_ir.T + b_ir + h_prev @ W_hr.T + b_hr)
        z = sigmoid(x_t @ W_iz.T + b_iz + h_prev @ W_hz.T + b_hz)
        hn = h_prev @ W_hn.T + b_hn  # W_hn h_{t-1} + b_hn, kept: r_t multiplies it
        n = np.tanh(x_t @ W_in.T + b_in + r * hn)
        h = (1 - z) * n + z * h_prev
        steps.append({"x": x_t, "h_prev": h_prev, "r": r, "z": z, "hn": hn, "n": n, "h": h})
        h_prev = h
    hs = np.stack([step["h"] for step in steps])
    return hs, h_prev, {"params": params, "steps": steps}


def internals(cache):
    """The gate activations of every step by name, [T, B, H] each (what the analysis pictures show)."""
    return {name: np.stack([step[name] for step in cache["steps"]]) for name in ("r", "z", "n")}


def backward(dhs, dh_n, cache):
    """dhs [T, B, H] (gradient of every h_t), dh_n [B, H] (of the final state) -> grads, dx [T, B, I], dh0 [B, H].

    grads holds weight_ih, weight_hh, bias_ih, bias_hh, shaped as the parameters."""
    params, steps = cache["params"], cache["steps"]
    W_ih, W_hh = params["weight_ih"], params["weight_hh"]
    grads = {name: np.zeros_like(params[name]) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    dx = [None] * len(steps)
    dh_next = dh_n
    for t in reversed(range(len(steps))):
        s = steps[t]
        r, z, n, h_prev = s["r"], s["z"], s["n"], s["h_prev"]
        dh = dhs[t] + dh_next  # h_t goes to the output and to step t + 1
        dn = dh * (1 - z)  # h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}
        dz = dh * (h_prev - n)
        da_n = dn * (1 - n**2)  # n_t = tanh(a_n), a_n = W_in x_t + b_in + r_t ⊙ hn
        dr = da_n * s["hn"]
        dhn = da_n * r  # the gradient of hn = W_hn h_{t-1} + b_hn
        da_r = dr * r * (1 - r)  # σ' = σ(1 - σ)
        da_z = dz * z * (1 - z)
        d_input_side = np.concatenate([da_r, da_z, da_n], axis=1)  # of W_ih x_t + b_ih, stacked r, z, n
        d_hidden_side = np.concatenate([da_r, da_z, dhn], axis=1)  # of W_hh h_{t-1} + b_hh
        grads["weight_ih"] += d_input_side.T @ s["x"]
        grads["weight_hh"] += d_hidden_side.T @ h_prev
        grads["bias_ih"] += d_input_side.sum(axis=0)
        grads["bias_hh"] += d_hidden_side.sum(axis=0)
        dx[t] = d_input_side @ W_ih
        dh_next = dh * z + d_hidden_side @ W_hh  # the gradient of h_{t-1}: directly and through the gates
    return grads, np.stack(dx), dh_next
