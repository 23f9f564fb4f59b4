"""Gated recurrent unit over a whole sequence (one layer, one direction): forward and backward side by side.

torch.nn.GRU:

    r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))
    h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}

with W_ih = [W_ir; W_iz; W_in] (3H x I), W_hh likewise (3H x H), torch's gate order r, z, n.
Time order, states and variable lengths follow the conventions in rnn.py; the sigmoid gates are pre-scaled by ½
and stored gate-major within a step, as in lstm.py.

b_hr and b_hz are folded into the input projection; b_hn is not, since r_t multiplies it. So the input side and
the hidden side of the n gate get different gradients: d(W_in x_t + b_in) = da_n, d(W_hn h + b_hn) = r_t ⊙ da_n.
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

GATES = 3
SIGMOID_GATES = (0, 1)  # r, z
BIASES_SUMMED = False  # b_hn sits inside r_t ⊙ (...): the two bias gradients differ


def gate_scale(hidden_size: int, dtype: np.dtype) -> np.ndarray:
    """½ on the rows of r and z, 1 on n: the pre-activations the forward pass computes are s ⊙ a."""
    s = np.ones((GATES, hidden_size), dtype=dtype)
    s[list(SIGMOID_GATES)] = 0.5
    return s.reshape(-1)


def fold_bias(b_ih: np.ndarray, b_hh: np.ndarray) -> np.ndarray:
    """b_ih + [b_hr, b_hz, 0]: b_hn stays inside the recurrence."""
    H = b_hh.shape[0] // GATES
    folded = b_ih.copy()
    folded[: 2 * H] += b_hh[: 2 * H]
    return folded


@dataclass
class GRUCache:
    A: np.ndarray  # [T, 3, B, H] r, z, n
    Ghn: np.ndarray  # [T, B, H] W_hn h_{t-1} + b_hn
    S: np.ndarray  # [T + 1, B, H] states, time-ordered
    W_hh: np.ndarray
    batch_sizes: np.ndarray | None
    reverse: bool
    work: np.ndarray  # [T, B, 3H] the consumed input projections, reused for dA
    consumed: bool = False


def forward(
    Xp: np.ndarray,
    h0: np.ndarray,
    W_hh: np.ndarray,
    b_hh: np.ndarray,
    batch_sizes: np.ndarray | None = None,
    reverse: bool = False,
) -> tuple[np.ndarray, GRUCache]:
    """Xp [T, B, 3H] = s ⊙ (W_ih x_t + b_ih + [b_hr, b_hz, 0]) (s = ``gate_scale``), consumed; h0 [B, H] ->
    S, cache."""
    T, B, GH = Xp.shape
    H = GH // GATES
    dtype = Xp.dtype
    W_hhT = memory.copy((gate_scale(H, dtype)[:, None] * W_hh).T)  # [H, 3H], scaled rows
    b_hn = memory.copy(b_hh[2 * H :])
    A = memory.empty((T, GATES, B, H), dtype)
    Ghn = memory.empty((T, B, H), dtype)
    S = memory.empty((T + 1, B, H), dtype)
    S[T if reverse else 0] = h0
    pre = memory.empty((B, GH), dtype)  # s ⊙ W_hh h_{t-1}
    pre_g = pre.reshape(B, GATES, H).transpose(1, 0, 2)  # gate-major [3, B, H] view
    Xp_g = Xp.reshape(T, B, GATES, H).transpose(0, 2, 1, 3)  # [T, 3, B, H] view
    tmp = memory.empty((B, H), dtype)
    for t in range(T - 1, -1, -1) if reverse else range(T):
        b = B if batch_sizes is None else int(batch_sizes[t])
        prev, cur = (t + 1, t) if reverse else (t, t + 1)
        h_prev = S[prev, :b]
        np.matmul(h_prev, W_hhT, out=pre[:b])
        rz = A[t, 0:2, :b]
        np.add(pre_g[0:2, :b], Xp_g[t, 0:2, :b], out=rz)
        np.tanh(rz, out=rz)
        rz *= 0.5
        rz += 0.5  # r_t, z_t
        r, z = rz[0], rz[1]
        ghn = Ghn[t, :b]
        np.add(pre_g[2, :b], b_hn, out=ghn)  # W_hn h_{t-1} + b_hn
        n = A[t, 2, :b]
        np.multiply(r, ghn, out=n)
        n += Xp_g[t, 2, :b]
        np.tanh(n, out=n)  # n_t
        np.subtract(h_prev, n, out=tmp[:b])
        tmp[:b] *= z
        np.add(n, tmp[:b], out=S[cur, :b])  # h_t = n_t + z_t ⊙ (h_{t-1} - n_t)
        if b < B:
            S[cur, b:] = S[prev, b:]
    return S, GRUCache(A, Ghn, S, memory.copy(W_hh), batch_sizes, reverse, Xp)


def backward(
    d_out: np.ndarray | None,
    dh_n: np.ndarray | None,
    cache: GRUCache,
    dW_hh: np.ndarray,
    db_hh: np.ndarray,
    dh_norms: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """d_out [T, B, H] (or None), dh_n [B, H] (or None) -> dA, dh0 [B, H].

    dA [T, B, 3H] is the gradient of the input-side pre-activations W_ih x_t + b_ih; accumulates dW_hh
    and db_hh (from the hidden-side gradient [da_r, da_z, r ⊙ da_n]).

    With ``dh_norms`` (an array [T]), records ||dL/dh_t|| over the whole batch at every step (how the gradient
    reaching each timestep's hidden state vanishes or explodes; rnnlab.analysis).
    """
    if cache.consumed:
        raise RuntimeError("this cache has already been through backward")
    cache.consumed = True
    A, Ghn, S, W_hh = cache.A, cache.Ghn, cache.S, cache.W_hh
    batch_sizes, reverse = cache.batch_sizes, cache.reverse
    dA = cache.work
    T, B, GH = dA.shape
    H = GH // GATES
    dtype = S.dtype
    dh_next = memory.zeros((B, H), dtype) if dh_n is None else memory.copy(dh_n, dtype)
    dh_buf = memory.empty((B, H), dtype)
    dn = memory.empty((B, H), dtype)
    da_n = memory.empty((B, H), dtype)
    tmp = memory.empty((B, H), dtype)
    dh_z = memory.empty((B, H), dtype)
    D = memory.empty((2, B, H), dtype)  # dL/dr, dL/dz, then dL/d(pre-activations of r, z)
    L = memory.empty((2, B, H), dtype)
    dAh = memory.empty((T, B, GH), dtype)  # hidden-side pre-activation gradient [da_r, da_z, r ⊙ da_n]
    dA_g = dA.reshape(T, B, GATES, H).transpose(0, 2, 1, 3)
    dAh_g = dAh.reshape(T, B, GATES, H).transpose(0, 2, 1, 3)
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
        rz = A[t, 0:2, :b]
        r, z, n = rz[0], rz[1], A[t, 2, :b]
        h_prev = S[prev, :b]
        d = D[:, :b]
        # h_t = n_t + z_t ⊙ (h_{t-1} - n_t)
        np.subtract(h_prev, n, out=d[1])
        d[1] *= dh  # dz
        np.subtract(1, z, out=dn[:b])
        dn[:b] *= dh  # dn = dh ⊙ (1 - z)
        np.multiply(dh, z, out=dh_z[:b])  # the direct path to h_{t-1}
        # n_t = tanh(a_n), a_n = W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn)
        np.multiply(n, n, out=tmp[:b])
        np.subtract(1, tmp[:b], out=tmp[:b])
        np.multiply(dn[:b], tmp[:b], out=da_n[:b])
        np.multiply(da_n[:b], Ghn[t, :b], out=d[0])  # dr
        dA_g[t, 2, :b] = da_n[:b]
        np.multiply(da_n[:b], r, out=dAh_g[t, 2, :b])
        # r_t, z_t = σ(...):  σ' = σ(1 - σ)
        lo = L[:, :b]
        np.subtract(1, rz, out=lo)
        lo *= rz
        d *= lo
        dAh_g[t, 0:2, :b] = d
        dA_g[t, 0:2, :b] = d
        if b < B:
            dA[t, b:] = 0
            dAh[t, b:] = 0
        np.matmul(dAh[t, :b], W_hh, out=dh_next[:b])
        dh_next[:b] += dh_z[:b]  # dh_{t-1} = W_hh^T [da_r; da_z; r ⊙ da_n] + dh_t ⊙ z_t
    dAh2 = dAh.reshape(T * B, GH)
    H_prev = (S[1:] if reverse else S[:-1]).reshape(T * B, H)
    add_matmul(dW_hh, dAh2.T, H_prev)
    db_hh += column_sum(dAh2)
    return dA, dh_next


@CELLS.register("gru", doc="gated recurrent unit (nn.GRU), gates r, z, n")
class GRUCell(Cell):
    """Gated recurrent unit, torch.nn.GRU (the ``standard`` variant)."""

    name = "gru"
    gates = GATES
    gate_names = ("r", "z", "n")
    biases_summed = BIASES_SUMMED

    def gate_scale(self, dtype: Any) -> np.ndarray:
        return gate_scale(self.hidden_size, dtype)

    def fold_bias(self, p: Params) -> np.ndarray:
        return fold_bias(p["bias_ih"], p["bias_hh"])

    def forward(
        self, Xp: np.ndarray, state0: tuple[np.ndarray, ...], p: Params, batch_sizes: Any = None, reverse: bool = False
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...], Any]:
        S, cache = forward(Xp, state0[0], p["weight_hh"], p["bias_hh"], batch_sizes, reverse)
        return S, (S[0 if reverse else Xp.shape[0]],), cache

    def backward(
        self, d_out: Any, d_final: tuple[Any, ...], cache: Any, g: Params, dh_norms: Any = None
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        dA, dh0 = backward(d_out, d_final[0], cache, g["weight_hh"], g["bias_hh"], dh_norms=dh_norms)
        return dA, (dh0,)

    def internals(self, cache: GRUCache) -> dict[str, np.ndarray]:
        """r, z, n (A[t] holds the activations themselves: the ½ scaling only enters the tanh's argument)."""
        if cache.consumed:
            raise RuntimeError("this cache has been through backward")
        return {name: steps_of(cache.A[:, k], cache.batch_sizes) for k, name in enumerate(self.gate_names)}

    def prepare_step(self, p: Params) -> dict[str, Any]:
        s = self.gate_scale(p["weight_hh"].dtype)
        return {"W_hhT": memory.copy((s[:, None] * p["weight_hh"]).T),
                "b_hn": memory.copy(p["bias_hh"][2 * self.hidden_size :])}  # fmt: skip

    def step(self, x_side: np.ndarray, state: list[np.ndarray], prep: dict[str, Any]) -> None:
        h = state[0]
        H = self.hidden_size
        pre = _work(prep, "pre", x_side.shape, h.dtype)
        a = _work(prep, "a", x_side.shape, h.dtype)
        tmp = _work(prep, "tmp", h.shape, h.dtype)
        np.matmul(h, prep["W_hhT"], out=pre)
        rz = a[..., : 2 * H]
        np.add(pre[..., : 2 * H], x_side[..., : 2 * H], out=rz)
        np.tanh(rz, out=rz)
        rz *= 0.5
        rz += 0.5
        r, z, n = a[..., :H], a[..., H : 2 * H], a[..., 2 * H :]
        np.add(pre[..., 2 * H :], prep["b_hn"], out=n)
        n *= r
        n += x_side[..., 2 * H :]
        np.tanh(n, out=n)
        np.subtract(h, n, out=tmp)
        tmp *= z
        np.add(n, tmp, out=h)

    def torch_module(self, input_size: int, num_layers: int, bidirectional: bool, dropout: float) -> Any:
        from torch import nn

        return nn.GRU(input_size, self.hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                      dropout=dropout, batch_first=True)  # fmt: skip

    def torch_step(
        self, x_side: Any, state: tuple[Any, ...], p: dict[str, Any], record: dict[str, Any] | None = None
    ) -> tuple[Any, ...]:
        import torch

        h = state[0]
        xr, xz, xn = x_side.chunk(3, dim=-1)
        hr, hz, hn = (h @ p["weight_hh"].T + p["bias_hh"]).chunk(3, dim=-1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        if record is not None:
            record.update(r=r, z=z, n=n)
        return ((1 - z) * n + z * h,)
