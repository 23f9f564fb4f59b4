"""The LSTM variants of Greff et al., "LSTM: A Search Space Odyssey" (2017): ``model=lstm model.variant=NAME``.

Each variant is the peephole LSTM (the paper's vanilla LSTM, ``peephole``: rnnlab/cells/peephole.py) with one
change, in one notation (σ the logistic function, ⊙ the elementwise product, p_i, p_f, p_o the peepholes)::

    a_x = W_ix x_t + b_ix + W_hx h_{t-1} + b_hx          for each gate x present (torch's order i, f, g, o)
    i_t = σ(a_i + p_i ⊙ c_{t-1})     f_t = σ(a_f + p_f ⊙ c_{t-1})     g_t = tanh(a_g)
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    o_t = σ(a_o + p_o ⊙ c_t)         h_t = o_t ⊙ tanh(c_t)

    nig    no input gate             i_t = 1                       (no W_i*, b_i*, p_i)
    nfg    no forget gate            f_t = 1                       (no W_f*, b_f*, p_f)
    nog    no output gate            o_t = 1, h_t = tanh(c_t)      (no W_o*, b_o*, p_o)
    niaf   no input activation       g_t = a_g                     (linear block input)
    noaf   no output activation      h_t = o_t ⊙ c_t
    cifg   coupled input-forget gate f_t = 1 - i_t                 (no W_f*, b_f*, p_f)

A variant without a gate has no parameters for it: weight_ih is [G·H, I] with G the gates present (3 for nig, nfg,
nog and cifg), stacked in torch's order. Backward, at step t (dh_t and dc_next arriving from above and from t + 1;
a factor that a variant fixes to 1 drops out)::

    da_o = dh_t ⊙ act(c_t) ⊙ o_t (1 - o_t)                                   act = tanh, or identity for noaf
    dc_t = dh_t ⊙ o_t ⊙ act'(c_t) + dc_next + da_o ⊙ p_o
    di = dc_t ⊙ g_t,   df = dc_t ⊙ c_{t-1},   dg = dc_t ⊙ i_t               (cifg: di -= df, as f = 1 - i)
    da_i = di ⊙ i (1 - i),   da_f = df ⊙ f (1 - f),   da_g = dg ⊙ (1 - g²)   (niaf: da_g = dg)
    dc_{t-1} = dc_t ⊙ f_t + da_i ⊙ p_i + da_f ⊙ p_f
    dp_i += Σ_b da_i ⊙ c_{t-1},   dp_f += Σ_b da_f ⊙ c_{t-1},   dp_o += Σ_b da_o ⊙ c_t

Each step works in place on work arrays allocated once per call (ufuncs with ``out=``, the activations over the
consumed Xp as lstm.py does), with one GEMM per step and dW_hh in one GEMM after the loop, as every cell; their torch
counterpart is the reference module running ``torch_step`` (speed: experiments/benchmarks/cells.md).
The paper's remaining variant, full gate recurrence (``fgr``: i, f, o also see the previous step's i, f, o, carried
as three more states), is in rnnlab/cells/lstm_fgr.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from rnnlab.cells.lstm import LSTMCell
from rnnlab.cells.protocol import Params, sigmoid, sigmoid_
from rnnlab.models.numpy import memory
from rnnlab.models.numpy.layers import add_matmul
from rnnlab.registry import CELLS


@dataclass
class FamilyCache:
    A: np.ndarray  # [T, G, B, H] activations of the gates present
    S: np.ndarray  # [T + 1, B, H] hidden states, time-ordered
    C: np.ndarray  # [T + 1, B, H] cell states
    p: Params
    batch_sizes: Any
    reverse: bool
    consumed: bool = False


class LSTMFamilyCell(LSTMCell):
    """The peephole LSTM with the change its ``variant`` names (module docstring)."""

    present: ClassVar[tuple[str, ...]] = ("i", "f", "g", "o")
    coupled: ClassVar[bool] = False  # cifg: f = 1 - i
    input_activation: ClassVar[bool] = True  # tanh on the block input g
    output_activation: ClassVar[bool] = True  # tanh on c_t before the output gate

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.gates = len(cls.present)
        cls.gate_names = cls.present
        cls.extra_parameters = tuple(f"weight_c{x}" for x in ("i", "f", "o") if x in cls.present)

    def gate_scale(self, dtype: Any) -> np.ndarray:
        return np.ones(self.gates * self.hidden_size, dtype=dtype)

    def internal_title(self, name: str) -> str:
        if name == "i" and self.coupled:
            return "input gate i (forget gate f = 1 - i)"
        if name == "g" and not self.input_activation:
            return "block input g (linear)"
        return super().internal_title(name)

    # ------------------------------------------------------------------------------------------- one step
    def _step(self, a: list[np.ndarray], c_prev: np.ndarray, p: Params) -> tuple[np.ndarray, ...]:
        """Gate pre-activations ``a`` (one [..., H] per gate present, overwritten with activations), c_{t-1} ->
        (i, f, g, c, o, h), with None for a gate fixed to 1."""
        k = {x: n for n, x in enumerate(self.present)}
        i = f = o = None
        if "i" in k:
            a[k["i"]] += p["weight_ci"] * c_prev
            i = a[k["i"]] = sigmoid(a[k["i"]])
        if "f" in k:
            a[k["f"]] += p["weight_cf"] * c_prev
            f = a[k["f"]] = sigmoid(a[k["f"]])
        elif self.coupled:
            f = 1.0 - i
        g = a[k["g"]] = np.tanh(a[k["g"]]) if self.input_activation else a[k["g"]]
        c = (c_prev if f is None else f * c_prev) + (g if i is None else i * g)
        act = np.tanh(c) if self.output_activation else c
        if "o" in k:
            a[k["o"]] += p["weight_co"] * c
            o = a[k["o"]] = sigmoid(a[k["o"]])
        h = act if o is None else o * act
        return i, f, g, c, o, h

    def forward(
        self, Xp: np.ndarray, state0: tuple[np.ndarray, ...], p: Params, batch_sizes: Any = None, reverse: bool = False
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...], FamilyCache]:
        T, B, GH = Xp.shape
        G, H = self.gates, self.hidden_size
        dtype = Xp.dtype
        k = {x: n for n, x in enumerate(self.present)}
        kg, ko = k["g"], k.get("o")
        W_hhT = memory.copy(p["weight_hh"].T)
        peep = {x: p[f"weight_c{x}"] for x in ("i", "f", "o") if x in k}
        # A[t] takes the place of Xp[t] (same bytes, gate-major) once Xp[t] has been read into ``pre``
        A = Xp.reshape(T, G, B, H) if Xp.flags.c_contiguous else memory.empty((T, G, B, H), dtype)
        S = memory.empty((T + 1, B, H), dtype)
        C = memory.empty((T + 1, B, H), dtype)
        S[T if reverse else 0], C[T if reverse else 0] = state0
        pre = memory.empty((B, GH), dtype)  # W_ih x_t + b + W_hh h_{t-1}, [B, G*H]
        pre_g = pre.reshape(B, G, H).transpose(1, 0, 2)  # the same, gate-major [G, B, H] view
        tmp = memory.empty((B, H), dtype)
        act_buf = memory.empty((B, H), dtype)
        for t in range(T - 1, -1, -1) if reverse else range(T):
            b = B if batch_sizes is None else int(batch_sizes[t])
            prev, cur = (t + 1, t) if reverse else (t, t + 1)
            c_prev, c, h = C[prev, :b], C[cur, :b], S[cur, :b]
            np.matmul(S[prev, :b], W_hhT, out=pre[:b])
            pre[:b] += Xp[t, :b]
            a, pg, tm = A[t, :, :b], pre_g[:, :b], tmp[:b]
            for x in ("i", "f"):  # the gates before g, which see c_{t-1}
                if x in k:
                    np.multiply(peep[x], c_prev, out=a[k[x]])
                    a[k[x]] += pg[k[x]]
            if kg:
                sigmoid_(a[:kg])  # i_t, f_t (those present)
            if self.input_activation:
                np.tanh(pg[kg], out=a[kg])  # g_t
            else:
                np.copyto(a[kg], pg[kg])
            i = a[k["i"]] if "i" in k else None
            g = a[kg]
            if "f" in k:
                np.multiply(a[k["f"]], c_prev, out=c)
            elif self.coupled:  # f_t = 1 - i_t
                np.subtract(1.0, i, out=tm)
                np.multiply(tm, c_prev, out=c)
            else:
                np.copyto(c, c_prev)
            if i is None:
                c += g
            else:
                np.multiply(i, g, out=tm)
                c += tm  # c_t
            if self.output_activation:
                act = act_buf[:b]
                np.tanh(c, out=act)
            else:
                act = c
            if ko is None:
                np.copyto(h, act)
            else:
                np.multiply(peep["o"], c, out=a[ko])
                a[ko] += pg[ko]
                sigmoid_(a[ko])  # o_t
                np.multiply(a[ko], act, out=h)  # h_t
            if b < B:
                S[cur, b:], C[cur, b:] = S[prev, b:], C[prev, b:]
        end = 0 if reverse else T
        cache = FamilyCache(A, S, C, {k: memory.copy(v) for k, v in p.items()}, batch_sizes, reverse)
        return S, (S[end], C[end]), cache

    def backward(
        self, d_out: Any, d_final: tuple[Any, ...], cache: FamilyCache, g: Params, dh_norms: Any = None
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        if cache.consumed:
            raise RuntimeError("this cache has already been through backward")
        cache.consumed = True
        A, S, C, p = cache.A, cache.S, cache.C, cache.p
        T, G, B, H = A.shape
        dtype = S.dtype
        k = {x: n for n, x in enumerate(self.present)}
        kg, ko = k["g"], k.get("o")
        ki, kf = k.get("i"), k.get("f")
        W_hh = p["weight_hh"]
        dA = memory.empty((T, B, G, H), dtype)
        dh_n, dc_n = d_final
        dh_next = memory.zeros((B, H), dtype) if dh_n is None else memory.copy(dh_n, dtype)
        dc_next = memory.zeros((B, H), dtype) if dc_n is None else memory.copy(dc_n, dtype)
        dh_buf, dc_buf, df_buf, f_buf, act_buf, tmp_buf = (memory.empty((B, H), dtype) for _ in range(6))
        # Σ_b of the peephole gradients, accumulated over the steps as [B, H] and summed over the batch at the end
        dp = {name: memory.zeros((B, H), dtype) for name in self.extra_parameters}
        for t in range(T) if cache.reverse else range(T - 1, -1, -1):
            b = B if cache.batch_sizes is None else int(cache.batch_sizes[t])
            prev, cur = (t + 1, t) if cache.reverse else (t, t + 1)
            if d_out is None:
                dh = dh_next[:b]
            else:
                dh = dh_buf[:b]
                np.add(dh_next[:b], d_out[t, :b], out=dh)
            if dh_norms is not None:
                dh_norms[t] = np.sqrt(np.vdot(dh, dh))
            c_prev, c = C[prev, :b], C[cur, :b]
            a, da = A[t, :, :b], dA[t, :b]  # [G, b, H] activations, [b, G, H] their gradients
            dc, tm = dc_buf[:b], tmp_buf[:b]
            i = a[ki] if ki is not None else None
            if kf is not None:
                f = a[kf]
            elif self.coupled:
                f = f_buf[:b]
                np.subtract(1.0, i, out=f)
            else:
                f = None
            gg = a[kg]
            o = a[ko] if ko is not None else None
            if self.output_activation:
                act = act_buf[:b]
                np.tanh(c, out=act)
            else:
                act = c
            # h_t = o_t ⊙ act(c_t):  dc_t = dh_t ⊙ o_t ⊙ act'(c_t) + dc_{t+1} (+ da_o ⊙ p_o below)
            if o is None:
                np.copyto(dc, dh)
            else:
                np.multiply(dh, o, out=dc)
            if self.output_activation:
                np.multiply(act, act, out=tm)
                np.subtract(1.0, tm, out=tm)
                dc *= tm
            dc += dc_next[:b]
            if o is not None:
                da_o = da[:, ko]
                np.multiply(dh, act, out=da_o)
                da_o *= o
                np.subtract(1.0, o, out=tm)
                da_o *= tm  # da_o
                np.multiply(da_o, p["weight_co"], out=tm)
                dc += tm
                np.multiply(da_o, c, out=tm)
                dp["weight_co"][:b] += tm
            # c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
            da_g = da[:, kg]
            if i is None:
                np.copyto(da_g, dc)
            else:
                np.multiply(dc, i, out=da_g)
            if self.input_activation:
                np.multiply(gg, gg, out=tm)
                np.subtract(1.0, tm, out=tm)
                da_g *= tm  # da_g
            if f is not None:
                df = df_buf[:b]
                np.multiply(dc, c_prev, out=df)
            dcn = dc_next[:b]  # dc_{t-1}; rows >= b pass through
            if f is None:
                np.copyto(dcn, dc)
            else:
                np.multiply(dc, f, out=dcn)
            if kf is not None:
                da_f = da[:, kf]
                np.multiply(df, f, out=da_f)
                np.subtract(1.0, f, out=tm)
                da_f *= tm  # da_f
                np.multiply(da_f, p["weight_cf"], out=tm)
                dcn += tm
                np.multiply(da_f, c_prev, out=tm)
                dp["weight_cf"][:b] += tm
            if i is not None:
                da_i = da[:, ki]
                np.multiply(dc, gg, out=da_i)
                if self.coupled:
                    da_i -= df  # f = 1 - i
                da_i *= i
                np.subtract(1.0, i, out=tm)
                da_i *= tm  # da_i
                np.multiply(da_i, p["weight_ci"], out=tm)
                dcn += tm
                np.multiply(da_i, c_prev, out=tm)
                dp["weight_ci"][:b] += tm
            if b < B:
                dA[t, b:] = 0
            np.matmul(dA[t, :b].reshape(b, G * H), W_hh, out=dh_next[:b])  # dh_{t-1}
        dA2 = dA.reshape(T * B, G * H)
        H_prev = (S[1:] if cache.reverse else S[:-1]).reshape(T * B, H)
        add_matmul(g["weight_hh"], dA2.T, H_prev)
        for name, value in dp.items():
            g[name] += value.sum(axis=0)
        return dA.reshape(T, B, G * H), (dh_next, dc_next)

    # ------------------------------------------------------------------------------------------ generation
    def prepare_step(self, p: Params) -> dict[str, Any]:
        return {"W_hhT": memory.copy(p["weight_hh"].T), **{k: p[k].copy() for k in self.extra_parameters}}

    def step(self, x_side: np.ndarray, state: list[np.ndarray], prep: dict[str, Any]) -> None:
        h, c = state
        pre = h @ prep["W_hhT"] + x_side
        H = self.hidden_size
        a = [pre[..., n * H : (n + 1) * H].copy() for n in range(self.gates)]
        *_, c_new, _, h_new = self._step(a, c, prep)
        c[...] = c_new
        h[...] = h_new

    # ------------------------------------------------------------------------------------------------ torch
    def torch_module(self, input_size: int, num_layers: int, bidirectional: bool, dropout: float) -> Any:
        from rnnlab.models.torch.reference import ReferenceRecurrent

        return ReferenceRecurrent(self, input_size, num_layers, bidirectional, dropout)

    def torch_step(
        self, x_side: Any, state: tuple[Any, ...], p: dict[str, Any], record: dict[str, Any] | None = None
    ) -> tuple[Any, ...]:
        import torch

        h, c_prev = state
        a = dict(
            zip(self.present, (x_side + h @ p["weight_hh"].T + p["bias_hh"]).chunk(self.gates, dim=-1), strict=True)
        )
        i = torch.sigmoid(a["i"] + p["weight_ci"] * c_prev) if "i" in a else None
        f = torch.sigmoid(a["f"] + p["weight_cf"] * c_prev) if "f" in a else (1 - i if self.coupled else None)
        g = torch.tanh(a["g"]) if self.input_activation else a["g"]
        c = (c_prev if f is None else f * c_prev) + (g if i is None else i * g)
        act = torch.tanh(c) if self.output_activation else c
        o = torch.sigmoid(a["o"] + p["weight_co"] * c) if "o" in a else None
        h = act if o is None else o * act
        if record is not None:
            record.update((x, v) for x, v in {"i": i, "f": f, "g": g, "o": o}.items() if x in self.present)
        return h, c


@CELLS.register("lstm", variant="nig", doc="LSTM without input gate (Greff et al. 2017): i = 1")
class NoInputGateLSTM(LSTMFamilyCell):
    variant = "nig"
    present = ("f", "g", "o")


@CELLS.register("lstm", variant="nfg", doc="LSTM without forget gate (Greff et al. 2017): f = 1")
class NoForgetGateLSTM(LSTMFamilyCell):
    variant = "nfg"
    present = ("i", "g", "o")


@CELLS.register("lstm", variant="nog", doc="LSTM without output gate (Greff et al. 2017): h = tanh(c)")
class NoOutputGateLSTM(LSTMFamilyCell):
    variant = "nog"
    present = ("i", "f", "g")


@CELLS.register("lstm", variant="niaf", doc="LSTM without input activation (Greff et al. 2017): g = a_g")
class NoInputActivationLSTM(LSTMFamilyCell):
    variant = "niaf"
    input_activation = False


@CELLS.register("lstm", variant="noaf", doc="LSTM without output activation (Greff et al. 2017): h = o c")
class NoOutputActivationLSTM(LSTMFamilyCell):
    variant = "noaf"
    output_activation = False


@CELLS.register("lstm", variant="cifg", doc="LSTM with coupled input and forget gate (Greff et al. 2017): f = 1 - i")
class CoupledGateLSTM(LSTMFamilyCell):
    variant = "cifg"
    present = ("i", "g", "o")
    coupled = True
