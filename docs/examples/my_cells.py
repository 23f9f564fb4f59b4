"""A leaky-integrator RNN, written from scratch as a plug-in cell: ``plugins=[my_cells] model.cell=leaky_rnn``.

Each unit of the state moves only part of the way from its old value towards an Elman RNN's new one, at a rate of
its own that the network learns:

    n_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)      the candidate (an Elman RNN's h_t)
    a   = σ(leak)                                         [H]: one rate per unit, in (0, 1)
    h_t = (1 - a) ⊙ h_{t-1} + a ⊙ n_t

a = 1 would be the Elman RNN, a = 0 a state that never changes. The parameters are torch's four of nn.RNN
(``weight_ih`` [H, I], ``weight_hh`` [H, H], ``bias_ih``, ``bias_hh`` [H]: one gate block, G = 1) and ``leak`` [H],
declared in ``extra_parameters``; rnnlab draws it U(-1/√H, 1/√H) from a generator keyed by its name, so a ≈ ½ at
the start.

What the cell computes and what rnnlab computes for it (docs/extending.md, "Your own cell, step by step"): the
stack hands ``forward`` the input side Xp[t] = W_ih x_t + b_ih + b_hh of every step at once (one GEMM; the two
biases are summed there, since they only ever appear summed), and turns the ``dA`` that ``backward`` returns, the
gradient of the pre-activation W_ih x_t + b_ih + W_hh h_{t-1} + b_hh, into the gradients of W_ih, b_ih, b_hh and
the layer's input. The cell owns the recurrence, W_hh and ``leak``.

Backpropagation through time, for t = T .. 1 (dh_t: the gradient reaching h_t, from the output and from step t + 1;
dh_{T+1} is the final state's gradient):

    dn_t      = dh_t ⊙ a
    da_t      = dn_t ⊙ (1 - n_t²)                            tanh' = 1 - tanh²; da_t is dA[t]
    dleak    += Σ_batch dh_t ⊙ (n_t - h_{t-1}) ⊙ a ⊙ (1 - a)  ∂h_t/∂a = n_t - h_{t-1}, σ'(leak) = a (1 - a)
    dW_hh    += da_t^T h_{t-1}
    dh_{t-1}  = dh_t ⊙ (1 - a) + da_t W_hh                    the direct path and the path through n_t

The conventions every cell follows are in rnnlab/cells/rnn.py's docstring: states in time order in S [T + 1, B, H]
(h_0 = S[0], h_t = S[t + 1]; reverse=True runs t = T-1 .. 0 with h_0 = S[T], h_t = S[t]); variable lengths as a
prefix of the batch, only rows < batch_sizes[t] running at step t, the others keeping their state (so their
gradient passes straight through and their dA rows are 0); gradients accumulated into ``g`` with ``+=``.

Check it: ``rnnlab-gradcheck plugins=[my_cells] model.cell=leaky_rnn``. Train it:
``rnnlab-train plugins=[my_cells] model.cell=leaky_rnn model.backend=numpy`` (or torch).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnlab.cells.protocol import Cell, sigmoid
from rnnlab.registry import CELLS


def time_steps(T: int, reverse: bool) -> range:
    """The order forward visits the steps in (backward visits them in the opposite one)."""
    return range(T - 1, -1, -1) if reverse else range(T)


@CELLS.register("leaky_rnn", doc="leaky-integrator RNN: h_t = (1 - a) ⊙ h_{t-1} + a ⊙ tanh(...), a = σ(leak) learnt")
class LeakyRNNCell(Cell):
    """A leaky-integrator RNN with a learnt leak rate per unit (module docstring)."""

    name = "leaky_rnn"
    gates = 1  # weight_ih is [1 * H, I]
    gate_names = ("n",)
    states = ("h",)  # no cell state: one array per layer and direction
    extra_parameters = ("leak",)  # [H], after torch's four; p["leak"] and g["leak"] below

    # ------------------------------------------------------------------------------------- whole sequences
    def forward(
        self,
        Xp: np.ndarray,
        state0: tuple[np.ndarray, ...],
        p: dict[str, np.ndarray],
        batch_sizes: Any = None,
        reverse: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...], dict[str, Any]]:
        """Xp [T, B, H] = W_ih x_t + b_ih + b_hh, state0 = (h0 [B, H],) -> (S [T + 1, B, H], (h_n,), cache)."""
        T, B, H = Xp.shape
        W_hh = p["weight_hh"]
        a = sigmoid(p["leak"])  # [H]
        S = np.empty((T + 1, B, H), Xp.dtype)  # every h_t, in time order
        N = np.zeros((T, B, H), Xp.dtype)  # every candidate n_t (rows past a sequence's end stay 0)
        S[T if reverse else 0] = state0[0]
        for t in time_steps(T, reverse):
            b = B if batch_sizes is None else int(batch_sizes[t])  # rows 0 .. b-1 run at step t
            prev, cur = (t + 1, t) if reverse else (t, t + 1)  # where h_{t-1} and h_t live in S
            h_prev = S[prev, :b]
            N[t, :b] = np.tanh(Xp[t, :b] + h_prev @ W_hh.T)
            S[cur, :b] = (1 - a) * h_prev + a * N[t, :b]
            S[cur, b:] = S[prev, b:]  # the other rows keep their state
        h_n = S[0 if reverse else T]
        cache = {"S": S, "N": N, "a": a, "W_hh": W_hh.copy(), "batch_sizes": batch_sizes, "reverse": reverse}
        return S, (h_n,), cache

    def backward(
        self,
        d_out: np.ndarray | None,
        d_final: tuple[np.ndarray | None, ...],
        cache: dict[str, Any],
        g: dict[str, np.ndarray],
        dh_norms: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """d_out [T, B, H] (the outputs' gradient, or None), d_final = (dh_n or None,) -> (dA [T, B, H], (dh0,)).

        Adds dW_hh and dleak into g; dW_ih, db_ih, db_hh and dx are the stack's, from dA."""
        S, N, a, W_hh = cache["S"], cache["N"], cache["a"], cache["W_hh"]
        batch_sizes, reverse = cache["batch_sizes"], cache["reverse"]
        T, B, H = N.shape
        dA = np.zeros((T, B, H), S.dtype)
        dh_next = np.zeros((B, H), S.dtype) if d_final[0] is None else np.array(d_final[0], dtype=S.dtype)
        for t in reversed(time_steps(T, reverse)):
            b = B if batch_sizes is None else int(batch_sizes[t])
            prev = t + 1 if reverse else t
            h_prev, n = S[prev, :b], N[t, :b]
            dh = dh_next[:b] if d_out is None else dh_next[:b] + d_out[t, :b]  # from step t + 1 and the output
            if dh_norms is not None:  # ||dL/dh_t||, for the analysis pictures
                dh_norms[t] = np.sqrt(np.vdot(dh, dh))
            dn = dh * a
            dA[t, :b] = dn * (1 - n * n)
            g["leak"] += np.sum(dh * (n - h_prev), axis=0) * a * (1 - a)
            g["weight_hh"] += dA[t, :b].T @ h_prev
            dh_next[:b] = dh * (1 - a) + dA[t, :b] @ W_hh  # rows b.. kept their state: their gradient passes
        return dA, (dh_next,)

    # ------------------------------------------------------------------------- generation: one step, no gradient
    def prepare_step(self, p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"W_hhT": p["weight_hh"].T.copy(), "a": sigmoid(p["leak"])}

    def step(self, x_side: np.ndarray, state: list[np.ndarray], prep: dict[str, np.ndarray]) -> None:
        """x_side [..., H] = W_ih x_t + b_ih + b_hh; state = [h], updated in place."""
        h = state[0]
        n = np.tanh(x_side + h @ prep["W_hhT"])
        h += prep["a"] * (n - h)  # (1 - a) h + a n

    # ------------------------------------------------------------------------------------------- torch
    def torch_step(self, x_side: Any, state: tuple[Any, ...], p: dict[str, Any]) -> tuple[Any, ...]:
        """The same step in torch, for the reference module (Cell.torch_module's default); autograd differentiates
        it, so it is the oracle of ``backward``. Here x_side = W_ih x_t + b_ih: b_hh is added here."""
        import torch

        h = state[0]
        n = torch.tanh(x_side + h @ p["weight_hh"].T + p["bias_hh"])
        a = torch.sigmoid(p["leak"])
        return ((1 - a) * h + a * n,)
