"""Elman RNN over a whole sequence (one layer, one direction): forward and backward side by side.

torch.nn.RNN:

    h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),    act = tanh or relu

Conventions shared by the three cells (rnn.py, lstm.py, gru.py):

* Time-major. The input side ``Xp[t] = W_ih x_t + biases`` is computed for every step at once by the caller
  (stack.py, one GEMM); the cell runs the recurrence, one [B, H] x [H, G*H] GEMM per step, and owns the hidden
  side (W_hh, b_hh). Work arrays are allocated once per call, 64-byte aligned, from a pool (memory.py).
* States are kept in time order in ``S[T + 1, B, H]``. Forward direction: h_{t-1} = S[t], h_t = S[t + 1], h0 is
  S[0] and h_n is S[T]. Reverse direction (``reverse=True``, steps T-1 .. 0): h_{t+1} = S[t + 1], h_t = S[t],
  h0 is S[T] and h_n is S[0]. Either way the previous states of all steps form one [T*B, H] block, so
  dW_hh = sum_t dA_t^T h_prev_t is a single GEMM after the time loop.
* Variable lengths, as pack_padded_sequence: the batch is sorted by decreasing length and ``batch_sizes[t]``
  rows are valid at time t (pack's own ``batch_sizes``), so step t works on the first b rows only (a mask that
  is a prefix: no work is spent on padding) and the others keep their state
  (S[cur, b:] = S[prev, b:]). The forward direction thus stops at each sequence's own end; the reverse one starts
  there from h0. In backward, the gradient of a kept state passes straight through and the gate gradients of
  the rows not computed are zero.
* Forward consumes ``Xp`` (its memory becomes part of the cache); backward returns dA [T, B, G*H], the gradient
  of the input-side pre-activations, written over the cache (the caller gets dW_ih and dx from it in one GEMM
  each), accumulates dW_hh and db_hh, and returns the gradient of h0. A cache serves one backward, as
  torch frees its graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnlab.cells.protocol import Cell, Params
from rnnlab.cells.protocol import work_array as _work
from rnnlab.models.numpy import memory
from rnnlab.models.numpy.layers import add_matmul, column_sum
from rnnlab.registry import CELLS

GATES = 1
BIASES_SUMMED = True  # b_ih and b_hh only ever appear as b_ih + b_hh: their gradients are equal


def gate_scale(hidden_size: int, dtype: np.dtype) -> np.ndarray:
    """Row scale of the pre-activations (none here; the LSTM and GRU halve their sigmoid gates)."""
    return np.ones(hidden_size, dtype=dtype)


def fold_bias(b_ih: np.ndarray, b_hh: np.ndarray) -> np.ndarray:
    """The biases that can be added once to the input projection: both, since they are only ever summed."""
    return b_ih + b_hh


@dataclass
class RNNCache:
    S: np.ndarray  # [T + 1, B, H] states, time-ordered (see the module docstring)
    work: np.ndarray  # [T, B, H] the consumed input projections, reused for dA
    W_hh: np.ndarray
    nonlinearity: str
    batch_sizes: np.ndarray | None
    reverse: bool
    consumed: bool = False


def forward(
    Xp: np.ndarray,
    h0: np.ndarray,
    W_hh: np.ndarray,
    b_hh: np.ndarray,
    batch_sizes: np.ndarray | None = None,
    reverse: bool = False,
    nonlinearity: str = "tanh",
) -> tuple[np.ndarray, RNNCache]:
    """Xp [T, B, H] = W_ih x_t + b_ih + b_hh (b_hh is folded in, so unused here), consumed; h0 [B, H] -> S, cache."""
    T, B, H = Xp.shape
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    W_hhT = memory.copy(W_hh.T)  # [H, H]: h @ W_hh^T without a transposed operand in the loop
    S = memory.empty((T + 1, B, H), Xp.dtype)
    S[T if reverse else 0] = h0
    a = memory.empty((B, H), Xp.dtype)  # pre-activation of one step
    for t in range(T - 1, -1, -1) if reverse else range(T):
        b = B if batch_sizes is None else int(batch_sizes[t])
        prev, cur = (t + 1, t) if reverse else (t, t + 1)
        np.matmul(S[prev, :b], W_hhT, out=a[:b])  # W_hh h_{t-1}
        a[:b] += Xp[t, :b]  # + W_ih x_t + b_ih + b_hh
        if nonlinearity == "tanh":
            np.tanh(a[:b], out=S[cur, :b])  # h_t
        else:
            np.maximum(a[:b], 0, out=S[cur, :b])
        if b < B:
            S[cur, b:] = S[prev, b:]  # finished (or not yet started) sequences keep their state
    return S, RNNCache(S, Xp, memory.copy(W_hh), nonlinearity, batch_sizes, reverse)


def backward(
    d_out: np.ndarray | None,
    dh_n: np.ndarray | None,
    cache: RNNCache,
    dW_hh: np.ndarray,
    db_hh: np.ndarray | None,
    dh_norms: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """d_out [T, B, H] (gradient of the outputs h_t, or None), dh_n [B, H] (or None) -> dA, dh0 [B, H].

    dA [T, B, H] = dL/d(pre-activation); accumulates dW_hh and db_hh.

    With ``dh_norms`` (an array [T]), records ||dL/dh_t|| over the whole batch at every step (how the gradient
    reaching each timestep's hidden state vanishes or explodes; rnnlab.analysis).
    """
    if cache.consumed:
        raise RuntimeError("this cache has already been through backward")
    cache.consumed = True
    S, W_hh, batch_sizes, reverse = cache.S, cache.W_hh, cache.batch_sizes, cache.reverse
    dA = cache.work
    T, B, H = dA.shape
    dh_next = memory.zeros((B, H), S.dtype) if dh_n is None else memory.copy(dh_n, S.dtype)
    dh_buf = memory.empty((B, H), S.dtype)
    local = memory.empty((B, H), S.dtype)  # act'(a_t)
    positive = memory.empty((B, H), bool)
    for t in range(T) if reverse else range(T - 1, -1, -1):
        b = B if batch_sizes is None else int(batch_sizes[t])
        cur = t if reverse else t + 1
        if d_out is None:
            dh = dh_next[:b]
        else:
            dh = dh_buf[:b]
            np.add(dh_next[:b], d_out[t, :b], out=dh)  # from h_{t+1} and from the output h_t
        if dh_norms is not None:
            dh_norms[t] = np.sqrt(np.vdot(dh, dh))
        h = S[cur, :b]
        if cache.nonlinearity == "tanh":
            np.multiply(h, h, out=local[:b])
            np.subtract(1, local[:b], out=local[:b])  # tanh' = 1 - h_t^2
            np.multiply(dh, local[:b], out=dA[t, :b])
        else:
            np.greater(h, 0, out=positive[:b])  # relu' = [h_t > 0]
            np.multiply(dh, positive[:b], out=dA[t, :b])
        if b < B:
            dA[t, b:] = 0
        np.matmul(dA[t, :b], W_hh, out=dh_next[:b])  # dh_{t-1} = W_hh^T da_t (rows >= b pass through)
    dA2 = dA.reshape(T * B, H)
    H_prev = (S[1:] if reverse else S[:-1]).reshape(T * B, H)
    add_matmul(dW_hh, dA2.T, H_prev)
    if db_hh is not None:  # (the caller may take it from db_ih instead: see BIASES_SUMMED)
        db_hh += column_sum(dA2)
    return dA, dh_next


@CELLS.register("rnn", doc="Elman RNN (nn.RNN): h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), act tanh or relu")
class RNNCell(Cell):
    """Elman RNN, torch.nn.RNN; ``model.nonlinearity`` picks tanh or relu."""

    name = "rnn"
    gates = GATES
    gate_names = ("h",)
    options = ("nonlinearity",)

    def __init__(self, hidden_size: int, nonlinearity: str = "tanh"):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(hidden_size, nonlinearity)

    def forward(
        self, Xp: np.ndarray, state0: tuple[np.ndarray, ...], p: Params, batch_sizes: Any = None, reverse: bool = False
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...], Any]:
        S, cache = forward(Xp, state0[0], p["weight_hh"], p["bias_hh"], batch_sizes, reverse, self.nonlinearity)
        return S, (S[0 if reverse else Xp.shape[0]],), cache

    def backward(
        self, d_out: Any, d_final: tuple[Any, ...], cache: Any, g: Params, dh_norms: Any = None
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        dA, dh0 = backward(d_out, d_final[0], cache, g["weight_hh"], None, dh_norms=dh_norms)
        return dA, (dh0,)

    def prepare_step(self, p: Params) -> dict[str, Any]:
        return {"W_hhT": memory.copy(p["weight_hh"].T)}

    def step(self, x_side: np.ndarray, state: list[np.ndarray], prep: dict[str, Any]) -> None:
        h = state[0]
        pre = _work(prep, "pre", x_side.shape, h.dtype)
        np.matmul(h, prep["W_hhT"], out=pre)
        pre += x_side
        if self.nonlinearity == "tanh":
            np.tanh(pre, out=h)
        else:
            np.maximum(pre, 0, out=h)

    def torch_module(self, input_size: int, num_layers: int, bidirectional: bool, dropout: float) -> Any:
        from torch import nn

        return nn.RNN(input_size, self.hidden_size, num_layers=num_layers, nonlinearity=self.nonlinearity,
                      bidirectional=bidirectional, dropout=dropout, batch_first=True)  # fmt: skip

    def torch_step(
        self, x_side: Any, state: tuple[Any, ...], p: dict[str, Any], record: dict[str, Any] | None = None
    ) -> tuple[Any, ...]:
        import torch  # (no gates to record: the state h is all there is, and ``internals`` is empty)

        a = x_side + state[0] @ p["weight_hh"].T + p["bias_hh"]
        return (torch.tanh(a) if self.nonlinearity == "tanh" else torch.relu(a),)
