"""LSTM with full gate recurrence (Greff et al., "LSTM: A Search Space Odyssey", 2017: FGR):
``model=lstm model.variant=fgr``.

The peephole LSTM (the paper's vanilla LSTM V, rnnlab/cells/peephole.py) with recurrent connections from every gate
at t - 1 to every gate at t, as in the original LSTM formulation: nine more H x H matrices R_yx, from gate y (the
sender) to gate x (the receiver), added to the pre-activations of i, f and o (the block input g gets none). In the
notation of rnnlab/cells/lstm_family.py (σ the logistic function, ⊙ the elementwise product, p_i, p_f, p_o the
peepholes, a_x = W_ix x_t + b_ix + W_hx h_{t-1} + b_hx)::

    r_x = R_ix i_{t-1} + R_fx f_{t-1} + R_ox o_{t-1}    x ∈ {i, f, o}   (x = i: the paper's R_ii i + R_fi f + R_oi o)
    i_t = σ(a_i + r_i + p_i ⊙ c_{t-1})     f_t = σ(a_f + r_f + p_f ⊙ c_{t-1})     g_t = tanh(a_g)
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    o_t = σ(a_o + r_o + p_o ⊙ c_t)          h_t = o_t ⊙ tanh(c_t)

The previous gates are state, carried like c: ``states = ("h", "c", "i", "f", "o")``, each [B, H]; i_0 = f_0 = o_0 = 0
unless given (a carried TBPTT state, a generation step, a seq2seq decoder's bridged start). Parameters: torch's four
(``weight_ih`` [4H, I], ``weight_hh`` [4H, H], ``bias_ih``, ``bias_hh`` [4H], gate order i, f, g, o), the peepholes
``weight_ci``, ``weight_cf``, ``weight_co`` [H] and the gate recurrence ``weight_gg`` [3H, 3H], holding the nine
R_yx as blocks: block row x (the receiving gate, i, f, o) and block column y (the sending gate, i, f, o) is R_yx, so
that with q_{t-1} = [i_{t-1}; f_{t-1}; o_{t-1}] the three r_x are ``weight_gg @ q_{t-1}``. Every extra parameter is
drawn U(-1/sqrt(H), 1/sqrt(H)) from a generator keyed by its name (rnnlab.models.init): torch's four are the standard
LSTM's draws.

Backward, at step t (dh_t, dc_next and dq_next = [di_next; df_next; do_next] arriving from above and from t + 1,
where dq_next = R^T [da_i; da_f; da_o]_{t+1}, or the final gate states' gradients at the last step)::

    da_o = (dh_t ⊙ tanh(c_t) + do_next) ⊙ o_t (1 - o_t)
    dc_t = dh_t ⊙ o_t ⊙ (1 - tanh²(c_t)) + dc_next + da_o ⊙ p_o
    da_i = (dc_t ⊙ g_t + di_next) ⊙ i_t (1 - i_t)
    da_f = (dc_t ⊙ c_{t-1} + df_next) ⊙ f_t (1 - f_t)
    da_g = dc_t ⊙ i_t ⊙ (1 - g_t²)
    dc_{t-1} = dc_t ⊙ f_t + da_i ⊙ p_i + da_f ⊙ p_f
    dh_{t-1} = W_hh^T [da_i; da_f; da_g; da_o]
    dq_{t-1} = R^T [da_i; da_f; da_o]                            (R = weight_gg: di, df, do of the previous gates)
    dp_i += Σ_b da_i ⊙ c_{t-1},   dp_f += Σ_b da_f ⊙ c_{t-1},   dp_o += Σ_b da_o ⊙ c_t
    dW_hh += Σ_t da_t h_{t-1}^T,   dR += Σ_t [da_i; da_f; da_o]_t q_{t-1}^T       (one GEMM each, after the loop)

The NumPy cell follows the conventions of rnnlab/cells/rnn.py and the layout of peephole.py (time-ordered states,
variable lengths as a prefix of the batch, the gate activations written over the consumed Xp, no ½ pre-scaling since
the peephole and gate terms enter each pre-activation before its σ); the previous gates are one more time-ordered
array Q [T + 1, B, 3H], so that r = q_{t-1} R^T is one GEMM per step and dR one GEMM after the loop. Its torch
counterpart is the reference module (rnnlab.models.torch.reference) running ``torch_step``: torch has no fused FGR.
``internals(cache)`` gives the gates and c over time, [T, B, H] each, for the analysis pictures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnlab.cells.lstm import LSTMCell
from rnnlab.cells.peephole import step_backward, step_forward
from rnnlab.cells.protocol import Params, sigmoid_
from rnnlab.cells.protocol import work_array as _work
from rnnlab.models.numpy import memory
from rnnlab.models.numpy.layers import add_matmul
from rnnlab.registry import CELLS

RECURRENT_GATES = (0, 1, 3)  # i, f, o: the gates that send and receive the gate recurrence (g does neither)


@dataclass
class FGRCache:
    A: np.ndarray  # [T, 4, B, H] gate activations i, f, g, o (a view of the consumed Xp; zero at padded steps)
    S: np.ndarray  # [T + 1, B, H] hidden states, time-ordered
    C: np.ndarray  # [T + 1, B, H] cell states, time-ordered like S
    Q: np.ndarray  # [T + 1, B, 3H] previous gates [i; f; o] carried as state, time-ordered like S
    TC: np.ndarray  # [T, B, H] tanh(c_t)
    p: Params
    batch_sizes: np.ndarray | None
    reverse: bool
    consumed: bool = False


@CELLS.register(
    "lstm", variant="fgr", doc="LSTM with full gate recurrence (Greff et al. 2017): i, f, o see i, f, o at t-1"
)
class FullGateRecurrenceLSTM(LSTMCell):
    """The peephole LSTM whose gates i, f, o also see the previous step's i, f, o (nine H x H matrices)."""

    variant = "fgr"
    states = ("h", "c", "i", "f", "o")
    extra_parameters = ("weight_ci", "weight_cf", "weight_co", "weight_gg")

    def parameter_shapes(self, input_size: int) -> list[tuple[str, tuple[int, ...]]]:
        H = self.hidden_size
        shapes = super().parameter_shapes(input_size)
        return [(name, (3 * H, 3 * H) if name == "weight_gg" else shape) for name, shape in shapes]

    def gate_scale(self, dtype: Any) -> np.ndarray:
        return np.ones(self.gates * self.hidden_size, dtype=dtype)  # plain pre-activations: no ½ rows

    # ------------------------------------------------------------------------------------------ sequences
    def forward(
        self, Xp: np.ndarray, state0: tuple[np.ndarray, ...], p: Params, batch_sizes: Any = None, reverse: bool = False
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...], FGRCache]:
        T, B, GH = Xp.shape
        H = GH // 4
        dtype = Xp.dtype
        W_hhT = memory.copy(p["weight_hh"].T)  # [H, 4H]
        R_T = memory.copy(p["weight_gg"].T)  # [3H, 3H]
        p_i, p_f, p_o = p["weight_ci"], p["weight_cf"], p["weight_co"]
        A = Xp.reshape(T, B, 4, H).transpose(0, 2, 1, 3)  # [T, 4, B, H] view; A[t] overwrites Xp[t]
        S = memory.empty((T + 1, B, H), dtype)
        C = memory.empty((T + 1, B, H), dtype)
        Q = memory.empty((T + 1, B, 3 * H), dtype)
        Qg = Q.reshape(T + 1, B, 3, H)
        TC = memory.empty((T, B, H), dtype)
        start = T if reverse else 0
        S[start], C[start] = state0[0], state0[1]
        for n in range(3):
            Qg[start, :, n] = state0[2 + n]
        pre = memory.empty((B, GH), dtype)
        pre_g = pre.reshape(B, 4, H).transpose(1, 0, 2)
        rec = memory.empty((B, 3 * H), dtype)  # r = q_{t-1} R^T: [r_i, r_f, r_o]
        rec_g = rec.reshape(B, 3, H).transpose(1, 0, 2)
        tmp = memory.empty((B, H), dtype)
        for t in range(T - 1, -1, -1) if reverse else range(T):
            b = B if batch_sizes is None else int(batch_sizes[t])
            prev, cur = (t + 1, t) if reverse else (t, t + 1)
            c_prev = C[prev, :b]
            np.matmul(S[prev, :b], W_hhT, out=pre[:b])
            pre[:b] += Xp[t, :b]  # W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
            np.matmul(Q[prev, :b], R_T, out=rec[:b])  # the gate recurrence from i, f, o at t - 1
            a = A[t, :, :b]
            a[...] = pre_g[:, :b]
            for n, x in enumerate(RECURRENT_GATES):
                a[x] += rec_g[n, :b]
            step_forward(a, c_prev, C[cur, :b], TC[t, :b], S[cur, :b], (p_i, p_f, p_o), tmp[:b])  # the peephole step
            for n, x in enumerate(RECURRENT_GATES):
                Qg[cur, :b, n] = a[x]  # the gates carried to t + 1
            if b < B:
                S[cur, b:] = S[prev, b:]
                C[cur, b:] = C[prev, b:]
                Q[cur, b:] = Q[prev, b:]
                A[t, :, b:] = 0
        end = 0 if reverse else T
        cache = FGRCache(A, S, C, Q, TC, {k: memory.copy(v) for k, v in p.items()}, batch_sizes, reverse)
        return S, (S[end], C[end], *(Qg[end, :, n] for n in range(3))), cache

    def backward(
        self, d_out: Any, d_final: tuple[Any, ...], cache: FGRCache, g: Params, dh_norms: Any = None
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        if cache.consumed:
            raise RuntimeError("this cache has already been through backward")
        cache.consumed = True
        A, S, C, Q, TC, p = cache.A, cache.S, cache.C, cache.Q, cache.TC, cache.p
        T, _, B, H = A.shape
        dtype = S.dtype
        W_hh, R = p["weight_hh"], p["weight_gg"]
        dA = memory.empty((T, B, 4, H), dtype)
        dA_g = dA.transpose(0, 2, 1, 3)  # [T, 4, B, H]
        dAq = memory.empty((T, B, 3, H), dtype)  # [da_i; da_f; da_o] per step, for R
        dh_n, dc_n, *dq_n = d_final
        dh_next = memory.zeros((B, H), dtype) if dh_n is None else memory.copy(dh_n, dtype)
        dc_next = memory.zeros((B, H), dtype) if dc_n is None else memory.copy(dc_n, dtype)
        dq_next = memory.zeros((B, 3 * H), dtype)  # [di; df; do] of the gates carried into step t + 1
        dq_g = dq_next.reshape(B, 3, H).transpose(1, 0, 2)
        for n, d in enumerate(dq_n):
            if d is not None:
                dq_g[n] = d
        dh = memory.empty((B, H), dtype)
        dc = memory.empty((B, H), dtype)
        tmp = memory.empty((B, H), dtype)
        dp = {name: np.zeros(H, dtype) for name in ("weight_ci", "weight_cf", "weight_co")}
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
            # the peephole step's backward, with the gradients of i_t, f_t, o_t carried back from t + 1
            step_backward(da, dh[:b], dc[:b], dc_next[:b], (i, f, gg, o), tc, c_prev, c, p, dp, tmp[:b], dq_g[:, :b])
            for n, x in enumerate(RECURRENT_GATES):
                dAq[t, :b, n] = da[x]
            if b < B:
                dA[t, b:] = 0
                dAq[t, b:] = 0
            np.matmul(dA[t, :b].reshape(b, 4 * H), W_hh, out=dh_next[:b])  # dh_{t-1}
            np.matmul(dAq[t, :b].reshape(b, 3 * H), R, out=dq_next[:b])  # d[i; f; o]_{t-1}
        dA2 = dA.reshape(T * B, 4 * H)
        H_prev = (S[1:] if cache.reverse else S[:-1]).reshape(T * B, H)
        add_matmul(g["weight_hh"], dA2.T, H_prev)
        Q_prev = (Q[1:] if cache.reverse else Q[:-1]).reshape(T * B, 3 * H)
        add_matmul(g["weight_gg"], dAq.reshape(T * B, 3 * H).T, Q_prev)
        for name, value in dp.items():
            g[name] += value
        return dA.reshape(T, B, 4 * H), (dh_next, dc_next, *(dq_g[n] for n in range(3)))

    # ------------------------------------------------------------------------------------------ generation
    def prepare_step(self, p: Params) -> dict[str, Any]:
        return {
            "W_hhT": memory.copy(p["weight_hh"].T),
            "R_T": memory.copy(p["weight_gg"].T),
            **{k: p[k].copy() for k in ("weight_ci", "weight_cf", "weight_co")},
        }

    def step(self, x_side: np.ndarray, state: list[np.ndarray], prep: dict[str, Any]) -> None:
        h, c, i_prev, f_prev, o_prev = state
        H = self.hidden_size
        a = _work(prep, "a", x_side.shape, h.dtype)
        q = _work(prep, "q", (*h.shape[:-1], 3 * H), h.dtype)
        r = _work(prep, "r", (*h.shape[:-1], 3 * H), h.dtype)
        np.matmul(h, prep["W_hhT"], out=a)
        a += x_side
        q[..., :H], q[..., H : 2 * H], q[..., 2 * H :] = i_prev, f_prev, o_prev
        np.matmul(q, prep["R_T"], out=r)
        i, f, g, o = a[..., :H], a[..., H : 2 * H], a[..., 2 * H : 3 * H], a[..., 3 * H :]
        i += r[..., :H]
        f += r[..., H : 2 * H]
        o += r[..., 2 * H :]
        i += prep["weight_ci"] * c
        f += prep["weight_cf"] * c
        sigmoid_(a[..., : 2 * H])
        np.tanh(g, out=g)
        c *= f
        c += i * g
        o += prep["weight_co"] * c
        sigmoid_(o)
        np.multiply(o, np.tanh(c), out=h)
        i_prev[...], f_prev[...], o_prev[...] = i, f, o

    # ------------------------------------------------------------------------------------------------ torch
    def torch_module(self, input_size: int, num_layers: int, bidirectional: bool, dropout: float) -> Any:
        from rnnlab.models.torch.reference import ReferenceRecurrent

        return ReferenceRecurrent(self, input_size, num_layers, bidirectional, dropout)

    def torch_step(
        self, x_side: Any, state: tuple[Any, ...], p: dict[str, Any], record: dict[str, Any] | None = None
    ) -> tuple[Any, ...]:
        import torch

        h, c, i, f, o = state
        a_i, a_f, a_g, a_o = (x_side + h @ p["weight_hh"].T + p["bias_hh"]).chunk(4, dim=-1)
        r_i, r_f, r_o = (torch.cat([i, f, o], dim=-1) @ p["weight_gg"].T).chunk(3, dim=-1)
        i = torch.sigmoid(a_i + r_i + p["weight_ci"] * c)
        f = torch.sigmoid(a_f + r_f + p["weight_cf"] * c)
        c = f * c + i * torch.tanh(a_g)
        o = torch.sigmoid(a_o + r_o + p["weight_co"] * c)
        if record is not None:
            record.update(i=i, f=f, g=torch.tanh(a_g), o=o)
        return o * torch.tanh(c), c, i, f, o
