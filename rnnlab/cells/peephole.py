"""LSTM with peephole connections (Gers & Schmidhuber, 2000): ``model=lstm model.variant=peephole``.

The gates also see the cell state, through diagonal (elementwise) weights p_i, p_f, p_o: the input and forget gates
the previous cell state, the output gate the new one (Greff et al., 2017, "LSTM: A Search Space Odyssey", eq. 1):

    i_t = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi + p_i ⊙ c_{t-1})
    f_t = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf + p_f ⊙ c_{t-1})
    g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    o_t = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho + p_o ⊙ c_t)
    h_t = o_t ⊙ tanh(c_t)

Parameters: torch's four (``weight_ih`` [4H, I], ``weight_hh`` [4H, H], ``bias_ih``, ``bias_hh`` [4H], gate order
i, f, g, o) and the peepholes ``weight_ci``, ``weight_cf``, ``weight_co`` [H], drawn U(-1/sqrt(H), 1/sqrt(H)) each
from a generator keyed by its name (rnnlab.models.init), so that the four torch ones are the standard LSTM's draws.

Backward, at step t (dh_t and dc_next arrive from above and from step t + 1):

    da_o = dh_t ⊙ tanh(c_t) ⊙ o_t (1 - o_t)
    dc_t = dh_t ⊙ o_t ⊙ (1 - tanh²(c_t)) + dc_next + da_o ⊙ p_o          (o_t sees c_t)
    da_i = dc_t ⊙ g_t ⊙ i_t (1 - i_t),   da_f = dc_t ⊙ c_{t-1} ⊙ f_t (1 - f_t),   da_g = dc_t ⊙ i_t ⊙ (1 - g_t²)
    dc_{t-1} = dc_t ⊙ f_t + da_i ⊙ p_i + da_f ⊙ p_f
    dp_i += Σ_b da_i ⊙ c_{t-1},   dp_f += Σ_b da_f ⊙ c_{t-1},   dp_o += Σ_b da_o ⊙ c_t

The NumPy cell follows the conventions of rnnlab/cells/rnn.py (time-ordered states, variable lengths as a prefix of
the batch, one GEMM per step, dW_hh as one GEMM after the loop); the input projections Xp are overwritten by the gate
activations. Its torch counterpart is the reference module
(rnnlab.models.torch.reference) running ``torch_step``: torch has no fused peephole LSTM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnlab.cells.lstm import LSTMCell
from rnnlab.cells.protocol import Params, sigmoid_
from rnnlab.cells.protocol import work_array as _work
from rnnlab.models.numpy import memory
from rnnlab.models.numpy.layers import add_matmul
from rnnlab.registry import CELLS


@dataclass
class PeepholeCache:
    A: np.ndarray  # [T, 4, B, H] gate activations i, f, g, o
    S: np.ndarray  # [T + 1, B, H] hidden states, time-ordered
    C: np.ndarray  # [T + 1, B, H] cell states, time-ordered like S
    TC: np.ndarray  # [T, B, H] tanh(c_t)
    p: Params
    batch_sizes: np.ndarray | None
    reverse: bool
    consumed: bool = False


@CELLS.register("lstm", variant="peephole", doc="LSTM whose gates also see the cell state (Gers & Schmidhuber 2000)")
class PeepholeLSTMCell(LSTMCell):
    """LSTM with peephole connections p_i, p_f (from c_{t-1}) and p_o (from c_t)."""

    variant = "peephole"
    extra_parameters = ("weight_ci", "weight_cf", "weight_co")

    def gate_scale(self, dtype: Any) -> np.ndarray:
        return np.ones(self.gates * self.hidden_size, dtype=dtype)  # plain pre-activations: no ½ rows

    def forward(
        self, Xp: np.ndarray, state0: tuple[np.ndarray, ...], p: Params, batch_sizes: Any = None, reverse: bool = False
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...], PeepholeCache]:
        T, B, GH = Xp.shape
        H = GH // 4
        dtype = Xp.dtype
        W_hhT = memory.copy(p["weight_hh"].T)
        p_i, p_f, p_o = p["weight_ci"], p["weight_cf"], p["weight_co"]
        A = Xp.reshape(T, B, 4, H).transpose(0, 2, 1, 3)  # [T, 4, B, H] view; A[t] overwrites Xp[t]
        S = memory.empty((T + 1, B, H), dtype)
        C = memory.empty((T + 1, B, H), dtype)
        TC = memory.empty((T, B, H), dtype)
        S[T if reverse else 0] = state0[0]
        C[T if reverse else 0] = state0[1]
        pre = memory.empty((B, GH), dtype)
        pre_g = pre.reshape(B, 4, H).transpose(1, 0, 2)
        tmp = memory.empty((B, H), dtype)
        for t in range(T - 1, -1, -1) if reverse else range(T):
            b = B if batch_sizes is None else int(batch_sizes[t])
            prev, cur = (t + 1, t) if reverse else (t, t + 1)
            c_prev = C[prev, :b]
            np.matmul(S[prev, :b], W_hhT, out=pre[:b])
            pre[:b] += Xp[t, :b]  # W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
            a = A[t, :, :b]
            a[...] = pre_g[:, :b]
            step_forward(a, c_prev, C[cur, :b], TC[t, :b], S[cur, :b], (p_i, p_f, p_o), tmp[:b])
            if b < B:
                S[cur, b:] = S[prev, b:]
                C[cur, b:] = C[prev, b:]
        end = 0 if reverse else T
        cache = PeepholeCache(A, S, C, TC, {k: memory.copy(v) for k, v in p.items()}, batch_sizes, reverse)
        return S, (S[end], C[end]), cache

    def backward(
        self, d_out: Any, d_final: tuple[Any, ...], cache: PeepholeCache, g: Params, dh_norms: Any = None
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        if cache.consumed:
            raise RuntimeError("this cache has already been through backward")
        cache.consumed = True
        A, S, C, TC, p = cache.A, cache.S, cache.C, cache.TC, cache.p
        T, _, B, H = A.shape
        dtype = S.dtype
        dA = memory.empty((T, B, 4, H), dtype)
        dA_g = dA.transpose(0, 2, 1, 3)  # [T, 4, B, H]
        dh_n, dc_n = d_final
        dh_next = memory.zeros((B, H), dtype) if dh_n is None else memory.copy(dh_n, dtype)
        dc_next = memory.zeros((B, H), dtype) if dc_n is None else memory.copy(dc_n, dtype)
        dh = memory.empty((B, H), dtype)
        dc = memory.empty((B, H), dtype)
        tmp = memory.empty((B, H), dtype)
        dp = {name: np.zeros(H, dtype) for name in self.extra_parameters}
        for t in range(T) if cache.reverse else range(T - 1, -1, -1):
            b = B if cache.batch_sizes is None else int(cache.batch_sizes[t])
            prev, cur = (t + 1, t) if cache.reverse else (t, t + 1)
            np.copyto(dh[:b], dh_next[:b])
            if d_out is not None:
                dh[:b] += d_out[t, :b]
            if dh_norms is not None:
                dh_norms[t] = np.sqrt(np.vdot(dh[:b], dh[:b]))
            i, f, gg, o = A[t, 0, :b], A[t, 1, :b], A[t, 2, :b], A[t, 3, :b]
            tc, c_prev, c = TC[t, :b], C[prev, :b], C[cur, :b]
            da = dA_g[t, :, :b]
            step_backward(da, dh[:b], dc[:b], dc_next[:b], (i, f, gg, o), tc, c_prev, c, p, dp, tmp[:b])
            if b < B:
                dA[t, b:] = 0
            np.matmul(dA[t, :b].reshape(b, 4 * H), p["weight_hh"], out=dh_next[:b])  # dh_{t-1}
        dA2 = dA.reshape(T * B, 4 * H)
        H_prev = (S[1:] if cache.reverse else S[:-1]).reshape(T * B, H)
        add_matmul(g["weight_hh"], dA2.T, H_prev)
        for name, value in dp.items():
            g[name] += value
        return dA.reshape(T, B, 4 * H), (dh_next, dc_next)

    def prepare_step(self, p: Params) -> dict[str, Any]:
        return {"W_hhT": memory.copy(p["weight_hh"].T), **{k: p[k].copy() for k in self.extra_parameters}}

    def step(self, x_side: np.ndarray, state: list[np.ndarray], prep: dict[str, Any]) -> None:
        h, c = state
        H = self.hidden_size
        a = _work(prep, "a", x_side.shape, h.dtype)
        np.matmul(h, prep["W_hhT"], out=a)
        a += x_side
        i, f, g, o = a[..., :H], a[..., H : 2 * H], a[..., 2 * H : 3 * H], a[..., 3 * H :]
        i += prep["weight_ci"] * c
        f += prep["weight_cf"] * c
        sigmoid_(a[..., : 2 * H])
        np.tanh(g, out=g)
        c *= f
        c += i * g
        o += prep["weight_co"] * c
        sigmoid_(o)
        np.multiply(o, np.tanh(c), out=h)

    def torch_module(self, input_size: int, num_layers: int, bidirectional: bool, dropout: float) -> Any:
        from rnnlab.models.torch.reference import ReferenceRecurrent

        return ReferenceRecurrent(self, input_size, num_layers, bidirectional, dropout)

    def torch_step(
        self, x_side: Any, state: tuple[Any, ...], p: dict[str, Any], record: dict[str, Any] | None = None
    ) -> tuple[Any, ...]:
        import torch

        h, c = state
        a_i, a_f, a_g, a_o = (x_side + h @ p["weight_hh"].T + p["bias_hh"]).chunk(4, dim=-1)
        i = torch.sigmoid(a_i + p["weight_ci"] * c)
        f = torch.sigmoid(a_f + p["weight_cf"] * c)
        g = torch.tanh(a_g)
        c = f * c + i * g
        o = torch.sigmoid(a_o + p["weight_co"] * c)
        if record is not None:
            record.update(i=i, f=f, g=g, o=o)
        return o * torch.tanh(c), c


def step_forward(
    a: np.ndarray, c_prev: np.ndarray, c: np.ndarray, tc: np.ndarray, h: np.ndarray, peep: tuple, tmp: np.ndarray
) -> None:
    """One step of the peephole LSTM on b rows: a [4, b, H] holds the pre-activations without the peepholes and is
    overwritten with i, f, g, o; writes c_t into ``c``, tanh(c_t) into ``tc`` and h_t into ``h`` (the FGR LSTM,
    rnnlab/cells/lstm_fgr.py, runs the same step after adding its gate recurrence to ``a``)."""
    p_i, p_f, p_o = peep
    np.multiply(p_i, c_prev, out=tmp)
    a[0] += tmp
    np.multiply(p_f, c_prev, out=tmp)
    a[1] += tmp
    sigmoid_(a[0:2])  # i_t, f_t
    np.tanh(a[2], out=a[2])  # g_t
    np.multiply(a[1], c_prev, out=c)
    np.multiply(a[0], a[2], out=tmp)
    c += tmp  # c_t
    np.multiply(p_o, c, out=tmp)
    a[3] += tmp
    sigmoid_(a[3])  # o_t
    np.tanh(c, out=tc)
    np.multiply(a[3], tc, out=h)  # h_t


def step_backward(
    da: np.ndarray,
    dh: np.ndarray,
    dc: np.ndarray,
    dc_next: np.ndarray,
    gates: tuple,
    tc: np.ndarray,
    c_prev: np.ndarray,
    c: np.ndarray,
    p: Params,
    dp: Params,
    tmp: np.ndarray,
    carried: np.ndarray | None = None,
) -> None:
    """The backward of ``step_forward`` on b rows: dh = dL/dh_t and dc_next = dL/dc_t from step t + 1 in; da [4, b, H]
    (da_i, da_f, da_g, da_o) out, dc_next overwritten with dL/dc_{t-1}, the peepholes' gradients added to ``dp``.
    ``carried`` [3, b, H]: the gradients of i_t, f_t, o_t arriving from step t + 1 (the FGR LSTM's gate state)."""
    i, f, gg, o = gates
    # h_t = o_t ⊙ tanh(c_t)
    np.multiply(dh, tc, out=da[3])
    if carried is not None:
        da[3] += carried[2]
    da[3] *= o
    np.subtract(1, o, out=tmp)
    da[3] *= tmp  # da_o
    np.multiply(tc, tc, out=tmp)
    np.subtract(1, tmp, out=tmp)
    np.multiply(dh, o, out=dc)
    dc *= tmp
    dc += dc_next
    np.multiply(da[3], p["weight_co"], out=tmp)
    dc += tmp  # dc_t, o_t included
    # c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t, through σ and tanh
    np.multiply(dc, gg, out=da[0])
    if carried is not None:
        da[0] += carried[0]
    da[0] *= i
    np.subtract(1, i, out=tmp)
    da[0] *= tmp  # da_i
    np.multiply(dc, c_prev, out=da[1])
    if carried is not None:
        da[1] += carried[1]
    da[1] *= f
    np.subtract(1, f, out=tmp)
    da[1] *= tmp  # da_f
    np.multiply(gg, gg, out=tmp)
    np.subtract(1, tmp, out=tmp)
    np.multiply(dc, i, out=da[2])
    da[2] *= tmp  # da_g
    dp["weight_ci"] += np.einsum("bh,bh->h", da[0], c_prev)
    dp["weight_cf"] += np.einsum("bh,bh->h", da[1], c_prev)
    dp["weight_co"] += np.einsum("bh,bh->h", da[3], c)
    np.multiply(dc, f, out=dc_next)
    np.multiply(da[0], p["weight_ci"], out=tmp)
    dc_next += tmp
    np.multiply(da[1], p["weight_cf"], out=tmp)
    dc_next += tmp  # dc_{t-1}
