"""GRU forms with the reset applied to the state before the recurrent product: ``model=gru model.variant=NAME``.

``standard`` (rnnlab/cells/gru.py) is torch's GRU (cuDNN's, Keras' ``reset_after=True``): n_t = tanh(W_in x_t + b_in +
r_t ⊙ (W_hn h_{t-1} + b_hn)). The two forms here apply the gate to h_{t-1} first::

    cho2014  (Cho et al. 2014, the original GRU; gate order r, z, n as torch)
        r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
        z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
        n_t = tanh(W_in x_t + b_in + W_hn (r_t ⊙ h_{t-1}) + b_hn)
        h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}

    mgu      (Zhou et al. 2016, the minimal gated unit: one gate f, gate order f, n)
        f_t = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf)
        n_t = tanh(W_in x_t + b_in + W_hn (f_t ⊙ h_{t-1}) + b_hn)
        h_t = (1 - f_t) ⊙ h_{t-1} + f_t ⊙ n_t

Both biases of every block only appear summed, so the stack folds them into the input side. Backward at step t,
with dh_t the gradient reaching h_t and u = r_t (cho2014) or f_t (mgu) the gate applied to the state::

    da_n = dn ⊙ (1 - n²)               dn = dh_t ⊙ (1 - z_t)          (mgu: dh_t ⊙ f_t)
    d(u ⊙ h) = W_hn^T da_n              du += d(u ⊙ h) ⊙ h_{t-1}        dh_{t-1} += d(u ⊙ h) ⊙ u
    cho2014: dz = dh_t ⊙ (h_{t-1} - n_t), dh_{t-1} += dh_t ⊙ z_t;  mgu: df += dh_t ⊙ (n_t - h_{t-1}),
             dh_{t-1} += dh_t ⊙ (1 - f_t)
    dW_hn += da_n^T (u ⊙ h_{t-1}),  the gates' rows of dW_hh += da^T h_{t-1}

In place per step (preallocated work arrays, ufuncs with ``out=``, the gates gate-major); the torch counterpart is
the reference module running ``torch_step``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from rnnlab.cells.protocol import Cell, Params, sigmoid, sigmoid_, steps_of
from rnnlab.models.numpy import memory
from rnnlab.models.numpy.layers import add_matmul
from rnnlab.registry import CELLS


@dataclass
class ResetBeforeCache:
    A: np.ndarray  # [T, G, B, H] gate activations, the candidate n last
    S: np.ndarray  # [T + 1, B, H] states, time-ordered
    UH: np.ndarray  # [T, B, H] u_t ⊙ h_{t-1}, the input of W_hn
    W_hh: np.ndarray
    batch_sizes: Any
    reverse: bool
    consumed: bool = False


class ResetBeforeGRU(Cell):
    """A GRU whose gate u multiplies h_{t-1} before W_hn (module docstring)."""

    name = "gru"
    minimal: ClassVar[bool] = False  # mgu: one gate f plays both r and z

    def _gates(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(u, z) from the sigmoid rows [B, G-1, H] (z None for mgu, where f is both)."""
        return (a[:, 0], None) if self.minimal else (a[:, 0], a[:, 1])

    def forward(
        self, Xp: np.ndarray, state0: tuple[np.ndarray, ...], p: Params, batch_sizes: Any = None, reverse: bool = False
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...], ResetBeforeCache]:
        T, B, _ = Xp.shape
        G, H = self.gates, self.hidden_size
        dtype = Xp.dtype
        W_hh = p["weight_hh"]
        W_gT, W_nT = memory.copy(W_hh[: (G - 1) * H].T), memory.copy(W_hh[(G - 1) * H :].T)
        A = memory.empty((T, G, B, H), dtype)
        S = memory.empty((T + 1, B, H), dtype)
        UH = memory.zeros((T, B, H), dtype)  # rows past a length stay 0: their dA rows are 0 too
        S[T if reverse else 0] = state0[0]
        pre = memory.empty((B, (G - 1) * H), dtype)  # W_h{gates} h_{t-1}
        pre_g = pre.reshape(B, G - 1, H).transpose(1, 0, 2)  # gate-major view [G - 1, B, H]
        tmp = memory.empty((B, H), dtype)
        for t in range(T - 1, -1, -1) if reverse else range(T):
            b = B if batch_sizes is None else int(batch_sizes[t])
            prev, cur = (t + 1, t) if reverse else (t, t + 1)
            h, uh, hn, tm = S[prev, :b], UH[t, :b], S[cur, :b], tmp[:b]
            x = Xp[t, :b].reshape(b, G, H).transpose(1, 0, 2)  # [G, b, H] view
            gates, n = A[t, : G - 1, :b], A[t, G - 1, :b]
            np.matmul(h, W_gT, out=pre[:b])
            np.add(x[: G - 1], pre_g[:, :b], out=gates)
            sigmoid_(gates)  # u_t (r_t or f_t), z_t
            u = gates[0]
            np.multiply(u, h, out=uh)
            np.matmul(uh, W_nT, out=n)
            np.add(x[G - 1], n, out=n)
            np.tanh(n, out=n)  # n_t
            if self.minimal:  # h_t = (1 - f) h + f n
                np.subtract(1.0, u, out=tm)
                tm *= h
                np.multiply(u, n, out=hn)
                hn += tm
            else:  # h_t = n + z (h - n)
                np.subtract(h, n, out=tm)
                tm *= gates[1]
                np.add(n, tm, out=hn)
            if b < B:
                S[cur, b:] = S[prev, b:]
        end = 0 if reverse else T
        return S, (S[end],), ResetBeforeCache(A, S, UH, memory.copy(W_hh), batch_sizes, reverse)

    def backward(
        self, d_out: Any, d_final: tuple[Any, ...], cache: ResetBeforeCache, g: Params, dh_norms: Any = None
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        if cache.consumed:
            raise RuntimeError("this cache has already been through backward")
        cache.consumed = True
        A, S, UH, W_hh = cache.A, cache.S, cache.UH, cache.W_hh
        T, G, B, H = A.shape
        dtype = S.dtype
        W_g, W_n = W_hh[: (G - 1) * H], W_hh[(G - 1) * H :]
        dA = memory.empty((T, B, G, H), dtype)
        dA_rows = dA.reshape(T, B, G * H)
        dh_next = memory.zeros((B, H), dtype) if d_final[0] is None else memory.copy(d_final[0], dtype)
        dh_buf, dp_buf, duh_buf, tmp_buf = (memory.empty((B, H), dtype) for _ in range(4))
        for t in range(T) if cache.reverse else range(T - 1, -1, -1):
            b = B if cache.batch_sizes is None else int(cache.batch_sizes[t])
            prev = t + 1 if cache.reverse else t
            if d_out is None:
                dh = dh_next[:b]
            else:
                dh = dh_buf[:b]
                np.add(dh_next[:b], d_out[t, :b], out=dh)
            if dh_norms is not None:
                dh_norms[t] = np.sqrt(np.vdot(dh, dh))
            h, n, u = S[prev, :b], A[t, G - 1, :b], A[t, 0, :b]
            da = dA[t, :b]  # [b, G, H]
            du, da_n, dh_prev, d_uh, tm = da[:, 0], da[:, G - 1], dp_buf[:b], duh_buf[:b], tmp_buf[:b]
            if self.minimal:  # h_t = (1 - f) h + f n
                np.subtract(n, h, out=du)
                du *= dh  # du (the part through h_t directly)
                np.multiply(dh, u, out=da_n)  # dn
                np.subtract(1.0, u, out=tm)
                np.multiply(dh, tm, out=dh_prev)
            else:  # h_t = n + z (h - n)
                z, da_z = A[t, 1, :b], da[:, 1]
                np.subtract(h, n, out=da_z)
                np.multiply(dh, da_z, out=da_z)
                da_z *= z
                np.subtract(1.0, z, out=tm)
                da_z *= tm  # da_z
                np.multiply(dh, tm, out=da_n)  # dn
                np.multiply(dh, z, out=dh_prev)
            np.multiply(n, n, out=tm)
            np.subtract(1.0, tm, out=tm)
            da_n *= tm  # da_n
            np.matmul(da_n, W_n, out=d_uh)  # the gradient of u ⊙ h_{t-1}
            np.multiply(d_uh, h, out=tm)
            if self.minimal:
                du += tm
            else:
                np.copyto(du, tm)
            du *= u
            np.subtract(1.0, u, out=tm)
            du *= tm  # da_u
            d_uh *= u
            dh_prev += d_uh
            if b < B:
                dA[t, b:] = 0
            np.matmul(dA_rows[t, :b, : (G - 1) * H], W_g, out=dh_next[:b])
            dh_next[:b] += dh_prev  # dh_{t-1}
        dA2 = dA.reshape(T * B, G * H)
        H_prev = (S[1:] if cache.reverse else S[:-1]).reshape(T * B, H)
        add_matmul(g["weight_hh"][: (G - 1) * H], dA2[:, : (G - 1) * H].T, H_prev)
        add_matmul(g["weight_hh"][(G - 1) * H :], dA2[:, (G - 1) * H :].T, UH.reshape(T * B, H))
        return dA.reshape(T, B, G * H), (dh_next,)

    def internals(self, cache: ResetBeforeCache) -> dict[str, np.ndarray]:
        if cache.consumed:
            raise RuntimeError("this cache has been through backward")
        return {name: steps_of(cache.A[:, k], cache.batch_sizes) for k, name in enumerate(self.gate_names)}

    def prepare_step(self, p: Params) -> dict[str, Any]:
        G, H = self.gates, self.hidden_size
        return {
            "W_gT": memory.copy(p["weight_hh"][: (G - 1) * H].T),
            "W_nT": memory.copy(p["weight_hh"][(G - 1) * H :].T),
        }

    def step(self, x_side: np.ndarray, state: list[np.ndarray], prep: dict[str, Any]) -> None:
        h = state[0]
        G, H = self.gates, self.hidden_size
        gates = sigmoid(x_side[..., : (G - 1) * H] + h @ prep["W_gT"])
        u = gates[..., :H]
        n = np.tanh(x_side[..., (G - 1) * H :] + (u * h) @ prep["W_nT"])
        if self.minimal:
            h[...] = (1.0 - u) * h + u * n
        else:
            z = gates[..., H:]
            h[...] = n + z * (h - n)

    def torch_step(
        self, x_side: Any, state: tuple[Any, ...], p: dict[str, Any], record: dict[str, Any] | None = None
    ) -> tuple[Any, ...]:
        import torch

        h = state[0]
        G, H = self.gates, self.hidden_size
        W_g, W_n = p["weight_hh"][: (G - 1) * H], p["weight_hh"][(G - 1) * H :]
        b_g, b_n = p["bias_hh"][: (G - 1) * H], p["bias_hh"][(G - 1) * H :]
        gates = torch.sigmoid(x_side[:, : (G - 1) * H] + h @ W_g.T + b_g)
        u = gates[:, :H]
        n = torch.tanh(x_side[:, (G - 1) * H :] + (u * h) @ W_n.T + b_n)
        if record is not None:
            record.update(zip(self.gate_names, (*gates.chunk(G - 1, dim=-1), n), strict=True))
        return (((1 - u) * h + u * n) if self.minimal else (n + gates[:, H:] * (h - n)),)


@CELLS.register("gru", variant="cho2014", doc="the original GRU (Cho et al. 2014): reset applied before W_hn")
class Cho2014GRU(ResetBeforeGRU):
    variant = "cho2014"
    gates = 3
    gate_names = ("r", "z", "n")


@CELLS.register("gru", variant="mgu", doc="the minimal gated unit (Zhou et al. 2016): one gate f")
class MinimalGatedUnit(ResetBeforeGRU):
    variant = "mgu"
    gates = 2
    gate_names = ("f", "n")
    minimal = True
