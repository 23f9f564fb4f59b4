"""Long short-term memory over a whole sequence (one layer, one direction): forward and backward side by side.

torch.nn.LSTM:

    i_t = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)
    f_t = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf)
    g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)
    o_t = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho)
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    h_t = o_t ⊙ tanh(c_t)

with W_ih = [W_ii; W_if; W_ig; W_io] (4H x I), W_hh likewise (4H x H), torch's gate order i, f, g, o.
Time order, states and variable lengths follow the conventions in rnn.py.

Implementation choices, for speed:

* σ(a) = ½ tanh(½ a) + ½. The rows of the i, f and o gates are pre-scaled by ½ (``gate_scale``, in the input
  projection and in W_hh), so one tanh over all four gates gives tanh(½ a) for i, f, o and tanh(a) for g.
  Backward is unchanged: it differentiates with respect to the unscaled a, using σ' = σ(1 - σ).
* Within a step the gates are stored gate-major, A[t] = [i; f; g; o] as [4, B, H], so every elementwise
  operation runs on contiguous [B, H] blocks. The GEMMs see the usual [B, 4H] layout.
* Memory is reused: the activations overwrite the input projections Xp (same bytes, A[t] occupying Xp[t]) and
  backward writes the gate gradients over the activations. So forward consumes Xp and backward consumes the
  cache (as torch frees its graph), which keeps the working set, and the memory traffic, at one [T, B, 4H] array.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnlab.cells.protocol import Cell, Params, steps_of
from rnnlab.cells.protocol import work_array as _work
from rnnlab.models.numpy import memory
from rnnlab.models.numpy.layers import add_matmul, column_sum
from rnnlab.registry import CELLS

GATES = 4
SIGMOID_GATES = (0, 1, 3)  # i, f, o
BIASES_SUMMED = True  # b_ih and b_hh only ever appear as b_ih + b_hh: their gradients are equal


def gate_scale(hidden_size: int, dtype: np.dtype) -> np.ndarray:
    """½ on the rows of the sigmoid gates, 1 on g: the pre-activations the forward pass computes are s ⊙ a."""
    s = np.ones((GATES, hidden_size), dtype=dtype)
    s[list(SIGMOID_GATES)] = 0.5
    return s.reshape(-1)


def fold_bias(b_ih: np.ndarray, b_hh: np.ndarray) -> np.ndarray:
    """Both biases go into the input projection: they are only ever summed."""
    return b_ih + b_hh


@dataclass
class LSTMCache:
    A: np.ndarray  # [T, 4, B, H] gate activations i, f, g, o
    S: np.ndarray  # [T + 1, B, H] hidden states, time-ordered
    C: np.ndarray  # [T + 1, B, H] cell states, time-ordered like S
    TC: np.ndarray  # [T, B, H] tanh(c_t)
    W_hh: np.ndarray
    batch_sizes: np.ndarray | None
    reverse: bool
    consumed: bool = False


def forward(
    Xp: np.ndarray,
    h0: np.ndarray,
    c0: np.ndarray,
    W_hh: np.ndarray,
    batch_sizes: np.ndarray | None = None,
    reverse: bool = False,
) -> tuple[np.ndarray, np.ndarray, LSTMCache]:
    """Xp [T, B, 4H] = s ⊙ (W_ih x_t + b_ih + b_hh) (s = ``gate_scale``), contiguous, overwritten with the
    gate activations; h0, c0 [B, H] -> S, C, cache."""
    T, B, GH = Xp.shape
    H = GH // GATES
    dtype = Xp.dtype
    if not Xp.flags.c_contiguous:
        raise ValueError("Xp must be C-contiguous (it becomes the activation cache)")
    W_hhT = memory.copy((gate_scale(H, dtype)[:, None] * W_hh).T)  # [H, 4H], scaled rows
    A = Xp.reshape(T, GATES, B, H)  # A[t] takes the place of Xp[t] once Xp[t] has been read
    S = memory.empty((T + 1, B, H), dtype)
    C = memory.empty((T + 1, B, H), dtype)
    TC = memory.empty((T, B, H), dtype)
    S[T if reverse else 0] = h0
    C[T if reverse else 0] = c0
    pre = memory.empty((B, GH), dtype)  # s ⊙ W_hh h_{t-1}, [B, 4H]
    pre_g = pre.reshape(B, GATES, H).transpose(1, 0, 2)  # the same, gate-major [4, B, H] view
    ig = memory.empty((B, H), dtype)
    for t in range(T - 1, -1, -1) if reverse else range(T):
        b = B if batch_sizes is None else int(batch_sizes[t])
        prev, cur = (t + 1, t) if reverse else (t, t + 1)
        c_prev = C[prev, :b]
        np.matmul(S[prev, :b], W_hhT, out=pre[:b])
        pre[:b] += Xp[t, :b]  # s ⊙ (W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
        a = A[t, :, :b]
        np.tanh(pre_g[:, :b], out=a)  # tanh(½ a) for i, f, o; tanh(a) = g_t
        sig = a[0:2]
        sig *= 0.5
        sig += 0.5  # i_t, f_t
        o = a[3]
        o *= 0.5
        o += 0.5  # o_t
        i, f, g = a[0], a[1], a[2]
        c = C[cur, :b]
        np.multiply(f, c_prev, out=c)
        np.multiply(i, g, out=ig[:b])
        c += ig[:b]  # c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        tc = TC[t, :b]
        np.tanh(c, out=tc)
        np.multiply(o, tc, out=S[cur, :b])  # h_t = o_t ⊙ tanh(c_t)
        if b < B:
            S[cur, b:] = S[prev, b:]
            C[cur, b:] = C[prev, b:]
    return S, C, LSTMCache(A, S, C, TC, memory.copy(W_hh), batch_sizes, reverse)


def backward(
    d_out: np.ndarray | None,
    dh_n: np.ndarray | None,
    dc_n: np.ndarray | None,
    cache: LSTMCache,
    dW_hh: np.ndarray,
    db_hh: np.ndarray | None,
    dh_norms: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """d_out [T, B, H] (or None), dh_n, dc_n [B, H] (or None) -> dA, dh0, dc0.

    dA [T, B, 4H] = dL/d(pre-activations of i, f, g, o), written over the cache's activations; accumulates
    dW_hh and db_hh. The cache cannot be used again.

    With ``dh_norms`` (an array [T]), records ||dL/dh_t|| over the whole batch at every step (how the gradient
    reaching each timestep's hidden state vanishes or explodes; rnnlab.analysis).
    """
    if cache.consumed:
        raise RuntimeError("this cache has already been through backward")
    cache.consumed = True
    A, S, C, TC, W_hh = cache.A, cache.S, cache.C, cache.TC, cache.W_hh
    batch_sizes, reverse = cache.batch_sizes, cache.reverse
    T, _, B, H = A.shape
    GH = GATES * H
    dtype = S.dtype
    dA = A.reshape(T, B, GH)  # dA[t] replaces A[t] once A[t] has been read
    dA_g = dA.reshape(T, B, GATES, H).transpose(0, 2, 1, 3)  # [T, 4, B, H] view
    dh_next = memory.zeros((B, H), dtype) if dh_n is None else memory.copy(dh_n, dtype)
    dc_next = memory.zeros((B, H), dtype) if dc_n is None else memory.copy(dc_n, dtype)
    dh_buf = memory.empty((B, H), dtype)
    dc = memory.empty((B, H), dtype)
    D = memory.empty((GATES, B, H), dtype)  # dL/d(i, f, g, o), gate-major
    L = memory.empty((GATES, B, H), dtype)  # d(i, f, g, o)/d(pre-activations)
    for t in range(T) if reverse else range(T - 1, -1, -1):
        b = B if batch_sizes is None else int(batch_sizes[t])
        prev = t + 1 if reverse else t
        if d_out is None:
            dh = dh_next[:b]
        else:
            dh = dh_buf[:b]
            np.add(dh_next[:b], d_out[t, :b], out=dh)
        if dh_norms is not None:
            dh_norms[t] = np.sqrt(np.vdot(dh, dh))
        a = A[t, :, :b]
        i, f, g, o = a[0], a[1], a[2], a[3]
        tc = TC[t, :b]
        d = D[:, :b]
        np.multiply(dh, tc, out=d[3])  # do
        # h_t = o_t ⊙ tanh(c_t):  dc_t = dh_t ⊙ o_t ⊙ (1 - tanh²(c_t)) + dc_{t+1} ⊙ f_{t+1}
        np.multiply(dh, o, out=dc[:b])
        np.multiply(tc, tc, out=tc)
        np.subtract(1, tc, out=tc)  # (TC[t] is consumed)
        dc[:b] *= tc
        dc[:b] += dc_next[:b]
        # c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        np.multiply(dc[:b], g, out=d[0])  # di
        np.multiply(dc[:b], C[prev, :b], out=d[1])  # df
        np.multiply(dc[:b], i, out=d[2])  # dg
        np.multiply(dc[:b], f, out=dc_next[:b])  # dc_{t-1} (rows >= b pass through)
        # through σ (σ' = σ - σ²) and tanh (tanh' = 1 - g²)
        lo = L[:, :b]
        np.multiply(a, a, out=lo)
        np.subtract(a[0:2], lo[0:2], out=lo[0:2])
        np.subtract(a[3], lo[3], out=lo[3])
        np.subtract(1, lo[2], out=lo[2])
        np.multiply(d, lo, out=dA_g[t, :, :b])  # A[t] is consumed: dA[t] takes its place
        if b < B:
            dA[t, b:] = 0
        np.matmul(dA[t, :b], W_hh, out=dh_next[:b])  # dh_{t-1} = W_hh^T da_t
    dA2 = dA.reshape(T * B, GH)
    H_prev = (S[1:] if reverse else S[:-1]).reshape(T * B, H)
    add_matmul(dW_hh, dA2.T, H_prev)
    if db_hh is not None:  # (the caller may take it from db_ih instead: see BIASES_SUMMED)
        db_hh += column_sum(dA2)
    return dA, dh_next, dc_next


@CELLS.register("lstm", doc="long short-term memory (nn.LSTM), gates i, f, g, o")
class LSTMCell(Cell):
    """Long short-term memory without peepholes, torch.nn.LSTM (the ``standard`` variant)."""

    name = "lstm"
    gates = GATES
    gate_names = ("i", "f", "g", "o")
    states = ("h", "c")

    @property
    def forget_gate(self) -> int | None:
        return self.gate_names.index("f") if "f" in self.gate_names else None

    def gate_scale(self, dtype: Any) -> np.ndarray:
        return gate_scale(self.hidden_size, dtype)

    def forward(
        self, Xp: np.ndarray, state0: tuple[np.ndarray, ...], p: Params, batch_sizes: Any = None, reverse: bool = False
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...], Any]:
        S, C, cache = forward(Xp, state0[0], state0[1], p["weight_hh"], batch_sizes, reverse)
        end = 0 if reverse else Xp.shape[0]
        return S, (S[end], C[end]), cache

    def backward(
        self, d_out: Any, d_final: tuple[Any, ...], cache: Any, g: Params, dh_norms: Any = None
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        dA, dh0, dc0 = backward(d_out, d_final[0], d_final[1], cache, g["weight_hh"], None, dh_norms=dh_norms)
        return dA, (dh0, dc0)

    def internals(self, cache: Any) -> dict[str, np.ndarray]:
        """The gates (A[t] holds the activations themselves: the ½ scaling only enters the tanh's argument) and c_t;
        also for the peephole and family cells, whose caches hold A [T, G, B, H] and C alike."""
        if cache.consumed:
            raise RuntimeError("this cache has been through backward: its activations are overwritten")
        named = {name: cache.A[:, k] for k, name in enumerate(self.gate_names)}
        named["c"] = cache.C[:-1] if cache.reverse else cache.C[1:]  # c_t at step t, either direction
        return {name: steps_of(a, cache.batch_sizes) for name, a in named.items()}

    def prepare_step(self, p: Params) -> dict[str, Any]:
        s = self.gate_scale(p["weight_hh"].dtype)
        return {"W_hhT": memory.copy((s[:, None] * p["weight_hh"]).T)}

    def step(self, x_side: np.ndarray, state: list[np.ndarray], prep: dict[str, Any]) -> None:
        h, c = state
        H = self.hidden_size
        pre = _work(prep, "pre", x_side.shape, h.dtype)
        a = _work(prep, "a", x_side.shape, h.dtype)
        tmp = _work(prep, "tmp", h.shape, h.dtype)
        np.matmul(h, prep["W_hhT"], out=pre)
        np.add(pre, x_side, out=a)
        np.tanh(a, out=a)  # tanh(½ a) on the scaled rows of i, f, o; tanh(a) = g
        a[..., : 2 * H] *= 0.5
        a[..., : 2 * H] += 0.5
        a[..., 3 * H :] *= 0.5
        a[..., 3 * H :] += 0.5
        i, f, g, o = a[..., :H], a[..., H : 2 * H], a[..., 2 * H : 3 * H], a[..., 3 * H :]
        c *= f
        np.multiply(i, g, out=tmp)
        c += tmp
        np.tanh(c, out=tmp)
        np.multiply(o, tmp, out=h)

    def torch_module(self, input_size: int, num_layers: int, bidirectional: bool, dropout: float) -> Any:
        from torch import nn

        return nn.LSTM(input_size, self.hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                       dropout=dropout, batch_first=True)  # fmt: skip

    def torch_step(
        self, x_side: Any, state: tuple[Any, ...], p: dict[str, Any], record: dict[str, Any] | None = None
    ) -> tuple[Any, ...]:
        import torch

        h, c = state
        a_i, a_f, a_g, a_o = (x_side + h @ p["weight_hh"].T + p["bias_hh"]).chunk(4, dim=-1)
        i, f, g, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
        if record is not None:
            record.update(i=i, f=f, g=g, o=o)
        c = f * c + i * g
        return o * torch.tanh(c), c
