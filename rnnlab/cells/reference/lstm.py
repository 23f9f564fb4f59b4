"""Long short-term memory, the reference version: one layer, one direction, written to be read against the equations.

torch.nn.LSTM, for t = 1 .. T (σ(a) = 1 / (1 + exp(-a)); ⊙ is the elementwise product):

    i_t = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)          input gate
    f_t = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf)          forget gate
    g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)       candidate cell
    o_t = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho)          output gate
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    h_t = o_t ⊙ tanh(c_t)

torch stacks the gate blocks along the first axis in the order i, f, g, o: weight_ih = [W_ii; W_if; W_ig; W_io]
[4H, I], weight_hh = [W_hi; W_hf; W_hg; W_ho] [4H, H], bias_ih = [b_ii; b_if; b_ig; b_io] [4H], bias_hh likewise.

Backpropagation through time, for t = T .. 1 (dh_next, dc_next start as the final states' gradients):

    dh_t = dhs[t] + dh_next
    do_t = dh_t ⊙ tanh(c_t)                  dc_t = dc_next + dh_t ⊙ o_t ⊙ (1 - tanh²(c_t))
    di_t = dc_t ⊙ g_t    df_t = dc_t ⊙ c_{t-1}    dg_t = dc_t ⊙ i_t    dc_next = dc_t ⊙ f_t
    da_t = [di ⊙ i(1 - i); df ⊙ f(1 - f); dg ⊙ (1 - g²); do ⊙ o(1 - o)]   (gradient of the stacked pre-activations)
    dW_ih += da_t^T x_t    dW_hh += da_t^T h_{t-1}    db_ih = db_hh += Σ_batch da_t
    dx_t = da_t W_ih       dh_next = da_t W_hh

Shapes: x [T, B, I], h0 and c0 [B, H]. The optimised version is rnnlab/cells/lstm.py; docs/cells.md explains the
difference.
"""

import numpy as np


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def forward(x, h0, c0, params):
    """x [T, B, I], h0 [B, H], c0 [B, H] -> hs [T, B, H] (every h_t), h_n [B, H], c_n [B, H], cache."""
    W_ii, W_if, W_ig, W_io = np.split(params["weight_ih"], 4)
    W_hi, W_hf, W_hg, W_ho = np.split(params["weight_hh"], 4)
    b_ii, b_if, b_ig, b_io = np.split(params["bias_ih"], 4)
    b_hi, b_hf, b_hg, b_ho = np.split(params["bias_hh"], 4)
    steps = []  # what backward needs from each step, in time order
    h_prev, c_prev = h0, c0
    for x_t in x:
        i = sigmoid(x_t @ W_ii.T + b_ii + h_prev @ W_hi.T + b_hi)
        f = sigmoid(x_t @ W_if.T + b_if + h_prev @ W_hf.T + b_hf)
        g = np.tanh(x_t @ W_ig.T + b_ig + h_prev @ W_hg.T + b_hg)
        o = sigmoid(x_t @ W_io.T + b_io + h_prev @ W_ho.T + b_ho)
        c = f * c_prev + i * g
        h = o * np.tanh(c)
        steps.append({"x": x_t, "h_prev": h_prev, "c_prev": c_prev, "i": i, "f": f, "g": g, "o": o, "c": c, "h": h})
        h_prev, c_prev = h, c
    hs = np.stack([step["h"] for step in steps])
    return hs, h_prev, c_prev, {"params": params, "steps": steps}


def internals(cache):
    """The gate activations and cell states of every step by name, [T, B, H] each (what the analysis pictures show)."""
    return {name: np.stack([step[name] for step in cache["steps"]]) for name in ("i", "f", "g", "o", "c")}


def backward(dhs, dh_n, dc_n, cache):
    """dhs [T, B, H] (gradient of every h_t), dh_n, dc_n [B, H] (of the final states) ->
    grads, dx [T, B, I], dh0 [B, H], dc0 [B, H]. grads holds weight_ih, weight_hh, bias_ih, bias_hh."""
    params, steps = cache["params"], cache["steps"]
    W_ih, W_hh = params["weight_ih"], params["weight_hh"]
    grads = {name: np.zeros_like(params[name]) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    dx = [None] * len(steps)
    dh_next, dc_next = dh_n, dc_n
    for t in reversed(range(len(steps))):
        s = steps[t]
        i, f, g, o = s["i"], s["f"], s["g"], s["o"]
        dh = dhs[t] + dh_next  # h_t goes to the output and to step t + 1
        tanh_c = np.tanh(s["c"])
        do = dh * tanh_c  # h_t = o_t ⊙ tanh(c_t)
        dc = dc_next + dh * o * (1 - tanh_c**2)
        di = dc * g  # c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        df = dc * s["c_prev"]
        dg = dc * i
        dc_next = dc * f  # the gradient of c_{t-1}
        # through the gates' nonlinearities (σ' = σ(1 - σ), tanh' = 1 - tanh²), stacked as torch: i, f, g, o
        da = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g**2), do * o * (1 - o)], axis=1)
        grads["weight_ih"] += da.T @ s["x"]
        grads["weight_hh"] += da.T @ s["h_prev"]
        grads["bias_ih"] += da.sum(axis=0)
        grads["bias_hh"] += da.sum(axis=0)
        dx[t] = da @ W_ih
        dh_next = da @ W_hh  # the gradient of h_{t-1}
    return grads, np.stack(dx), dh_next, dc_next
